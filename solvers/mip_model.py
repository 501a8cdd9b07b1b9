"""The MIP model of ``max_a Q(x, a)`` for one fixed input, written once for every backend.

Inputs are a frozen :class:`MIPProblem` (numpy only, so it pickles cheaply to worker processes):
the layers with the state folded into the first bias, bounds ``l <= z <= u`` per hidden neuron and the
action set. :func:`encode` writes, through a small :class:`Writer` adapter (one per backend),

    maximise  w_L . h_{L-1} + b_L
    s.t. (1) z_k = W_k h_{k-1} + b_k,  h_0 = a                (an expression, never a variable)
         (2) u_kj <= 0:  h_kj = 0                              (the neuron is deleted)
         (3) l_kj >= 0:  h_kj = z_kj                           (substituted, no binary)
         unstable neurons, big-M (Anderson et al., 2020):
         (4) h >= z,  0 <= h <= u,  (5) h <= z - l (1 - d),  (6) h <= u d,  d in {0, 1}
         unstable neurons, "anderson" (SCIP only): (4)-(6) plus, separated as cuts, the ideal
         inequalities of Anderson et al. (2020, Theorem 1) for every subset I of the inputs x_i in
         [L_i, U_i] (with L^_i, U^_i the bound at which w_i x_i is smallest / largest):
        (11) h <= sum_{i in I} w_i (x_i - L^_i (1 - d)) + (b + sum_{i not in I} w_i U^_i) d
         unstable neurons, SOS1 (SCIP only):
         (7) z = h - t,  h in [0, u],  t in [0, -l],  SOS1{h, t}
         action set:
         (8) low <= a <= high                                  (box; a ball's bounding box)
         (9) l1 ball: s >= a - c,  s >= c - a,  sum(s) <= r
        (10) l2 ball: sum((a - c)^2) <= r^2  (SCIP), or outer-approximation cuts
             g . (a - c) <= r with g = (a* - c) / ||a* - c||, added while ||a* - c|| > r (MILP solvers)

:func:`hint_values` is the complete solution that a forward pass at a hint action gives (every
``h``, ``d``, ``t`` and ``s``), so that a solver can take it as a full incumbent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class MIPProblem:
    """One max-Q instance: folded layers, neuron bounds and the action set, as numpy arrays."""

    weights: tuple[np.ndarray, ...]
    """``W_1`` (action columns only, ``[h1, A]``), ``W_2``, ..., ``W_L`` (``[1, h_{L-1}]``)."""
    biases: tuple[np.ndarray, ...]
    """``b_1 = W_x x + b`` (this sample's), ``b_2``, ..., ``b_L``."""
    lower: tuple[np.ndarray, ...]
    """Lower bounds on the pre-activations of every hidden layer."""
    upper: tuple[np.ndarray, ...]
    set_kind: str
    low: np.ndarray
    high: np.ndarray
    center: np.ndarray
    radius: float
    hint: np.ndarray | None = None
    """An action in the set to hand to the solver as a complete solution."""

    @property
    def action_dim(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def hint_value(self) -> float:
        """``Q`` at the hint (``-inf`` without one)."""
        return forward(self, self.hint)[1] if self.hint is not None else float("-inf")

    def num_unstable(self) -> int:
        return int(sum(((lo < 0) & (up > 0)).sum() for lo, up in zip(self.lower, self.upper, strict=True)))


@dataclass(frozen=True)
class MIPOutcome:
    """What a backend returns: the best action (or ``None``), the proven bound and how it stopped."""

    action: np.ndarray | None
    objective: float
    bound: float
    """An upper bound on the maximum proven by the solver (``inf`` if none)."""
    limit_reached: bool
    """Stopped by a time/node limit rather than by proving its gap."""
    seconds: float
    message: str = ""


class Writer(Protocol):
    """The little a backend must provide for :func:`encode`."""

    def var(self, lb: float, ub: float, integer: bool = False) -> Any: ...
    def add(self, constraint: Any) -> None: ...
    def total(self, terms: list) -> Any: ...
    def sos1(self, first: Any, second: Any) -> None: ...
    def add_quadratic(self, constraint: Any) -> None: ...


@dataclass
class NeuronInputs:
    """One unstable neuron ``h = relu(sum_i w_i x_i + b)`` with its binary ``d``, for the cuts (11).

    Every input ``x_i`` is a linear form over the model's variables, ``const_i + sum coef * variables[index]``,
    with bounds ``[lower_i, upper_i]``."""

    h_index: int
    """Index of ``h`` in :attr:`Encoding.variables` (``d`` is the next one)."""
    d_index: int
    weights: np.ndarray
    bias: float
    forms: list[tuple[dict[int, float], float]]
    lower: np.ndarray
    upper: np.ndarray


@dataclass
class Encoding:
    """Handles of the variables :func:`encode` created, for objectives, hints and cuts."""

    actions: list
    objective: Any
    variables: list
    """Every variable, in the order of :func:`hint_values`."""
    neurons: list[NeuronInputs] = field(default_factory=list)
    """The unstable neurons with their inputs (``formulation="anderson"`` only)."""


def _affine(writer: Writer, prev: list, row: np.ndarray, bias: float) -> Any:
    terms = [float(w) * v for w, v in zip(row, prev, strict=True) if v is not None and w != 0.0]
    return writer.total(terms) + float(bias) if terms else float(bias)


FORMULATIONS = ("bigm", "sos1", "anderson")


class OutOfTime(Exception):
    """Raised by :func:`encode` when its deadline passes before the model is written."""


def encode(problem: MIPProblem, writer: Writer, formulation: str = "bigm", l2: str = "quadratic",
           deadline: float | None = None) -> Encoding:
    """Write constraints (1)-(10) through ``writer``; returns the variable handles and the objective.

    With ``deadline`` (a ``time.perf_counter()`` reading) it raises :class:`OutOfTime` once that has
    passed, checked at every neuron, so that a large model does not outlast the time it was given.
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {', '.join(FORMULATIONS)}, got {formulation!r}.")
    actions = [writer.var(float(lo), float(hi)) for lo, hi in zip(problem.low, problem.high, strict=True)]
    variables = list(actions)
    # For the cuts (11): every input of the current layer as a linear form over ``variables`` and its bounds.
    forms: list[tuple[dict[int, float], float] | None] = [({i: 1.0}, 0.0) for i in range(len(actions))]
    form_low, form_high = np.asarray(problem.low, dtype=np.float64), np.asarray(problem.high, dtype=np.float64)
    neurons: list[NeuronInputs] = []
    ideal = formulation == "anderson"
    if problem.set_kind == "l1_ball":
        spread = [writer.var(0.0, float(problem.radius)) for _ in actions]
        for a_i, s_i, c_i in zip(actions, spread, problem.center, strict=True):
            writer.add(s_i >= a_i - float(c_i))
            writer.add(s_i >= float(c_i) - a_i)
        writer.add(writer.total(spread) <= float(problem.radius))
        variables += spread
    elif problem.set_kind == "l2_ball" and l2 == "quadratic":
        writer.add_quadratic(writer.total([(a_i - float(c_i)) * (a_i - float(c_i))
                                           for a_i, c_i in zip(actions, problem.center, strict=True)])
                             <= float(problem.radius) ** 2)
    prev: list = list(actions)
    for k in range(len(problem.weights) - 1):
        layer: list = []
        layer_forms: list[tuple[dict[int, float], float] | None] = []
        for j in range(problem.weights[k].shape[0]):
            if deadline is not None and time.perf_counter() >= deadline:
                raise OutOfTime(f"the model was not written by its deadline (layer {k + 1}, neuron {j})")
            lo, up = float(problem.lower[k][j]), float(problem.upper[k][j])
            if up <= 0:  # (2)
                layer.append(None)
                if ideal:
                    layer_forms.append(None)
                continue
            z = _affine(writer, prev, problem.weights[k][j], problem.biases[k][j])
            if lo >= 0:  # (3)
                layer.append(z)
                if ideal:
                    layer_forms.append(_combine(forms, problem.weights[k][j], float(problem.biases[k][j])))
                continue
            h = writer.var(0.0, up)
            if formulation in ("bigm", "anderson"):
                d = writer.var(0.0, 1.0, integer=True)
                writer.add(h >= z)  # (4)
                writer.add(h <= z - lo + lo * d)  # (5)
                writer.add(h <= up * d)  # (6)
                if ideal:
                    live = [i for i, f in enumerate(forms) if f is not None and problem.weights[k][j][i] != 0.0]
                    neurons.append(NeuronInputs(len(variables), len(variables) + 1, problem.weights[k][j][live],
                                                float(problem.biases[k][j]), [forms[i] for i in live],
                                                form_low[live], form_high[live]))
                    layer_forms.append(({len(variables): 1.0}, 0.0))
                variables += [h, d]
            else:
                t = writer.var(0.0, -lo)
                writer.add(z == h - t)  # (7)
                writer.sos1(h, t)
                variables += [h, t]
            layer.append(h)
        prev = layer
        if ideal:
            forms = layer_forms
            form_low = np.maximum(np.asarray(problem.lower[k], dtype=np.float64), 0.0)  # relu(z) in [max(l, 0), u]
            form_high = np.maximum(np.asarray(problem.upper[k], dtype=np.float64), 0.0)
    objective = _affine(writer, prev, problem.weights[-1][0], problem.biases[-1][0])
    return Encoding(actions, objective, variables, neurons)


def _combine(forms: list, weights: np.ndarray, bias: float) -> tuple[dict[int, float], float]:
    """The linear form of ``sum_i weights_i forms_i + bias`` (dead inputs, ``None``, contribute nothing)."""
    coefs: dict[int, float] = {}
    const = bias
    for w, form in zip(weights, forms, strict=True):
        if form is None or w == 0.0:
            continue
        for index, coef in form[0].items():
            coefs[index] = coefs.get(index, 0.0) + float(w) * coef
        const += float(w) * form[1]
    return coefs, const


def separate_ideal(neuron: NeuronInputs, values: np.ndarray, tolerance: float = 1e-6
                   ) -> tuple[dict[int, float], float, float] | None:
    """The most violated inequality (11) of ``neuron`` at ``values`` (one per model variable), or ``None``.

    Returns ``(coefs, d_coef, rhs)`` of ``h - sum coefs[index] * variables[index] - d_coef * d <= rhs``, found in
    linear time as in Anderson et al.: input ``i`` joins ``I`` when ``w_i (x_i - L^_i (1 - d)) < w_i U^_i d``.
    """
    w = neuron.weights
    low_hat = np.where(w >= 0, neuron.lower, neuron.upper)
    up_hat = np.where(w >= 0, neuron.upper, neuron.lower)
    x = np.array([const + sum(c * values[i] for i, c in coefs.items()) for coefs, const in neuron.forms])
    d = float(values[neuron.d_index])
    inside = w * (x - low_hat * (1 - d)) < w * up_hat * d
    bound = float((w * (x - low_hat * (1 - d)))[inside].sum() + (neuron.bias + (w * up_hat)[~inside].sum()) * d)
    if float(values[neuron.h_index]) <= bound + tolerance:
        return None
    coefs: dict[int, float] = {}
    rhs = -float((w * low_hat)[inside].sum())
    for i in np.flatnonzero(inside):
        form_coefs, const = neuron.forms[i]
        for index, coef in form_coefs.items():
            coefs[index] = coefs.get(index, 0.0) + float(w[i]) * coef
        rhs += float(w[i]) * const  # x_i = const + sum coef * variable: the constant moves to the right
    d_coef = float((w * low_hat)[inside].sum() + neuron.bias + (w * up_hat)[~inside].sum())
    return coefs, d_coef, rhs


def forward(problem: MIPProblem, action: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Pre-activations of every hidden layer and the output at ``action`` (numpy, float64)."""
    h, pre = np.asarray(action, dtype=np.float64), []
    for k in range(len(problem.weights) - 1):
        z = problem.weights[k] @ h + problem.biases[k]
        pre.append(z)
        h = np.maximum(z, 0.0)
    return pre, float(problem.weights[-1][0] @ h + problem.biases[-1][0])


def hint_values(problem: MIPProblem, action: np.ndarray, formulation: str = "bigm") -> list[float]:
    """Values for :attr:`Encoding.variables` at ``action``: a complete, feasible MIP solution."""
    pre, _ = forward(problem, action)
    values = [float(v) for v in action]
    if problem.set_kind == "l1_ball":
        values += [float(abs(a - c)) for a, c in zip(action, problem.center, strict=True)]
    for k, z in enumerate(pre):
        for j, z_j in enumerate(z):
            lo, up = problem.lower[k][j], problem.upper[k][j]
            if up <= 0 or lo >= 0:
                continue
            h = min(max(float(z_j), 0.0), float(up))
            if formulation in ("bigm", "anderson"):
                values += [h, 1.0 if z_j > 0 else 0.0]
            else:
                values += [h, min(max(-float(z_j), 0.0), -float(lo))]
    return values


def l2_cut(problem: MIPProblem, action: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The outer-approximation cut ``g . a <= r + g . c`` that ``action`` violates, or ``None``."""
    offset = np.asarray(action, dtype=np.float64) - problem.center
    norm = float(np.linalg.norm(offset))
    if norm <= problem.radius * (1 + 1e-7) + 1e-9:
        return None
    g = offset / norm
    return g, float(problem.radius + g @ problem.center)


def project(problem: MIPProblem, action: np.ndarray) -> np.ndarray:
    """Clip a solver's action into the set (it may sit outside by the solver's feasibility tolerance)."""
    a = np.clip(np.asarray(action, dtype=np.float64), problem.low, problem.high)
    offset = a - problem.center
    if problem.set_kind == "l2_ball":
        norm = np.linalg.norm(offset)
        if norm > problem.radius:
            a = problem.center + offset * (problem.radius / norm)
    elif problem.set_kind == "l1_ball":
        norm = np.abs(offset).sum()
        if norm > problem.radius:
            a = problem.center + offset * (problem.radius / norm)
    return a
