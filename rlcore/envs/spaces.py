"""The action and observation specs of the :class:`~rlcore.envs.base.BatchedEnv` contract.

Specs are gymnasium spaces, so every gymnasium user already knows them, plus one that gymnasium lacks:

==========================  ===============================  ===========================================
``action_space``            action batch                     ``action_dim`` (width of a policy head)
==========================  ===============================  ===========================================
``gym.spaces.Box`` shape S  ``[N, *S]`` float32              ``prod(S)``
``gym.spaces.Discrete(n)``  ``[N]`` int64 in ``[0, n)``      ``n``
:class:`CandidateSet`       ``[N]`` int64, a valid index     ``max_candidates``
==========================  ===============================  ===========================================

A **candidate set** is an action set that changes every step: the observation (a dict) carries a padded
``[N, K_max, D]`` tensor of candidate embeddings under ``candidates_key`` and a ``[N, K_max]`` bool mask of
the candidates on offer under ``mask_key``; the action picks one candidate per row by index.

Observations are a ``gym.spaces.Box`` (a ``[N, *shape]`` float32 tensor) or a ``gym.spaces.Dict`` of
Boxes (a plain ``dict`` of such tensors with one batch dimension); :mod:`rlcore.envs.structured` maps
functions over either.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch


class CandidateSet(gym.spaces.Space):
    """Pick one of up to ``max_candidates`` candidates offered in the observation (see the module docstring).

    Args:
        max_candidates: ``K_max``, the padded number of candidate slots.
        embedding_dim: ``D``, the size of one candidate's embedding.
        candidates_key: observation key of the ``[N, K_max, D]`` candidate embeddings.
        mask_key: observation key of the ``[N, K_max]`` bool mask (True where a candidate is on offer).
    """

    def __init__(self, max_candidates: int, embedding_dim: int, candidates_key: str = "candidates",
                 mask_key: str = "candidate_mask") -> None:
        if max_candidates < 1 or embedding_dim < 1:
            raise ValueError(f"CandidateSet needs max_candidates >= 1 and embedding_dim >= 1, got "
                             f"{max_candidates} and {embedding_dim}.")
        super().__init__(shape=(), dtype=np.int64)
        self.max_candidates, self.embedding_dim = int(max_candidates), int(embedding_dim)
        self.candidates_key, self.mask_key = candidates_key, mask_key

    def sample(self, mask: Any = None, probability: Any = None) -> np.int64:
        """A uniformly random slot index (gymnasium's API; batched envs use :func:`sample_actions`)."""
        return np.int64(self.np_random.integers(self.max_candidates))

    def contains(self, x: Any) -> bool:
        return np.ndim(x) == 0 and 0 <= int(x) < self.max_candidates

    def __repr__(self) -> str:
        return (f"CandidateSet(max_candidates={self.max_candidates}, embedding_dim={self.embedding_dim}, "
                f"candidates_key={self.candidates_key!r}, mask_key={self.mask_key!r})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CandidateSet) and (
            other.max_candidates, other.embedding_dim, other.candidates_key, other.mask_key) == (
            self.max_candidates, self.embedding_dim, self.candidates_key, self.mask_key)

    __hash__ = None  # type: ignore[assignment]  # mutable like every gymnasium space


ACTION_SPACES = "gym.spaces.Box, gym.spaces.Discrete or rlcore.envs.CandidateSet"


def is_continuous(space: gym.Space) -> bool:
    """Whether actions are real vectors (a Box): what CAQL, SAC and VMBPO need."""
    return isinstance(space, gym.spaces.Box)


def is_discrete(space: gym.Space) -> bool:
    """Whether actions are indices (Discrete or CandidateSet): what the categorical heads produce."""
    return isinstance(space, (gym.spaces.Discrete, CandidateSet))


def action_dim(space: gym.Space) -> int:
    """The width of a policy head for ``space``: ``prod(shape)`` of a Box, ``n`` of a Discrete, ``K_max`` of a
    candidate set."""
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, CandidateSet):
        return space.max_candidates
    raise ValueError(f"unsupported action space {space!r}; the BatchedEnv contract takes {ACTION_SPACES}.")


def obs_dim(space: gym.Space) -> int:
    """The flat size of one observation: ``prod(shape)`` of a Box, the sum over the entries of a Dict."""
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Dict):
        return sum(obs_dim(sub) for sub in space.spaces.values())
    raise ValueError(f"unsupported observation space {space!r}; the BatchedEnv contract takes a gym.spaces.Box "
                     "or a gym.spaces.Dict of Boxes.")


def require_continuous_actions(env: Any, algo: str) -> None:
    """Raise the ``ValueError`` that algorithms over real-valued actions give for any other action space."""
    space = env.action_space
    if not is_continuous(space):
        name = getattr(env, "env_id", type(env).__name__)
        raise ValueError(f"{name} has a {type(space).__name__} action space; {algo} needs a continuous Box action "
                         "space (ppo and rwr take Discrete actions too).")


def require_flat_observations(env: Any, algo: str) -> None:
    """Raise a ``ValueError`` unless observations are one Box (the MLP algorithms' input)."""
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box):
        name = getattr(env, "env_id", type(env).__name__)
        raise ValueError(f"{name} has a {type(space).__name__} observation space; {algo} needs a Box observation "
                         "(flatten a dict observation into one tensor, or use an adapter's policy that reads it).")


def check_actions(actions: Any, space: gym.Space, num_envs: int, obs: Any = None) -> None:
    """Raise a ``ValueError`` naming the problem for an action batch that does not fit ``space``.

    Box: shape ``[N, *shape]``, floating point, finite. Discrete: shape ``[N]``, integer, in ``[0, n)``.
    CandidateSet: shape ``[N]``, integer, and ``obs[mask_key][row, action]`` True on every row (``obs`` is the
    observation the actions answer).
    """
    if isinstance(space, gym.spaces.Box):
        shape = (num_envs, *space.shape)
        if not isinstance(actions, torch.Tensor):
            raise ValueError(f"actions must be a torch.Tensor of shape {list(shape)}, got {type(actions).__name__}.")
        if tuple(actions.shape) != shape:
            raise ValueError(f"actions must have shape [num_envs, *action_shape] = {list(shape)}, "
                             f"got {list(actions.shape)}.")
        if not actions.is_floating_point():
            raise ValueError(f"actions must be a floating-point tensor, got dtype {actions.dtype}.")
        if not torch.isfinite(actions).all():
            bad = (~torch.isfinite(actions)).reshape(num_envs, -1).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(f"actions contain NaN or infinite values (rows {bad}).")
        return
    if not is_discrete(space):
        raise ValueError(f"unsupported action space {space!r}; the BatchedEnv contract takes {ACTION_SPACES}.")
    high = action_dim(space)
    if not isinstance(actions, torch.Tensor) or tuple(actions.shape) != (num_envs,):
        got = list(actions.shape) if isinstance(actions, torch.Tensor) else type(actions).__name__
        raise ValueError(f"actions must be a [num_envs] = [{num_envs}] tensor of indices, got {got}.")
    if actions.is_floating_point() or actions.dtype == torch.bool or actions.is_complex():
        raise ValueError(f"actions must be integer indices (torch.long), got dtype {actions.dtype}; "
                         "use actions.long() on the argmax or sample.")
    out_of_range = (actions < 0) | (actions >= high)
    if out_of_range.any():
        rows = out_of_range.nonzero().flatten().tolist()
        raise ValueError(f"actions must be in [0, {high}); rows {rows} hold {actions[out_of_range].tolist()}.")
    if isinstance(space, CandidateSet):
        if not isinstance(obs, dict) or space.mask_key not in obs:
            raise ValueError(f"a CandidateSet action needs the observation's {space.mask_key!r} mask to check it.")
        offered = obs[space.mask_key].gather(1, actions.long().unsqueeze(1)).squeeze(1)
        if not offered.all():
            rows = (~offered).nonzero().flatten().tolist()
            raise ValueError(f"actions on rows {rows} point at candidate slots that are not on offer (mask False); "
                             "sample from the masked candidates only (rlcore.networks.MaskedCategorical does).")


def sample_actions(space: gym.Space, num_envs: int, generator: torch.Generator, obs: Any = None,
                   action_set: Any = None) -> torch.Tensor:
    """Uniformly random valid actions for ``num_envs`` rows, on ``generator``'s device."""
    device = generator.device
    if isinstance(space, gym.spaces.Box):
        if action_set is None:
            raise ValueError("sampling Box actions needs the env's action_set.")
        return action_set.sample(num_envs, generator)
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(0, int(space.n), (num_envs,), generator=generator, device=device)
    if isinstance(space, CandidateSet):
        weights = obs[space.mask_key].to(torch.float32)
        return torch.multinomial(weights, 1, generator=generator).squeeze(1)
    raise ValueError(f"unsupported action space {space!r}; the BatchedEnv contract takes {ACTION_SPACES}.")


__all__ = ["ACTION_SPACES", "CandidateSet", "action_dim", "check_actions", "is_continuous", "is_discrete",
           "obs_dim", "require_continuous_actions", "require_flat_observations", "sample_actions"]
