"""On-policy reward-weighted regression (Peters & Schaal, 2007) over any BatchedEnv, from rlcore.objectives.

Per rollout of T = num_steps steps of N environments, with the Gaussian actor-critic of PPO:

1. act with a ~ π_θ(·|s) on normalised observations;
2. returns-to-go R_t by :func:`~rlcore.objectives.discounted_returns`, exact Monte Carlo inside an episode and
   bootstrapped from the critic's V(final_obs) only where an episode was cut (time limit, rollout end);
3. a score per step, u_t = R_t − V(s_t) (``baseline=True``, the advantage-weighted variant of Peng et al.,
   2019, which stops a good *state* from weighting every action taken in it) or u_t = R_t, standardised over
   the rollout when ``standardize=True`` so that β is in units of the score's spread;
4. weights w = :func:`~rlcore.objectives.rwr_weights` (u, β): exp(u/β) normalised over the whole rollout by a
   stable softmax (mean 1), fixed for the rollout;
5. ``update_epochs`` passes of minibatch weighted maximum likelihood,
   :func:`~rlcore.objectives.reward_weighted_loss` (log π(a|s), w) = −mean w · log π(a|s), and the critic's
   :func:`~rlcore.objectives.value_loss` toward R_t.

The fixed point of the exact update is π_new(a|s) ∝ π_old(a|s) exp(u/β): each rollout tilts the policy toward
higher scores, with β as the step size. A maximum-likelihood fit of a Gaussian to reweighted samples of
itself also shrinks its variance, so the policy's log-std has a floor (``min_log_std``) to keep exploring.
This trainer exists to show that the primitives compose into a second algorithm with a handful of lines; PPO
is the stronger learner on MuJoCo.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rlcore.algos.actor_critic_agent import ActorCriticAgent
from rlcore.envs.base import BatchedEnv
from rlcore.loops import EnvSource, OnPolicyConfig, Rollout, TrainResult, train_on_policy
from rlcore.objectives import discounted_returns, normalize_advantages, reward_weighted_loss, rwr_weights, value_loss


@dataclass
class RWRConfig(OnPolicyConfig):
    """RWR settings (the shared loop's settings are in `OnPolicyConfig`)."""

    beta: float = 1.0
    """Temperature of the weights exp(u/beta); in standard deviations of the score when standardize is on."""
    baseline: bool = True
    """Score steps by R_t - V(s_t) (advantage-weighted) instead of by the return R_t."""
    standardize: bool = True
    """Standardise the scores over the rollout before weighting (beta is then scale-free)."""
    learning_rate: float = 3e-4
    """Adam learning rate (of the policy and the critic)."""
    gamma: float = 0.99
    """Discount factor."""
    update_epochs: int = 10
    """Passes over each rollout."""
    num_minibatches: int = 32
    """Minibatches per pass (minibatch size = num_steps * num_envs / num_minibatches)."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layers of the policy and of the critic (separate networks, tanh)."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the policy."""
    min_log_std: float = -1.6
    """Floor of the policy's log standard deviation (weighted maximum likelihood shrinks it every rollout)."""
    normalize_obs: bool = True
    """Standardise observations with running statistics kept in the agent."""
    squash: bool = False
    """Sample tanh-squashed actions inside the action set's bounding box instead of leaving it to the env."""

    def validate(self) -> None:
        super().validate()
        if (self.num_steps * self.num_envs) % self.num_minibatches:
            raise ValueError(f"num_steps * num_envs = {self.num_steps * self.num_envs} must be divisible by "
                             f"num_minibatches = {self.num_minibatches}.")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}.")
        for name in ("beta", "learning_rate", "max_grad_norm", "update_epochs", "num_minibatches"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
        if self.min_log_std > self.init_log_std:
            raise ValueError(f"min_log_std ({self.min_log_std}) must not exceed init_log_std ({self.init_log_std}).")


class RWRAgent(ActorCriticAgent):
    """The actor-critic, its optimiser and the RWR update; acts by sampling the Gaussian."""

    name = "RWR"
    config: RWRConfig

    @torch.no_grad()
    def explore(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sample training actions, updating the observation statistics first (as PPO does)."""
        obs = obs.to(self.device)
        self.observe(obs)
        norm_obs = self.model.normalize(obs)
        return self.model.dist(norm_obs).sample(self.generator), {"norm_obs": norm_obs}

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def weights(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(weights, returns, metrics): the rollout's RWR weights and return-to-go targets, each ``[T, N]``."""
        c = self.config
        values = self.model.value(rollout.extras["norm_obs"])
        # V(final_obs) is only read where the episode was cut; termination and in-episode steps use the rewards.
        bootstrap = self.model.value(self.model.normalize(rollout.final_obs))
        returns = discounted_returns(rollout.rewards, rollout.terminated, rollout.truncated, c.gamma, bootstrap)
        scores = returns - values if c.baseline else returns
        if c.standardize:
            scores = normalize_advantages(scores)
        weights = rwr_weights(scores, c.beta)
        p = weights.flatten() / weights.numel()
        metrics = {"ess_fraction": 1.0 / (p**2).sum() / p.numel(), "max_weight": weights.max(),
                   "return_to_go_mean": returns.mean()}
        return weights, returns, metrics

    def update(self, rollout: Rollout, progress: float = 0.0) -> dict[str, torch.Tensor]:
        c = self.config
        weights, returns, out = self.weights(rollout)
        flat = {"norm_obs": rollout.extras["norm_obs"].flatten(0, 1), "actions": rollout.actions.flatten(0, 1),
                "weights": weights.flatten(), "returns": returns.flatten()}
        batch_size = flat["returns"].shape[0]
        minibatch_size = batch_size // c.num_minibatches
        history: dict[str, list[torch.Tensor]] = {}
        for _ in range(c.update_epochs):
            order = torch.randperm(batch_size, generator=self.generator, device=self.device)
            for start in range(0, batch_size, minibatch_size):
                mb = {k: v[order[start:start + minibatch_size]] for k, v in flat.items()}
                log_prob = self.model.dist(mb["norm_obs"]).log_prob(mb["actions"])  # any action dtype
                # The weights were normalised over the whole rollout; each minibatch is a weighted likelihood.
                pi_loss, _ = reward_weighted_loss(log_prob, mb["weights"])
                v_loss, _ = value_loss(self.model.value(mb["norm_obs"]), mb["returns"])
                loss = pi_loss + c.vf_coef * v_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
                self.optimizer.step()
                if not self.discrete:
                    with torch.no_grad():
                        self.model.actor_log_std.clamp_(min=c.min_log_std)
                self.updates += 1
                for key, value in (("policy_loss", pi_loss), ("value_loss", v_loss), ("grad_norm", grad_norm)):
                    history.setdefault(key, []).append(value.detach())
        out.update({key: torch.stack(values).mean() for key, values in history.items()})
        if not self.discrete:
            out["std"] = self.model.actor_log_std.detach().exp().mean()
        return out


def make_agent(config: RWRConfig, env: BatchedEnv) -> RWRAgent:
    """The untrained RWRAgent for ``env`` (a ValueError if RWR cannot use its spaces)."""
    return RWRAgent.for_env(config, env)


def train(config: RWRConfig | None = None, env: EnvSource | None = None,
          eval_env: EnvSource | None = None) -> TrainResult:
    """Train RWR; returns the agent, its run directory and the evaluation history.

    ``env`` / ``eval_env``: environments or factories ``seed -> BatchedEnv`` instead of ``config.env``."""
    return train_on_policy("rwr", config or RWRConfig(), make_agent, env, eval_env)
