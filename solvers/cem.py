"""Batched cross-entropy method on ``a -> Q(x, a)`` (CAQL's "CEM" max-Q optimiser).

Each sample keeps a diagonal Gaussian over actions; every iteration draws ``num_samples`` actions,
projects them onto the set (so all candidates are feasible), and refits the mean and the
*standard deviation* of the ``num_elites`` best. The public CAQL code used the elites' variance as
the new scale, which collapses the search too fast for scales below one; that is fixed here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from solvers._common import SeededSolver, best_per_sample, empty_result, prepare
from solvers.action_set import ActionSet
from solvers.capabilities import HEURISTIC, SolverCapabilities
from solvers.registry import register
from solvers.relu_net import ReLUNet
from solvers.result import MaxQResult, SolveStatus


@register("cem")
@dataclass
class CrossEntropySolver(SeededSolver):
    """Cross-entropy method with a diagonal Gaussian, returning the best sample seen per state."""

    num_samples: int = 100
    """Candidate actions per sample and iteration."""
    num_elites: int = 10
    """Best candidates used to refit the Gaussian."""
    iterations: int = 15
    """Maximum number of iterations."""
    init_std: float = 1.0
    """Initial standard deviation, as a fraction of the set's half-width per dimension."""
    tolerance: float = 1e-4
    """Stop when no sample's mean elite value changed by more than this in one iteration."""
    seed: int = 0
    """Seed of the generator that draws the candidates."""
    name: str = "cem"
    capabilities: ClassVar[SolverCapabilities] = HEURISTIC

    def __post_init__(self) -> None:
        if not 0 < self.num_elites <= self.num_samples or self.iterations < 1:
            raise ValueError("cem needs 0 < num_elites <= num_samples and iterations >= 1, got "
                             f"{self.num_elites}, {self.num_samples}, {self.iterations}.")

    def solve(self, net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
              warm_start: torch.Tensor | None = None, tolerance: float | None = None) -> MaxQResult:
        start_time = time.perf_counter()
        x, aset, warm = prepare(net, fixed_inputs, action_set, warm_start)
        if x.shape[0] == 0:
            return empty_result(x, net.action_dim, start_time)
        batch, dim, n = x.shape[0], net.action_dim, self.num_samples
        tol = self.tolerance if tolerance is None else tolerance
        generator = self.generator(x.device)
        scale = aset.half_width.to(x.dtype)
        mean = warm if warm is not None else aset.center.to(x.dtype).expand(batch, dim)
        std = (self.init_std * scale).expand(batch, dim)
        inputs = x.repeat_interleave(n, dim=0)

        best_actions, best_values = mean, torch.full((batch,), -float("inf"), dtype=x.dtype, device=x.device)
        previous_elite_mean = None
        for iteration in range(self.iterations):
            noise = torch.randn(batch, n, dim, generator=generator, device=x.device, dtype=x.dtype)
            candidates = mean.unsqueeze(1) + std.unsqueeze(1) * noise
            if iteration == 0:
                candidates[:, 0] = mean  # the warm start (or the centre) itself is always a candidate
            candidates = aset.project(candidates.reshape(-1, dim)).reshape(batch, n, dim)
            with torch.no_grad():
                values = net(inputs, candidates.reshape(-1, dim)).reshape(batch, n)
            elite_values, elite_index = values.topk(self.num_elites, dim=1)
            elites = candidates.gather(1, elite_index.unsqueeze(-1).expand(-1, -1, dim))
            mean, std = elites.mean(dim=1), elites.std(dim=1, unbiased=False)
            top_actions, top_values = elites[:, 0], elite_values[:, 0]
            improved = top_values > best_values
            best_actions = torch.where(improved.unsqueeze(1), top_actions, best_actions)
            best_values = torch.maximum(top_values, best_values)
            elite_mean = elite_values.mean(dim=1)
            if previous_elite_mean is not None and bool((elite_mean - previous_elite_mean).abs().max() <= tol):
                break
            previous_elite_mean = elite_mean

        final_actions, final_values = best_per_sample(best_actions, best_values, batch)
        return MaxQResult(
            actions=final_actions.detach(),
            values=final_values.detach(),
            upper_bounds=torch.full_like(final_values, float("inf")),
            status=torch.full((batch,), int(SolveStatus.APPROXIMATE), dtype=torch.int8, device=x.device),
            solve_seconds=time.perf_counter() - start_time,
        )
