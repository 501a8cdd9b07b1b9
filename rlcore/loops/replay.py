"""A FIFO replay buffer of torch tensors that lives on the training device.

Observations may be tensors or dicts of tensors (:mod:`rlcore.envs.structured`), actions of any shape and
dtype (real vectors, or indices); the storage of each field is allocated on the first :meth:`ReplayBuffer.add`
(or :meth:`~ReplayBuffer.load_state_dict`) with the shape and dtype it receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlcore.envs.structured import batch_size, map_obs


@dataclass
class TransitionBatch:
    """A batch of transitions; ``next_obs`` is the true next observation (``final_obs`` at episode ends)."""

    obs: Any
    """``[B, ...]`` tensor, or a dict of them."""
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: Any
    terminated: torch.Tensor
    """1.0 where the next state is terminal (no bootstrap), 0.0 otherwise (including time-limit cuts)."""


_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")


class ReplayBuffer:
    """Fixed-capacity circular storage; ``add`` takes a whole batch of environment steps at once."""

    def __init__(self, capacity: int, device: str | torch.device = "cpu", seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}.")
        self.capacity = capacity
        self.device = torch.device(device)
        self.storage: dict[str, Any] | None = None
        self.position = 0
        self.size = 0
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def _allocate(self, example: dict[str, Any]) -> None:
        def empty(value: torch.Tensor) -> torch.Tensor:
            return torch.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.device)

        self.storage = {name: map_obs(empty, value) for name, value in example.items()}

    def add(self, obs: Any, actions: torch.Tensor, rewards: torch.Tensor, next_obs: Any,
            terminated: torch.Tensor) -> None:
        """Store ``N`` transitions (leading dimension ``N`` on every argument)."""
        values = {"obs": obs, "actions": actions, "rewards": rewards.to(torch.float32), "next_obs": next_obs,
                  "terminated": terminated.to(torch.float32)}
        if self.storage is None:
            self._allocate(values)
        n = batch_size(obs)
        index = (self.position + torch.arange(n, device=self.device)) % self.capacity

        for name in _FIELDS:
            store, value = self.storage[name], values[name]
            if isinstance(store, dict):
                for key, sub in store.items():
                    sub[index] = value[key].to(self.device).reshape(n, *sub.shape[1:])
            else:
                store[index] = value.to(self.device).reshape(n, *store.shape[1:])
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> TransitionBatch:
        """``batch_size`` transitions drawn uniformly (with replacement)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer.")
        index = torch.randint(0, self.size, (batch_size,), device=self.device, generator=self.generator)
        return TransitionBatch(*(map_obs(lambda store: store[index], self.storage[name]) for name in _FIELDS))

    def __getattr__(self, name: str) -> Any:
        # Direct access to a field's whole storage (``buffer.obs[:n]``), as before the storage became lazy.
        storage = self.__dict__.get("storage")
        if name in _FIELDS and storage is not None:
            return storage[name]
        raise AttributeError(name)

    def state_dict(self) -> dict[str, Any]:
        n = self.size
        fields = {} if self.storage is None else {
            name: map_obs(lambda store: store[:n].clone(), self.storage[name]) for name in _FIELDS}
        return {**fields, "position": self.position, "size": n, "capacity": self.capacity,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"replay state has capacity {state['capacity']}, this buffer {self.capacity}.")
        n = state["size"]
        if n > 0:
            if self.storage is None:
                self._allocate({name: state[name] for name in _FIELDS})

            def read(store: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
                store[:n] = value.to(self.device)
                return store

            for name in _FIELDS:
                map_obs(read, self.storage[name], state[name])
        self.position, self.size = state["position"], n
        self.generator.set_state(state["generator"])
