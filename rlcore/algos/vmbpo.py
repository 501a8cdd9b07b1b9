"""VMBPO: variational model-based policy optimisation (Chow, Cui, Ryu, Ghavamzadeh, IJCAI 2021,
arXiv 2006.05443), with a model-based and a model-free E-step, and a critic that stays bounded.

**What is verified and what is derived.** Only the paper's abstract could be read (see
``shared/specs/caql-vmbpo.md``, section 2). Verified: the RL objective is written as a log-likelihood
whose variational lower bound is maximised by EM; the E-step learns a variational policy *and* a
variational model with the baseline policy fixed, in a model-based and a model-free actor-critic
version; the M-step improves the baseline policy "in a fully model-based fashion"; follow-up reviews
say the variational dynamics weight transitions by the exponential of the value (optimistic) and that a
direct log density-ratio estimator ``nu ~ log q/p`` is used. **Everything below that is more specific
is derived here from that framing and is unverified**: the losses, the two temperatures, the bounded
backup, where ``gamma`` sits, the use of the critic residual as the ratio estimator, the closed-form KL
terms, which policy acts, every default value.

**The variational objective.** With the optimality likelihood ``p(O|tau) ∝ exp(sum_t r_t / eta)`` and
``q(tau) = p0(s0) prod_t q(a_t|s_t) q(s_{t+1}|s_t, a_t)``, ``eta`` times the lower bound is
``E_q[sum_t gamma^t (r_t - eta log q(a_t|s_t)/pi(a_t|s_t) - eta log q(s_{t+1}|s_t,a_t)/p(s_{t+1}|s_t,a_t))]``,
maximised over ``q`` by the soft optimistic backups (:func:`~rlcore.objectives.soft_optimistic_backup`)::

    V(s)    = eta log E_{a~pi}[exp(Q(s,a)/eta)]      = max_q  E_q[Q(s,a)] - eta KL(q(.|s) || pi(.|s))
    Q(s,a)  = eta log E_{s',r~p}[exp((r + gamma V(s'))/eta)]
    q(a|s)  = pi(a|s) exp((Q(s,a) - V(s))/eta),   q(s'|s,a) = p(s'|s,a) exp((r + gamma V(s') - Q(s,a))/eta)

**Why that critic diverged, and the three changes (issue 23).** Measured before the change
(``benchmarks/results/vmbpo_mujoco.md`` of 2026-11-26): mean Q 1,900-8,900 on Hopper-v5 where no policy
exceeds a return of about 400. Write ``y = r + gamma V(s')`` and split the model backup into the expected
backup and a bonus, ``Q(s,a) = E_p[y] + B(s,a)`` with ``B = eta log E_p[exp((y - E_p y)/eta)]
= max_{q_m} E_{q_m}[y] - E_p[y] - eta KL(q_m || p) >= 0`` (Jensen), about ``Var_p(y) / (2 eta)`` for a small
spread. Three things follow from the objective:

1. *Two temperatures.* One ``eta`` weighs both KL terms. Weighting them separately,
   ``E_q[sum_t gamma^t (r_t - eta_pi log q(a|s)/pi(a|s) - eta_m log q(s'|s,a)/p(s'|s,a))]``, is no longer
   ``eta`` times the bound of one likelihood but a KL-regularised objective of the same form (the follow-up
   "beta-VMBPO" suggests the same move by its name; not checked), and the same derivation, term by term, gives
   its maximiser: the backups above with ``eta_pi`` in ``V`` and ``q(a|s)``, ``eta_m`` in ``Q``. ``eta_m -> inf`` is
   the risk-neutral (expected) backup, ``eta_pi -> 0`` drops the pull towards ``pi``. The measurements below
   show why one number cannot serve both: ``eta = 1`` was needed for the policy KL (larger collapsed) but
   made the backup optimistic by ``Var/2`` per step; ``eta = 100`` kept the backup honest but its KL term
   dominated ``V``.
2. *In units of the reward scale.* ``B ≈ Var(y)/(2 eta_m)`` has units of reward squared over ``eta_m``, and
   the KL term ``eta_pi KL`` is compared with differences of Q, so a fixed ``eta`` means something different
   on every task. Both are set in units of a running estimate ``sigma`` of the TD-error spread of the
   expected critic (an exponential average of ``mean (y - Q)^2``, rate ``scale_rate``, saved in checkpoints):
   ``eta_pi = policy_temperature * sigma``, ``eta_m = model_temperature * sigma``. The per-step bonus is
   then about ``sigma / (2 model_temperature)``, one TD error's size whatever the task's reward scale.
3. *The bonus does not compound, and it is capped.* In the backup above ``V(s')`` already contains the
   bonuses of all later steps, so the optimism adds up to about ``sum_t gamma^t B_t ≈ B / (1 - gamma)``:
   100 bonuses at ``gamma = 0.99``. Restrict the variational model to depart from ``p`` at the branching
   step only (``q(s_1|s_0,a_0)`` free, ``q(s_{t+1}|s_t,a_t) = p`` after it). A restricted family gives a lower
   bound again, and its maximiser is the **bounded backup** (:func:`~rlcore.objectives.bounded_soft_backup`)::

       Qbar(s,a) = E_p[r + gamma Vbar(s')],   Vbar(s) = max_q E_q[Qbar(s,a)] - eta_pi KL(q || pi)
       Q+(s,a)   = Qbar(s,a) + min(B(s,a), bonus_cap * sigma),   B from y = r + gamma Vbar(s')

   The expected critic ``Qbar`` carries values forward; ``Q+`` adds one step of optimism, which is capped
   (``bonus_cap`` in units of ``sigma``; a practical bound, not part of the derivation: it keeps a model
   or critic outlier from buying an unbounded bonus). So ``Qbar <= Q+ <= Qbar + bonus_cap * sigma`` at
   every state, and ``Qbar`` is a soft policy evaluation with no optimism at all.

**Practical E-step (per update, on a batch of transitions).**

1. *Expected critics.* Twin critics ``Qbar_j`` (minimum of two, Polyak targets) are fitted by the squared
   loss to ``y = r + gamma (1-d) Vbar'(s')``, with ``Vbar'(s') = min_j Qbar'_j(s', a') - alpha log q(a'|s')
   - eta_pi KL(q || pi)(s')``, ``a' ~ q``, the KL of the two tanh-Gaussians in closed form: the variational
   form of ``Vbar`` with one sample, plus SAC's entropy term (see "Entropy term"). Any ``q`` gives a lower
   bound of ``Vbar``, so using the optimistic ``q`` there cannot inflate it.
2. *Bonus by a ratio estimator.* ``B`` is a log-expectation, which one sample cannot estimate by a squared
   loss, but ``Qbar + B`` is the unique minimiser of the LINEX loss ``E[eta_m^2 (exp(nu) - 1 - nu)]``,
   ``nu = (y - Qbar - b)/eta_m`` (:func:`~rlcore.objectives.linex_loss`; its stationarity condition is
   ``E_p[exp(nu)] = 1``). A bonus network fits ``b(s,a) = bonus_cap * sigma * sigmoid(g(s,a))`` this way
   with ``Qbar`` (mean of the twins) held fixed: the cap is in the parameterisation, and ``nu`` is a log
   density-ratio estimate of ``log q(s'|s,a)/p(s'|s,a)``, logged as ``log_ratio_*``. Exponents above
   ``max_log_ratio`` continue linearly (a clip on the ratio).
3. *Variational policy.* ``q_phi`` maximises ``E_{a~q}[min_j Qbar_j(s,a) + b(s,a) - alpha log q(a|s)] -
   eta_pi KL(q || pi)`` (reparameterised; ``pi`` fixed): SAC's actor step on ``Q+`` with a KL to the baseline.
4. *Variational model* (model-based variant). ``q(s'|s,a) ∝ p̂(s'|s,a) exp((r + gamma (1-d) Vbar'(s'))/eta_m)``
   is represented by sampling-importance-resampling: one candidate ``(s', r)`` per elite of the learned
   ensemble ``p̂``, resampled by those weights. Model rollouts (:class:`rlcore.models.ModelEnv`) *continue*
   from the variational model's choice, so imagined states follow ``q``, while the transition they store is
   an unweighted sample of ``p̂`` (the backup in 1-2 takes its expectation under ``p``; storing ``q`` samples
   would count the optimism twice).

**Variants.** ``model_based``: the ensemble (:class:`rlcore.models.OnlineDynamics`) is trained online on the
replay batches of the shared loop, with a fixed data-defined holdout split for elite selection; each update
rolls ``rollouts_per_update`` real states forward for the scheduled horizon with ``q`` and the variational
model into a model buffer, and the E-step batch mixes ``real_ratio`` real transitions with model transitions
(MBPO's scheme, :func:`rlcore.models.mixed_batch`). Model rollouts end where the task's known termination
function says so, or a learned classifier (``termination``). ``model_free``: no model; the E-step and the
M-step use real transitions only.

**M-step.** ``pi`` minimises ``E_s KL(q(.|s) || pi(.|s))`` (closed form), i.e. maximum likelihood of
``pi`` on actions of ``q``, at the states of the E-step batch (model-rollout states in the model-based
variant: "fully model-based"). One gradient step per update, so ``pi`` trails ``q`` and the KL term of
3 acts as a trust region.

**Acting.** Training episodes act with ``q`` (the E-step's trajectory distribution); evaluation uses the
mode of the baseline ``pi`` (``evaluate_with`` switches to ``q``).

**Entropy term (a deviation).** The E-step's actor-critic is SAC: ``q`` also carries SAC's entropy bonus
``alpha H(q)`` with the automatic temperature, in the actor loss and in ``Vbar'``. Without it the EM iteration
has nothing that keeps ``q`` stochastic (``pi`` follows ``q``, so the KL term vanishes), and in a first
measurement the policy drifted to saturated bang-bang actions (evaluation returns 2-4 on
InvertedPendulum-v5).

**Measured before the change (one temperature ``eta``).** On InvertedPendulum-v5, (64, 64) networks, 3k steps:
``eta = 1`` learned, ``eta = 5`` learned and collapsed, ``eta = 50`` collapsed at once: the policy KL's
weight. On Hopper-v5 and HalfCheetah-v5 at ``eta = 1`` the critic diverged within 25-30k steps (the bonus
compounding); ``eta = 10`` kept it bounded on HalfCheetah; ``eta = 100`` diverged downwards through the
``-eta KL`` term of ``V``. The defaults ``policy_temperature = 1``, ``model_temperature = 1``, ``bonus_cap = 1``
are chosen by that reasoning, not tuned; ``benchmarks/results/vmbpo_mujoco.md`` has what they measure.

**Not done.** No separate state-value network ``V_psi`` (the soft value of 1 comes from the critics);
no tuning of the temperatures beyond a few short runs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch

import solvers
from rlcore.algos.sac import SACConfig
from rlcore.envs.base import BatchedEnv
from rlcore.envs.spaces import require_continuous_actions, require_flat_observations
from rlcore.loops import EnvSource, ReplayBuffer, TrainResult, TransitionBatch, train_off_policy
from rlcore.models import ModelEnv, ModelSettings, OnlineDynamics, collect_rollouts, mixed_batch, rollout_horizon
from rlcore.models.rollouts import check_schedule
from rlcore.networks import SquashedGaussianActor, TwinQ, kl_divergence
from rlcore.objectives import linex_loss, polyak_update, temperature_step


@dataclass
class VMBPOConfig(ModelSettings, SACConfig):
    """VMBPO settings. The E-step's actor-critic core shares SAC's settings (`SACConfig`:
    networks, learning rates, discount, Polyak rate, entropy temperature), the dynamics model's
    (`ModelSettings`) and the shared loop's (including the update-to-data ratio
    ``updates_per_step``, in `TrainConfig`)."""

    variant: Literal["model_based", "model_free"] = "model_based"
    """E-step on ensemble rollouts mixed with real data, or on real transitions only."""
    policy_temperature: float = 1.0
    """KL weight of q to pi, in units of the TD-error scale sigma (eta_pi = policy_temperature * sigma)."""
    model_temperature: float = 1.0
    """Temperature of the variational model, in units of sigma (eta_m); larger is less optimistic."""
    bonus_cap: float = 1.0
    """Largest optimism bonus of the backup over the expected backup, in units of sigma (0: no optimism)."""
    scale_rate: float = 0.005
    """Rate of the exponential average of the squared TD error that gives sigma."""
    scale_floor: float = 1e-3
    """Smallest sigma (keeps the temperatures positive when the TD errors vanish)."""
    batch_size: int = 256
    """Transitions per E-step / M-step update (real and model transitions together)."""
    actor_learning_rate: float = 3e-4
    """Adam learning rate of the variational policy q."""
    baseline_learning_rate: float = 3e-4
    """Adam learning rate of the baseline policy pi (M-step)."""
    target_entropy: float | None = None
    """Entropy target of q, in the units of its log-probabilities (None: minus the action dimension for actions
    normalised to [-1, 1], as SAC: ``SquashedGaussianActor.default_target_entropy``)."""
    max_log_ratio: float = 5.0
    """Exponent of the LINEX loss beyond which it continues linearly (a clip on the density ratio)."""
    rollout_schedule: tuple[int, int, int, int] = (10_000, 100_000, 1, 5)
    """Model rollout horizon: (start_step, end_step, min_horizon, max_horizon), linear in between (MBPO)."""
    real_ratio: float = 0.5
    """Share of real transitions in each E-step batch of the model-based variant (MBPO: 0.05)."""
    evaluate_with: Literal["baseline", "variational"] = "baseline"
    """Policy whose mode is evaluated: the baseline pi (the EM's output) or the variational q."""

    def validate(self) -> None:
        super().validate()
        if self.variant not in ("model_based", "model_free"):
            raise ValueError(f"variant must be 'model_based' or 'model_free', got {self.variant!r}.")
        for name in ("policy_temperature", "model_temperature", "scale_rate", "scale_floor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
        if not self.bonus_cap >= 0:
            raise ValueError(f"bonus_cap must be >= 0, got {self.bonus_cap}.")
        if self.scale_rate > 1:
            raise ValueError(f"scale_rate must be in (0, 1], got {self.scale_rate}.")
        self.validate_model(self.batch_size)
        check_schedule(self.rollout_schedule)


# ---------------------------------------------------------------------------------------------------


class VMBPOAgent:
    """Expected critics, the bonus network, variational and baseline policies, the dynamics and the EM updates."""

    acting_state_keys = ("q_policy",)
    """The parts of :meth:`state_dict` that acting reads (what a distributed learner sends its rollout actors)."""

    def __init__(self, config: VMBPOConfig, obs_dim: int, action_set: solvers.ActionSet,
                 device: str | torch.device = "cpu", env_id: str | None = None) -> None:
        """``env_id`` picks the known termination function of the task (default: ``config.env.id``)."""
        c = self.config = config
        self.device = torch.device(device)
        self.action_set = action_set.to(self.device)
        self.obs_dim, self.action_dim = obs_dim, action_set.dim
        self.q_policy = SquashedGaussianActor(obs_dim, self.action_set, c.hidden_sizes).to(self.device)
        self.baseline = copy.deepcopy(self.q_policy)
        self.critic = TwinQ(obs_dim, self.action_dim, c.hidden_sizes).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.bonus_net = TwinQ(obs_dim, self.action_dim, c.hidden_sizes, num_critics=1).to(self.device)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=c.learning_rate)
        self.bonus_optimizer = torch.optim.Adam(self.bonus_net.parameters(), lr=c.learning_rate)
        self.q_policy_optimizer = torch.optim.Adam(self.q_policy.parameters(), lr=c.actor_learning_rate)
        self.baseline_optimizer = torch.optim.Adam(self.baseline.parameters(), lr=c.baseline_learning_rate)
        self.log_alpha = torch.nn.Parameter(torch.tensor(float(c.initial_alpha), device=self.device).log())
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=c.alpha_learning_rate)
        self.target_entropy = (self.q_policy.default_target_entropy() if c.target_entropy is None
                               else float(c.target_entropy))
        self.act_generator = torch.Generator(device=self.device).manual_seed(c.seed + 2)
        self.update_generator = torch.Generator(device=self.device).manual_seed(c.seed + 3)
        # sigma^2: the running mean squared TD error of the expected critics (a tensor: no host sync).
        self.td_scale_sq = torch.ones((), device=self.device)
        self.updates = 0
        self.env_step = 0
        self.model_based = c.variant == "model_based"
        if self.model_based:
            self.dynamics = OnlineDynamics(c, obs_dim, self.action_dim, env_id or c.env.id, c.seed + 4, self.device)
            self.model_buffer = ReplayBuffer(c.model_buffer_size, self.device, seed=c.seed + 6)

    # ------------------------------------------------------------------ temperatures
    @property
    def td_scale(self) -> torch.Tensor:
        """sigma, the TD-error scale that the temperatures and the bonus cap are measured in."""
        return self.td_scale_sq.sqrt().clamp_min(self.config.scale_floor)

    @property
    def policy_eta(self) -> torch.Tensor:
        return self.config.policy_temperature * self.td_scale

    @property
    def model_eta(self) -> torch.Tensor:
        return self.config.model_temperature * self.td_scale

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, step: int = 0, deterministic: bool = False) -> torch.Tensor:
        obs = obs.to(self.device)
        if deterministic:
            policy = self.baseline if self.config.evaluate_with == "baseline" else self.q_policy
            return policy.mode(obs)
        self.env_step = step
        return self.q_policy.sample(obs, self.act_generator)[0]

    # ------------------------------------------------------------------ E-step pieces
    def kl_to_baseline(self, obs: torch.Tensor, q_dist=None) -> torch.Tensor:
        """``KL(q(.|s) || pi(.|s))`` in closed form (pi without gradient), ``[B]``."""
        q_dist = self.q_policy.dist(obs) if q_dist is None else q_dist
        with torch.no_grad():
            pi_dist = self.baseline.dist(obs)
        return kl_divergence(q_dist, pi_dist)

    def bonus(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``b(s,a) = bonus_cap * sigma * sigmoid(g(s,a))``, the capped one-step optimism, ``[B]``."""
        return self.config.bonus_cap * self.td_scale * torch.sigmoid(self.bonus_net(obs, actions)[0])

    @torch.no_grad()
    def soft_value(self, obs: torch.Tensor) -> torch.Tensor:
        """``Vbar'(s) = min_j Qbar'_j(s, a) - alpha log q(a|s) - eta_pi KL(q || pi)(s)``, ``a ~ q``: ``[B]``."""
        q_dist = self.q_policy.dist(obs)
        actions, log_prob = q_dist.rsample_and_log_prob(self.update_generator)
        actions = self.q_policy._into_set(actions)
        return (self.critic_target(obs, actions).min(dim=0).values - self.log_alpha.exp() * log_prob
                - self.policy_eta * self.kl_to_baseline(obs, q_dist))

    @torch.no_grad()
    def variational_next_state(self, next_obs: torch.Tensor, rewards: torch.Tensor,
                               terminated: torch.Tensor) -> torch.Tensor:
        """Resample the ``K`` model candidates by ``exp((r + gamma (1-d) Vbar'(s'))/eta_m)``: index ``[N]``."""
        k, n, _ = next_obs.shape
        values = self.soft_value(next_obs.reshape(k * n, -1)).reshape(k, n)
        logits = (rewards + self.config.gamma * (~terminated) * values) / self.model_eta
        return torch.multinomial(torch.softmax(logits.T, dim=-1), 1,
                                 generator=self.dynamics.generator).squeeze(1)

    # ------------------------------------------------------------------ model
    def rollout(self, start_obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Branch rollouts of the scheduled horizon from ``start_obs`` with ``q`` and the variational model."""
        horizon = rollout_horizon(self.env_step, self.config.rollout_schedule)
        d = self.dynamics
        env = ModelEnv(d.model, self.action_set, d.termination, horizon, d.generator, self.variational_next_state)
        transitions = collect_rollouts(env, lambda obs: self.q_policy.sample(obs, d.generator)[0], start_obs,
                                       horizon)
        self.model_buffer.add(transitions.obs, transitions.actions, transitions.rewards, transitions.next_obs,
                              transitions.terminated)
        return {"rollout_horizon": torch.tensor(float(horizon)), "model_reward": transitions.rewards.mean()}

    def training_batch(self, real: TransitionBatch) -> TransitionBatch:
        """The real batch (model-free, or before model data exists) or ``real_ratio`` of it plus model data."""
        if not self.model_based:
            return real
        return mixed_batch(real, self.model_buffer, self.config.real_ratio)

    # ------------------------------------------------------------------ update
    def update(self, real: TransitionBatch) -> dict[str, torch.Tensor]:
        c = self.config
        metrics: dict[str, torch.Tensor] = {}
        self.updates += 1
        if self.model_based:
            metrics.update(self.dynamics.step(real, self.updates))
            if self.dynamics.ready:
                metrics.update(self.rollout(real.obs[: c.rollouts_per_update]))
        batch = self.training_batch(real)

        # E-step 1: the expected critics, squared loss towards y = r + gamma (1 - d) Vbar'(s').
        with torch.no_grad():
            targets = batch.rewards + c.gamma * (1.0 - batch.terminated) * self.soft_value(batch.next_obs)
        q = self.critic(batch.obs, batch.actions)
        critic_loss = (q - targets).pow(2).mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # The TD-error scale sigma, from the residual of the expected backup (before this step's fit).
        q_mean = q.detach().mean(dim=0)
        td_sq = (targets - q_mean).pow(2).mean()
        if self.updates == 1:
            self.td_scale_sq.copy_(td_sq)
        else:
            self.td_scale_sq.lerp_(td_sq, c.scale_rate)

        # E-step 2: the capped bonus by the LINEX loss, Qbar held fixed: Qbar + b fits eta_m log E exp(y / eta_m).
        eta_m = self.model_eta
        bonus = self.bonus(batch.obs, batch.actions)
        bonus_loss = linex_loss(q_mean + bonus, targets, eta_m, c.max_log_ratio).mean()
        self.bonus_optimizer.zero_grad(set_to_none=True)
        bonus_loss.backward()
        self.bonus_optimizer.step()

        # E-step 3: the variational policy, E_q[min Qbar + b - alpha log q] - eta_pi KL(q || pi).
        alpha = self.log_alpha.detach().exp()
        self.critic.requires_grad_(False)
        self.bonus_net.requires_grad_(False)
        q_dist = self.q_policy.dist(batch.obs)
        actions, log_prob = q_dist.rsample_and_log_prob(self.update_generator)
        actions = self.q_policy._into_set(actions)
        kl = self.kl_to_baseline(batch.obs, q_dist)
        q_value = self.critic(batch.obs, actions).min(0).values + self.bonus(batch.obs, actions)
        q_policy_loss = (alpha * log_prob + self.policy_eta * kl - q_value).mean()
        self.critic.requires_grad_(True)
        self.bonus_net.requires_grad_(True)
        self.q_policy_optimizer.zero_grad(set_to_none=True)
        q_policy_loss.backward()
        self.q_policy_optimizer.step()
        log_prob = log_prob.detach()
        if c.autotune_alpha:
            temperature_step(self.log_alpha, self.alpha_optimizer, log_prob, self.target_entropy)

        # M-step: pi <- argmin KL(q || pi) at the batch's (model-rollout) states.
        with torch.no_grad():
            q_fixed = self.q_policy.dist(batch.obs)
        m_loss = kl_divergence(q_fixed, self.baseline.dist(batch.obs)).mean()
        self.baseline_optimizer.zero_grad(set_to_none=True)
        m_loss.backward()
        self.baseline_optimizer.step()

        polyak_update(self.critic_target, self.critic, c.tau)
        bonus = bonus.detach()
        log_ratio = ((targets - q_mean - bonus) / eta_m).clamp(max=c.max_log_ratio)
        metrics.update(critic_loss=critic_loss.detach(), bonus_loss=bonus_loss.detach(),
                       q_mean=(q_mean + bonus).mean(), q_expected_mean=q_mean.mean(), bonus_mean=bonus.mean(),
                       target_mean=targets.mean(), td_scale=self.td_scale, eta_policy=self.policy_eta,
                       eta_model=eta_m, q_policy_loss=q_policy_loss.detach(), kl_q_pi=kl.detach().mean(),
                       m_step_kl=m_loss.detach(), log_ratio_mean=log_ratio.mean(), ratio_mean=log_ratio.exp().mean(),
                       q_policy_log_std=q_dist.log_std.detach().mean(), alpha=alpha, entropy=-log_prob.mean())
        return metrics

    # ------------------------------------------------------------------ state
    _MODULES = ("q_policy", "baseline", "critic", "critic_target", "bonus_net", "critic_optimizer",
                "bonus_optimizer", "q_policy_optimizer", "baseline_optimizer", "alpha_optimizer")

    def _modules(self) -> tuple[str, ...]:
        return (*self._MODULES, "dynamics", "model_buffer") if self.model_based else self._MODULES

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name).state_dict() for name in self._modules()}
        state.update(act_generator=self.act_generator.get_state(), update_generator=self.update_generator.get_state(),
                     updates=self.updates, env_step=self.env_step, log_alpha=self.log_alpha.detach().clone(),
                     td_scale_sq=self.td_scale_sq.clone())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        needed = (*self._modules(), "act_generator", "update_generator", "td_scale_sq")
        missing = [k for k in needed if k not in state]
        if missing:
            raise ValueError(f"VMBPO agent state is missing {', '.join(missing)} (a {self.config.variant} agent "
                             "needs them; was the checkpoint written by the other variant, or by rlcore before the "
                             "bounded critic?).")
        for name in self._modules():
            getattr(self, name).load_state_dict(state[name])
        self.act_generator.set_state(state["act_generator"])
        self.update_generator.set_state(state["update_generator"])
        self.updates, self.env_step = state["updates"], state["env_step"]
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
            self.td_scale_sq.copy_(state["td_scale_sq"])


def make_agent(config: VMBPOConfig, env: BatchedEnv) -> VMBPOAgent:
    """The untrained VMBPOAgent for ``env`` (a ValueError if VMBPO cannot use its spaces)."""
    require_continuous_actions(env, "vmbpo")
    require_flat_observations(env, "vmbpo")
    return VMBPOAgent(config, env.obs_dim, env.action_set, config.device, env_id=getattr(env, "env_id", None))


def train(config: VMBPOConfig | None = None, env: EnvSource | None = None,
          eval_env: EnvSource | None = None) -> TrainResult:
    """Train VMBPO; returns the agent, its run directory and the evaluation history.

    ``env`` / ``eval_env``: environments or factories ``seed -> BatchedEnv`` instead of ``config.env``."""
    return train_off_policy("vmbpo", config or VMBPOConfig(), make_agent, env, eval_env)
