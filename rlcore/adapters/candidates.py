"""What the adapters whose action is a pick among candidates share: PPO over candidates and the Q settings.

The dialogue manager picks one of the turn's candidate utterances (one masked categorical); the slate agent
picks ``m`` items one after another (a Plackett-Luce policy over ordered slates). Everything else about their
PPO is the same, and lives here:

* :class:`CandidatePPOSettings`: the settings of PPO over candidates (the shared on-policy loop's are in
  :class:`~rlcore.loops.OnPolicyConfig`); each adapter's config adds its task and its own defaults;
* :class:`CandidatePPOAgent`: the policy and critic, the optimiser, and PPO's update:
  :func:`~rlcore.objectives.gae` advantages (values 0 at the last turn when ``horizon_aware``: the turn limit
  is part of the task and the turn is observed), :func:`~rlcore.objectives.clipped_pg_loss`,
  :func:`~rlcore.objectives.value_loss` and an entropy bonus, in shuffled minibatches with gradient-norm
  clipping. A subclass says how its policy scores the actions it took
  (:meth:`CandidatePPOAgent.log_prob_and_entropy`), how it samples and acts, and which environments it serves;
* :class:`CandidateQSettings`: the settings of the value-based agents over candidates (SlateQ, the Q manager)
  with their ε-greedy schedule (:func:`linear_epsilon`), on the shared off-policy loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlcore.envs.structured import map_obs
from rlcore.loops import OnPolicyConfig, Rollout, TrainConfig
from rlcore.objectives import clipped_pg_loss, gae, normalize_advantages, value_loss


def check_hidden_sizes(hidden_sizes: tuple[int, ...]) -> None:
    if not hidden_sizes or min(hidden_sizes) < 1:
        raise ValueError(f"hidden_sizes must be positive, got {hidden_sizes}.")


@dataclass
class CandidatePPOSettings(OnPolicyConfig):
    """PPO over candidates (the shared on-policy loop's settings are in `OnPolicyConfig`)."""

    num_envs: int = 64
    """Episodes (users, conversations) in parallel."""
    total_steps: int = 50_000
    """Turns to train for (summed over parallel episodes)."""
    num_steps: int = 16
    """Turns per parallel episode in each rollout."""
    eval_interval: int = 10_000
    """Evaluate every this many turns (and at the end), at a rollout boundary."""
    eval_episodes: int = 500
    """Users per evaluation (deterministic actions, held-out users)."""
    checkpoint_interval: int = 25_000
    """Checkpoint every this many turns (and at the end), at a rollout boundary."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    gamma: float = 0.9
    """Discount factor per turn."""
    gae_lambda: float = 0.9
    """GAE lambda."""
    update_epochs: int = 4
    """Passes over each rollout."""
    num_minibatches: int = 8
    """Minibatches per pass."""
    clip_coef: float = 0.2
    """Clipping epsilon of the probability ratio."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    hidden_sizes: tuple[int, ...] = (64, 32)
    """Hidden layers of the pair network's towers and of the critic."""
    horizon_aware: bool = True
    """Value 0 at the last turn (the episode length is part of the task)."""

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
        check_hidden_sizes(self.hidden_sizes)


class CandidatePPOAgent:
    """A policy over candidates, its critic, the optimiser and PPO's update (see the module docstring).

    Subclasses build ``policy`` and ``critic`` (a module reading the observation dict, ``[N]`` values) and pass
    them here, and implement :meth:`log_prob_and_entropy`, ``explore``, ``act`` and ``prepare``.
    """

    name = "PPO over candidates"

    def __init__(self, config: CandidatePPOSettings, policy: nn.Module, critic: nn.Module,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.policy, self.critic = policy.to(self.device), critic.to(self.device)
        self.params = [*self.policy.parameters(), *self.critic.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=config.learning_rate, eps=1e-5)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 2)
        self.updates = 0

    def log_prob_and_entropy(self, obs: dict[str, torch.Tensor],
                             actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log π(actions | obs) [N], entropy [N])`` under the current policy, with gradients."""
        raise NotImplementedError

    def value(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        v = self.critic(obs)
        return v * (obs["turn"][:, 0] < 1.0) if self.config.horizon_aware else v

    def __call__(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.act(obs, deterministic=True)

    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def update(self, rollout: Rollout, progress: float = 0.0) -> dict[str, torch.Tensor]:
        c = self.config
        flat = map_obs(lambda x: x.flatten(0, 1), rollout.obs)
        steps, n = rollout.rewards.shape
        with torch.no_grad():
            values = self.value(flat).reshape(steps, n)
            next_values = self.value(map_obs(lambda x: x.flatten(0, 1), rollout.final_obs)).reshape(steps, n)
            advantages, returns = gae(rollout.rewards, values, next_values, rollout.terminated, rollout.truncated,
                                      c.gamma, c.gae_lambda)
        actions, old_log_prob = rollout.actions.flatten(0, 1), rollout.extras["log_prob"].flatten()
        advantages, returns = advantages.flatten(), returns.flatten()
        batch = advantages.shape[0]
        size = batch // c.num_minibatches
        metrics: dict[str, list[torch.Tensor]] = {}
        for _ in range(c.update_epochs):
            order = torch.randperm(batch, generator=self.generator, device=self.device)
            for start in range(0, batch, size):
                idx = order[start:start + size]
                mb = map_obs(lambda x, i=idx: x[i], flat)
                log_prob, entropy = self.log_prob_and_entropy(mb, actions[idx])
                pg_loss, pg_metrics = clipped_pg_loss(log_prob, old_log_prob[idx], normalize_advantages(
                    advantages[idx]), c.clip_coef)
                v_loss, _ = value_loss(self.value(mb), returns[idx])
                loss = pg_loss + c.vf_coef * v_loss - c.ent_coef * entropy.mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
                self.optimizer.step()
                self.updates += 1
                for key, value in {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(),
                                   "entropy": entropy.detach().mean(), "grad_norm": grad_norm.detach(),
                                   **pg_metrics}.items():
                    metrics.setdefault(key, []).append(value)
        return {key: torch.stack(history).mean() for key, history in metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "critic": self.critic.state_dict(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in ("policy", "critic", "optimizer", "generator", "updates") if k not in state]
        if missing:
            raise ValueError(f"{self.name} state is missing {', '.join(missing)}.")
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.updates = state["updates"]


def linear_epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    """ε of an ε-greedy policy after ``step`` steps: ``start`` to ``end`` linearly over ``decay_steps``, then
    ``end`` (a count of steps, so that a run resumed with a longer budget explores as an uninterrupted one)."""
    return start + min(step / decay_steps, 1.0) * (end - start)


@dataclass
class CandidateQSettings(TrainConfig):
    """Value-based agents over candidates (the shared off-policy loop's settings are in
    `TrainConfig`)."""

    num_envs: int = 64
    """Episodes (users, conversations) in parallel."""
    total_steps: int = 50_000
    """Turns to train for (summed over parallel episodes)."""
    eval_interval: int = 10_000
    """Evaluate every this many turns (and at the end)."""
    eval_episodes: int = 500
    """Users per evaluation (deterministic actions, held-out users)."""
    checkpoint_interval: int = 25_000
    """Checkpoint every this many turns (and at the end)."""
    learning_starts: int = 2_000
    """Turns collected before the first update."""
    batch_size: int = 128
    """Transitions per gradient update."""
    buffer_size: int = 50_000
    """Replay capacity."""
    updates_per_step: float = 0.125
    """Gradient updates per turn."""
    log_interval: int = 5_000
    """Write training scalars every this many turns."""
    gamma: float = 0.9
    """Discount factor per turn."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    hidden_sizes: tuple[int, ...] = (64, 32)
    """Hidden layers of the state and candidate towers (the last one is the width of the pair layer)."""
    tau: float = 0.01
    """Polyak weight of the target networks per update."""
    epsilon_start: float = 1.0
    """Share of random actions at the start."""
    epsilon_end: float = 0.05
    """Share of random actions after the decay."""
    epsilon_decay_steps: int = 15_000
    """Turns over which epsilon decays linearly (see `linear_epsilon`)."""
    horizon_aware: bool = True
    """Value 0 at the last turn (the episode length is part of the task)."""

    def validate(self) -> None:
        super().validate()
        if self.random_steps:
            raise ValueError(f"random_steps = {self.random_steps}: this agent explores through epsilon_start / "
                             "epsilon_decay_steps; leave random_steps at 0.")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}.")
        if not 0 < self.tau <= 1 or not self.learning_rate > 0:
            raise ValueError(f"need 0 < tau <= 1 and learning_rate > 0, got {self.tau} and {self.learning_rate}.")
        if not 0 <= self.epsilon_end <= 1 or not 0 <= self.epsilon_start <= 1 or self.epsilon_decay_steps < 1:
            raise ValueError("epsilon_start and epsilon_end must be in [0, 1] and epsilon_decay_steps >= 1.")
        check_hidden_sizes(self.hidden_sizes)

    def epsilon(self, step: int) -> float:
        """ε after ``step`` turns (:func:`linear_epsilon` of this config's schedule)."""
        return linear_epsilon(step, self.epsilon_start, self.epsilon_end, self.epsilon_decay_steps)


__all__ = ["CandidatePPOAgent", "CandidatePPOSettings", "CandidateQSettings", "check_hidden_sizes",
           "linear_epsilon"]
