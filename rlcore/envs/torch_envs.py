"""Torch-native batched environments: the whole batch is a few tensor operations on any device.

Pendulum-v1 and MountainCarContinuous-v0 reproduce gymnasium's dynamics, rewards, termination and
time limits (``tests/test_torch_envs.py`` steps them against gymnasium from identical states);
``PointMass-v0`` is a small reacher-style task of rlcore's own. They follow the
:mod:`rlcore.envs.base` contract exactly: float32 observations, ``[N]`` rewards and bool flags,
same-step auto-reset with ``info["final_obs"]`` and ``info["applied_actions"]``.

How a step stays on the device (no host sync, no Python loop over environments):

* the auto-reset draws a fresh initial state for *every* row on every step and keeps it only where
  an episode ended (``torch.where``): drawing ``N`` numbers is cheaper than asking the device
  whether any row ended, and it makes the random stream independent of the episode outcomes;
* non-finite actions are detected on the device and reported with a ``ValueError`` every
  ``finite_check_interval`` steps (1 on the CPU, where checking is free, so the error comes at
  the offending step; 1000 on accelerators, where each check is a synchronisation).

Random numbers come from one ``torch.Generator`` on the device, seeded by ``reset(seed)``; its
state is part of :meth:`TorchBatchedEnv.state_dict`, so a restored environment continues exactly.
The initial states therefore differ from gymnasium's for the same seed (a different generator);
the dynamics do not.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlcore.envs.candidate_choice import CandidateChoiceEnv
from rlcore.envs.spaces import check_actions
from solvers import ActionSet


class TensorBatchedEnv:
    """What every tensor-stepped backend shares: the action set, action checks, auto-reset and time limit.

    A subclass sets :attr:`env_id`, :attr:`max_episode_steps`, the spaces, and implements
    ``_initial_state(n)``, ``_transition(state, actions) -> (next_state, reward, terminated)`` and
    ``_observe(state)`` on batched state tensors; this class does the rest of the contract.
    """

    env_id: str
    max_episode_steps: int

    def _setup(self, num_envs: int, device: str | torch.device, action_set: ActionSet | None,
               native_low: np.ndarray, native_high: np.ndarray, obs_dim: int,
               finite_check_interval: int | None) -> None:
        """Validate the common arguments and build the action set, spaces, counters and generator."""
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        if finite_check_interval is None:
            finite_check_interval = 1 if self.device.type == "cpu" else 1000
        if finite_check_interval < 1:
            raise ValueError(f"finite_check_interval must be >= 1, got {finite_check_interval}.")
        self.finite_check_interval = int(finite_check_interval)

        native_low_t = torch.as_tensor(native_low, dtype=torch.float32)
        native_high_t = torch.as_tensor(native_high, dtype=torch.float32)
        if action_set is None:
            action_set = ActionSet.box(native_low_t, native_high_t)
        action_set = action_set.with_dim(len(native_low)).intersect_box(native_low_t, native_high_t)
        self.action_set = action_set.to(self.device)
        self.action_space = gym.spaces.Box(
            low=np.maximum(action_set.low.cpu().numpy(), native_low).astype(np.float32),
            high=np.minimum(action_set.high.cpu().numpy(), native_high).astype(np.float32),
            dtype=np.float32,
        )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32)
        self._native_low = native_low_t.to(self.device)
        self._native_high = native_high_t.to(self.device)
        self._elapsed = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        self._steps_since_check = 0
        self.generator = torch.Generator(device=self.device)
        # An unseeded environment still follows torch's global seed, so torch.manual_seed reproduces it.
        self.generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))

    # ------------------------------------------------------------------ interface
    @property
    def action_dim(self) -> int:
        return int(self.action_space.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.observation_space.shape))

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Start a new episode in every sub-environment; a ``seed`` reseeds the device generator."""
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._reset_all()
        self._elapsed.zero_()
        return self._current_obs(), {}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                   dict[str, Any]]:
        """Apply ``actions[N, A]`` (projected onto the action set); auto-reset rows that end."""
        applied = self._checked_actions(actions)
        native = torch.minimum(torch.maximum(applied, self._native_low), self._native_high)
        next_state, reward, terminated = self._transition(native)
        self._elapsed += 1
        truncated = self._elapsed >= self.max_episode_steps
        done = terminated | truncated
        final_obs = self._observe(next_state)
        self._auto_reset(next_state, done)
        self._elapsed.masked_fill_(done, 0)
        obs = torch.where(done[:, None], self._current_obs(), final_obs)
        return obs, reward.float(), terminated, truncated, {"final_obs": final_obs, "applied_actions": applied}

    def close(self) -> None:
        """Nothing to release: the state is a few tensors."""

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: simulator state, step counters, generator state."""
        return {"env_id": self.env_id, "num_envs": self.num_envs, "state": self._state_tensors(),
                "elapsed": self._elapsed.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from an environment of the same id and size."""
        if state.get("env_id") != self.env_id or state.get("num_envs") != self.num_envs:
            raise ValueError(f"environment state is for {state.get('num_envs')} x {state.get('env_id')}, "
                             f"this environment is {self.num_envs} x {self.env_id}.")
        self._load_state_tensors({k: v.to(self.device) for k, v in state["state"].items()})
        self._elapsed.copy_(state["elapsed"].to(self.device))
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.env_id!r}, num_envs={self.num_envs}, device={self.device}, "
                f"action_set={self.action_set})")

    # ------------------------------------------------------------------ helpers
    def _checked_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Shape/dtype errors at once; non-finite values as often as ``finite_check_interval`` allows."""
        if not isinstance(actions, torch.Tensor) or actions.shape != (self.num_envs, self.action_dim) \
                or not actions.is_floating_point():
            check_actions(actions, self.action_space, self.num_envs)  # raises the contract's message
        actions = actions.to(self.device, torch.float32)
        if self.finite_check_interval == 1:
            check_actions(actions, self.action_space, self.num_envs)
        else:
            self._nonfinite |= ~torch.isfinite(actions).all()
            self._steps_since_check += 1
            if self._steps_since_check >= self.finite_check_interval:
                self._raise_if_nonfinite()
        return self.action_set.project(actions)

    def _raise_if_nonfinite(self) -> None:
        self._steps_since_check = 0
        if bool(self._nonfinite):
            self._nonfinite.zero_()
            raise ValueError(f"actions contained NaN or infinite values within the last {self.finite_check_interval} "
                             "steps; the environment state is no longer valid: reset it. (Pass "
                             "finite_check_interval=1 to catch the exact step.)")

    # Subclasses keep their state in self._state ([N, S]); those with more override these four.
    def _current_obs(self) -> torch.Tensor:
        return self._observe(self._state)

    def _reset_all(self) -> None:
        self._state = self._initial_state(self.num_envs)

    def _auto_reset(self, next_state: torch.Tensor, done: torch.Tensor) -> None:
        self._state = torch.where(done[:, None], self._initial_state(self.num_envs), next_state)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {"state": self._state.clone()}

    def _load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors["state"].shape != self._state.shape:
            raise ValueError(f"state has shape {list(tensors['state'].shape)}, expected {list(self._state.shape)}.")
        self._state = tensors["state"].to(self._state.dtype).clone()

    def _initial_state(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def _transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ direct state access (tests, tools)
    def set_state(self, state: torch.Tensor) -> None:
        """Overwrite the simulator state ``[N, S]`` of every sub-environment (see each task for ``S``)."""
        self._load_state_tensors({"state": torch.as_tensor(state, device=self.device)})

    def get_state(self) -> torch.Tensor:
        """A copy of the simulator state ``[N, S]``."""
        return self._state.clone()


def _uniform(generator: torch.Generator, n: int, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``n`` rows uniform in ``[low, high)`` (per column), on the generator's device, in ``low``'s dtype."""
    u = torch.rand(n, low.shape[0], generator=generator, device=low.device, dtype=low.dtype)
    return low + u * (high - low)


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
    return dtype


class PendulumTorch(TensorBatchedEnv):
    """gymnasium's ``Pendulum-v1`` (``classic_control/pendulum.py``), batched. State: ``[theta, theta_dot]``.

    Reward ``-(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2)``; no termination; truncation after
    200 steps; initial state uniform in ``[-pi, pi] x [-1, 1]``.
    """

    env_id = "Pendulum-v1"

    def __init__(self, num_envs: int = 1, device: str | torch.device = "cpu", action_set: ActionSet | None = None,
                 g: float = 10.0, max_episode_steps: int = 200, dtype: torch.dtype | str = torch.float32,
                 finite_check_interval: int | None = None) -> None:
        self.max_episode_steps = int(max_episode_steps)
        self.g, self.m, self.l, self.dt, self.max_speed, self.max_torque = float(g), 1.0, 1.0, 0.05, 8.0, 2.0
        self.dtype = _dtype(dtype)
        self._setup(num_envs, device, action_set, np.array([-2.0], np.float32), np.array([2.0], np.float32), 3,
                    finite_check_interval)
        self._high = torch.tensor([math.pi, 1.0], dtype=self.dtype, device=self.device)
        self._state = torch.zeros(self.num_envs, 2, dtype=self.dtype, device=self.device)

    def _initial_state(self, n: int) -> torch.Tensor:
        return _uniform(self.generator, n, -self._high, self._high)

    def _transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        th, thdot = self._state[:, 0], self._state[:, 1]
        # gymnasium multiplies the float32 action by Python floats, which numpy keeps in float32 (NEP 50):
        # the torque and control-cost terms are rounded to float32 there too, so they are here.
        u = actions[:, 0].float().clamp(-self.max_torque, self.max_torque)
        control = (0.001 * u**2).to(self.dtype)
        torque = (3.0 / (self.m * self.l**2) * u).to(self.dtype)
        costs = _angle_normalize(th) ** 2 + 0.1 * thdot**2 + control
        newthdot = thdot + (3 * self.g / (2 * self.l) * torch.sin(th) + torque) * self.dt
        newthdot = newthdot.clamp(-self.max_speed, self.max_speed)
        newth = th + newthdot * self.dt
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return torch.stack([newth, newthdot], dim=1), -costs, terminated

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        th, thdot = state[:, 0], state[:, 1]
        return torch.stack([torch.cos(th), torch.sin(th), thdot], dim=1).float()


def _angle_normalize(x: torch.Tensor) -> torch.Tensor:
    # torch.remainder takes the divisor's sign like numpy's %, so this is gymnasium's angle_normalize.
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


class MountainCarContinuousTorch(TensorBatchedEnv):
    """gymnasium's ``MountainCarContinuous-v0`` (``continuous_mountain_car.py``), batched. State ``[x, v]``.

    Reward ``100 * reached_goal - 0.1 a^2``; terminated when ``x >= 0.45`` and ``v >= goal_velocity``;
    truncation after 999 steps; initial ``x`` uniform in ``[-0.6, -0.4]``, ``v = 0``.
    """

    env_id = "MountainCarContinuous-v0"

    def __init__(self, num_envs: int = 1, device: str | torch.device = "cpu", action_set: ActionSet | None = None,
                 goal_velocity: float = 0.0, max_episode_steps: int = 999, dtype: torch.dtype | str = torch.float32,
                 finite_check_interval: int | None = None) -> None:
        self.max_episode_steps = int(max_episode_steps)
        self.min_position, self.max_position, self.max_speed = -1.2, 0.6, 0.07
        self.goal_position, self.goal_velocity, self.power = 0.45, float(goal_velocity), 0.0015
        self.dtype = _dtype(dtype)
        self._setup(num_envs, device, action_set, np.array([-1.0], np.float32), np.array([1.0], np.float32), 2,
                    finite_check_interval)
        self._reset_low = torch.tensor([-0.6, 0.0], dtype=self.dtype, device=self.device)
        self._reset_high = torch.tensor([-0.4, 0.0], dtype=self.dtype, device=self.device)
        self._state = torch.zeros(self.num_envs, 2, dtype=self.dtype, device=self.device)

    def _initial_state(self, n: int) -> torch.Tensor:
        return _uniform(self.generator, n, self._reset_low, self._reset_high)

    def _transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position, velocity = self._state[:, 0], self._state[:, 1]
        force = actions[:, 0].to(self.dtype).clamp(-1.0, 1.0)
        velocity = velocity + force * self.power - 0.0025 * torch.cos(3 * position)
        velocity = velocity.clamp(-self.max_speed, self.max_speed)
        position = (position + velocity).clamp(self.min_position, self.max_position)
        velocity = torch.where((position == self.min_position) & (velocity < 0), 0.0, velocity)
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        reward = 100.0 * terminated.to(self.dtype) - 0.1 * actions[:, 0].to(self.dtype) ** 2
        return torch.stack([position, velocity], dim=1), reward, terminated

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        return state.float()


class PointMassTorch(TensorBatchedEnv):
    """``PointMass-v0``: a reacher-style task of rlcore's own, push a unit mass to a goal in the plane.

    State ``[x, y, vx, vy, goal_x, goal_y]``; observation ``[x, y, vx, vy, goal_x - x, goal_y - y]``;
    action a force in ``[-1, 1]^2``. Semi-implicit Euler with ``dt = 0.05`` and linear damping 0.5,
    positions kept in the arena ``[-1, 1]^2`` (a wall stops the velocity component into it).
    Reward ``-||goal - position|| - 0.1 ||a||^2`` (Reacher's distance and control terms); no
    termination; truncation after 100 steps; position and goal uniform in ``[-0.8, 0.8]^2``.
    """

    env_id = "PointMass-v0"

    def __init__(self, num_envs: int = 1, device: str | torch.device = "cpu", action_set: ActionSet | None = None,
                 max_episode_steps: int = 100, dtype: torch.dtype | str = torch.float32,
                 finite_check_interval: int | None = None) -> None:
        self.max_episode_steps = int(max_episode_steps)
        self.dt, self.damping, self.arena, self.control_cost = 0.05, 0.5, 1.0, 0.1
        self.dtype = _dtype(dtype)
        self._setup(num_envs, device, action_set, -np.ones(2, np.float32), np.ones(2, np.float32), 6,
                    finite_check_interval)
        self._reset_low = torch.tensor([-0.8, -0.8, 0, 0, -0.8, -0.8], dtype=self.dtype, device=self.device)
        self._reset_high = torch.tensor([0.8, 0.8, 0, 0, 0.8, 0.8], dtype=self.dtype, device=self.device)
        self._state = torch.zeros(self.num_envs, 6, dtype=self.dtype, device=self.device)

    def _initial_state(self, n: int) -> torch.Tensor:
        return _uniform(self.generator, n, self._reset_low, self._reset_high)

    def _transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position, velocity, goal = self._state[:, 0:2], self._state[:, 2:4], self._state[:, 4:6]
        force = actions.to(self.dtype)
        velocity = velocity + self.dt * (force - self.damping * velocity)
        moved = position + self.dt * velocity
        position = moved.clamp(-self.arena, self.arena)
        velocity = torch.where(moved == position, velocity, 0.0)
        reward = -(goal - position).norm(dim=1) - self.control_cost * force.pow(2).sum(dim=1)
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return torch.cat([position, velocity, goal], dim=1), reward, terminated

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        return torch.cat([state[:, 0:4], state[:, 4:6] - state[:, 0:2]], dim=1).float()


TORCH_ENVS: dict[str, type] = {
    "Pendulum-v1": PendulumTorch,
    "MountainCarContinuous-v0": MountainCarContinuousTorch,
    "PointMass-v0": PointMassTorch,
    "CandidateChoice-v0": CandidateChoiceEnv,
}
"""The ids the torch backend implements."""


def make_torch_env(env_id: str, num_envs: int = 1, device: str | torch.device = "cpu",
                   action_set: ActionSet | None = None, **env_kwargs: Any) -> Any:
    """Build the torch-native environment ``env_id``; ``env_kwargs`` are the task's options (e.g. ``g``)."""
    if env_id not in TORCH_ENVS:
        raise ValueError(f"the torch backend does not implement {env_id!r}; it implements "
                         f"{', '.join(sorted(TORCH_ENVS))}. Use backend='gymnasium' for other ids.")
    cls = TORCH_ENVS[env_id]
    accepted = _keyword_options(cls)
    unknown = sorted(set(env_kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{env_id} (torch backend) got unknown option(s) {unknown}; it accepts {accepted}.")
    return cls(num_envs=num_envs, device=device, action_set=action_set, **env_kwargs)


def _keyword_options(cls: type) -> list[str]:
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return [name for name in params if name not in ("self", "num_envs", "device", "action_set")]


__all__ = ["TORCH_ENVS", "MountainCarContinuousTorch", "PendulumTorch", "PointMassTorch",
                     "TensorBatchedEnv", "make_torch_env"]
