"""Certified max-Q without choosing a solver (``"exact"``): the cheapest exact solver that certifies in time.

Per batch:

1. one action dimension: ``pwl1d``, exact in closed form (no search, no time limit needed);
2. otherwise the batched branch-and-bound ``bnb`` gets ``bnb_share`` (0.8) of the time limit for the whole
   batch (it certifies most states of small and mid-sized nets at hundreds of states per second, see
   ``benchmarks/results/maxq_certified.md``);
3. the states it leaves open go to the SCIP MIP for the rest of the time, the closest to certified first,
   one at a time, each warm-started from ``bnb``'s incumbent; a state keeps the better action and the
   smaller bound of the two.

Every returned bound is one of the solvers' certified bounds, so the portfolio is exactly as sound as they
are; statuses follow the same rules (``TIME_LIMIT`` where neither closed the gap).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from solvers._common import begin_solve, empty_result
from solvers.action_set import ActionSet
from solvers.bnb import BranchAndBoundSolver
from solvers.capabilities import EXACT, SolverCapabilities
from solvers.mip_solver import MIPSolver
from solvers.pwl1d import PiecewiseLinear1DSolver
from solvers.registry import register
from solvers.relu_net import ReLUNet
from solvers.result import MaxQResult, SolveStatus


@register("exact")
@dataclass
class PortfolioSolver:
    """``pwl1d`` for one action dimension, else ``bnb`` first and SCIP for the states it leaves open."""

    gap: float = 1e-3
    """Absolute gap for both stages."""
    time_limit: float = 60.0
    """Seconds for the whole batch, both stages together."""
    bnb_share: float = 0.8
    """Fraction of the time limit given to ``bnb``; SCIP gets the rest (and what ``bnb`` did not use). Most of
    it, because ``bnb`` certified more states per second than SCIP on every net of
    ``benchmarks/results/maxq_certified.md``, and its best-first search finishes its states close together
    near the end: cut short, it may certify none of them."""
    bnb_options: dict[str, Any] = field(default_factory=dict)
    """Options of :class:`~solvers.bnb.BranchAndBoundSolver` (``gap`` and ``time_limit`` are set here)."""
    mip_options: dict[str, Any] = field(default_factory=lambda: {"workers": 1})
    """Options of the SCIP :class:`~solvers.mip_solver.MIPSolver` (one worker: it runs in this process)."""
    ga_starts: int | None = None
    """Random starts of both stages' incumbent ascent (``None``: each stage's default). CAQL sets it low, as for
    ``bnb``, since its solves are warm-started by the action function."""
    ga_iterations: int | None = None
    """Steps of both stages' incumbent ascent (``None``: each stage's default)."""
    seed: int = 0
    name: str = "exact"
    capabilities: ClassVar[SolverCapabilities] = EXACT

    def __post_init__(self) -> None:
        if not 0.0 < self.bnb_share <= 1.0:
            raise ValueError(f"bnb_share must be in (0, 1], got {self.bnb_share}; 1 gives SCIP only what bnb "
                             "leaves of the time limit.")
        if not self.gap >= 0 or not self.time_limit > 0:
            raise ValueError(f"exact needs gap >= 0 and time_limit > 0, got {self.gap} and {self.time_limit}.")
        for label, given in (("bnb_options", self.bnb_options), ("mip_options", self.mip_options)):
            clash = {"gap", "time_limit"} & set(given)
            if clash:
                raise ValueError(f"{label} may not set {', '.join(sorted(clash))}: the portfolio's own gap and "
                                 "time_limit are passed to both stages.")
        self.last_stages: dict[str, int] = {}
        """States handled by each stage in the last call, e.g. ``{"bnb": 64, "scip": 3}`` (the states that
        ``bnb`` left open and SCIP had time to start on)."""

    def solve(self, net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
              warm_start: torch.Tensor | None = None, tolerance: float | None = None) -> MaxQResult:
        start_time, deadline, x, aset, warm, gap = begin_solve(net, fixed_inputs, action_set, warm_start,
                                                               self.time_limit, self.gap, tolerance)
        if x.shape[0] == 0:
            return empty_result(x, net.action_dim, start_time)
        if aset.dim == 1:
            result = PiecewiseLinear1DSolver(seed=self.seed).solve(net, x, aset)
            self.last_stages = {"pwl1d": x.shape[0]}
            result.solve_seconds = time.perf_counter() - start_time
            return result
        bnb = BranchAndBoundSolver(**{"seed": self.seed, **self._incumbent_search(), **self.bnb_options}, gap=gap,
                                   time_limit=self.bnb_share * self.time_limit)
        result = bnb.solve(net, x, aset, warm_start=warm)
        open_ = torch.nonzero(result.status == int(SolveStatus.TIME_LIMIT)).squeeze(1)
        # The states closest to certified first, one at a time, each with all the time left: a fair share of
        # a short remainder (the MIP solver's own rule for a batch) would certify none of many open states.
        open_ = open_[torch.argsort((result.upper_bounds - result.values)[open_], stable=True)]
        handed = 0
        for row in open_.tolist():
            if deadline.remaining() <= 1e-3:
                break
            options = {"seed": self.seed, **self._incumbent_search(), **self.mip_options}
            mip = MIPSolver(**options, backend="scip", gap=gap, time_limit=deadline.remaining())
            rows = torch.tensor([row], device=x.device)
            _merge(result, mip.solve(net, x[rows], aset, warm_start=result.actions[rows]), rows, gap)
            handed += 1
        self.last_stages = {"bnb": x.shape[0], "scip": handed}
        result.solve_seconds = time.perf_counter() - start_time
        return result

    def _incumbent_search(self) -> dict[str, int]:
        return {k: v for k, v in (("ga_starts", self.ga_starts), ("ga_iterations", self.ga_iterations))
                if v is not None}


def _merge(result: MaxQResult, rest: MaxQResult, rows: torch.Tensor, gap: float) -> None:
    """Into ``result``'s ``rows``: the better action of the two, the smaller bound, and the status of the gap
    that leaves (both bounds hold for both actions, so the pair is certified as a pair)."""
    better = rest.values.to(result.values.dtype) > result.values[rows]
    actions = torch.where(better.unsqueeze(1), rest.actions.to(result.actions.dtype), result.actions[rows])
    values = torch.where(better, rest.values.to(result.values.dtype), result.values[rows])
    upper = torch.minimum(result.upper_bounds[rows], rest.upper_bounds.to(result.upper_bounds.dtype))
    upper = torch.maximum(upper, values)
    final_gap = upper - values
    scale = values.abs().clamp_min(1.0)
    status = torch.full_like(result.status[rows], int(SolveStatus.TIME_LIMIT))
    status = torch.where(final_gap <= gap + 8 * torch.finfo(values.dtype).eps * scale,
                         int(SolveStatus.GAP_LIMIT), status)
    status = torch.where(final_gap <= 1e-6 * scale, int(SolveStatus.OPTIMAL), status)
    result.actions[rows], result.values[rows], result.upper_bounds[rows] = actions, values, upper
    result.status[rows] = status.to(result.status.dtype)
