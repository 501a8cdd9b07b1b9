"""A FIFO replay buffer of torch tensors that lives on the training device."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TransitionBatch:
    """A batch of transitions; ``next_obs`` is the true next observation (``final_obs`` at episode ends)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    """1.0 where the next state is terminal (no bootstrap), 0.0 otherwise (including time-limit cuts)."""


class ReplayBuffer:
    """Fixed-capacity circular storage; ``add`` takes a whole batch of environment steps at once."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: str | torch.device = "cpu",
                 seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}.")
        self.capacity = capacity
        self.device = torch.device(device)
        self.obs = torch.zeros(capacity, obs_dim, device=self.device)
        self.actions = torch.zeros(capacity, action_dim, device=self.device)
        self.rewards = torch.zeros(capacity, device=self.device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=self.device)
        self.terminated = torch.zeros(capacity, device=self.device)
        self.position = 0
        self.size = 0
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, next_obs: torch.Tensor,
            terminated: torch.Tensor) -> None:
        """Store ``N`` transitions (leading dimension ``N`` on every argument)."""
        n = obs.shape[0]
        index = (self.position + torch.arange(n, device=self.device)) % self.capacity
        self.obs[index] = obs.to(self.device).reshape(n, -1)
        self.actions[index] = actions.to(self.device)
        self.rewards[index] = rewards.to(self.device, torch.float32)
        self.next_obs[index] = next_obs.to(self.device).reshape(n, -1)
        self.terminated[index] = terminated.to(self.device, torch.float32)
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> TransitionBatch:
        """``batch_size`` transitions drawn uniformly (with replacement)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer.")
        index = torch.randint(0, self.size, (batch_size,), device=self.device, generator=self.generator)
        return TransitionBatch(self.obs[index], self.actions[index], self.rewards[index], self.next_obs[index],
                               self.terminated[index])

    def state_dict(self) -> dict:
        n = self.size
        return {"obs": self.obs[:n].clone(), "actions": self.actions[:n].clone(), "rewards": self.rewards[:n].clone(),
                "next_obs": self.next_obs[:n].clone(), "terminated": self.terminated[:n].clone(),
                "position": self.position, "size": n, "capacity": self.capacity,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"replay state has capacity {state['capacity']}, this buffer {self.capacity}.")
        n = state["size"]
        for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
            getattr(self, name)[:n] = state[name].to(self.device)
        self.position, self.size = state["position"], n
        self.generator.set_state(state["generator"])
