"""Dialogue managers that do not learn: a uniform choice, the one-step greedy oracle, and each fixed expert.

Every dialogue policy (these and the trained managers) has the interface :func:`rlcore.adapters.dialogue.evaluate`
uses: ``env_config`` (the task it belongs to, or None for any), ``prepare(env, seed)`` (bind to an environment
before an evaluation) and ``act(obs, step=0, deterministic=False) -> [N]`` candidate indices.
"""

from __future__ import annotations

from typing import Any

import torch

from rlcore.adapters.common import BoundPolicy
from rlcore.adapters.dialogue.env import DialogueEnv
from rlcore.adapters.dialogue.experts import intent_index
from rlcore.adapters.dialogue.language import INTENTS


class _Baseline(BoundPolicy):
    env_type = DialogueEnv
    env_config = None


class Uniform(_Baseline):
    """A uniformly random candidate among those on offer (its own generator, seeded by ``prepare``)."""

    name = "uniform"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)

    def prepare(self, env: DialogueEnv, seed: int = 0) -> None:
        super().prepare(env, seed)
        self.generator = torch.Generator(device=env.device).manual_seed(int(seed) + 17)

    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        return torch.multinomial(obs["candidate_mask"].float(), 1, generator=self.generator).squeeze(1)


class GreedyOracle(_Baseline):
    """The candidate with the best expected *immediate* reward, computed by the simulator from the user's latent
    state (``env.expected_rewards()``): it knows more than any manager and ignores only the future, so the gap
    to a planning manager is the value of planning."""

    name = "greedy oracle"

    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        env = self._env()
        if not torch.equal(obs["candidate_mask"].to(env.device), env._mask):
            raise ValueError("GreedyOracle reads the environment's current users: call it on the observation the "
                             "environment returned last.")
        return env.expected_rewards().argmax(1)


class FixedExpert(_Baseline):
    """Always the candidate of one expert (by its name, or an intent's name); where that expert abstains, the first
    candidate on offer.

    Args:
        expert: an expert's name in the environment (for the shipped families, an intent: ask, recommend,
            empathise, change_topic, stay_on_topic).
    """

    def __init__(self, expert: str) -> None:
        super().__init__()
        if not isinstance(expert, str):
            raise ValueError(f"expert must be an expert's name, got {expert!r}.")
        if expert in INTENTS:
            intent_index(expert)
        self.expert = expert
        self.name = f"fixed {expert}"

    def prepare(self, env: DialogueEnv, seed: int = 0) -> None:
        super().prepare(env, seed)
        if self.expert not in env.expert_names:
            raise ValueError(f"no expert named {self.expert!r} in this environment; its experts are "
                             f"{', '.join(env.expert_names)}.")
        self.slot = env.expert_names.index(self.expert)

    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        self._env()
        mask = obs["candidate_mask"]
        return torch.where(mask[:, self.slot], self.slot, mask.float().argmax(1))


def describe(policy: Any) -> str:
    return getattr(policy, "name", type(policy).__name__)


__all__ = ["FixedExpert", "GreedyOracle", "Uniform", "describe"]
