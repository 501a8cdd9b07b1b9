"""VMBPO: variational model-based policy optimisation (Chow, Cui, Ryu, Ghavamzadeh, IJCAI 2021,
arXiv 2006.05443), with a model-based and a model-free E-step.

**What is verified and what is derived.** Only the paper's abstract could be read (see
``shared/specs/caql-vmbpo.md``, section 2). Verified: the RL objective is written as a log-likelihood
whose variational lower bound is maximised by EM; the E-step learns a variational policy *and* a
variational model with the baseline policy fixed, in a model-based and a model-free actor-critic
version; the M-step improves the baseline policy "in a fully model-based fashion"; follow-up reviews
say the variational dynamics weight transitions by the exponential of the value (optimistic) and that a
direct log density-ratio estimator ``nu ~ log q/p`` is used. **Everything below that is more specific
is derived here from that framing and is unverified**: the losses, the single temperature ``eta`` for
policy and model, where ``gamma`` sits, the use of the critic residual as the ratio estimator, the
closed-form KL terms, which policy acts, every default value.

**Derivation.** With the optimality likelihood ``p(O|tau) ∝ exp(sum_t r_t / eta)`` and
``q(tau) = p0(s0) prod_t q(a_t|s_t) q(s_{t+1}|s_t, a_t)``, the lower bound
``E_q[sum_t r_t/eta - log q(a_t|s_t)/pi(a_t|s_t) - log q(s_{t+1}|s_t,a_t)/p(s_{t+1}|s_t,a_t)]`` is maximised
over ``q`` by the soft optimistic backups (:func:`soft_optimistic_backup` computes them on a finite MDP)::

    V(s)    = eta log E_{a~pi}[exp(Q(s,a)/eta)]      = max_q  E_q[Q(s,a)] - eta KL(q(.|s) || pi(.|s))
    Q(s,a)  = eta log E_{s',r~p}[exp((r + gamma V(s'))/eta)]
    q(a|s)  = pi(a|s) exp((Q(s,a) - V(s))/eta),   q(s'|s,a) = p(s'|s,a) exp((r + gamma V(s') - Q(s,a))/eta)

**Practical E-step (per update, on a batch of transitions).**

1. *Critic with a ratio estimator.* The log-expectation in ``Q`` cannot be estimated from one sample by
   a squared loss, but it is the unique minimiser of the LINEX loss
   ``E[eta^2 (exp(delta/eta) - 1 - delta/eta)]``, ``delta = y - Q(s,a)``, ``y = r + gamma (1-d) V'(s')``
   (:func:`linex_loss`; its stationarity condition is ``E_p[exp(delta/eta)] = 1``). So the scaled residual
   ``nu(s,a,s') = (y - Q(s,a))/eta`` is a log density-ratio estimator of ``log q(s'|s,a)/p(s'|s,a)``,
   normalised under ``p`` at the optimum; it is logged as ``log_ratio_*``. The twin critics (minimum of
   two, with Polyak targets) are trained with it. For ``eta -> inf`` it is the squared loss (risk-neutral
   evaluation); for small ``eta`` it is optimistic. Exponents above ``max_log_ratio`` continue linearly,
   so one outlier cannot blow up the gradient (a practical clip, not part of the derivation).
2. *Soft value.* ``V'(s') = min_j Q'_j(s', a') - alpha log q(a'|s') - eta KL(q(.|s') || pi(.|s'))`` with
   ``a' ~ q``, the KL of the two tanh-Gaussians in closed form (the variational form of ``V`` above, one
   sample, plus SAC's entropy term; see "Entropy term" below).
3. *Variational policy.* ``q_phi`` maximises ``E_{a~q}[min_j Q_j(s,a) - alpha log q(a|s)] - eta KL(q || pi)``
   (reparameterised; ``pi`` fixed): SAC's actor step with a KL to the baseline added; ``alpha`` is tuned
   towards SAC's entropy target.
4. *Variational model* (model-based variant). ``q(s'|s,a) ∝ p̂(s'|s,a) exp((r + gamma V'(s'))/eta)`` is
   represented by sampling-importance-resampling: one candidate ``(s', r)`` per elite of the learned
   ensemble ``p̂``, resampled with weights ``exp((r + gamma (1-d) V'(s'))/eta)``. Model rollouts
   (:class:`rlcore.models.ModelEnv`) *continue* from the variational model's choice, so imagined states
   follow ``q(tau)``, while the transition they store is an unweighted sample of ``p̂`` (the backup in 1
   takes its expectation under ``p``; storing ``q`` samples would count the optimism twice).

**Variants.** ``model_based``: the ensemble (``rlcore.models.ProbabilisticEnsemble``) is trained online
on the replay batches of the shared loop, with a fixed data-defined holdout split for elite selection
(:func:`rlcore.models.holdout_mask`); each update rolls ``rollouts_per_update`` real states forward for
the scheduled horizon with ``q`` and the variational model into a model buffer, and the E-step batch
mixes ``real_ratio`` real transitions with model transitions (MBPO's scheme). ``model_free``: no model;
the E-step and the M-step use real transitions only (the LINEX critic then takes its expectation over
the replay data alone).

**M-step.** ``pi`` minimises ``E_s KL(q(.|s) || pi(.|s))`` (closed form), i.e. maximum likelihood of
``pi`` on actions of ``q``, at the states of the E-step batch (model-rollout states in the model-based
variant: "fully model-based"). One gradient step per update, so ``pi`` trails ``q`` and the KL term of
3 acts as a trust region.

**Known failure (measured, not fixed).** On Hopper-v5 and HalfCheetah-v5 the critic diverges within 25-30k
steps (benchmarks/results/vmbpo_mujoco.md): at ``eta=1`` the LINEX backup adds about ``Var(delta)/(2 eta)``
of optimism per step and it compounds over the horizon (final mean Q 56-10,600 against SAC's 10-144);
at ``eta=100`` the ``-eta KL(q || pi)`` term of ``V'`` compounds downwards (mean Q -2,100 after 10k
HalfCheetah steps). A temperature in units of the reward scale, or separate temperatures for the backup's
optimism and the policy's KL, are the first things to try.

**Acting.** Training episodes act with ``q`` (the E-step's trajectory distribution); evaluation uses the
mode of the baseline ``pi`` (``evaluate_with`` switches to ``q``).

**Entropy term (a deviation).** The E-step's actor-critic is SAC (the issue names SAC as the shared
core): ``q`` also carries SAC's entropy bonus ``alpha H(q)`` with the automatic temperature, in the
actor loss and in ``V'``. Without it the EM iteration has nothing that keeps ``q`` stochastic (``pi``
follows ``q``, so the KL term vanishes), and in a first measurement the policy drifted to saturated
bang-bang actions (log-std up to 0.9, evaluation returns 2-4 on InvertedPendulum-v5).

**Choosing eta (measured).** ``eta`` weighs the KL of ``q`` to ``pi`` and sets the optimism of the
backup at once. On InvertedPendulum-v5 with (64, 64) networks, 3k steps, seed 1 (evaluations every 500
steps): ``eta = 1`` learned steadily (model-free 25, 38, 67, 89, 80, 79; model-based with
``real_ratio=0.5``: 25, 42, 65, 64, 58, 65); ``eta = 5`` learned and collapsed (model-free 25, 31, 37, 2,
4, 49); ``eta = 50`` collapsed at once (2-5 in both variants). The collapse is the KL term, not the
optimism: with a large weight, the gradient of ``KL(q || pi)`` towards a ``pi`` that itself chases ``q``
swamps the critic's gradient, and the pair drifts to saturated actions. Hence the default ``eta = 1``;
``real_ratio`` defaults to 0.5 (MBPO uses 0.05 with a model trained to convergence; here the model is
trained online and the budgets are small).

**Known weakness: optimism compounds.** For a target with variance ``sigma^2`` the LINEX fit exceeds the
mean by about ``sigma^2 / (2 eta)``, and every backup adds this premium again, so over the effective
horizon ``1/(1-gamma)`` the values are inflated by about ``sigma^2 / (2 eta (1-gamma))``. The variance
here includes the critics' own fitting noise and, in the model-based variant, the ensemble's sampled
noise, which rewards actions with uncertain outcomes. A smaller ``eta`` is more optimistic; the two roles are one
parameter in the derivation, and separating them is the obvious next experiment.

**Not done.** No separate state-value network ``V_psi`` (the soft value of 2 comes from the critics);
no learned termination model (tasks without a known termination function never end in the model);
no tuning of ``eta`` beyond a few short runs.
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
from rlcore.models import ModelEnv, ProbabilisticEnsemble, collect_rollouts, holdout_mask, rollout_horizon
from rlcore.models.rollouts import check_schedule
from rlcore.models.termination import termination_fn
from rlcore.networks import SquashedGaussianActor, TwinQ, kl_divergence
from rlcore.objectives import linex_loss, polyak_update, temperature_step


@dataclass
class VMBPOConfig(SACConfig):
    """VMBPO settings. The E-step's actor-critic core shares SAC's settings (:class:`~rlcore.algos.sac.SACConfig`:
    networks, learning rates, discount, Polyak rate, entropy temperature) and the shared loop's (including the
    update-to-data ratio ``updates_per_step``, in :class:`~rlcore.loops.TrainConfig`)."""

    variant: Literal["model_based", "model_free"] = "model_based"
    """E-step on ensemble rollouts mixed with real data, or on real transitions only."""
    eta: float = 1.0
    """Temperature of the optimality likelihood: KL weight of q to pi and inverse optimism of the backup."""
    batch_size: int = 256
    """Transitions per E-step / M-step update (real and model transitions together)."""
    actor_learning_rate: float = 3e-4
    """Adam learning rate of the variational policy q."""
    baseline_learning_rate: float = 3e-4
    """Adam learning rate of the baseline policy pi (M-step)."""
    target_entropy: float | None = None
    """Entropy target of q (None: minus the action dimension)."""
    max_log_ratio: float = 5.0
    """Exponent of the LINEX loss beyond which it continues linearly (a clip on the density ratio)."""
    ensemble_size: int = 7
    """Members of the probabilistic dynamics ensemble."""
    num_elites: int = 5
    """Members used for prediction, chosen by holdout error."""
    model_hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)
    """Hidden layers of each ensemble member."""
    model_learning_rate: float = 1e-3
    """Adam learning rate of the ensemble."""
    model_train_every: int = 2
    """Agent updates between two gradient steps of the ensemble (on the real batch)."""
    model_warmup_updates: int = 500
    """Ensemble gradient steps before the first model rollout."""
    holdout_fraction: float = 0.2
    """Share of real transitions (a fixed split) never trained on and used to rank the members."""
    holdout_size: int = 5_000
    """Held-out transitions kept for elite selection (FIFO)."""
    elite_interval: int = 250
    """Agent updates between elite selections."""
    rollout_schedule: tuple[int, int, int, int] = (10_000, 100_000, 1, 5)
    """Model rollout horizon: (start_step, end_step, min_horizon, max_horizon), linear in between (MBPO)."""
    rollouts_per_update: int = 64
    """Real states rolled forward through the model at every update."""
    model_buffer_size: int = 100_000
    """Capacity of the buffer of model transitions (FIFO)."""
    real_ratio: float = 0.5
    """Share of real transitions in each E-step batch of the model-based variant (MBPO: 0.05)."""
    evaluate_with: Literal["baseline", "variational"] = "baseline"
    """Policy whose mode is evaluated: the baseline pi (the EM's output) or the variational q."""

    def validate(self) -> None:
        super().validate()
        if self.variant not in ("model_based", "model_free"):
            raise ValueError(f"variant must be 'model_based' or 'model_free', got {self.variant!r}.")
        if not self.eta > 0:
            raise ValueError(f"eta must be > 0, got {self.eta}.")
        if not 1 <= self.num_elites <= self.ensemble_size:
            raise ValueError(f"need 1 <= num_elites <= ensemble_size, got num_elites={self.num_elites}, "
                             f"ensemble_size={self.ensemble_size}.")
        if not 0 <= self.real_ratio <= 1:
            raise ValueError(f"real_ratio must be in [0, 1], got {self.real_ratio}.")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}.")
        for name in ("model_train_every", "rollouts_per_update", "model_buffer_size", "holdout_size",
                     "elite_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.rollouts_per_update > self.batch_size:
            raise ValueError(f"rollouts_per_update ({self.rollouts_per_update}) cannot exceed batch_size "
                             f"({self.batch_size}): rollouts start from the real batch's states.")
        check_schedule(self.rollout_schedule)




# ---------------------------------------------------------------------------------------------------


class VMBPOAgent:
    """Critics, variational and baseline policies, the dynamics ensemble and the EM updates."""

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
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=c.learning_rate)
        self.q_policy_optimizer = torch.optim.Adam(self.q_policy.parameters(), lr=c.actor_learning_rate)
        self.baseline_optimizer = torch.optim.Adam(self.baseline.parameters(), lr=c.baseline_learning_rate)
        self.log_alpha = torch.nn.Parameter(torch.tensor(float(c.initial_alpha), device=self.device).log())
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=c.alpha_learning_rate)
        self.target_entropy = float(-self.action_dim if c.target_entropy is None else c.target_entropy)
        self.act_generator = torch.Generator(device=self.device).manual_seed(c.seed + 2)
        self.update_generator = torch.Generator(device=self.device).manual_seed(c.seed + 3)
        self.updates = 0
        self.env_step = 0
        self.model_based = c.variant == "model_based"
        if self.model_based:
            self.model = ProbabilisticEnsemble(obs_dim, self.action_dim, c.ensemble_size, c.num_elites,
                                               c.model_hidden_sizes).to(self.device)
            self.model_optimizer = torch.optim.Adam(self.model.parameters(), lr=c.model_learning_rate)
            self.model_updates = 0
            self.model_generator = torch.Generator(device=self.device).manual_seed(c.seed + 4)
            self.holdout_key = torch.randn(obs_dim + self.action_dim, generator=self.model_generator,
                                           device=self.device)
            self.holdout = ReplayBuffer(c.holdout_size, self.device, seed=c.seed + 5)
            self.model_buffer = ReplayBuffer(c.model_buffer_size, self.device, seed=c.seed + 6)
            self.termination = termination_fn(env_id or c.env.id)

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

    @torch.no_grad()
    def soft_value(self, obs: torch.Tensor) -> torch.Tensor:
        """``V'(s) = min_j Q'_j(s, a) - alpha log q(a|s) - eta KL(q || pi)(s)``, ``a ~ q``: ``[B]``."""
        q_dist = self.q_policy.dist(obs)
        actions, log_prob = q_dist.rsample_and_log_prob(self.update_generator)
        actions = self.q_policy._into_set(actions)
        return (self.critic_target(obs, actions).min(dim=0).values - self.log_alpha.exp() * log_prob
                - self.config.eta * self.kl_to_baseline(obs, q_dist))

    @torch.no_grad()
    def variational_next_state(self, next_obs: torch.Tensor, rewards: torch.Tensor,
                               terminated: torch.Tensor) -> torch.Tensor:
        """Resample the ``K`` model candidates by ``exp((r + gamma (1-d) V'(s'))/eta)``: index ``[N]``."""
        k, n, _ = next_obs.shape
        values = self.soft_value(next_obs.reshape(k * n, -1)).reshape(k, n)
        logits = (rewards + self.config.gamma * (~terminated) * values) / self.config.eta
        return torch.multinomial(torch.softmax(logits.T, dim=-1), 1, generator=self.model_generator).squeeze(1)

    # ------------------------------------------------------------------ model
    def train_model(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """One ensemble step on the batch's training rows; its holdout rows go to the holdout buffer."""
        c = self.config
        held = holdout_mask(batch.obs, batch.actions, c.holdout_fraction, self.holdout_key)
        train = (~held).nonzero().squeeze(1)
        hold = held.nonzero().squeeze(1)
        if hold.numel():
            self.holdout.add(batch.obs[hold], batch.actions[hold], batch.rewards[hold], batch.next_obs[hold],
                             batch.terminated[hold])
        if train.numel() < 2:
            return {}
        self.model.update_normalizer(batch.obs[train], batch.actions[train], batch.next_obs[train],
                                     batch.rewards[train])
        # A bootstrap of the training rows per member keeps the members' errors apart.
        index = train[torch.randint(0, train.numel(), (c.ensemble_size, train.numel()),
                                    generator=self.model_generator, device=self.device)]
        loss, _ = self.model.loss(batch.obs[index], batch.actions[index], batch.next_obs[index],
                                  batch.rewards[index])
        self.model_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.model_optimizer.step()
        self.model_updates += 1
        return {"model_loss": loss.detach()}

    def select_elites(self) -> dict[str, torch.Tensor]:
        n = len(self.holdout)
        if n == 0:
            return {}
        h = self.holdout
        mse = self.model.member_mse(h.obs[:n], h.actions[:n], h.next_obs[:n], h.rewards[:n])
        self.model.select_elites(mse)
        return {"model_holdout_mse": mse[self.model.elites].mean()}

    def rollout(self, start_obs: torch.Tensor) -> dict[str, torch.Tensor]:
        horizon = rollout_horizon(self.env_step, self.config.rollout_schedule)
        env = ModelEnv(self.model, self.action_set, self.termination, horizon, self.model_generator,
                       self.variational_next_state)
        transitions = collect_rollouts(env, lambda obs: self.q_policy.sample(obs, self.model_generator)[0],
                                       start_obs, horizon)
        self.model_buffer.add(transitions.obs, transitions.actions, transitions.rewards, transitions.next_obs,
                              transitions.terminated)
        return {"rollout_horizon": torch.tensor(float(horizon)), "model_reward": transitions.rewards.mean()}

    def training_batch(self, real: TransitionBatch) -> TransitionBatch:
        """The real batch (model-free, or before model data exists) or ``real_ratio`` of it plus model data."""
        c = self.config
        if not self.model_based or len(self.model_buffer) < c.batch_size:
            return real
        n_real = round(c.real_ratio * c.batch_size)
        imagined = self.model_buffer.sample(c.batch_size - n_real)
        return TransitionBatch(*(torch.cat([getattr(real, f)[:n_real], getattr(imagined, f)]) for f in (
            "obs", "actions", "rewards", "next_obs", "terminated")))

    # ------------------------------------------------------------------ update
    def update(self, real: TransitionBatch) -> dict[str, torch.Tensor]:
        c = self.config
        metrics: dict[str, torch.Tensor] = {}
        self.updates += 1
        if self.model_based:
            if self.updates % c.model_train_every == 0:
                metrics.update(self.train_model(real))
            if self.updates % c.elite_interval == 0:
                metrics.update(self.select_elites())
            if self.model_updates >= c.model_warmup_updates:
                metrics.update(self.rollout(real.obs[: c.rollouts_per_update]))
        batch = self.training_batch(real)

        # E-step 1-2: critics by the LINEX loss towards r + gamma (1 - d) V'(s').
        with torch.no_grad():
            targets = batch.rewards + c.gamma * (1.0 - batch.terminated) * self.soft_value(batch.next_obs)
        q = self.critic(batch.obs, batch.actions)
        critic_loss = linex_loss(q, targets, c.eta, c.max_log_ratio).mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # E-step 3: the variational policy, E_q[min Q - alpha log q] - eta KL(q || pi).
        alpha = self.log_alpha.detach().exp()
        self.critic.requires_grad_(False)
        q_dist = self.q_policy.dist(batch.obs)
        actions, log_prob = q_dist.rsample_and_log_prob(self.update_generator)
        kl = self.kl_to_baseline(batch.obs, q_dist)
        q_value = self.critic(batch.obs, self.q_policy._into_set(actions)).min(0).values
        q_policy_loss = (alpha * log_prob + c.eta * kl - q_value).mean()
        self.critic.requires_grad_(True)
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
        log_ratio = ((targets - q.detach()) / c.eta).clamp(max=c.max_log_ratio)
        metrics.update(critic_loss=critic_loss.detach(), q_mean=q.detach().mean(), target_mean=targets.mean(),
                       q_policy_loss=q_policy_loss.detach(), kl_q_pi=kl.detach().mean(), m_step_kl=m_loss.detach(),
                       log_ratio_mean=log_ratio.mean(), ratio_mean=log_ratio.exp().mean(),
                       q_policy_log_std=q_dist.log_std.detach().mean(), alpha=alpha, entropy=-log_prob.mean())
        return metrics

    # ------------------------------------------------------------------ state
    def _modules(self) -> tuple[str, ...]:
        names = ("q_policy", "baseline", "critic", "critic_target", "critic_optimizer", "q_policy_optimizer",
                 "baseline_optimizer", "alpha_optimizer")
        return (*names, "model", "model_optimizer", "holdout", "model_buffer") if self.model_based else names

    def _generators(self) -> tuple[str, ...]:
        names = ("act_generator", "update_generator")
        return (*names, "model_generator") if self.model_based else names

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name).state_dict() for name in self._modules()}
        state.update({name: getattr(self, name).get_state() for name in self._generators()})
        state.update(updates=self.updates, env_step=self.env_step, log_alpha=self.log_alpha.detach().clone())
        if self.model_based:
            state.update(model_updates=self.model_updates, holdout_key=self.holdout_key.clone())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in (*self._modules(), *self._generators()) if k not in state]
        if missing:
            raise ValueError(f"VMBPO agent state is missing {', '.join(missing)} (a {self.config.variant} agent "
                             "needs them; was the checkpoint written by the other variant?).")
        for name in self._modules():
            getattr(self, name).load_state_dict(state[name])
        for name in self._generators():
            getattr(self, name).set_state(state[name])
        self.updates, self.env_step = state["updates"], state["env_step"]
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        if self.model_based:
            self.model_updates = state["model_updates"]
            self.holdout_key.copy_(state["holdout_key"])


def make_agent(config: VMBPOConfig, env: BatchedEnv) -> VMBPOAgent:
    require_continuous_actions(env, "vmbpo")
    require_flat_observations(env, "vmbpo")
    return VMBPOAgent(config, env.obs_dim, env.action_set, config.device, env_id=getattr(env, "env_id", None))


def train(config: VMBPOConfig | None = None, env: EnvSource | None = None,
          eval_env: EnvSource | None = None) -> TrainResult:
    """Train VMBPO; returns the agent, its run directory and the evaluation history.

    ``env`` / ``eval_env``: environments or factories ``seed -> BatchedEnv`` instead of ``config.env``."""
    return train_off_policy("vmbpo", config or VMBPOConfig(), make_agent, env, eval_env)
