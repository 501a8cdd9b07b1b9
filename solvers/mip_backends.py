"""Solve one :class:`~solvers.mip_model.MIPProblem` with SCIP (PySCIPOpt) or OR-Tools.

Every backend builds the model of :mod:`solvers.mip_model` through its own :class:`Writer`, hands the
forward-pass hint over as a complete solution, applies the absolute / relative gap and the time limit,
and maps its termination to a :class:`MIPOutcome`: a limit is never an exception, a real solver error
is (with the solver's own message; OR-Tools hides it behind ``'StatusNotOk' object has no attribute
'canonical_code'``, google/or-tools#4606, so it is dug out of the exception chain).

* ``"scip"``: PySCIPOpt; l2 ball as a quadratic constraint; big-M or SOS1; separator settings.
* ``"ortools-scip"``: OR-Tools MathOpt with GSCIP; l2 ball as a quadratic constraint.
* ``"ortools-highs"``: MathOpt with HiGHS; l2 ball by outer-approximation cuts.
* ``"ortools-cbc"``: ``pywraplp`` with CBC (MathOpt has no CBC); l2 ball by cuts; relative gap only.

Each call runs in whatever process calls it: :mod:`solvers.parallel` maps it over worker processes.

Time: a job may carry a :class:`JobBudget`, a share of its batch's wall-clock budget. The job's
share is ``remaining / rounds_left`` (a fair share of what is left when it starts, so time that earlier
states did not use rolls over). Building the model counts: it may run on past the share, but never past
the batch's deadline, and the solver then gets what is left of the share, or at least as long as the
building took (a model is only worth building if it is solved for a while), again never past the
batch's deadline. A job that starts after the batch's deadline, or has no time left once its model is
built, returns at once with no action and no bound (the caller keeps its incumbent and its bound
propagation bound).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from solvers.mip_model import (
    MIPOutcome,
    MIPProblem,
    OutOfTime,
    encode,
    forward,
    hint_values,
    l2_cut,
    project,
    separate_ideal,
)

BACKENDS = ("scip", "ortools-scip", "ortools-highs", "ortools-cbc")
SEPARATING = ("default", "no-aggregation", "fast", "off")


@dataclass(frozen=True)
class BackendOptions:
    """Solver settings shared by the backends (see :class:`solvers.mip_solver.MIPSolver`)."""

    backend: str = "scip"
    formulation: str = "bigm"
    time_limit: float = 10.0
    gap: float = 1e-3
    relative_gap: float = 0.0
    separating: str = "no-aggregation"
    params: dict[str, Any] = field(default_factory=dict)
    max_cut_rounds: int = 30
    seed: int = 0
    verbose: bool = False


@dataclass(frozen=True)
class JobBudget:
    """One job's share of a batch's time budget."""

    deadline: float
    """The batch's deadline on the ``time.time()`` clock (shared by the worker processes)."""
    rounds_left: int = 1
    """Jobs still to run on this job's worker, this one included: it takes ``remaining / rounds_left``."""

    def seconds(self) -> float:
        """This job's time limit, from now (``<= 0``: the batch's time is spent)."""
        remaining = self.deadline - time.time()
        return remaining / max(self.rounds_left, 1) if remaining > 0 else remaining


class _Clock:
    """When one job's building must stop (``hard``) and, once built, when its solving must stop."""

    def __init__(self, start: float, soft: float, hard: float) -> None:
        self.start, self.soft, self.hard = start, min(soft, hard), hard
        self.end, self.reserve = self.soft, 0.0

    def built(self, handover: float = 0.0) -> float:
        """Call once the model is built: fixes :attr:`end` and returns the seconds left for solving.

        ``handover`` is the solver's own set-up time (outside its time limit) as a multiple of the
        building time; it is kept back from the solver's limit.
        """
        now = time.perf_counter()
        building = now - self.start
        self.reserve = handover * building
        self.end = min(self.hard, max(self.soft, now + building + self.reserve))
        return self.remaining()

    def remaining(self) -> float:
        """Seconds to hand the solver now."""
        return self.end - self.reserve - time.perf_counter()


NOT_STARTED = "not started: the batch's time limit was spent"
LOST = "lost: the worker solving it died and its retries ran out"


def not_started(job: tuple) -> MIPOutcome:
    """The outcome of a job that got no time (also what a pool's caller uses for a job it gave up on)."""
    return MIPOutcome(None, -math.inf, math.inf, True, 0.0, NOT_STARTED)


def lost(job: tuple) -> MIPOutcome:
    """The outcome of a job whose worker died on every try (Ray: a crashed worker or node)."""
    return MIPOutcome(None, -math.inf, math.inf, False, 0.0, LOST)


def solve_problem(job: tuple[MIPProblem, BackendOptions] | tuple[MIPProblem, BackendOptions, JobBudget | None]
                  ) -> MIPOutcome:
    """Solve one problem (a module-level function so that process pools can pickle it).

    ``job`` is ``(problem, options)``, with ``options.time_limit`` seconds for this problem, or
    ``(problem, options, budget)``, with the time limit taken from the :class:`JobBudget`.
    """
    problem, options, *rest = job
    start = time.perf_counter()
    budget = rest[0] if rest else None
    clock = _Clock(start, start + options.time_limit, start + options.time_limit)
    if budget is not None:
        share = budget.seconds()
        if share <= 0:
            return not_started(job)
        clock = _Clock(start, start + min(share, options.time_limit), start + (budget.deadline - time.time()))
    try:
        if options.backend == "scip":
            outcome = _solve_scip(problem, options, clock)
        elif options.backend in ("ortools-scip", "ortools-highs"):
            outcome = _cut_loop(problem, options, _solve_mathopt, clock)
        elif options.backend == "ortools-cbc":
            outcome = _cut_loop(problem, options, _solve_cbc, clock)
        else:
            raise ValueError(f"unknown MIP backend {options.backend!r}; choose one of {', '.join(BACKENDS)}.")
    except OutOfTime:
        outcome = MIPOutcome(None, -math.inf, math.inf, True, 0.0, "no time left to build the model")
    return MIPOutcome(outcome.action, outcome.objective, outcome.bound, outcome.limit_reached,
                      time.perf_counter() - start, outcome.message)


def _constant(problem: MIPProblem, objective: Any) -> MIPOutcome | None:
    """Every neuron is dead or the network ignores the action: the objective is a number."""
    if isinstance(objective, (int, float)):
        action = problem.hint if problem.hint is not None else problem.center
        return MIPOutcome(np.asarray(action, dtype=np.float64), float(objective), float(objective), False, 0.0)
    return None


# -------------------------------------------------------------------------------------------- SCIP
class _ScipWriter:
    def __init__(self, model: Any) -> None:
        from pyscipopt import quicksum

        self.model, self._sum = model, quicksum

    def var(self, lb: float, ub: float, integer: bool = False) -> Any:
        return self.model.addVar(lb=lb, ub=ub, vtype="B" if integer else "C")

    def add(self, constraint: Any) -> None:
        self.model.addCons(constraint)

    add_quadratic = add

    def total(self, terms: list) -> Any:
        return self._sum(terms)

    def sos1(self, first: Any, second: Any) -> None:
        self.model.addConsSOS1([first, second])


def _ideal_separator(encoding: Any, tolerance: float = 1e-6) -> Any:
    """A SCIP separator for the ideal ReLU inequalities (11) of :mod:`solvers.mip_model`: at every LP solution it
    adds, for each unstable neuron, the most violated one (if any) as a cut."""
    from pyscipopt import SCIP_RESULT, Sepa

    class IdealReLUSeparator(Sepa):
        transformed: list | None = None
        """The model's transformed variables, in the order of ``encoding.variables`` (looked up once)."""

        def sepaexeclp(self) -> dict:
            model = self.model
            if self.transformed is None:
                self.transformed = [model.getTransformedVar(v) for v in encoding.variables]
            values = np.array([model.getSolVal(None, v) for v in encoding.variables])
            found = False
            for neuron in encoding.neurons:
                cut = separate_ideal(neuron, values, tolerance)
                if cut is None:
                    continue
                coefs, d_coef, rhs = cut
                row = model.createEmptyRowSepa(self, "ideal_relu", lhs=None, rhs=rhs, local=False, removable=True)
                model.cacheRowExtensions(row)
                model.addVarToRow(row, self.transformed[neuron.h_index], 1.0)
                model.addVarToRow(row, self.transformed[neuron.d_index], -d_coef)
                for index, coef in coefs.items():
                    if coef != 0.0:
                        model.addVarToRow(row, self.transformed[index], -coef)
                model.flushRowExtensions(row)
                if model.isCutEfficacious(row):
                    model.addCut(row)
                    found = True
                model.releaseRow(row)
            return {"result": SCIP_RESULT.SEPARATED if found else SCIP_RESULT.DIDNOTFIND}

    return IdealReLUSeparator()


def _solve_scip(problem: MIPProblem, options: BackendOptions, clock: _Clock) -> MIPOutcome:
    from pyscipopt import SCIP_PARAMSETTING, Model

    model = Model()
    if not options.verbose:
        model.hideOutput()
    encoding = encode(problem, _ScipWriter(model), options.formulation, l2="quadratic", deadline=clock.hard)
    if (constant := _constant(problem, encoding.objective)) is not None:
        return constant
    if options.formulation == "anderson" and encoding.neurons:
        # Presolve would aggregate the variables the cuts are written in; the model is small and tight already.
        model.setParam("presolving/maxrounds", 0)
        model.includeSepa(_ideal_separator(encoding), "ideal_relu", "ideal ReLU inequalities (Anderson et al.)",
                          priority=100_000, freq=1)
    model.setObjective(encoding.objective, "maximize")
    model.setParam("limits/absgap", float(options.gap))
    model.setParam("limits/gap", float(options.relative_gap))
    model.setParam("randomization/randomseedshift", int(options.seed))
    if options.separating == "no-aggregation":
        model.setParam("separating/aggregation/freq", -1)
    elif options.separating == "fast":
        model.setSeparating(SCIP_PARAMSETTING.FAST)
    elif options.separating == "off":
        model.setSeparating(SCIP_PARAMSETTING.OFF)
    for name, value in options.params.items():
        model.setParam(name, value)
    if problem.hint is not None:
        solution = model.createSol()
        for variable, value in zip(encoding.variables, hint_values(problem, problem.hint, options.formulation),
                                   strict=True):
            model.setSolVal(solution, variable, value)
        model.addSol(solution)
    remaining = clock.built()
    if remaining <= 1e-3:
        return MIPOutcome(None, -math.inf, math.inf, True, 0.0, "no time left after building the model")
    model.setParam("limits/time", min(remaining, float(options.params.get("limits/time", math.inf))))
    model.optimize()
    status = model.getStatus()
    if status in ("infeasible", "unbounded", "inforunbd"):
        raise RuntimeError(f"SCIP reports the max-Q model {status}: the bounds or the action set are inconsistent.")
    action, objective = None, -math.inf
    if model.getNSols() > 0:
        best = model.getBestSol()
        action = np.array([model.getSolVal(best, a) for a in encoding.actions])
        objective = model.getSolObjVal(best)
    return MIPOutcome(action, objective, float(model.getDualbound()),
                      status not in ("optimal", "gaplimit"), 0.0, status)


# ----------------------------------------------------------------------------------------- OR-Tools
def _ortools_error(error: Exception) -> str:
    """The real message behind OR-Tools' ``StatusNotOk`` (google/or-tools#4606)."""
    messages, seen = [], error
    while seen is not None:
        messages.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__context__ or seen.__cause__
    inner = [m for m in messages if "StatusNotOk" in m and "canonical_code" not in m]
    return inner[-1] if inner else messages[-1]


class _MathOptWriter:
    def __init__(self, model: Any) -> None:
        from ortools.math_opt.python import mathopt

        self.model, self._sum = model, mathopt.fast_sum

    def var(self, lb: float, ub: float, integer: bool = False) -> Any:
        return self.model.add_variable(lb=lb, ub=ub, is_integer=integer)

    def add(self, constraint: Any) -> None:
        self.model.add_linear_constraint(constraint)

    def add_quadratic(self, constraint: Any) -> None:
        self.model.add_quadratic_constraint(constraint)

    def total(self, terms: list) -> Any:
        return self._sum(terms)

    def sos1(self, first: Any, second: Any) -> None:
        raise ValueError("formulation='sos1' needs the 'scip' backend; OR-Tools backends take 'bigm'.")


class _CbcWriter(_MathOptWriter):
    def __init__(self, solver: Any) -> None:
        self.solver = solver

    def var(self, lb: float, ub: float, integer: bool = False) -> Any:
        return self.solver.IntVar(lb, ub, "") if integer else self.solver.NumVar(lb, ub, "")

    def add(self, constraint: Any) -> None:
        self.solver.Add(constraint)

    def add_quadratic(self, constraint: Any) -> None:  # pragma: no cover - encode() asks for cuts here
        raise ValueError("CBC takes no quadratic constraints; the l2 ball is handled by cuts.")

    def total(self, terms: list) -> Any:
        return self.solver.Sum(terms)


class _Session:
    """A built model that :func:`_cut_loop` can re-solve after adding cuts."""

    def __init__(self, writer: Any, encoding: Any, solve: Any) -> None:
        self.writer, self.encoding, self.solve = writer, encoding, solve


def _cut_loop(problem: MIPProblem, options: BackendOptions, build: Any, clock: _Clock) -> MIPOutcome:
    """Solve; for an l2 ball on a MILP solver, add outer-approximation cuts until the action is inside."""
    session = build(problem, options, clock.hard)
    if isinstance(session, MIPOutcome):
        return session
    # pywraplp hands the model to CBC inside Solve(), outside CBC's time limit: measured at about 1.2 times
    # the building time ((256, 256) nets: 0.6 s). MathOpt's hand-over is small.
    clock.built(handover=1.2 if options.backend == "ortools-cbc" else 0.0)
    cuts = problem.set_kind == "l2_ball" and options.backend != "ortools-scip"
    if cuts:
        for g in _initial_directions(problem):
            _add_cut(session, g, float(problem.radius + g @ problem.center))
    bound, best_action, best_value, message = math.inf, None, -math.inf, ""
    for _ in range(max(options.max_cut_rounds, 1) if cuts else 1):
        remaining = clock.remaining()
        if remaining <= 1e-3:
            return MIPOutcome(best_action, best_value, bound, True, 0.0, message or "no time left")
        outcome = session.solve(remaining)
        bound, message = min(bound, outcome.bound), outcome.message
        if outcome.action is None:
            return MIPOutcome(best_action, best_value, bound, True, 0.0, message)
        cut = l2_cut(problem, outcome.action) if cuts else None
        action = project(problem, outcome.action) if cut is not None else outcome.action
        value = forward(problem, action)[1]
        if value > best_value:
            best_action, best_value = action, value
        if cut is None:
            return MIPOutcome(best_action, best_value, bound, outcome.limit_reached, 0.0, message)
        if outcome.limit_reached or clock.remaining() <= 0:
            break
        _add_cut(session, *cut)
    return MIPOutcome(best_action, best_value, bound, True, 0.0, message or "cut rounds exhausted")


def _add_cut(session: _Session, g: np.ndarray, rhs: float) -> None:
    writer, actions = session.writer, session.encoding.actions
    writer.add(writer.total([float(gi) * a for gi, a in zip(g, actions, strict=True)]) <= rhs)


def _initial_directions(problem: MIPProblem) -> list[np.ndarray]:
    """Unit directions of the first outer-approximation cuts: the diagonals (up to 6 dims) and the hint's."""
    dim = problem.action_dim
    directions = []
    if 1 < dim <= 6:
        directions = [(2 * np.array(bits) - 1) / math.sqrt(dim) for bits in np.ndindex(*(2,) * dim)]
    if problem.hint is not None:
        offset = problem.hint - problem.center
        if np.linalg.norm(offset) > 1e-9:
            directions.append(offset / np.linalg.norm(offset))
    return directions


def _solve_mathopt(problem: MIPProblem, options: BackendOptions, deadline: float) -> _Session | MIPOutcome:
    from ortools.math_opt.python import mathopt

    model = mathopt.Model()
    writer = _MathOptWriter(model)
    l2 = "quadratic" if options.backend == "ortools-scip" else "cuts"
    encoding = encode(problem, writer, options.formulation, l2=l2, deadline=deadline)
    if (constant := _constant(problem, encoding.objective)) is not None:
        return constant
    model.maximize(encoding.objective)
    solver_type = mathopt.SolverType.GSCIP if options.backend == "ortools-scip" else mathopt.SolverType.HIGHS
    hints = []
    if problem.hint is not None:
        values = hint_values(problem, problem.hint, options.formulation)
        hints = [mathopt.SolutionHint(variable_values=dict(zip(encoding.variables, values, strict=True)))]

    def solve(time_limit: float) -> MIPOutcome:
        params = mathopt.SolveParameters(time_limit=timedelta(seconds=time_limit), enable_output=options.verbose,
                                         absolute_gap_tolerance=options.gap,
                                         relative_gap_tolerance=options.relative_gap)
        if options.backend == "ortools-scip":
            params.random_seed = options.seed
            if options.separating == "no-aggregation":
                params.gscip.int_params["separating/aggregation/freq"] = -1
            elif options.separating in ("fast", "off"):
                params.cuts = mathopt.Emphasis.LOW if options.separating == "fast" else mathopt.Emphasis.OFF
            for name, value in options.params.items():
                kind = {bool: "bool_params", int: "int_params", float: "real_params"}.get(type(value), "string_params")
                getattr(params.gscip, kind)[name] = value
        try:
            result = mathopt.solve(model, solver_type, params=params,
                                   model_params=mathopt.ModelSolveParameters(solution_hints=hints))
        except Exception as error:  # re-raised below with the solver's real message
            raise RuntimeError(f"OR-Tools {options.backend} failed: {_ortools_error(error)}") from None
        reason = result.termination.reason
        if reason in (mathopt.TerminationReason.INFEASIBLE, mathopt.TerminationReason.UNBOUNDED,
                      mathopt.TerminationReason.INFEASIBLE_OR_UNBOUNDED, mathopt.TerminationReason.OTHER_ERROR,
                      mathopt.TerminationReason.NUMERICAL_ERROR):
            raise RuntimeError(f"OR-Tools {options.backend} stopped with {reason.name}: {result.termination.detail}")
        action = None
        if result.has_primal_feasible_solution():
            action = np.array(result.variable_values(encoding.actions), dtype=np.float64)
        bound = result.termination.objective_bounds.dual_bound
        bound = math.inf if bound is None or math.isnan(bound) else float(bound)
        return MIPOutcome(action, -math.inf, bound, reason != mathopt.TerminationReason.OPTIMAL, 0.0,
                          f"{reason.name} {result.termination.detail}")

    return _Session(writer, encoding, solve)


def _solve_cbc(problem: MIPProblem, options: BackendOptions, deadline: float) -> _Session | MIPOutcome:
    from ortools.linear_solver import pywraplp

    solver = pywraplp.Solver.CreateSolver("CBC")
    if solver is None:
        raise RuntimeError("OR-Tools could not create the CBC solver (pywraplp.Solver.CreateSolver('CBC')).")
    writer = _CbcWriter(solver)
    encoding = encode(problem, writer, options.formulation, l2="cuts", deadline=deadline)
    if (constant := _constant(problem, encoding.objective)) is not None:
        return constant
    solver.Maximize(encoding.objective)
    if options.verbose:
        solver.EnableOutput()
    if problem.hint is not None:
        solver.SetHint(encoding.variables, hint_values(problem, problem.hint, options.formulation))
    for name, value in options.params.items():
        solver.SetSolverSpecificParametersAsString(f"{name} {value}")

    def solve(time_limit: float) -> MIPOutcome:
        # pywraplp has only a relative gap: turn the absolute one into a relative one at the hint's scale.
        scale = max(abs(problem.hint_value), 1.0) if problem.hint is not None else 1.0
        params = pywraplp.MPSolverParameters()
        params.SetDoubleParam(params.RELATIVE_MIP_GAP, max(options.relative_gap, options.gap / scale / 2))
        solver.SetTimeLimit(max(int(time_limit * 1000), 1))
        tic = time.perf_counter()
        status = solver.Solve(params)
        if status == pywraplp.Solver.INFEASIBLE and time.perf_counter() - tic >= 0.9 * time_limit:
            # CBC may say INFEASIBLE when its time limit stops it early (measured: 12-20 ms limits on
            # (64, 64) nets). The model is feasible by construction (the hint is a solution): a limit.
            return MIPOutcome(None, -math.inf, math.inf, True, 0.0, "NOT_SOLVED (CBC: infeasible at its time limit)")
        if status in (pywraplp.Solver.INFEASIBLE, pywraplp.Solver.UNBOUNDED, pywraplp.Solver.ABNORMAL,
                      pywraplp.Solver.MODEL_INVALID):
            raise RuntimeError(f"OR-Tools CBC stopped with status {status} (infeasible, unbounded or abnormal).")
        if status == pywraplp.Solver.NOT_SOLVED:
            return MIPOutcome(None, -math.inf, math.inf, True, 0.0, "NOT_SOLVED")
        action = np.array([a.solution_value() for a in encoding.actions], dtype=np.float64)
        bound = float(solver.Objective().BestBound())
        return MIPOutcome(action, solver.Objective().Value(), bound, status != pywraplp.Solver.OPTIMAL, 0.0,
                          "OPTIMAL" if status == pywraplp.Solver.OPTIMAL else "FEASIBLE")

    return _Session(writer, encoding, solve)
