"""What the on-policy agents (PPO, RWR) share: an actor-critic for the env's action space, its optimiser, the
sampling generator, acting and the checkpoint state. Subclasses add ``explore`` and ``update``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from rlcore.envs import spaces
from rlcore.envs.base import BatchedEnv
from rlcore.networks import CategoricalActorCritic, GaussianActorCritic
from solvers import ActionSet


class ActorCriticAgent:
    """An on-policy agent over a Gaussian head (Box actions, ``action_set``) or a categorical one (Discrete)."""

    name = "on-policy"

    acting_state_keys = ("model",)
    """The parts of :meth:`state_dict` that acting reads (what a distributed learner sends its rollout actors)."""

    def __init__(self, config: Any, obs_dim: int, action_set: ActionSet | None,
                 device: str | torch.device = "cpu", action_space: gym.Space | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self.discrete = action_space is not None and spaces.is_discrete(action_space)
        if self.discrete:
            if isinstance(action_space, spaces.CandidateSet):
                raise ValueError(f"{self.name} takes Box and Discrete action spaces; a candidate set needs a policy "
                                 "that scores (state, candidate) pairs (see rlcore.adapters).")
            self.action_set = None
            self.model = CategoricalActorCritic(obs_dim, spaces.action_dim(action_space), config.hidden_sizes,
                                                config.normalize_obs).to(self.device)
        else:
            if action_set is None:
                raise ValueError(f"{self.name} needs the env's action_set for a Box action space.")
            self.action_set = action_set.to(self.device)
            self.model = GaussianActorCritic(obs_dim, self.action_set, config.hidden_sizes, config.init_log_std,
                                             config.normalize_obs, config.squash).to(self.device)
        self.params = list(self.model.parameters())
        # The fused Adam kernel is the same update in one call for all parameters; the default on the CPU
        # (a loop of ~10 small ops per parameter tensor) costs 4x as much with these small networks.
        self.optimizer = torch.optim.Adam(self.params, lr=config.learning_rate, eps=1e-5,
                                          fused=self.device.type in ("cpu", "cuda"))
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 2)
        self.updates = 0

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def observe(self, obs: torch.Tensor) -> None:
        """Update the running observation statistics with ``obs`` ``[N, obs_dim]``. ``explore`` calls it for the
        observations it acts on; a distributed learner calls it for those its rollout actors acted on."""
        if self.model.normalizer is not None:
            self.model.normalizer.update(obs.to(self.device))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, step: int = 0, deterministic: bool = False) -> torch.Tensor:
        dist = self.model.dist(self.model.normalize(obs.to(self.device)))
        return dist.mode if deterministic else dist.sample(self.generator)

    def action_columns(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions ``[B, ...]`` as float columns ``[B, w]``, to travel in one minibatch tensor with the rest."""
        return actions.reshape(actions.shape[0], -1).to(torch.float32)

    def actions_from_columns(self, columns: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`action_columns` (indices are exact in float32 far beyond any action count)."""
        return columns[:, 0].long() if self.discrete else columns

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in ("model", "optimizer", "generator", "updates") if k not in state]
        if missing:
            raise ValueError(f"{self.name} agent state is missing {', '.join(missing)}.")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.updates = state["updates"]

    @classmethod
    def for_env(cls, config: Any, env: BatchedEnv) -> ActorCriticAgent:
        """The agent for ``env``'s observation size and action space, on ``config.device``."""
        spaces.require_flat_observations(env, cls.name)
        return cls(config, env.obs_dim, env.action_set, config.device, env.action_space)
