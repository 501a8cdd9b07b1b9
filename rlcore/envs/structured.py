"""Observations that are a tensor or a dict of tensors with one leading batch dimension.

A structured observation is a plain ``dict[str, torch.Tensor]``, each value ``[N, ...]``: no dependency, no
per-operation overhead in the loops' hot paths, and ``tensordict.TensorDict(obs, batch_size=[N])`` converts it
for users who prefer TensorDict. These helpers apply one operation to every leaf, so storage, auto-reset and
checkpoints treat both kinds alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import torch

Observation: TypeAlias = "torch.Tensor | dict[str, torch.Tensor]"


def map_obs(fn: Callable[..., torch.Tensor], obs: Any, *others: Any) -> Any:
    """``fn`` on the tensor, or on every entry of a dict (with the same entry of each of ``others``)."""
    if isinstance(obs, dict):
        return {key: fn(value, *(other[key] for other in others)) for key, value in obs.items()}
    return fn(obs, *others)


def batch_size(obs: Any) -> int:
    """The leading dimension of an observation batch."""
    if isinstance(obs, dict):
        if not obs:
            raise ValueError("a dict observation needs at least one entry.")
        return int(next(iter(obs.values())).shape[0])
    return int(obs.shape[0])


def where_rows(rows: torch.Tensor, new: Any, old: Any) -> Any:
    """Per row: ``new`` where ``rows[N]`` is True, else ``old`` (the same-step auto-reset of dict observations)."""
    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(rows.reshape(-1, *([1] * (a.dim() - 1))), a, b)

    return map_obs(pick, new, old)


def index_obs(obs: Any, index: torch.Tensor | slice | int) -> Any:
    """Rows ``index`` of every entry."""
    return map_obs(lambda value: value[index], obs)


def obs_to(obs: Any, device: torch.device | str) -> Any:
    return map_obs(lambda value: value.to(device), obs)


def clone_obs(obs: Any) -> Any:
    return map_obs(torch.Tensor.clone, obs)


__all__ = ["Observation", "batch_size", "clone_obs", "index_obs", "map_obs", "obs_to", "where_rows"]
