"""Exact max-Q by mixed-integer programming: ``"scip"``, ``"ortools-scip"``, ``"ortools-highs"``, ``"ortools-cbc"``.

For a batch of fixed inputs ``x_b`` the solver

1. finds an incumbent ``a_b`` by projected gradient ascent (or takes ``warm_start``),
2. bounds every neuron over the action set (``bounds="ibp" | "crown" | "obbt"``, :mod:`solvers.bounds`),
3. returns at once the samples whose certified upper bound is within the gap of the incumbent,
4. builds the model of :mod:`solvers.mip_model` for each remaining sample (state folded into the first
   bias, stable neurons removed, unstable ones big-M or SOS1) with the incumbent as a complete hint,
   and solves them on ``workers`` processes (or Ray tasks),
5. returns the better of the solver's action and the incumbent, ``Q`` recomputed in float64 at it,
   and the smaller of the solver's dual bound (widened by ``1e-6 (1 + |bound|)`` for solver tolerances)
   and the certified bound of step 2.

Status: ``OPTIMAL`` when the final gap is below ``1e-6 max(1, |value|)``, ``GAP_LIMIT`` when it is
within the requested absolute gap (or relative gap), ``TIME_LIMIT`` otherwise (the action is then the
best incumbent and the bound still valid).

``time_limit`` is the wall-clock budget of the whole ``solve`` call, as for ``bnb``: steps 1-2 stop early
when it runs out (the ascent after evaluating its starts, OBBT after the current LP), and in step 4
each state, when it starts, takes its fair share of what is left (``remaining / states still to start
on its worker``; time a state does not use rolls over to the next), its model building included (a
state whose model takes longer to build than its share may solve for as long as it built, never past
the deadline; see :mod:`solvers.mip_backends`). With
a process pool the budget is the batch's wall clock too: workers read a shared deadline, and states
that no worker reached in time are not waited for. A state whose MIP got no time keeps the incumbent
of step 1 and the bound of step 2, with status ``TIME_LIMIT``.

The baseline of the benchmark, a plain big-M model on interval bounds with default SCIP settings, is
``make("scip", bounds="ibp", separating="default", incumbent=None, skip_certified=False)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from solvers import parallel
from solvers._common import begin_solve, empty_result
from solvers.action_set import ActionSet
from solvers.bounds import compute_bounds, round_up
from solvers.capabilities import EXACT, SolverCapabilities
from solvers.gradient_ascent import GradientAscentSolver
from solvers.mip_backends import (
    BACKENDS,
    LOST,
    SEPARATING,
    BackendOptions,
    JobBudget,
    lost,
    not_started,
    solve_problem,
)
from solvers.mip_model import FORMULATIONS, MIPOutcome, MIPProblem
from solvers.parallel import check_executor
from solvers.registry import register
from solvers.relu_net import ReLUNet
from solvers.result import MaxQResult, SolveStatus

_POOL_GRACE_S = 0.2
"""How long past the deadline a pool's results are waited for (workers stop by the deadline themselves)."""


@dataclass
class MIPSolver:
    """Exact max-Q through a MIP backend; see the module docstring for the steps."""

    backend: str = "scip"
    """``"scip"`` (PySCIPOpt), ``"ortools-scip"``, ``"ortools-highs"`` or ``"ortools-cbc"``."""
    gap: float = 1e-3
    """Absolute optimality gap: stop once ``upper_bound - value <= gap``."""
    relative_gap: float = 0.0
    """Relative gap (``|bound - value| / |value|``); 0 leaves only the absolute gap."""
    time_limit: float = 10.0
    """Wall-clock seconds for a whole ``solve`` call (the batch), shared fairly by its states; when reached,
    the best incumbent and the proven bound of every state are returned."""
    bounds: str = "crown"
    """Neuron bounds for the model: ``"ibp"``, ``"crown"`` or ``"obbt"`` (CROWN tightened by LP)."""
    formulation: str = "bigm"
    """Unstable neurons as ``"bigm"``, ``"sos1"`` or ``"anderson"`` (big-M plus the ideal inequalities of
    Anderson et al. separated as cuts at every LP solution); the last two ``"scip"`` only."""
    separating: str = "no-aggregation"
    """SCIP cuts: ``"default"``, ``"no-aggregation"`` (aggregation separator off), ``"fast"``, ``"off"``."""
    params: dict[str, Any] = field(default_factory=dict)
    """Native solver parameters, e.g. ``{"presolving/maxrounds": 0}`` for SCIP, ``{"sec": 5}`` for CBC."""
    incumbent: str | None = "ga"
    """``"ga"`` (projected gradient ascent) for the hint, or ``None`` (only ``warm_start`` if given)."""
    ga_starts: int = 16
    """Random starts of the incumbent's gradient ascent."""
    ga_iterations: int = 30
    """Steps of the incumbent's gradient ascent."""
    skip_certified: bool = True
    """Skip the MIP where the bound of step 2 already certifies the incumbent within the gap."""
    workers: int | None = None
    """Worker processes for a batch (``None``: one per core; 1: solve in this process). With ``executor="ray"``:
    Ray tasks at once, each reserving 1/workers of the cluster's CPUs (``None``: one per CPU of the cluster)."""
    executor: str = "process"
    """``"process"`` (a local pool), ``"serial"`` or ``"ray"`` (needs ``pip install 'rlcore[distributed]'``)."""
    start_method: str = "forkserver"
    """How the worker processes start (``"forkserver"``, ``"spawn"`` or ``"fork"``)."""
    max_cut_rounds: int = 30
    """Outer-approximation rounds for an l2 ball on MILP-only backends."""
    seed: int = 0
    """Seed of the incumbent's ascent (re-seeded on every call) and of the MIP solver."""
    verbose: bool = False
    name: str = ""
    capabilities: ClassVar[SolverCapabilities] = EXACT

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}.")
        self.name = self.name or self.backend
        if self.bounds not in ("ibp", "crown", "obbt"):
            raise ValueError(f"bounds must be 'ibp', 'crown' or 'obbt', got {self.bounds!r}.")
        if self.formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {', '.join(FORMULATIONS)}, got {self.formulation!r}.")
        if self.formulation in ("sos1", "anderson") and self.backend != "scip":
            raise ValueError(f"formulation={self.formulation!r} needs backend 'scip', got {self.backend!r}; "
                             "use 'bigm'.")
        if self.separating not in SEPARATING:
            raise ValueError(f"separating must be one of {', '.join(SEPARATING)}, got {self.separating!r}.")
        if self.incumbent not in ("ga", None):
            raise ValueError(f"incumbent must be 'ga' or None, got {self.incumbent!r}.")
        if not self.gap >= 0 or not self.relative_gap >= 0 or not self.time_limit > 0:
            raise ValueError(f"need gap >= 0, relative_gap >= 0 and time_limit > 0, got {self.gap}, "
                             f"{self.relative_gap}, {self.time_limit}.")
        check_executor(self.executor)

    def options(self, gap: float) -> BackendOptions:
        return BackendOptions(self.backend, self.formulation, self.time_limit, gap, self.relative_gap,
                              self.separating, dict(self.params), self.max_cut_rounds, self.seed, self.verbose)

    def solve(self, net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
              warm_start: torch.Tensor | None = None, tolerance: float | None = None) -> MaxQResult:
        start_time, deadline, x, aset, warm, gap = begin_solve(net, fixed_inputs, action_set, warm_start,
                                                               self.time_limit, self.gap, tolerance)
        if x.shape[0] == 0:
            return empty_result(x, net.action_dim, start_time)
        net64, x64 = net.to(net.device, torch.float64), x.double()
        batch = x.shape[0]

        # 1. incumbent
        inc_action = warm.double() if warm is not None else None
        if self.incumbent == "ga":
            ga = GradientAscentSolver(num_starts=self.ga_starts, iterations=self.ga_iterations, seed=self.seed)
            inc_action, _ = ga.ascend(net64, x64, aset, inc_action, deadline=deadline)
        inc_value = net64(x64, inc_action) if inc_action is not None else None

        # 2. bounds; 3. certified without a MIP
        layer_bounds = compute_bounds(self.bounds, net64, x64, aset, dtype=torch.float64,
                                      time_limit=max(deadline.remaining(), 0.0))
        certified = layer_bounds.output_upper.clone()
        todo = list(range(batch))
        if self.skip_certified and inc_value is not None:
            todo = [b for b in todo if not certified[b] - inc_value[b] <= self._allowed(gap, inc_value[b])]

        # 4. one MIP per remaining sample, each with its share of the time left
        problems = self._problems(net64, x64, aset, layer_bounds, inc_action, todo)
        options = self.options(gap)
        schedule = parallel.plan(len(problems), self.workers, self.executor, self.start_method)
        wall_deadline = time.time() + deadline.remaining()
        rounds = math.ceil(len(problems) / schedule.concurrency)
        jobs = [(p, options, JobBudget(wall_deadline, rounds - i // schedule.concurrency))
                for i, p in enumerate(problems)]
        outcomes = parallel.run(schedule, solve_problem, jobs, timeout=deadline.remaining() + _POOL_GRACE_S,
                                on_timeout=not_started, on_failure=lost)

        # 5. assemble
        if inc_action is None:
            inc_action = aset.center.double().expand(batch, -1).clone()
            inc_value = net64(x64, inc_action)
        actions, values, upper = inc_action.clone(), inc_value.clone(), certified
        limited = torch.zeros(batch, dtype=torch.bool)
        unreached = torch.zeros(batch, dtype=torch.bool)
        lost_samples = torch.zeros(batch, dtype=torch.bool)
        for b, outcome in zip(todo, outcomes, strict=True):
            self._merge(b, outcome, net64, x64, aset, actions, values, upper, limited)
            unreached[b] = outcome.action is None and outcome.limit_reached
            lost_samples[b] = outcome.message == LOST
        upper = torch.maximum(upper, values)
        status = self._status(values, upper, limited, gap)
        status[unreached] = SolveStatus.TIME_LIMIT  # no MIP answer in time: whatever the bound, a limit stopped it
        status[lost_samples & (status == SolveStatus.TIME_LIMIT)] = SolveStatus.LOST
        return MaxQResult(actions.to(x.dtype), values.to(x.dtype), round_up(upper, x.dtype), status.to(x.device),
                          time.perf_counter() - start_time)

    # ------------------------------------------------------------------------------------ helpers
    def _allowed(self, gap: float, value: torch.Tensor) -> float:
        return max(gap, self.relative_gap * abs(float(value)))

    def _problems(self, net64: ReLUNet, x64: torch.Tensor, aset: ActionSet, layer_bounds: Any,
                  inc_action: torch.Tensor | None, todo: list[int]) -> list[MIPProblem]:
        weights, biases = net64.fold_fixed_inputs(x64)
        ws = tuple(w.cpu().numpy() for w in weights)
        b_rest = tuple(b.cpu().numpy() for b in biases[1:])
        b1 = biases[0].cpu().numpy()
        lower = [lo.cpu().numpy() for lo in layer_bounds.lower]
        upper = [up.cpu().numpy() for up in layer_bounds.upper]
        hints = inc_action.cpu().numpy() if inc_action is not None else None
        set_arrays = [t.double().cpu().numpy() for t in (aset.low, aset.high, aset.center)]
        return [MIPProblem(ws, (b1[b], *b_rest), tuple(lo[b] for lo in lower), tuple(up[b] for up in upper),
                           aset.kind, *set_arrays, aset.radius, None if hints is None else hints[b])
                for b in todo]

    @staticmethod
    def _merge(b: int, outcome: MIPOutcome, net64: ReLUNet, x64: torch.Tensor, aset: ActionSet,
               actions: torch.Tensor, values: torch.Tensor, upper: torch.Tensor, limited: torch.Tensor) -> None:
        if outcome.action is not None:
            # A copy: an outcome from Ray's object store is a read-only array.
            candidate = aset.project(torch.tensor(outcome.action, dtype=torch.float64,
                                                  device=x64.device).unsqueeze(0))
            value = net64(x64[b:b + 1], candidate)[0]
            if value > values[b]:
                actions[b], values[b] = candidate[0], value
        if math.isfinite(outcome.bound):
            widened = outcome.bound + 1e-6 * (1 + abs(outcome.bound))
            upper[b] = min(float(upper[b]), widened)
        limited[b] = outcome.limit_reached

    def _status(self, values: torch.Tensor, upper: torch.Tensor, limited: torch.Tensor, gap: float) -> torch.Tensor:
        del limited  # the certificate decides: a gap beyond the request is reported as TIME_LIMIT
        status = torch.empty(values.shape[0], dtype=torch.int8)
        for b in range(values.shape[0]):
            final = float(upper[b] - values[b])
            if final <= 1e-6 * max(1.0, abs(float(values[b]))):
                status[b] = SolveStatus.OPTIMAL
            elif final <= self._allowed(gap, values[b]) + 1e-9:
                status[b] = SolveStatus.GAP_LIMIT
            else:  # a limit, or a solver gap that does not survive the float64 re-check
                status[b] = SolveStatus.TIME_LIMIT
        return status


def _factory(backend: str):
    def make_solver(**options: Any) -> MIPSolver:
        return MIPSolver(backend=backend, **options)

    make_solver.__doc__ = f"The {backend!r} MIP max-Q solver; options as :class:`MIPSolver`."
    return make_solver


for _backend in BACKENDS:
    register(_backend)(_factory(_backend))
