"""Batched projected gradient ascent on ``a -> Q(x, a)`` (CAQL's "GA" max-Q optimiser).

Every sample runs ``num_starts`` random starts (plus the warm start when given) at once as one
``[B * K, A]`` batch. Each step moves by ``step_size`` half-widths of the set along the sample's own
normalised gradient, then projects back onto the set, so actions never leave it. The public CAQL
code divided by the norm of the *whole batch's* gradient, which shrinks every sample's step as the
batch grows; here the normalisation is per sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from solvers._common import Deadline, SeededSolver, best_per_sample, empty_result, prepare
from solvers.action_set import ActionSet
from solvers.capabilities import HEURISTIC, SolverCapabilities
from solvers.registry import register
from solvers.relu_net import ReLUNet
from solvers.result import MaxQResult, SolveStatus


@register("ga")
@dataclass
class GradientAscentSolver(SeededSolver):
    """Projected gradient ascent with random restarts; returns the best point seen per sample."""

    num_starts: int = 16
    """Random starts per sample (drawn uniformly from the set), in addition to the warm start."""
    iterations: int = 30
    """Maximum number of ascent steps."""
    step_size: float = 0.2
    """First step length, as a fraction of the set's half-width per dimension."""
    step_decay: float = 0.85
    """Multiplier on the step length after every step."""
    tolerance: float = 1e-4
    """Stop when no sample's Q-value changed by more than this in one step."""
    seed: int = 0
    """Seed of the generator that draws the random starts."""
    name: str = "ga"
    capabilities: ClassVar[SolverCapabilities] = HEURISTIC

    def __post_init__(self) -> None:
        if self.num_starts < 0 or self.iterations < 0 or self.step_size <= 0:
            raise ValueError("ga needs num_starts >= 0, iterations >= 0 and step_size > 0, got "
                             f"{self.num_starts}, {self.iterations}, {self.step_size}.")

    def solve(self, net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
              warm_start: torch.Tensor | None = None, tolerance: float | None = None) -> MaxQResult:
        start_time = time.perf_counter()
        x, aset, warm = prepare(net, fixed_inputs, action_set, warm_start)
        if x.shape[0] == 0:
            return empty_result(x, net.action_dim, start_time)
        final_actions, final_values = self.ascend(net, x, aset, warm, tolerance)
        return MaxQResult(
            actions=final_actions,
            values=final_values,
            upper_bounds=torch.full_like(final_values, float("inf")),
            status=torch.full((x.shape[0],), int(SolveStatus.APPROXIMATE), dtype=torch.int8, device=x.device),
            solve_seconds=time.perf_counter() - start_time,
        )

    def ascend(self, net: ReLUNet, x: torch.Tensor, aset: ActionSet, warm: torch.Tensor | None = None,
               tolerance: float | None = None, deadline: Deadline | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The best action and value per row of prepared inputs (see :func:`~solvers._common.prepare`).

        ``deadline`` (for the exact solvers' incumbents) stops the ascent early, after at least the
        evaluation of the starts, so the answer is always a feasible point of the set.
        """
        batch, dim = x.shape[0], net.action_dim
        tol = self.tolerance if tolerance is None else tolerance
        starts = [aset.sample(batch * self.num_starts, self.generator(x.device)).to(x.dtype).reshape(batch, -1, dim)]
        if warm is not None:
            starts.insert(0, warm.unsqueeze(1))
        if sum(s.shape[1] for s in starts) == 0:
            starts = [aset.center.to(x.dtype).expand(batch, 1, dim)]
        actions = torch.cat(starts, dim=1).reshape(-1, dim)
        inputs = x.repeat_interleave(actions.shape[0] // batch, dim=0)
        scale = aset.half_width.to(x.dtype)

        with torch.no_grad():
            values = net(inputs, actions)
        best_actions, best_values = actions, values
        step = self.step_size
        for _ in range(self.iterations):
            if deadline is not None and deadline.expired():
                break
            with torch.enable_grad():
                probe = actions.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(net(inputs, probe).sum(), probe)
            # Step in the set's own coordinates so that every dimension moves by a comparable fraction.
            direction = grad * scale
            direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
            with torch.no_grad():
                actions = aset.project(actions + step * direction * scale)
                new_values = net(inputs, actions)
                improved = new_values > best_values
                best_actions = torch.where(improved.unsqueeze(1), actions, best_actions)
                best_values = torch.maximum(new_values, best_values)
                converged = bool((new_values - values).abs().max() <= tol)
                values = new_values
            step *= self.step_decay
            if converged:
                break

        final_actions, final_values = best_per_sample(best_actions, best_values, batch)
        return final_actions.detach(), final_values.detach()
