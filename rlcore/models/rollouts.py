"""Model rollouts behind the batched environment interface, and the horizon schedule.

:class:`ModelEnv` steps ``N`` imagined trajectories through a :class:`ProbabilisticEnsemble` with the
same call signature as a :class:`~rlcore.envs.base.BatchedEnv` (torch in and out, same-step auto-reset,
``info["final_obs"]``), so code that consumes real transitions consumes model transitions unchanged.
Episodes start at given real states, are truncated after ``horizon`` steps, and end early where the
termination function says so; an ended row restarts from a random start state.

Each step draws ``K`` candidate next states, one from each elite. ``info["final_obs"]``, the reward and the
termination of the *stored* transition come from one uniformly chosen candidate, i.e. a sample of the
learned model ``p``. The state the rollout *continues* from is chosen by ``next_state_selector``
(default: the same candidate); VMBPO passes one that resamples the candidates in proportion to
``exp(gamma V(s') / eta)``, i.e. it continues with its optimistic variational model ``q(s'|s, a)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import solvers
from rlcore.loops.replay import TransitionBatch
from rlcore.models.dynamics import ProbabilisticEnsemble
from rlcore.models.termination import TerminationFn

NextStateSelector = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(next_obs[K, N, d], rewards[K, N], terminated[K, N]) -> index[N]`` of the candidate to continue from."""


def rollout_horizon(step: int, schedule: tuple[int, int, int, int]) -> int:
    """MBPO's schedule ``(start_step, end_step, min_horizon, max_horizon)``: ``min_horizon`` until
    ``start_step``, then linear in the environment step up to ``max_horizon`` at ``end_step``."""
    start, end, low, high = schedule
    if step <= start or end <= start:
        return int(low if step <= start else high)
    fraction = min(1.0, (step - start) / (end - start))
    return int(low + fraction * (high - low))


def check_schedule(schedule: tuple[int, int, int, int]) -> None:
    if len(schedule) != 4:
        raise ValueError(f"rollout_schedule must be (start_step, end_step, min_horizon, max_horizon), got {schedule}.")
    start, end, low, high = schedule
    if not 1 <= low <= high or start < 0 or end < start:
        raise ValueError("rollout_schedule needs 0 <= start_step <= end_step and 1 <= min_horizon <= "
                         f"max_horizon, got {schedule}.")


class ModelEnv:
    """``N`` imagined environments stepped through a learned model (see the module docstring)."""

    def __init__(self, model: ProbabilisticEnsemble, action_set: solvers.ActionSet,
                 termination: TerminationFn | None, horizon: int, generator: torch.Generator | None = None,
                 next_state_selector: NextStateSelector | None = None) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}.")
        self.model, self.action_set, self.termination = model, action_set, termination
        self.horizon, self.generator, self.next_state_selector = horizon, generator, next_state_selector
        self.num_envs = 0
        self.device = next(model.parameters()).device

    def reset(self, start_obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Start one imagined episode per row of ``start_obs`` (which is also the pool auto-resets draw from)."""
        self.start_obs = start_obs
        self.num_envs = start_obs.shape[0]
        self.obs = start_obs.clone()
        self.elapsed = torch.zeros(self.num_envs, dtype=torch.long, device=start_obs.device)
        return self.obs, {}

    @torch.no_grad()
    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                    dict[str, Any]]:
        actions = self.action_set.project(actions)
        prediction = self.model.predict(self.obs, actions, self.generator)
        k, n = prediction.rewards.shape
        rows = torch.arange(n, device=actions.device)
        if self.termination is None:
            terminated_all = torch.zeros(k, n, dtype=torch.bool, device=actions.device)
        else:
            terminated_all = torch.stack([self.termination(self.obs, actions, s) for s in prediction.next_obs])
        sampled = torch.randint(0, k, (n,), generator=self.generator, device=actions.device)
        final_obs, rewards = prediction.next_obs[sampled, rows], prediction.rewards[sampled, rows]
        terminated = terminated_all[sampled, rows]
        if self.next_state_selector is not None:
            chosen = self.next_state_selector(prediction.next_obs, prediction.rewards, terminated_all)
            next_obs = prediction.next_obs[chosen, rows]
            terminated_next = terminated_all[chosen, rows]
        else:
            next_obs, terminated_next = final_obs, terminated
        self.elapsed += 1
        truncated = (self.elapsed >= self.horizon) & ~terminated
        # Rows whose continuation ends (terminal, or out of time) restart from a random start state.
        restart = terminated_next | terminated | (self.elapsed >= self.horizon)
        fresh = self.start_obs[torch.randint(0, self.start_obs.shape[0], (n,), generator=self.generator,
                                             device=actions.device)]
        self.obs = torch.where(restart.unsqueeze(1), fresh, next_obs)
        self.elapsed = self.elapsed * ~restart
        return self.obs, rewards, terminated, truncated, {"final_obs": final_obs, "applied_actions": actions}

    def close(self) -> None:
        pass


@torch.no_grad()
def collect_rollouts(env: ModelEnv, policy: Callable[[torch.Tensor], torch.Tensor], start_obs: torch.Tensor,
                     steps: int) -> TransitionBatch:
    """``steps`` model steps of ``policy`` from ``start_obs``: all ``N * steps`` transitions, concatenated."""
    obs, _ = env.reset(start_obs)
    parts: list[tuple[torch.Tensor, ...]] = []
    for _ in range(steps):
        actions = policy(obs)
        next_obs, rewards, terminated, _, info = env.step(actions)
        parts.append((obs, info["applied_actions"], rewards, info["final_obs"], terminated.float()))
        obs = next_obs
    return TransitionBatch(*(torch.cat(column) for column in zip(*parts, strict=True)))
