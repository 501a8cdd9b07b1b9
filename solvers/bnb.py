"""Certified max-Q by batched branch-and-bound over the action set, in torch (``"bnb"``).

For every sample ``b`` it finds ``a_b`` in the set ``S`` and a bound ``U_b`` with

    Q(x_b, a_b) <= max_{a in S} Q(x_b, a) <= U_b,      U_b - Q(x_b, a_b) <= gap

by input splitting, the design of the alpha,beta-CROWN verifiers (see ``maxq-solvers.md`` section 7):

1. Incumbents: projected gradient ascent from ``ga_starts`` random starts (and the warm start).
2. The frontier is one set of sub-boxes ``[low, high]`` for all samples together, each with its
   sample index, an upper bound ``u`` and the coefficient ``c`` of its linear bound ``Q <= c.a + d``.
   It starts with the set's bounding box (balls: every box is intersected with the ball).
3. Each iteration prunes boxes with ``u <= incumbent + gap`` (remembering the largest pruned ``u``
   per sample), stops a sample once ``max(live u, pruned u) - incumbent <= gap``, picks the
   ``boxes_per_iteration`` boxes with the largest ``u - incumbent`` across all samples and halves each
   along ``argmax_i width_i (|c_i| + mean_j |c_j|)`` (the longest-edge term keeps dimensions with
   ``c_i = 0`` from freezing the gap).
4. Children are bounded in one batched call: layer 1 exactly over the box, deeper layers by forward
   linear propagation of ``[boxes, width, action_dim]`` coefficients (never a per-box product of two
   weight matrices), intersected with IBP, the output by CROWN back-substitution, maximised over the
   box in closed form; a child keeps ``min(own, parent's)`` bound. Boxes that miss a ball are dropped.
   Once input splitting stalls (more than ``slope_threshold`` boxes per unfinished sample) on a net no
   wider than ``slope_max_width``, the output bound's ReLU lower slopes are optimised per box by a few
   Adam steps (alpha-CROWN), each child starting from its parent's slopes (kept per box, float32).
   Only the input is split: on the boxes where the search stalls, splits on ReLUs (phase fixes, and splits
   along a layer-1 neuron's hyperplane with its half-space kept exactly) were measured to remove less of the
   gap per unit of bounding time than input splits (``benchmarks/results/maxq_branching.md``).
5. New incumbents: ``Q`` at every child's centre and at the vertex that maximises its linear bound
   (projected into ``S``), and every ``refine_every`` iterations a few ascent steps from the vertices
   of the ``refine_boxes`` most promising boxes.

The time limit and node limits are for the whole batch; a sample not finished by then has status
``TIME_LIMIT`` and its bound is still valid. The clock is checked inside an iteration too: the initial
ascent stops at the limit, and the children of one iteration are bounded in chunks sized from the
measured cost per box (about ``min(0.02 s, time_limit / 10)`` each), the boxes not yet split when the
limit comes going back to the frontier with their parent's bound, so a call returns within a few
milliseconds (one chunk) of its limit. The best-first order spreads the effort over all
unfinished samples, so under a tight limit many samples end with similar gaps rather than a few
finished and the rest untouched. float64 (the default) is the rigorous mode; float32 adds
``margin (1 + |u|)`` to every bound, a margin chosen by experiment, not derived.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from solvers._common import Deadline, begin_solve, empty_result
from solvers.action_set import ActionSet
from solvers.bounds import Domain, default_slopes, linear_layers, optimised_output_bound, round_up
from solvers.capabilities import EXACT, SolverCapabilities
from solvers.gradient_ascent import GradientAscentSolver
from solvers.registry import register
from solvers.relu_net import ReLUNet
from solvers.result import MaxQResult, SolveStatus

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@register("bnb")
@dataclass
class BranchAndBoundSolver:
    """Batched input-splitting branch-and-bound with CROWN bounds; see the module docstring."""

    gap: float = 1e-3
    """Absolute gap: a sample is done when its certified bound is within ``gap`` of its incumbent, as returned in
    the net's dtype (a float32 net's search goes a few float32 ulps deeper, so rounding cannot widen it)."""
    time_limit: float = 60.0
    """Seconds for the whole batch."""
    max_iterations: int = 100_000
    """Branching iterations for the whole batch."""
    max_boxes: int = 1_000_000
    """Largest frontier; beyond it the search stops (``TIME_LIMIT``) rather than run out of memory."""
    boxes_per_iteration: int = 8192
    """Boxes split per iteration (each into two children bounded in one batched call)."""
    max_elements: int = 1 << 23
    """Memory cap: at most this many ``children x action_dim x width`` numbers per bounding call."""
    dtype: str = "float64"
    """``"float64"`` (rigorous) or ``"float32"`` (faster, with ``margin``)."""
    margin: float = 1e-5
    """Relative safety margin added to every float32 bound (unused in float64)."""
    ga_starts: int = 32
    """Random starts of the initial projected gradient ascent."""
    ga_iterations: int = 30
    """Steps of the initial projected gradient ascent."""
    slope_steps: int = 4
    """Adam steps per bounding call on the ReLU lower slopes of the output bound (alpha-CROWN; 0: CROWN's
    fixed slopes throughout). Children start from their parent's slopes, so the optimisation continues
    down the tree."""
    slope_threshold: int = 128
    """The slopes are optimised once the frontier holds more than this many boxes per unfinished sample
    (input splitting stalling); below it CROWN's slopes are cheaper. 0: from the first box on."""
    slope_max_width: int | None = 32
    """Nets whose widest hidden layer is wider than this keep CROWN's slopes (``None``: no limit). Measured in
    ``benchmarks/results/maxq_certified.md``: on the (32, 16) nets where splitting stalled the optimised slopes
    gave up to 2.8x the certified states/s (and 98-100 % certified where CROWN's slopes certified none in the
    limit), elsewhere 0.8-1.3x; with slopes on, the (64, 64) nets ran at 0.7-0.9x, their per-box cost growing
    faster than the tree shrinks."""
    slope_lr: float = 0.1
    """Adam step size of the slope optimisation."""
    refine_every: int = 5
    """Every this many iterations, run ascent steps from the most promising boxes' vertices (0: never)."""
    refine_boxes: int = 256
    refine_steps: int = 10
    seed: int = 0
    """Seed of the initial ascent's random starts (re-seeded on every call, so calls are reproducible)."""
    name: str = "bnb"
    capabilities: ClassVar[SolverCapabilities] = EXACT

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}.")
        if not self.gap >= 0 or not self.time_limit > 0 or self.boxes_per_iteration < 1:
            raise ValueError(f"bnb needs gap >= 0, time_limit > 0 and boxes_per_iteration >= 1, got "
                             f"{self.gap}, {self.time_limit}, {self.boxes_per_iteration}.")

    def solve(self, net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
              warm_start: torch.Tensor | None = None, tolerance: float | None = None) -> MaxQResult:
        start_time, deadline, x, aset, warm, gap = begin_solve(net, fixed_inputs, action_set, warm_start,
                                                               self.time_limit, self.gap, tolerance)
        if x.shape[0] == 0:
            return empty_result(x, net.action_dim, start_time)
        dtype = _DTYPES[self.dtype]
        margin = self.margin if dtype == torch.float32 else 0.0
        net_d, x_d = net.to(net.device, dtype), x.to(dtype)
        weights, biases = net_d.fold_fixed_inputs(x_d)
        batch, device = x.shape[0], x.device
        # The answer is returned in the net's dtype: Q re-evaluated there and the bound rounded up can widen a
        # gap met in the search by a few of its ulps, so a coarser output searches that much deeper.
        coarser = torch.finfo(x.dtype).eps > torch.finfo(dtype).eps
        search = _Search(self, net_d, x_d, aset, weights, biases, gap, margin, deadline,
                         output_ulps=4 * torch.finfo(x.dtype).eps if coarser else 0.0)

        ga = GradientAscentSolver(num_starts=self.ga_starts, iterations=self.ga_iterations, seed=self.seed)
        inc_a, inc_v = ga.ascend(net_d, x_d, aset, None if warm is None else warm.to(dtype), deadline=deadline)
        search.inc_a, search.inc_v = inc_a.clone(), inc_v
        search.start(aset.low.to(device, dtype).expand(batch, -1), aset.high.to(device, dtype).expand(batch, -1),
                     torch.arange(batch, device=device))

        widest = max(w.shape[0] for w in weights[:-1])
        per_iteration = max(16, min(self.boxes_per_iteration, self.max_elements // (2 * net.action_dim * widest)))
        iteration = 0
        while True:
            done = search.prune_and_check()
            if bool(done.all()):
                break
            search.start_slopes_if_stalled(done)
            if iteration >= self.max_iterations or deadline.expired() or search.size() > self.max_boxes:
                break
            search.branch(per_iteration)
            iteration += 1
            if self.refine_every and iteration % self.refine_every == 0 and not deadline.expired():
                search.refine(self.refine_boxes, self.refine_steps)

        certified = search.certified()
        actions = search.inc_a.to(x.dtype)
        values = net(x, actions)
        upper = torch.maximum(round_up(certified, x.dtype), values)
        final_gap = upper - values
        exact = final_gap <= 4 * torch.finfo(x.dtype).eps * values.abs().clamp_min(1.0)
        status = torch.where(exact, int(SolveStatus.OPTIMAL), int(SolveStatus.GAP_LIMIT))
        slack = 8 * torch.finfo(x.dtype).eps * values.abs().clamp_min(1.0)
        unfinished = ~search.finished().to(values.device) | (final_gap > gap + slack)
        status = torch.where(unfinished, int(SolveStatus.TIME_LIMIT), status)
        self.last_iterations = iteration
        return MaxQResult(actions, values, upper, status.to(torch.int8), time.perf_counter() - start_time)


@dataclass
class _Boxes:
    """Sub-boxes of the frontier, one row each: bounds, sample index, upper bound ``ub``, the coefficient
    ``coef`` of the linear bound ``Q <= coef . a + d`` and the optimised ReLU slopes (no columns when off)."""

    low: torch.Tensor
    high: torch.Tensor
    idx: torch.Tensor
    ub: torch.Tensor
    coef: torch.Tensor
    slopes: torch.Tensor

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    def __getitem__(self, rows) -> _Boxes:
        return _Boxes(*(getattr(self, f.name)[rows] for f in fields(self)))

    @staticmethod
    def cat(parts: list[_Boxes]) -> _Boxes:
        return _Boxes(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(_Boxes)))


class _ChunkClock:
    """How many boxes to bound before looking at the clock again.

    A chunk of ``n`` boxes costs about ``fixed + per_box * n`` seconds (fitted to the chunks so far, recent
    ones weighted most): the fixed part is Python and kernel-launch overhead, large when the slopes are
    optimised. A chunk is sized to take ``seconds``, but never so small that the fixed part is more than
    half its cost (which would make the search slower and the estimate, fitted to tiny chunks, stay tiny).
    """

    def __init__(self, seconds: float, decay: float = 0.8) -> None:
        self.seconds, self.decay = seconds, decay
        self.sums = [0.0] * 5  # weighted sums of 1, n, t, n^2, n t

    def record(self, boxes: int, seconds: float) -> None:
        self.sums = [self.decay * total + value for total, value in
                     zip(self.sums, (1.0, boxes, seconds, boxes * boxes, boxes * seconds), strict=True)]

    def cost(self) -> tuple[float, float]:
        """``(fixed, per_box)`` seconds."""
        w, n, t, nn, nt = self.sums
        spread = w * nn - n * n
        if spread <= 1e-9 * max(w * nn, 1.0):  # one chunk size so far: all of it per box
            return 0.0, t / max(n, 1e-9)
        per_box = max((w * nt - n * t) / spread, 1e-9)
        return max((t - per_box * n) / w, 0.0), per_box

    def size(self, left: int, remaining: float) -> int:
        if self.sums[0] == 0:
            return min(left, 64)
        fixed, per_box = self.cost()
        budget = min(self.seconds, max(remaining, 0.0) + 1e-3)
        wanted = max((budget - fixed) / per_box, fixed / per_box, 8.0)
        return max(1, min(left, int(wanted)))


class _Search:
    """The frontier of sub-boxes of all samples, with incumbents and pruned bounds per sample."""

    def __init__(self, options: BranchAndBoundSolver, net: ReLUNet, x: torch.Tensor, aset: ActionSet,
                 weights: list[torch.Tensor], biases: list[torch.Tensor], gap: float, margin: float,
                 deadline: Deadline | None = None, output_ulps: float = 0.0) -> None:
        self.options, self.net, self.x, self.aset = options, net, x, aset
        self.weights, self.biases, self.gap, self.margin = weights, biases, gap, margin
        self.output_ulps = output_ulps  # relative rounding allowance of the returned dtype (see _gap)
        self.deadline = deadline or Deadline(None)
        widest = max(w.shape[0] for w in weights[:-1])
        self.slopes_allowed = options.slope_steps > 0 and (options.slope_max_width is None
                                                           or widest <= options.slope_max_width)
        self.optimise_slopes = self.slopes_allowed and options.slope_threshold == 0
        self.slope_width = sum(w.shape[0] for w in weights[:-1])
        self.chunks = _ChunkClock(min(0.02, max(0.002, 0.1 * options.time_limit)))
        batch, dtype = x.shape[0], x.dtype
        self.base = Domain(aset.low.to(x.device, dtype)[None], aset.high.to(x.device, dtype)[None],
                           aset.kind, aset.center.to(x.device, dtype), aset.radius)
        self.pruned = torch.full((batch,), -torch.inf, dtype=dtype, device=x.device)
        self.final = torch.full((batch,), torch.nan, dtype=dtype, device=x.device)
        self.inc_a = self.inc_v = torch.empty(0)

    # ------------------------------------------------------------------------------ bounding
    def _bound(self, low: torch.Tensor, high: torch.Tensor, idx: torch.Tensor, ub: torch.Tensor | None = None,
               slopes: torch.Tensor | None = None) -> _Boxes:
        """The boxes ``[low, high]`` of samples ``idx`` with their bounds (never above a parent's ``ub``)."""
        domain = self.base.select(low, high)
        biases = [self.biases[0][idx], *self.biases[1:]]
        result = linear_layers(self.weights, biases, domain, intermediate="forward", need_output_lower=False)
        upper, coef = result.output_upper, result.output_coef
        if self.optimise_slopes:
            start = default_slopes(result)
            if slopes is not None and slopes.shape[1]:  # the parents' slopes; NaN rows: none yet
                given = slopes.to(low.dtype).split([b.shape[1] for b in start], dim=1)
                start = [torch.where(torch.isnan(g), d, g) for g, d in zip(given, start, strict=True)]
            tuned, tuned_coef, best = optimised_output_bound(self.weights, biases, domain, result, start,
                                                             self.options.slope_steps, self.options.slope_lr,
                                                             search_dtype=torch.float32)
            better = tuned < upper
            upper, coef = torch.where(better, tuned, upper), torch.where(better.unsqueeze(1), tuned_coef, coef)
            slopes = torch.cat(best, dim=1).to(torch.float32)  # search heuristics: float32 halves their memory
        else:
            slopes = low.new_empty(low.shape[0], 0, dtype=torch.float32)
        if self.margin:
            upper = upper + self.margin * (1 + upper.abs())
        upper = torch.where(domain.empty(), torch.full_like(upper, -torch.inf), upper)
        self._candidates(low, high, coef, idx)
        point = (high - low).amax(dim=1) == 0
        if bool(point.any()):  # a box shrunk to a point: its maximum is Q there, which _candidates offered
            with torch.no_grad():
                exact = self.net(self.x[idx[point]], low[point])
            upper[point] = torch.minimum(upper[point], exact)
        if ub is not None:
            upper = torch.minimum(upper, ub)
        return _Boxes(low, high, idx, upper, coef, slopes)

    def _candidates(self, low: torch.Tensor, high: torch.Tensor, coef: torch.Tensor, idx: torch.Tensor) -> None:
        vertex = torch.where(coef > 0, high, low)
        points = self.aset.project(torch.cat([(low + high) / 2, vertex]))
        self._offer(points, idx.repeat(2))

    def _offer(self, points: torch.Tensor, idx: torch.Tensor) -> None:
        """Make any of ``points`` (feasible actions of samples ``idx``) the new incumbent if better."""
        with torch.no_grad():
            values = self.net(self.x[idx], points)
        best = torch.full_like(self.inc_v, -torch.inf).scatter_reduce(0, idx, values, "amax")
        better = best > self.inc_v
        if not bool(better.any()):
            return
        winner = (values == best[idx]) & better[idx]
        rows = torch.nonzero(winner).squeeze(1)
        self.inc_a[idx[rows]] = points[rows]
        self.inc_v = torch.where(better, best, self.inc_v)

    # ------------------------------------------------------------------------------ frontier
    def start(self, low: torch.Tensor, high: torch.Tensor, idx: torch.Tensor) -> None:
        self.boxes = self._bound(low.contiguous(), high.contiguous(), idx)

    def size(self) -> int:
        return len(self.boxes)

    def _live_max(self) -> torch.Tensor:
        return torch.full_like(self.pruned, -torch.inf).scatter_reduce(0, self.boxes.idx, self.boxes.ub, "amax")

    def certified(self) -> torch.Tensor:
        """Per sample: the final bound if finished, else ``max(live bounds, pruned bounds)``."""
        current = torch.maximum(self._live_max(), self.pruned)
        return torch.where(torch.isnan(self.final), current, self.final)

    def finished(self) -> torch.Tensor:
        return ~torch.isnan(self.final)

    def _gap(self, incumbent: torch.Tensor) -> torch.Tensor:
        """The gap searched for near ``incumbent``: the requested one less the output's rounding allowance, plus
        an allowance for the search's own rounding, which only matters for gap=0 (there a box's exact bound and
        Q at its vertex can differ in the last bits)."""
        scale = 1 + incumbent.abs()
        return (self.gap - self.output_ulps * scale).clamp_min(0) + 1e-12 * scale

    def prune_and_check(self) -> torch.Tensor:
        """Prune boxes within the gap, freeze finished samples, drop their boxes; returns ``finished``."""
        boxes = self.boxes
        incumbent = self.inc_v[boxes.idx]
        prunable = boxes.ub <= incumbent + self._gap(incumbent)
        if bool(prunable.any()):
            self.pruned.scatter_reduce_(0, boxes.idx[prunable], boxes.ub[prunable], "amax")
            self.boxes = boxes = boxes[~prunable]
        current = torch.maximum(self._live_max(), self.pruned)
        no_boxes = torch.bincount(boxes.idx, minlength=self.inc_v.shape[0]) == 0  # all pruned: bound = pruned max
        within = current - self.inc_v <= self._gap(self.inc_v)
        newly = torch.isnan(self.final) & (within | no_boxes)
        if bool(newly.any()):
            self.final = torch.where(newly, current, self.final)
            self.boxes = boxes[~newly[boxes.idx]]
        return self.finished()

    def start_slopes_if_stalled(self, finished: torch.Tensor) -> None:
        """Switch the slope optimisation on once the frontier holds more than ``slope_threshold`` boxes per
        unfinished sample; the boxes already there get NaN slopes (CROWN's at their next split)."""
        if (self.slopes_allowed and not self.optimise_slopes
                and self.size() > self.options.slope_threshold * int((~finished).sum())):
            self.optimise_slopes = True
            self.boxes.slopes = torch.full((self.size(), self.slope_width), torch.nan, dtype=torch.float32,
                                           device=self.boxes.low.device)

    def branch(self, count: int) -> None:
        """Halve the ``count`` most promising boxes and bound their children, in chunks between which the
        clock is checked; the boxes not yet split when time is up go back to the frontier unchanged."""
        if self.size() == 0:
            return
        priority = self.boxes.ub - self.inc_v[self.boxes.idx]
        count = min(count, self.size())
        keep = torch.ones(self.size(), dtype=torch.bool, device=priority.device)
        everything = torch.arange(count, device=priority.device)
        chosen = torch.topk(priority, count).indices if count < self.size() else everything
        keep[chosen] = False
        todo, parts = self.boxes[chosen], [self.boxes[keep]]
        done = 0
        while done < count:
            if done and self.deadline.expired():
                parts.append(todo[done:])
                break
            size = self.chunks.size(count - done, self.deadline.remaining())
            tic = time.perf_counter()
            parts.append(self._split(todo[done:done + size]))
            self.chunks.record(size, time.perf_counter() - tic)
            done += size
        self.boxes = _Boxes.cat(parts)

    def _split(self, boxes: _Boxes) -> _Boxes:
        """The two halves of every box, bounded."""
        low, high = boxes.low, boxes.high
        width = high - low
        magnitude = boxes.coef.abs()
        score = width * (magnitude + magnitude.mean(dim=1, keepdim=True))
        score = torch.where(width > 0, score + width * 1e-12, torch.full_like(score, -1.0))
        dim = score.argmax(dim=1, keepdim=True)
        middle = (low.gather(1, dim) + high.gather(1, dim)) / 2
        left_high, right_low = high.scatter(1, dim, middle), low.scatter(1, dim, middle)
        return self._bound(torch.cat([low, right_low]), torch.cat([left_high, high]), boxes.idx.repeat(2),
                           boxes.ub.repeat(2), boxes.slopes.repeat(2, 1))

    def refine(self, count: int, steps: int) -> None:
        """A few projected ascent steps from the vertices of the most promising boxes."""
        if self.size() == 0 or steps <= 0:
            return
        count = min(count, self.size())
        boxes = self.boxes
        chosen = torch.topk(boxes.ub - self.inc_v[boxes.idx], count).indices
        vertex = torch.where(boxes.coef[chosen] > 0, boxes.high[chosen], boxes.low[chosen])
        idx = boxes.idx[chosen]
        ga = GradientAscentSolver(num_starts=0, iterations=steps, step_size=0.05, seed=self.options.seed)
        actions, _ = ga.ascend(self.net, self.x[idx], self.aset, self.aset.project(vertex), deadline=self.deadline)
        self._offer(actions, idx)
