"""The denoising MDP behind rlcore's batched environment interface.

``num_envs`` reverse-diffusion chains stepped together over the S Gaussian steps of a scheduler
(:class:`~rlcore.adapters.diffusion.steps.GaussianSteps`):

* **observation** (a dict of ``[N, ...]`` tensors): ``x_t`` (the current sample, ``sample_shape``), ``t``
  (the denoiser's timestep at this step), ``step`` (the step index ``i`` in ``[0, S)``) and, with
  ``conditions``, ``condition`` (each chain's prompt: a class label, or an embedding);
* **action:** ``x_{t_{i+1}}``, the next sample, of ``sample_shape`` (a shaped Box with no action set: the
  policy is a denoiser's Gaussian step, :meth:`DenoisingEnv.step_mean` and ``steps.std[i]``);
* **reward:** 0 until the last step, then ``reward_fn(x_0[, condition])``, computed in one batched call on the
  device; the episode then terminates (every chain ends at the same step) and the chains restart from fresh
  noise (same-step auto-reset, the last sample in ``info["final_obs"]`` and ``info["episode_metrics"]``).

The transition is deterministic (the next state is the action): the randomness of diffusion sampling is the
policy's. :func:`~rlcore.adapters.diffusion.sampling.rollout` is the same chain run without the interface;
for the same noise the two give the same samples (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlcore.adapters.diffusion.sampling import predict_noise
from rlcore.adapters.diffusion.steps import GaussianSteps
from rlcore.envs.spaces import check_actions
from rlcore.envs.structured import where_rows


class DenoisingEnv:
    """Reverse diffusion as a batched MDP (see the module docstring).

    Args:
        scheduler: a ``diffusers`` ``DDPMScheduler`` or ``DDIMScheduler`` (eta > 0).
        reward_fn: ``[N, *sample_shape]`` samples (and, with conditions, ``[N, ...]`` conditions) to ``[N]``.
        sample_shape: the shape of one sample (``(2,)``, ``(1, 8, 8)``...).
        num_envs: chains stepped together.
        num_inference_steps: S.
        conditions: prompts each chain's condition is drawn from at its start (None: unconditional).
        seed: seed of the initial noise and the condition draws.
        device: where everything lives.
    """

    env_id = "Denoising-v0"

    def __init__(self, scheduler: Any, reward_fn: Callable[..., torch.Tensor], sample_shape: tuple[int, ...],
                 num_envs: int = 1, num_inference_steps: int = 20, conditions: torch.Tensor | None = None,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}.")
        if conditions is not None and (not isinstance(conditions, torch.Tensor) or len(conditions) == 0):
            raise ValueError("conditions must be a non-empty tensor of prompts (labels [M] or embeddings [M, ...]).")
        self.num_envs, self.device, self.seed = num_envs, torch.device(device), int(seed)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.steps = GaussianSteps.from_scheduler(scheduler, num_inference_steps).to(self.device)
        self.reward_fn = reward_fn
        self.conditions = None if conditions is None else conditions.to(self.device)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, self.sample_shape, np.float32)
        self.action_set = None
        spaces = {"x_t": gym.spaces.Box(-np.inf, np.inf, self.sample_shape, np.float32),
                  "t": gym.spaces.Box(0.0, float(scheduler.config.num_train_timesteps), (1,), np.float32),
                  "step": gym.spaces.Box(0.0, float(self.steps.num_steps), (1,), np.float32)}
        if self.conditions is not None:
            spaces["condition"] = gym.spaces.Box(-np.inf, np.inf, tuple(self.conditions.shape[1:]) or (), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self._x = torch.zeros(num_envs, *self.sample_shape, device=self.device)
        self._step = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._condition = None if self.conditions is None else self.conditions[:1].repeat(
            num_envs, *[1] * (self.conditions.dim() - 1))
        self._start(torch.ones(num_envs, dtype=torch.bool, device=self.device))

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.sample_shape)) + 2

    @property
    def action_dim(self) -> int:
        return int(np.prod(self.sample_shape))

    def _start(self, rows: torch.Tensor) -> None:
        """Fresh noise and conditions for every row (the generator advances the same way whichever rows end)."""
        noise = torch.randn(self.num_envs, *self.sample_shape, generator=self.generator, device=self.device)
        view = rows.reshape(-1, *[1] * len(self.sample_shape))
        self._x = torch.where(view, noise, self._x)
        self._step = self._step.masked_fill(rows, 0)
        if self.conditions is not None:
            draw = torch.randint(len(self.conditions), (self.num_envs,), generator=self.generator, device=self.device)
            view = rows.reshape(-1, *[1] * (self.conditions.dim() - 1))
            self._condition = torch.where(view, self.conditions[draw], self._condition)

    def _obs(self) -> dict[str, torch.Tensor]:
        index = self._step.clamp(max=self.steps.num_steps - 1)
        obs = {"x_t": self._x, "t": self.steps.timesteps.to(self.device)[index].float()[:, None],
               "step": self._step.float()[:, None]}
        if self._condition is not None:
            obs["condition"] = self._condition
        return obs

    def reset(self, seed: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._start(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._obs(), {}

    def step_mean(self, model: nn.Module, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean of the Gaussian step of denoiser ``model`` at ``obs`` (all chains are at the same step);
        the step's std is ``env.steps.std[i]``."""
        i = int(obs["step"][0])
        t = int(self.steps.timesteps[i])
        condition = obs.get("condition")
        if condition is not None and not condition.is_floating_point():
            condition = condition.long()
        return self.steps.mean(obs["x_t"], predict_noise(model, obs["x_t"], t, condition), i)

    def step(self, actions: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor,
                                                   torch.Tensor, dict[str, Any]]:
        check_actions(actions, self.action_space, self.num_envs)
        applied = self._x = actions.to(self.device).float()
        self._step = self._step + 1
        terminated = self._step >= self.steps.num_steps
        reward = torch.zeros(self.num_envs, device=self.device)
        metrics: dict[str, torch.Tensor] = {}
        if bool(terminated[0]):  # every chain ends at the same step: one batched reward call
            r = self.reward_fn(self._x) if self._condition is None else self.reward_fn(self._x, self._condition)
            if not isinstance(r, torch.Tensor) or r.shape != (self.num_envs,):
                raise ValueError(f"reward_fn must map [N, ...] samples to an [N] tensor, got "
                                 f"{tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__}.")
            reward = r.detach().float().to(self.device)
            metrics["reward"] = reward
        final_obs = self._obs()
        self._start(terminated)
        obs = where_rows(terminated, self._obs(), final_obs)
        info = {"final_obs": final_obs, "applied_actions": applied, "episode_metrics": metrics}
        return obs, reward, terminated, torch.zeros_like(terminated), info

    def close(self) -> None:
        """Nothing to release."""

    def state_dict(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "num_envs": self.num_envs, "x": self._x.clone(), "step": self._step.clone(),
                "condition": None if self._condition is None else self._condition.clone(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("env_id") != self.env_id or state.get("num_envs") != self.num_envs:
            raise ValueError(f"environment state is for {state.get('num_envs')} x {state.get('env_id')}, this "
                             f"environment is {self.num_envs} x {self.env_id}.")
        self._x, self._step = state["x"].to(self.device).clone(), state["step"].to(self.device).clone()
        if state["condition"] is not None:
            self._condition = state["condition"].to(self.device).clone()
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return (f"DenoisingEnv(num_envs={self.num_envs}, sample_shape={self.sample_shape}, "
                f"steps={self.steps.num_steps}, conditional={self.conditions is not None}, device={self.device})")


__all__ = ["DenoisingEnv"]
