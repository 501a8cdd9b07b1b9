"""SAC: soft actor-critic with automatic temperature (Haarnoja et al., 2018, "Soft Actor-Critic
Algorithms and Applications", arXiv 1812.05905).

Per update, on a replay batch ``(s, a, r, s', d)``:

1. ``a' ~ pi(.|s')``; ``y = r + gamma (1 - d) [min_j Q_target_j(s', a') - alpha log pi(a'|s')]``,
2. critic loss: ``sum_j mean (Q_j(s, a) - y)^2`` over the twin critics (stacked, evaluated at once),
3. actor loss: ``mean [alpha log pi(a~|s) - min_j Q_j(s, a~)]`` with ``a~ ~ pi(.|s)`` reparameterised,
4. temperature loss: ``-mean [log alpha (log pi(a~|s) + H_target)]`` with ``H_target = -dim(A)``,
5. Polyak update of the target critics (in place, ``lerp_``).

The actor is a tanh-squashed diagonal Gaussian (:class:`rlcore.distributions.DiagGaussian`) scaled to
the bounding box of the environment's action set; for a ball-shaped set the squashed action is then
projected onto the ball. Deliberate choices and deviations:

* Defaults follow Stable-Baselines3's SAC (one learning rate 3e-4 for critics, actor and temperature,
  batch 256, (256, 256) networks, tau 0.005, gamma 0.99, initial temperature 1, one update per
  environment step, the temperature loss on ``log alpha``), so that the two can be compared
  (``benchmarks/vmbpo_mujoco.py``). ``learning_starts`` defaults to 1,000 uniformly random steps rather
  than SB3-zoo's 10,000 for MuJoCo, because rlcore's default budget is 15k steps; pass 5,000 or 10,000
  for long MuJoCo runs.
* The log-std is squashed softly into ``[-5, 2]`` (CleanRL) instead of SB3's hard clip to ``[-20, 2]``.
* Log-probabilities are those of the action in the action set's box (the tanh-Gaussian's, minus the log of the
  box's half-widths), and the default entropy target is shifted by the same amount, so that it is SB3's
  ``-dim(A)`` for actions normalised to ``[-1, 1]``. (Until 2026-12 the target was ``-dim(A)`` in box units: on
  a box other than ``[-1, 1]^D`` the policy was held more random, or less, than SB3's; on Hopper-v5 limited to
  ``[-0.25, 0.25]^3`` by 4.2 nats, and 100k steps ended at a return of 226 instead of 842, seed 1.)
* For ball-shaped action sets the log-probability is that of the squashed action before the projection
  (the projection onto a ball has no density correction); for boxes it is exact.
* Time-limit truncation is not termination (``d`` is the environment's ``terminated``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import solvers
from rlcore.envs.base import BatchedEnv
from rlcore.envs.spaces import require_continuous_actions, require_flat_observations
from rlcore.loops import EnvSource, TrainConfig, TrainResult, TransitionBatch, train_off_policy
from rlcore.networks import SquashedGaussianActor, TwinQ
from rlcore.objectives import polyak_update, soft_q_targets, temperature_step


@dataclass
class SACConfig(TrainConfig):
    """SAC settings (the shared loop's settings are in `TrainConfig`)."""

    learning_starts: int = 1_000
    """Environment steps collected before the first update."""
    random_steps: int = 1_000
    """Environment steps with uniformly random actions from the action set at the start."""
    batch_size: int = 256
    """Transitions per gradient update."""
    buffer_size: int = 1_000_000
    """Replay capacity (FIFO)."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layers of the actor and of each critic."""
    learning_rate: float = 3e-4
    """Adam learning rate of the critics."""
    actor_learning_rate: float = 3e-4
    """Adam learning rate of the actor."""
    alpha_learning_rate: float = 3e-4
    """Adam learning rate of the temperature (log alpha)."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    initial_alpha: float = 1.0
    """Initial entropy temperature."""
    autotune_alpha: bool = True
    """Learn the temperature so that the policy entropy tracks target_entropy; otherwise keep initial_alpha."""
    target_entropy: float | None = None
    """Entropy target of the temperature loss, in the units of the actor's log-probabilities (None: minus the action
    dimension for actions normalised to [-1, 1], as SB3: ``SquashedGaussianActor.default_target_entropy``)."""

    def validate(self) -> None:
        super().validate()
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1:
            raise ValueError(f"need 0 < gamma <= 1 and 0 < tau <= 1, got gamma={self.gamma}, tau={self.tau}.")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}.")
        if not self.initial_alpha > 0:
            raise ValueError(f"initial_alpha must be > 0, got {self.initial_alpha}.")
        for name in ("learning_rate", "actor_learning_rate", "alpha_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")


class SACAgent:
    """Networks, optimisers and the update of SAC."""

    acting_state_keys = ("actor",)
    """The parts of :meth:`state_dict` that acting reads (what a distributed learner sends its rollout actors)."""

    def __init__(self, config: SACConfig, obs_dim: int, action_set: solvers.ActionSet,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.action_set = action_set.to(self.device)
        self.obs_dim, self.action_dim = obs_dim, action_set.dim
        self.actor = SquashedGaussianActor(obs_dim, self.action_set, config.hidden_sizes).to(self.device)
        self.critic = TwinQ(obs_dim, self.action_dim, config.hidden_sizes).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.learning_rate)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_learning_rate)
        self.log_alpha = nn.Parameter(torch.tensor(float(config.initial_alpha), device=self.device).log())
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_learning_rate)
        self.target_entropy = (self.actor.default_target_entropy() if config.target_entropy is None
                               else float(config.target_entropy))
        self.act_generator = torch.Generator(device=self.device).manual_seed(config.seed + 2)
        self.update_generator = torch.Generator(device=self.device).manual_seed(config.seed + 3)
        self.updates = 0

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, step: int = 0, deterministic: bool = False) -> torch.Tensor:
        obs = obs.to(self.device)
        if deterministic:
            return self.actor.mode(obs)
        return self.actor.sample(obs, self.act_generator)[0]

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        c = self.config
        alpha = self.alpha
        with torch.no_grad():
            next_actions, next_log_prob = self.actor.sample(batch.next_obs, self.update_generator)
            next_q = self.critic_target(batch.next_obs, next_actions)
            targets = soft_q_targets(batch.rewards, batch.terminated, next_q, next_log_prob, alpha, c.gamma)
        q = self.critic(batch.obs, batch.actions)
        critic_loss = (q - targets).pow(2).mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # The actor's gradient flows through the critics, but only the actor's optimiser steps here;
        # freezing the critics avoids computing their parameter gradients.
        self.critic.requires_grad_(False)
        actions, log_prob = self.actor.sample(batch.obs, self.update_generator)
        actor_loss = (alpha * log_prob - self.critic(batch.obs, actions).min(dim=0).values).mean()
        self.critic.requires_grad_(True)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()

        log_prob = log_prob.detach()
        if c.autotune_alpha:
            temperature_step(self.log_alpha, self.alpha_optimizer, log_prob, self.target_entropy)

        polyak_update(self.critic_target, self.critic, c.tau)
        self.updates += 1
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "q_mean": q.detach().mean(),
                "target_mean": targets.mean(), "alpha": alpha, "entropy": -log_prob.mean()}

    _MODULES = ("actor", "critic", "critic_target", "critic_optimizer", "actor_optimizer", "alpha_optimizer")

    def state_dict(self) -> dict[str, Any]:
        state = {name: getattr(self, name).state_dict() for name in self._MODULES}
        state.update(log_alpha=self.log_alpha.detach().clone(), updates=self.updates,
                     act_generator=self.act_generator.get_state(), update_generator=self.update_generator.get_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._MODULES:
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.updates = state["updates"]
        self.act_generator.set_state(state["act_generator"])
        self.update_generator.set_state(state["update_generator"])


def make_agent(config: SACConfig, env: BatchedEnv) -> SACAgent:
    """The untrained SACAgent for ``env`` (a ValueError if SAC cannot use its spaces)."""
    require_continuous_actions(env, "sac")
    require_flat_observations(env, "sac")
    return SACAgent(config, env.obs_dim, env.action_set, config.device)


def train(config: SACConfig | None = None, env: EnvSource | None = None,
          eval_env: EnvSource | None = None) -> TrainResult:
    """Train SAC; returns the agent, its run directory and the evaluation history.

    ``env`` / ``eval_env``: environments or factories ``seed -> BatchedEnv`` instead of ``config.env``."""
    return train_off_policy("sac", config or SACConfig(), make_agent, env, eval_env)
