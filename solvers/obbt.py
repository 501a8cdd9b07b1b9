"""LP-based bound tightening (OBBT) for the pre-activations of hidden layers 2 .. L-1.

For one sample, with bounds ``[l_k, u_k]`` on every earlier layer, the LP is

    max / min  w_j . h_{k-1} + b_j                       (one neuron j of layer k)
    s.t. (1) z_i = W_i h_{i-1} + b_i,  h_0 = a           i < k
         (2) h_i = 0 where u_i <= 0;  h_i = z_i where l_i >= 0
         (3) h_i >= z_i,  0 <= h_i <= u_i (z_i - l_i) / (u_i - l_i)   for unstable neurons (the triangle)
         (4) low <= a <= high;  for an l1 ball also  s >= +-(a - c),  sum(s) <= r
             (an l2 ball enters through its bounding box only, which keeps the LP linear and valid)

solved by GLOP with warm starts (only the objective changes between neurons). Only neurons that are
unstable under the starting bounds are tightened: a stable neuron's encoding cannot improve. Each LP
value is widened by ``1e-7 (1 + |v|)`` against solver tolerances; a non-optimal LP keeps the old bound.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from solvers.bounds import Domain, LayerBounds

_SLACK = 1e-7


def tighten(weights: list[torch.Tensor], biases: list[torch.Tensor], domain: Domain,
            start: LayerBounds, deadline: float | None = None) -> LayerBounds:
    """Tighten ``start``'s intermediate bounds by LP, one sample at a time; returns new bounds.

    At ``deadline`` (a ``time.perf_counter()`` reading) it stops: neurons not tightened by then keep
    their starting bounds, which are still valid.
    """
    from ortools.linear_solver import pywraplp

    n = domain.low.shape[0]
    ws = [w.detach().cpu().double().numpy() for w in weights]
    bs = [b.detach().cpu().double().numpy() for b in biases]
    lower = [lo.detach().cpu().double().numpy().copy() for lo in start.lower]
    upper = [up.detach().cpu().double().numpy().copy() for up in start.upper]
    low, high = domain.low.cpu().double().numpy(), domain.high.cpu().double().numpy()
    center = None if domain.center is None else domain.center.cpu().double().numpy()
    for sample in range(n):
        if deadline is not None and time.perf_counter() >= deadline:
            break
        solver = pywraplp.Solver.CreateSolver("GLOP")
        if solver is None:
            raise RuntimeError("OR-Tools could not create the GLOP LP solver needed for OBBT.")
        inputs = [solver.NumVar(float(low[sample, i]), float(high[sample, i]), f"a{i}")
                  for i in range(low.shape[1])]
        if domain.kind == "l1_ball":
            spread = [solver.NumVar(0.0, solver.infinity(), f"s{i}") for i in range(len(inputs))]
            for a_i, s_i, c_i in zip(inputs, spread, center, strict=True):
                solver.Add(s_i >= a_i - float(c_i))
                solver.Add(s_i >= float(c_i) - a_i)
            solver.Add(solver.Sum(spread) <= domain.radius)
        prev: list | None = list(inputs)  # variables (or None for dead neurons) of the previous layer
        for k in range(len(ws) - 1):
            bias = bs[k][sample] if bs[k].ndim == 2 else bs[k]
            if k >= 1:
                _tighten_layer(solver, prev, ws[k], bias, lower[k][sample], upper[k][sample], deadline)
            if k + 2 < len(ws):  # the last hidden layer's LP variables would feed no tightening
                prev = _add_relu_layer(solver, prev, ws[k], bias, lower[k][sample], upper[k][sample], k, deadline)
            if prev is None:
                break
    as_tensor = [torch.as_tensor(x, dtype=start.lower[0].dtype, device=start.lower[0].device) for x in lower]
    as_tensor_up = [torch.as_tensor(x, dtype=start.lower[0].dtype, device=start.lower[0].device) for x in upper]
    return LayerBounds(as_tensor, as_tensor_up, start.output_upper, start.output_lower)


def _affine(solver, prev: list, row: np.ndarray, bias: float):
    terms = [float(w) * v for w, v in zip(row, prev, strict=True) if v is not None and w != 0.0]
    return solver.Sum(terms) + float(bias) if terms else None


def _tighten_layer(solver, prev: list, weight: np.ndarray, bias: np.ndarray, lower: np.ndarray,
                   upper: np.ndarray, deadline: float | None = None) -> None:
    from ortools.linear_solver import pywraplp

    objective = solver.Objective()
    for j in range(weight.shape[0]):
        if not lower[j] < 0 < upper[j]:
            continue
        if deadline is not None and time.perf_counter() >= deadline:
            return
        for sense in (1, -1):
            objective.Clear()
            for w, v in zip(weight[j], prev, strict=True):
                if v is not None and w != 0.0:
                    objective.SetCoefficient(v, float(w))
            objective.SetOffset(float(bias[j]))
            if sense == 1:
                objective.SetMaximization()
            else:
                objective.SetMinimization()
            if solver.Solve() != pywraplp.Solver.OPTIMAL:
                continue
            value = objective.Value()
            widened = value + sense * _SLACK * (1 + abs(value))
            if sense == 1:
                upper[j] = min(upper[j], widened)
            else:
                lower[j] = max(lower[j], widened)


def _add_relu_layer(solver, prev: list, weight: np.ndarray, bias: np.ndarray, lower: np.ndarray,
                    upper: np.ndarray, layer: int, deadline: float | None = None) -> list | None:
    """The triangle relaxation of one layer; ``None`` if ``deadline`` passes first."""
    out: list = []
    for j in range(weight.shape[0]):
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        lo, up = float(lower[j]), float(upper[j])
        if up <= 0:
            out.append(None)
            continue
        z = _affine(solver, prev, weight[j], bias[j])
        h = solver.NumVar(max(lo, 0.0), up, f"h{layer}_{j}")
        if z is None:  # a constant pre-activation
            solver.Add(h == max(float(bias[j]), 0.0))
        elif lo >= 0:
            solver.Add(h == z)
        else:
            solver.Add(h >= z)
            solver.Add(h <= (up / (up - lo)) * (z - lo))
        out.append(h)
    return out
