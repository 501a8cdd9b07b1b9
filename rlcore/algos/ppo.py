"""PPO with a Gaussian policy over any BatchedEnv (Schulman et al., 2017), built from rlcore.objectives.

Per rollout of T = num_steps steps of N environments:

1. act with a ~ N(μ_θ(s), σ_θ²) on normalised observations; record log π_old(a|s);
2. V(s_t) and V(s'_t) by the critic, where s'_t is the true next observation (``final_obs`` at a time-limit
   cut), and GAE(γ, λ) advantages and returns, bootstrapping through truncation but not termination
   (:func:`~rlcore.objectives.gae`);
3. ``update_epochs`` passes over the rollout in ``num_minibatches`` shuffled minibatches, minimising

       L = clipped_pg_loss(log π, log π_old, Â, ε) + c_v · value_loss(V, R, V_old, ε_v) − c_H · H[π]

   with per-minibatch advantage normalisation, global-norm gradient clipping, and an optional early stop
   once the k3 estimate of KL(π_old ‖ π) exceeds ``target_kl``.

It follows CleanRL's ``ppo_continuous_action.py`` and Stable-Baselines3's defaults (Adam 3e-4, 2048 steps,
10 epochs, 32 minibatches, γ 0.99, λ 0.95, ε 0.2, state-independent log-std, orthogonal initialisation,
tanh networks). Deliberate differences:

* truncation is not termination: the value of ``final_obs`` is bootstrapped (SB3 does this since 2.x with an
  extra reward term; CleanRL treats truncation as termination);
* the observation normaliser is a module of the agent (saved with it, frozen at evaluation), not an
  environment wrapper; observations are normalised with statistics updated before each step;
* no reward normalisation (SB3's default, for a like-for-like comparison);
* actions are sampled unsquashed and the environment projects them onto its action set, as in SB3/CleanRL
  (``squash=True`` instead samples a tanh-squashed Gaussian inside the set's bounding box, whose log-probs
  then account for the squashing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rlcore.algos.actor_critic_agent import ActorCriticAgent
from rlcore.envs.base import BatchedEnv
from rlcore.loops import EnvSource, OnPolicyConfig, Rollout, TrainResult, train_on_policy
from rlcore.objectives import clipped_pg_loss, gae, normalize_advantages, value_loss


@dataclass
class PPOConfig(OnPolicyConfig):
    """PPO settings (the shared loop's settings are in `OnPolicyConfig`)."""

    learning_rate: float = 3e-4
    """Adam learning rate (of the policy and the critic)."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to 0 over total_steps."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    update_epochs: int = 10
    """Passes over each rollout."""
    num_minibatches: int = 32
    """Minibatches per pass (minibatch size = num_steps * num_envs / num_minibatches)."""
    clip_coef: float = 0.2
    """Clipping epsilon of the probability ratio."""
    clip_vloss: bool = False
    """Clip the value update to clip_coef around the values at collection time (SB3: off, CleanRL: on)."""
    norm_adv: bool = True
    """Standardise advantages within each minibatch."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    target_kl: float | None = None
    """Stop the epochs of a rollout once the approximate KL(pi_old || pi) exceeds this (None: never)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layers of the policy and of the critic (separate networks, tanh)."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the policy."""
    normalize_obs: bool = True
    """Standardise observations with running statistics kept in the agent."""
    squash: bool = False
    """Sample tanh-squashed actions inside the action set's bounding box instead of leaving it to the env."""

    def validate(self) -> None:
        super().validate()
        if (self.num_steps * self.num_envs) % self.num_minibatches:
            raise ValueError(f"num_steps * num_envs = {self.num_steps * self.num_envs} must be divisible by "
                             f"num_minibatches = {self.num_minibatches}.")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= gae_lambda <= 1, got {self.gamma}, {self.gae_lambda}.")
        for name in ("learning_rate", "clip_coef", "max_grad_norm", "update_epochs", "num_minibatches"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}.")


class PPOAgent(ActorCriticAgent):
    """The actor-critic, its optimiser and PPO's update; acts by sampling the Gaussian."""

    name = "PPO"
    config: PPOConfig

    @torch.no_grad()
    def explore(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sample training actions; update the observation statistics first (they then stay fixed in the
        stored ``norm_obs``, so the update sees exactly what the policy acted on)."""
        obs = obs.to(self.device)
        self.observe(obs)
        norm_obs = self.model.normalize(obs)
        actions, log_prob = self.model.dist(norm_obs).sample_and_log_prob(self.generator)
        return actions, {"norm_obs": norm_obs, "log_prob": log_prob}

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values, advantages, returns), each ``[T, N]``, by GAE over the rollout."""
        c = self.config
        norm_obs = rollout.extras["norm_obs"]
        values = self.model.value(norm_obs)
        # V(s'_t): inside an episode s'_t = s_{t+1}, whose value (on the observation as it was normalised when
        # acted on) is values[t+1]; at episode ends and at the rollout's last step it is V(final_obs).
        next_values = self.model.value(self.model.normalize(rollout.final_obs))
        continues = ~(rollout.terminated | rollout.truncated)
        next_values[:-1] = torch.where(continues[:-1], values[1:], next_values[:-1])
        advantages, returns = gae(rollout.rewards, values, next_values, rollout.terminated, rollout.truncated,
                                  c.gamma, c.gae_lambda)
        return values, advantages, returns

    def update(self, rollout: Rollout, progress: float = 0.0) -> dict[str, torch.Tensor]:
        c = self.config
        if c.anneal_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = c.learning_rate * (1.0 - progress)
        values, advantages, returns = self.advantages(rollout)
        # One [B, F] tensor of every per-sample input, so that a minibatch is one gather, not six.
        norm_obs, actions = rollout.extras["norm_obs"].flatten(0, 1), self.action_columns(rollout.actions.flatten(0, 1))
        columns = (norm_obs, actions, rollout.extras["log_prob"].reshape(-1, 1), advantages.reshape(-1, 1),
                   returns.reshape(-1, 1), values.reshape(-1, 1))
        flat = torch.cat(columns, dim=1)
        widths = [column.shape[1] for column in columns]
        batch_size = flat.shape[0]
        minibatch_size = batch_size // c.num_minibatches
        metrics: dict[str, list[torch.Tensor]] = {}
        stop = False
        for _ in range(c.update_epochs):
            order = torch.randperm(batch_size, generator=self.generator, device=self.device)
            for start in range(0, batch_size, minibatch_size):
                mb_obs, mb_actions, mb_log_prob, mb_adv, mb_returns, mb_values = (
                    flat[order[start:start + minibatch_size]].split(widths, dim=1))
                dist = self.model.dist(mb_obs)
                log_prob = dist.log_prob(self.actions_from_columns(mb_actions))
                adv = normalize_advantages(mb_adv[:, 0]) if c.norm_adv else mb_adv[:, 0]
                pg_loss, pg_metrics = clipped_pg_loss(log_prob, mb_log_prob[:, 0], adv, c.clip_coef)
                v_loss, v_metrics = value_loss(self.model.value(mb_obs), mb_returns[:, 0],
                                               mb_values[:, 0] if c.clip_vloss else None,
                                               c.clip_coef if c.clip_vloss else None)
                # A squashed Gaussian has no closed-form entropy: use the one-sample estimate −log π(a).
                entropy = (-log_prob).mean() if c.squash else dist.entropy().mean()
                loss = pg_loss + c.vf_coef * v_loss - c.ent_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
                self.optimizer.step()
                self.updates += 1
                step_metrics = {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(),
                                "entropy": entropy.detach(), "grad_norm": grad_norm.detach(), **pg_metrics}
                if "clip_fraction" in v_metrics:
                    step_metrics["value_clip_fraction"] = v_metrics["clip_fraction"]
                for key, value in step_metrics.items():
                    metrics.setdefault(key, []).append(value)
                # One host sync per minibatch, and only when early stopping is asked for.
                if c.target_kl is not None and pg_metrics["approx_kl"].item() > c.target_kl:
                    stop = True
                    break
            if stop:
                break
        out = {key: torch.stack(history).mean() for key, history in metrics.items()}
        out["explained_variance"] = value_loss(values.flatten(), returns.flatten())[1]["explained_variance"]
        if not self.discrete:
            out["std"] = self.model.actor_log_std.detach().exp().mean()
        out["learning_rate"] = torch.tensor(self.optimizer.param_groups[0]["lr"])
        return out


def make_agent(config: PPOConfig, env: BatchedEnv) -> PPOAgent:
    """The untrained PPOAgent for ``env`` (a ValueError if PPO cannot use its spaces)."""
    return PPOAgent.for_env(config, env)


def train(config: PPOConfig | None = None, env: EnvSource | None = None,
          eval_env: EnvSource | None = None) -> TrainResult:
    """Train PPO; returns the agent, its run directory and the evaluation history.

    ``env`` / ``eval_env``: environments or factories ``seed -> BatchedEnv`` instead of ``config.env``."""
    return train_on_policy("ppo", config or PPOConfig(), make_agent, env, eval_env)
