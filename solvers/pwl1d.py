"""Exact max-Q for one action dimension: a ReLU network is piecewise linear in a scalar action.

For a fixed state, ``a -> Q(x, a)`` on an interval ``[lo, hi]`` is continuous and piecewise linear, so
its maximum is at an endpoint or at a breakpoint, where some hidden unit's pre-activation crosses 0.
The breakpoints are found layer by layer, exactly:

1. the first layer's pre-activations are affine in ``a``, so each unit crosses 0 at most once, at
   ``-c_j / w_j``; with the endpoints these points split ``[lo, hi]`` into segments on which the first
   layer's activation pattern is fixed;
2. on each segment every deeper pre-activation is affine too, so its value at a crossing inside the
   segment is the linear interpolation of its values at the segment's ends; a unit crosses 0 inside a
   segment exactly when its end values have strictly opposite signs;
3. after the last hidden layer the output is affine between consecutive points, so its maximum over
   all the points found is the maximum over the interval.

All of it runs batched on the device: points are padded with copies of existing points (so every
candidate is a feasible action and nothing needs a mask), and the output is evaluated at every
candidate in one call. On an accelerator nothing waits on the device for the default two hidden
layers; on the CPU the last layer lists only its true crossings (a few per segment instead of one
entry per segment and unit: about 4x less work for (32, 16), 20x for (64, 64)). Deeper networks drop
the padding once per extra layer, which reads the largest number of crossings.

The answer is certified: ``upper_bounds == values`` and the status is ``OPTIMAL`` (up to floating-point
rounding of the interpolated crossings, about 1e-6 relative in float32). Any 1-D action set is an
interval, so boxes and balls alike are solved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from solvers._common import empty_result, prepare
from solvers.action_set import ActionSet
from solvers.capabilities import SolverCapabilities
from solvers.registry import register
from solvers.relu_net import ReLUNet
from solvers.result import MaxQResult, SolveStatus


def _add_crossings(points: torch.Tensor, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted ``points[B, n]`` and the pre-activations ``pre[B, n, h]`` there (affine between neighbours);
    returns the points with every zero crossing of every unit added, and the pre-activations there.

    A unit that does not cross inside a segment contributes a copy of the segment's left end.
    """
    left, right = pre[:, :-1], pre[:, 1:]
    crosses = (left * right) < 0
    fraction = torch.where(crosses, left / torch.where(crosses, left - right, 1.0), 0.0)  # [B, n-1, h]
    span = (points[:, 1:] - points[:, :-1]).unsqueeze(-1)
    new_points = points[:, :-1].unsqueeze(-1) + fraction * span                           # [B, n-1, h]
    new_pre = left.unsqueeze(2) + fraction.unsqueeze(-1) * (right - left).unsqueeze(2)   # [B, n-1, h, h]
    batch, units = pre.shape[0], pre.shape[2]
    return (torch.cat([points, new_points.reshape(batch, -1)], dim=1),
            torch.cat([pre, new_pre.reshape(batch, -1, units)], dim=1), crosses)


def _best_point_sparse(points: torch.Tensor, pre: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor) -> torch.Tensor:
    """The maximiser ``[B, 1]`` of the output over sorted ``points[B, n]`` with last-hidden-layer pre-activations
    ``pre[B, n, h]``, evaluating the output only at the true zero crossings inside each segment (a list of
    ``M`` crossings instead of ``B (n - 1) h`` padded entries). Ties go to the leftmost point."""
    values = pre.clamp_min(0) @ weight.T + bias                                       # [B, n, 1]
    best_value, best_index = values.squeeze(-1).max(dim=1)
    best_point = points.gather(1, best_index.unsqueeze(1)).squeeze(1)
    left, right = pre[:, :-1], pre[:, 1:]
    rows, segments, units = ((left * right) < 0).nonzero(as_tuple=True)
    if rows.numel() == 0:
        return best_point.unsqueeze(1)
    left, right = left[rows, segments], right[rows, segments]                        # [M, h]
    left_unit, right_unit = left.gather(1, units[:, None]), right.gather(1, units[:, None])
    fraction = left_unit / (left_unit - right_unit)                                   # [M, 1]
    at_crossing = ((left + fraction * (right - left)).clamp_min(0) @ weight.T + bias).squeeze(-1)
    position = points[rows, segments] + fraction.squeeze(1) * (points[rows, segments + 1] - points[rows, segments])
    crossing_best = torch.full_like(best_value, -torch.inf).scatter_reduce(0, rows, at_crossing, "amax")
    # The leftmost crossing reaching its row's best value (amin: deterministic, unlike a scatter with repeats).
    winners = at_crossing >= crossing_best[rows]
    crossing_point = torch.full_like(best_point, torch.inf).scatter_reduce(
        0, rows[winners], position[winners], "amin")
    return torch.where(crossing_best > best_value, crossing_point, best_point).unsqueeze(1)


def _compact(points: torch.Tensor, pre: torch.Tensor, originals: int, crosses: torch.Tensor,
             drop_copies: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort the points (carrying their pre-activations); with ``drop_copies``, keep only the first
    ``originals`` points and the true crossings (one wait on the device for their largest count)."""
    if not drop_copies:
        order = points.argsort(dim=1)
        return points.gather(1, order), pre.gather(1, order.unsqueeze(-1).expand_as(pre))
    batch = points.shape[0]
    keep = torch.cat([torch.ones(batch, originals, dtype=torch.bool, device=points.device),
                      crosses.reshape(batch, -1)], dim=1)
    key = torch.where(keep, points, torch.inf)
    order = key.argsort(dim=1)[:, : int(keep.sum(dim=1).max())]
    # Beyond a row's own count the sorted keys are +inf: point those columns at the row's last original
    # point (the interval's upper end), so the padding is a copy of a feasible point again.
    padding = torch.isinf(key.gather(1, order))
    order = torch.where(padding, torch.full_like(order, originals - 1), order)
    return points.gather(1, order), pre.gather(1, order.unsqueeze(-1).expand(-1, -1, pre.shape[2]))


@register("pwl1d")
@dataclass
class PiecewiseLinear1DSolver:
    """Exact max-Q over a 1-D action interval by enumerating the network's breakpoints."""

    max_elements: int = 4_000_000
    """Largest intermediate tensor (elements) per chunk of the batch; bounds the memory a solve takes."""
    compact_above: int = 256
    """For networks with more than two hidden layers: drop padded copies once a row holds this many points."""
    last_layer: Literal["auto", "sparse", "padded"] = "auto"
    """How the last hidden layer's crossings are evaluated: "sparse" lists only the true crossings (the least
    work, but sizing the list waits on the device once per solve), "padded" evaluates every (segment, unit) pair
    with copies where a unit does not cross (no wait); "auto": sparse on the CPU, padded on accelerators."""
    seed: int = 0
    """Unused (the solver is deterministic); accepted so that callers can pass a seed to any solver."""
    name: str = "pwl1d"
    capabilities: ClassVar[SolverCapabilities] = SolverCapabilities(exact=True, max_action_dim=1)

    def __post_init__(self) -> None:
        if self.last_layer not in ("auto", "sparse", "padded"):
            raise ValueError(f"pwl1d last_layer must be 'auto', 'sparse' or 'padded', got {self.last_layer!r}.")
        if self.max_elements < 1 or self.compact_above < 2:
            raise ValueError(f"pwl1d needs max_elements >= 1 and compact_above >= 2, got {self.max_elements}, "
                             f"{self.compact_above}.")

    def sparse_last_layer(self, device: torch.device) -> bool:
        """Whether the last hidden layer's crossings are listed (CPU: less work) or padded (no device wait)."""
        return self.last_layer == "sparse" or (self.last_layer == "auto" and device.type == "cpu")

    def solve(self, net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
              warm_start: torch.Tensor | None = None, tolerance: float | None = None) -> MaxQResult:
        """Maximise exactly; ``warm_start`` and ``tolerance`` are accepted and not needed."""
        start_time = time.perf_counter()
        if net.action_dim != 1:
            raise ValueError(f"pwl1d solves 1-D action sets only, the network has {net.action_dim} action "
                             "inputs; use 'bnb' (exact) or 'ga' for more dimensions.")
        x, aset, _ = prepare(net, fixed_inputs, action_set, warm_start)
        if x.shape[0] == 0:
            return empty_result(x, 1, start_time)
        widest = max(net.hidden_sizes) ** 2 * (max(net.hidden_sizes) + 2)
        chunk = max(1, self.max_elements // widest)
        actions = torch.cat([self._solve_chunk(net, x[i:i + chunk], aset) for i in range(0, x.shape[0], chunk)])
        values = net(x, actions)
        return MaxQResult(actions=actions, values=values, upper_bounds=values.clone(),
                          status=torch.full((x.shape[0],), int(SolveStatus.OPTIMAL), dtype=torch.int8,
                                            device=x.device),
                          solve_seconds=time.perf_counter() - start_time)

    def _solve_chunk(self, net: ReLUNet, x: torch.Tensor, aset: ActionSet) -> torch.Tensor:
        weights, biases = net.fold_fixed_inputs(x)
        batch = x.shape[0]
        low, high = aset.low.to(x.dtype)[0], aset.high.to(x.dtype)[0]
        points = torch.stack([low, high]).expand(batch, 2)
        pre = points.unsqueeze(-1) * weights[0][:, 0] + biases[0].unsqueeze(1)          # [B, 2, h1]
        hidden_layers = len(weights) - 1
        for layer in range(hidden_layers):
            if layer == hidden_layers - 1 and self.sparse_last_layer(x.device):
                return _best_point_sparse(points, pre, weights[-1], biases[-1])
            originals = points.shape[1]
            points, pre, crosses = _add_crossings(points, pre)
            post = pre.clamp_min(0) @ weights[layer + 1].T + biases[layer + 1]
            if layer == hidden_layers - 1:
                best = post.squeeze(-1).argmax(dim=1, keepdim=True)
                return points.gather(1, best)
            points, pre = _compact(points, post, originals, crosses,
                                   drop_copies=layer > 0 and points.shape[1] > self.compact_above)
        raise AssertionError("unreachable: a ReLUNet has at least one hidden layer")
