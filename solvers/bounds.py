"""Bounds on a ReLU network over a set of actions: IBP, CROWN, the Wong-Kolter dual, LP tightening.

With the state folded into the first layer, the network is a function of the action alone:

    (1) z_1 = W_1 a + b_1                          (b_1 per sample: W_x x + b)
    (2) h_k = relu(z_k),   z_{k+1} = W_{k+1} h_k + b_{k+1}     k = 1 .. L-1
    (3) Q   = z_L                                  (one output)

and ``a`` ranges over a :class:`Domain`: a box ``[low, high]`` (one per sample, so a branch-and-bound
can pass many sub-boxes at once), optionally intersected with an l2 or l1 ball. Every function returns
:class:`LayerBounds`: pre-activation bounds ``lower[k] <= z_k <= upper[k]`` for each hidden layer and
``output_upper >= max_a Q``. All are batched torch code and run on any device.

* :func:`interval_bounds` (IBP): layer 1 exactly (the support function of the set), then interval
  arithmetic ``W+ u + W- l + b``.
* :func:`crown_bounds`: linear bounds ``z_k <= A_k a + c_k`` carried back to the input through the
  ReLU relaxation ``s_l z <= relu(z) <= s_u (z - l)`` with ``s_u = u / (u - l)`` and the adaptive lower
  slope ``s_l = 1[u > -l]`` (Zhang et al., 2018), then maximised over the set in closed form. Each
  layer is intersected with IBP, so CROWN is never looser than IBP. ``intermediate="forward"``
  propagates only ``[N, width, action_dim]`` coefficient matrices forward (exact CROWN for two hidden
  layers, cheaper and looser for deeper nets); ``"backward"`` back-substitutes every layer.
* :func:`wong_kolter_bounds`: the dual network of Wong & Kolter (2018), as in CAQL's dual filter: the
  same backward pass with the lower slope equal to the upper one, ``D = u / (u - l)``.
* :func:`obbt_bounds`: LP-based bound tightening. For each unstable neuron of layers 2 .. L-1 it
  solves ``min / max z_kj`` over the triangle relaxation of the earlier layers (GLOP, warm-started),
  then recomputes the output bound with CROWN.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Literal

import torch

from solvers.action_set import ActionSet
from solvers.relu_net import ReLUNet

Intermediate = Literal["forward", "backward"]


# ------------------------------------------------------------------------------------------ domains
@dataclass(frozen=True)
class Domain:
    """``N`` boxes ``[low, high]`` (``[N, A]``), each optionally intersected with one shared ball."""

    low: torch.Tensor
    high: torch.Tensor
    kind: str = "box"
    """``"box"`` or the ball (``"l2_ball"`` / ``"l1_ball"``) that every box is intersected with."""
    center: torch.Tensor | None = None
    radius: float = 0.0

    @classmethod
    def from_action_set(cls, action_set: ActionSet, batch: int, dtype: torch.dtype,
                        device: torch.device | str) -> Domain:
        low = action_set.low.to(device, dtype).expand(batch, -1).contiguous()
        high = action_set.high.to(device, dtype).expand(batch, -1).contiguous()
        return cls(low, high, action_set.kind, action_set.center.to(device, dtype), action_set.radius)

    def select(self, low: torch.Tensor, high: torch.Tensor) -> Domain:
        """The same ball with other boxes."""
        return replace(self, low=low, high=high)

    def support(self, coef: torch.Tensor) -> torch.Tensor:
        """``max_{a in domain_n} coef[n, ..., :] . a``: shape ``coef.shape[:-1]``.

        For a box it is exact; for a box intersected with a ball it is the smaller of the two
        supports, an upper bound on the true one.
        """
        extra = coef.ndim - 2
        shape = (self.low.shape[0],) + (1,) * extra + (self.low.shape[1],)
        mid = ((self.low + self.high) / 2).reshape(shape)
        half = ((self.high - self.low) / 2).reshape(shape)
        box = (coef * mid).sum(-1) + (coef.abs() * half).sum(-1)
        if self.kind == "box":
            return box
        dual = coef.norm(dim=-1) if self.kind == "l2_ball" else coef.abs().amax(dim=-1)
        ball = (coef * self.center).sum(-1) + self.radius * dual
        return torch.minimum(box, ball)

    def support_exact(self, coef: torch.Tensor) -> torch.Tensor:
        """:meth:`support` for ``coef[N, A]``, exact also for a box intersected with a ball.

        Lagrangian duality: for any ``lam >= 0``, ``max_{a in box} c.a - lam (g(a) - r) + ...`` bounds
        the maximum over box and ball, and separates per coordinate. l2 (``g = ||a - c0||^2``, radius
        ``r^2``): the inner maximiser is ``clip(c0 + t c)`` with ``t = 1 / (2 lam)``, and ``t`` is found by
        bisection on ``||clip(c0 + t c) - c0|| = r`` (any ``t`` gives a valid bound). l1: the dual is
        piecewise linear in ``lam`` with kinks at ``|c_i|``, so it is evaluated at ``0`` and every ``|c_i|``.
        """
        plain = self.support(coef)
        if self.kind == "box":
            return plain
        low, high, c0 = self.low, self.high, self.center.expand_as(self.low)
        if self.kind == "l2_ball":
            reach = torch.maximum((high - c0).abs(), (low - c0).abs()).amax(dim=1, keepdim=True)
            t_low = torch.zeros_like(reach)
            t_high = reach / coef.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) + 1.0
            for _ in range(40):
                t = (t_low + t_high) / 2
                inside = (torch.minimum(torch.maximum(c0 + t * coef, low), high) - c0).norm(dim=1, keepdim=True)
                inside = inside <= self.radius
                t_low, t_high = torch.where(inside, t, t_low), torch.where(inside, t_high, t)
            t = t_high.clamp_min(1e-30)
            a = torch.minimum(torch.maximum(c0 + t * coef, low), high)
            dual = (coef * a).sum(1) - ((a - c0) ** 2).sum(1) / (2 * t.squeeze(1)) \
                + self.radius ** 2 / (2 * t.squeeze(1))
            return torch.minimum(plain, dual)
        lams = torch.cat([torch.zeros_like(coef[:, :1]), coef.abs()], dim=1).unsqueeze(-1)  # [N, A+1, 1]
        candidates = torch.stack([low, high, torch.minimum(torch.maximum(c0, low), high)], dim=-1)  # [N, A, 3]
        gain = coef.unsqueeze(-1) * candidates  # [N, A, 3]
        value = gain.unsqueeze(1) - lams.unsqueeze(-1) * (candidates - c0.unsqueeze(-1)).abs().unsqueeze(1)
        dual = value.amax(dim=-1).sum(-1) + lams.squeeze(-1) * self.radius  # [N, A+1]
        return torch.minimum(plain, dual.amin(dim=1))

    def support_shared(self, weight: torch.Tensor) -> torch.Tensor:
        """:meth:`support` of the rows of one matrix ``weight[K, A]`` shared by all boxes: ``[N, K]``."""
        mid, half = (self.low + self.high) / 2, (self.high - self.low) / 2
        box = mid @ weight.T + half @ weight.abs().T
        if self.kind == "box":
            return box
        dual = weight.norm(dim=1) if self.kind == "l2_ball" else weight.abs().amax(dim=1)
        return torch.minimum(box, (weight @ self.center + self.radius * dual).expand_as(box))

    def support_columns(self, coef: torch.Tensor) -> torch.Tensor:
        """:meth:`support` for coefficients laid out as columns, ``coef[N, A, K]``: ``[N, K]``."""
        mid = ((self.low + self.high) / 2).unsqueeze(-1)
        half = ((self.high - self.low) / 2).unsqueeze(-1)
        box = (coef * mid).sum(1) + (coef.abs() * half).sum(1)
        if self.kind == "box":
            return box
        dual = coef.norm(dim=1) if self.kind == "l2_ball" else coef.abs().amax(dim=1)
        ball = (coef * self.center.unsqueeze(-1)).sum(1) + self.radius * dual
        return torch.minimum(box, ball)

    def empty(self) -> torch.Tensor:
        """Boolean ``[N]``: boxes that do not meet the ball (they hold no feasible action)."""
        if self.kind == "box":
            return torch.zeros(self.low.shape[0], dtype=torch.bool, device=self.low.device)
        nearest = torch.minimum(torch.maximum(self.center, self.low), self.high) - self.center
        norm = nearest.norm(dim=1) if self.kind == "l2_ball" else nearest.abs().sum(dim=1)
        return norm > self.radius * (1 + 1e-9) + 1e-12


# ------------------------------------------------------------------------------------------- result
@dataclass
class LayerBounds:
    """Pre-activation bounds of every hidden layer and bounds on the output, per domain."""

    lower: list[torch.Tensor]
    """``lower[k]``: ``[N, h_{k+1}]`` lower bounds on the pre-activations of hidden layer ``k + 1``."""
    upper: list[torch.Tensor]
    output_upper: torch.Tensor
    """``[N]``: an upper bound on ``max_a Q`` over each domain."""
    output_lower: torch.Tensor
    """``[N]``: a lower bound on ``min_a Q`` over each domain."""
    output_coef: torch.Tensor | None = None
    """``[N, A]``: for linear methods, ``c`` with ``Q(a) <= c . a + d`` on the domain."""

    def unstable(self) -> int:
        """Number of neurons whose sign is not fixed, summed over the batch."""
        return int(sum(((lo < 0) & (up > 0)).sum() for lo, up in zip(self.lower, self.upper, strict=True)))


# ------------------------------------------------------------------------------------------ helpers
def folded_layers(net: ReLUNet, fixed_inputs: torch.Tensor, dtype: torch.dtype | None = None
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weights and biases with the fixed inputs folded in (``biases[0]`` is ``[B, h1]``), in ``dtype``."""
    dtype = dtype or net.weights[0].dtype
    net64 = net.to(net.device, dtype)
    return net64.fold_fixed_inputs(net.check_inputs(fixed_inputs).to(dtype))


def round_up(upper: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``upper`` cast to ``dtype``, rounded towards ``+inf`` so that an upper bound stays one."""
    cast = upper.to(dtype)
    if dtype == upper.dtype:
        return cast
    below = cast.to(upper.dtype) < upper
    return torch.where(below, torch.nextafter(cast, torch.full_like(cast, torch.inf)), cast)


def _relaxation(lower: torch.Tensor, upper: torch.Tensor, lower_slope: str
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slopes and intercept of ``s_l z <= relu(z) <= s_u z + t_u`` on ``[lower, upper]``."""
    active, dead = lower >= 0, upper <= 0
    unstable = ~(active | dead)
    denom = torch.where(unstable, upper - lower, torch.ones_like(upper))
    s_u = torch.where(unstable, upper / denom, active.to(upper.dtype))
    t_u = torch.where(unstable, -s_u * lower, torch.zeros_like(upper))
    if lower_slope == "adaptive":
        s_l = torch.where(unstable, (upper > -lower).to(upper.dtype), active.to(upper.dtype))
    elif lower_slope == "parallel":
        s_l = s_u
    else:
        raise ValueError(f"lower_slope must be 'adaptive' or 'parallel', got {lower_slope!r}.")
    return s_u, t_u, s_l


def _layer_bias(bias: torch.Tensor, n: int) -> torch.Tensor:
    return bias if bias.ndim == 2 else bias.expand(n, -1)


def _interval_step(weight: torch.Tensor, bias: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bounds of ``W relu(z) + b`` for ``z in [lower, upper]``."""
    lo, up = lower.clamp_min(0), upper.clamp_min(0)
    w_pos, w_neg = weight.clamp_min(0), weight.clamp_max(0)
    return lo @ w_pos.T + up @ w_neg.T + bias, up @ w_pos.T + lo @ w_neg.T + bias


def _columns_mm(coef: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``coef[N, A, h] @ matrix[h, h']`` as one matrix product (``matmul`` may pick a slow batched one)."""
    n, a, h = coef.shape
    return (coef.reshape(n * a, h) @ matrix).reshape(n, a, matrix.shape[1])


def _backward(rows: torch.Tensor, row_bias: torch.Tensor, weights: list[torch.Tensor],
              biases: list[torch.Tensor], relax: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
              domain: Domain) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper bound of ``rows @ h_m + row_bias`` (``rows`` ``[N, K, h_m]``) by back-substitution.

    ``weights[:m]`` / ``relax[:m]`` describe the layers below ``h_m``. Returns the bound ``[N, K]``
    and the input coefficient ``[N, K, A]``.
    """
    lam, offset = rows, row_bias
    for k in range(len(relax) - 1, -1, -1):
        s_u, t_u, s_l = relax[k]
        pos, neg = lam.clamp_min(0), lam.clamp_max(0)
        offset = offset + (pos * t_u.unsqueeze(1)).sum(-1)
        nu = pos * s_u.unsqueeze(1) + neg * s_l.unsqueeze(1)
        offset = offset + (nu * _layer_bias(biases[k], nu.shape[0]).unsqueeze(1)).sum(-1)
        lam = nu @ weights[k]
    if lam.shape[1] == 1:  # one row (the output): afford the exact support over box and ball
        return domain.support_exact(lam.squeeze(1)).unsqueeze(1) + offset, lam
    return domain.support(lam) + offset, lam


# ------------------------------------------------------------------------------------------ methods
def ibp_layers(weights: list[torch.Tensor], biases: list[torch.Tensor], domain: Domain) -> LayerBounds:
    """Interval bound propagation on folded layers (see :func:`interval_bounds`)."""
    n = domain.low.shape[0]
    b1 = _layer_bias(biases[0], n)
    lower = [b1 - domain.support(-weights[0].expand(n, -1, -1))]
    upper = [b1 + domain.support(weights[0].expand(n, -1, -1))]
    for weight, bias in zip(weights[1:-1], biases[1:-1], strict=True):
        lo, up = _interval_step(weight, bias, lower[-1], upper[-1])
        lower.append(lo)
        upper.append(up)
    out_lo, out_up = _interval_step(weights[-1], biases[-1], lower[-1], upper[-1])
    return LayerBounds(lower, upper, out_up.squeeze(-1), out_lo.squeeze(-1))


def linear_layers(weights: list[torch.Tensor], biases: list[torch.Tensor], domain: Domain,
                  lower_slope: str = "adaptive", intermediate: Intermediate = "forward",
                  given: LayerBounds | None = None, intersect_ibp: bool = True,
                  need_output_lower: bool = True) -> LayerBounds:
    """CROWN-style linear bounds on folded layers (see :func:`crown_bounds`).

    ``given`` supplies intermediate bounds (e.g. from OBBT) to use instead of computing them;
    ``need_output_lower=False`` skips the output's lower bound (``-inf`` then), as branch-and-bound does.
    """
    n = domain.low.shape[0]
    b1 = _layer_bias(biases[0], n)
    lower = [b1 - domain.support_shared(-weights[0])]
    upper = [b1 + domain.support_shared(weights[0])]
    if given is not None:
        lower, upper = [torch.maximum(lower[0], given.lower[0])], [torch.minimum(upper[0], given.upper[0])]
    relax = [_relaxation(lower[0], upper[0], lower_slope)]
    # Forward mode keeps z_k >= coef_l^T a + off_l and z_k <= coef_u^T a + off_u with the coefficients
    # as columns, [N, A, h_k]: applying W_{k+1} is then one matrix product, never a per-box W W product.
    coef_l = coef_u = weights[0].T.unsqueeze(0)
    off_l = off_u = b1
    for k in range(1, len(weights) - 1):
        weight, bias = weights[k], biases[k]
        if given is not None:
            lo, up = given.lower[k], given.upper[k]
        else:
            if intermediate == "forward":
                s_u, t_u, s_l = relax[-1]
                # With h_u, h_l the upper and lower linear bounds of h_{k-1} and d = h_u - h_l,
                # W+ h_u + W- h_l = W h_u - W- d: three products per layer instead of four.
                w_pos, w_neg = weight.clamp_min(0).T, weight.clamp_max(0).T
                hu_c, hu_o = s_u.unsqueeze(1) * coef_u, s_u * off_u + t_u
                d_c, d_o = hu_c - s_l.unsqueeze(1) * coef_l, hu_o - s_l * off_l
                shared_c, shared_o = _columns_mm(hu_c, weight.T), hu_o @ weight.T + bias
                coef_u, off_u = shared_c - _columns_mm(d_c, w_neg), shared_o - d_o @ w_neg
                coef_l, off_l = shared_c - _columns_mm(d_c, w_pos), shared_o - d_o @ w_pos
                up = domain.support_columns(coef_u) + off_u
                lo = -domain.support_columns(-coef_l) + off_l
            elif intermediate == "backward":
                rows = weight.expand(n, -1, -1)
                up, _ = _backward(rows, _layer_bias(bias, n), weights, biases, relax, domain)
                neg_up, _ = _backward(-rows, -_layer_bias(bias, n), weights, biases, relax, domain)
                lo = -neg_up
            else:
                raise ValueError(f"intermediate must be 'forward' or 'backward', got {intermediate!r}.")
            if intersect_ibp:
                ibp_lo, ibp_up = _interval_step(weight, bias, lower[-1], upper[-1])
                lo, up = torch.maximum(lo, ibp_lo), torch.minimum(up, ibp_up)
        lower.append(lo)
        upper.append(up)
        relax.append(_relaxation(lo, up, lower_slope))
    rows = weights[-1].expand(n, -1, -1)
    bias_out = _layer_bias(biases[-1], n)
    out_up, coef = _backward(rows, bias_out, weights, biases, relax, domain)
    out_up = out_up.squeeze(-1)
    if need_output_lower:
        out_lo = -_backward(-rows, -bias_out, weights, biases, relax, domain)[0].squeeze(-1)
    else:
        out_lo = torch.full_like(out_up, -torch.inf)
    if intersect_ibp:
        ibp_lo, ibp_up = _interval_step(weights[-1], biases[-1], lower[-1], upper[-1])
        out_up, out_lo = torch.minimum(out_up, ibp_up.squeeze(-1)), torch.maximum(out_lo, ibp_lo.squeeze(-1))
    return LayerBounds(lower, upper, out_up, out_lo, coef.squeeze(1))


# ------------------------------------------------------------------------------- optimised slopes
def default_slopes(bounds: LayerBounds) -> list[torch.Tensor]:
    """CROWN's adaptive lower slopes ``1[u > -l]``, the starting point of :func:`optimised_output_bound`."""
    return [(up > -lo).to(up.dtype) for lo, up in zip(bounds.lower, bounds.upper, strict=True)]


class _SlopedBound:
    """``max_a Q`` bounded by back-substitution, as a function of the lower slopes ``slopes[k]`` (``[N, h]``,
    clipped to ``[0, 1]``) on the unstable neurons of the intermediate ``bounds``; what does not depend on the
    slopes (upper relaxations, masks) is computed once.

    Any slope in ``[0, 1]`` gives a valid bound (``s z <= relu(z)`` on ``[l, u]`` with ``l < 0 < u``), so the
    slopes are free parameters: differentiable here, optimised by :func:`optimised_output_bound`.
    A call returns the bound ``[N]`` and its input coefficient ``[N, A]``.
    """

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor], domain: Domain,
                 bounds: LayerBounds) -> None:
        self.weights, self.biases, self.domain = weights, biases, domain
        self.layers = []
        for lo, up in zip(bounds.lower, bounds.upper, strict=True):
            s_u, t_u, s_l = _relaxation(lo, up, "adaptive")
            unstable = (lo < 0) & (up > 0)
            # s_l is 1 on active neurons, 0 on dead and on unstable ones (where the slope is added).
            self.layers.append((s_u, t_u, torch.where(unstable, 0.0, s_l), unstable.to(up.dtype)))

    def __call__(self, slopes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        relax = [(s_u, t_u, s_fixed + unstable * slope.clamp(0.0, 1.0))
                 for (s_u, t_u, s_fixed, unstable), slope in zip(self.layers, slopes, strict=True)]
        n = self.domain.low.shape[0]
        upper, coef = _backward(self.weights[-1].expand(n, -1, -1), _layer_bias(self.biases[-1], n), self.weights,
                                self.biases, relax, self.domain)
        return upper.squeeze(1), coef.squeeze(1)


def _keep_better(upper: torch.Tensor, coef: torch.Tensor, slopes: list[torch.Tensor], best_upper: torch.Tensor,
                 best_coef: torch.Tensor, best: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where ``upper`` is below ``best_upper``, take it, its ``coef`` and its ``slopes`` (into ``best``)."""
    better = upper < best_upper
    for kept, slope in zip(best, slopes, strict=True):
        kept.copy_(torch.where(better.unsqueeze(1), slope, kept))
    return torch.where(better, upper, best_upper), torch.where(better.unsqueeze(1), coef, best_coef)


def optimised_output_bound(weights: list[torch.Tensor], biases: list[torch.Tensor], domain: Domain,
                           bounds: LayerBounds, slopes: list[torch.Tensor] | None = None, steps: int = 8,
                           lr: float = 0.25, search_dtype: torch.dtype | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The alpha-CROWN idea on the output bound: the ReLU lower slopes are optimised per domain by
    ``steps`` Adam steps on the bound itself, projected onto ``[0, 1]``.

    ``slopes`` warm-starts them (a branch-and-bound passes the parent's); ``None`` starts from CROWN's.
    Every iterate is a valid bound, so the result, the smallest bound seen per domain, is sound and never
    looser than the bound at the starting slopes (CROWN's when ``slopes`` is ``None``). The intermediate
    ``bounds`` are kept as given. Returns ``(upper [N], coef [N, A], slopes)`` with the slopes that gave
    each domain's bound, detached.

    ``search_dtype`` (e.g. float32 under float64 weights) runs the Adam steps in that precision, which halves
    their memory traffic; the slopes found are then evaluated once in the weights' own precision, so the
    bound returned is as rigorous as without it.
    """
    dtype = weights[0].dtype
    if search_dtype is not None and search_dtype != dtype and steps > 0:
        cast = [t.to(search_dtype) for t in (*weights, *biases)]
        low_bounds = LayerBounds([t.to(search_dtype) for t in bounds.lower], [t.to(search_dtype) for t in bounds.upper],
                                 bounds.output_upper, bounds.output_lower)
        low_domain = replace(domain, low=domain.low.to(search_dtype), high=domain.high.to(search_dtype),
                             center=None if domain.center is None else domain.center.to(search_dtype))
        start = slopes if slopes is not None else default_slopes(bounds)
        _, _, found = optimised_output_bound(cast[:len(weights)], cast[len(weights):], low_domain, low_bounds,
                                             [t.to(search_dtype) for t in start], steps, lr)
        found = [t.to(dtype) for t in found]
        exact = _SlopedBound(weights, biases, domain, bounds)
        best = [t.detach().to(dtype).clone() for t in start]  # a copy: the caller's slopes are not written
        with torch.no_grad():
            best_upper, best_coef = exact(best)
            upper, coef = exact(found)
            best_upper, best_coef = _keep_better(upper, coef, found, best_upper, best_coef, best)
        return best_upper, best_coef, best
    bound = _SlopedBound(weights, biases, domain, bounds)
    params = [s.detach().clone() for s in (slopes if slopes is not None else default_slopes(bounds))]
    best = [p.clone() for p in params]
    with torch.no_grad():
        best_upper, best_coef = bound(params)
    # Adam written out (torch.optim's first use imports much of torch, seconds inside a solver's time limit).
    first = [torch.zeros_like(p) for p in params]
    second = [torch.zeros_like(p) for p in params]
    for step in range(1, steps + 1):
        with torch.enable_grad():
            leaves = [p.requires_grad_(True) for p in params]
            upper, coef = bound(leaves)
            # The domains are independent: each slope's gradient is its own domain's.
            grads = torch.autograd.grad(upper.sum(), leaves)
        with torch.no_grad():
            if step > 1:  # the bound at the slopes of the previous step
                best_upper, best_coef = _keep_better(upper.detach(), coef.detach(), params, best_upper, best_coef, best)
            for p, g, m, v in zip(params, grads, first, second, strict=True):
                p.requires_grad_(False)
                m.mul_(0.9).add_(g, alpha=0.1)
                v.mul_(0.999).addcmul_(g, g, value=0.001)
                m_hat, v_hat = m / (1 - 0.9**step), v / (1 - 0.999**step)
                p.sub_(lr * m_hat / (v_hat.sqrt() + 1e-8)).clamp_(0.0, 1.0)
    if steps > 0:
        with torch.no_grad():
            upper, coef = bound(params)
            best_upper, best_coef = _keep_better(upper, coef, params, best_upper, best_coef, best)
    return best_upper.detach(), best_coef.detach(), best


# ----------------------------------------------------------------------------------- public wrappers
def _setup(net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet, dtype: torch.dtype | None):
    weights, biases = folded_layers(net, fixed_inputs, dtype)
    aset = action_set.with_dim(net.action_dim)
    domain = Domain.from_action_set(aset, biases[0].shape[0], weights[0].dtype, weights[0].device)
    return weights, biases, domain


def interval_bounds(net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
                    dtype: torch.dtype | None = None) -> LayerBounds:
    """IBP: layer 1 exact over the set, deeper layers by interval arithmetic."""
    return ibp_layers(*_setup(net, fixed_inputs, action_set, dtype))


def crown_bounds(net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
                 dtype: torch.dtype | None = None, intermediate: Intermediate | None = None) -> LayerBounds:
    """CROWN backward linear bounds, intersected with IBP layer by layer (never looser than IBP).

    ``intermediate=None`` picks ``"forward"`` for nets with at most two hidden layers, where it gives
    the same bounds as ``"backward"`` (up to rounding) at a fraction of the cost, else ``"backward"``.
    """
    if intermediate is None:
        intermediate = "forward" if len(net.hidden_sizes) <= 2 else "backward"
    return linear_layers(*_setup(net, fixed_inputs, action_set, dtype), intermediate=intermediate)


def wong_kolter_bounds(net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
                       dtype: torch.dtype | None = None) -> LayerBounds:
    """The Wong-Kolter (2018) dual bound used by CAQL's dual filter (``D = u / (u - l)`` on both sides).

    Intermediate bounds come from the same dual network, layer by layer, and are not intersected
    with IBP, as in CAQL's ``dual_method.py``; the set enters through its support function (CAQL's
    ``a_0^T nu_1 + abar ||nu_1||_1`` for a box centred at ``a_0``).
    """
    return linear_layers(*_setup(net, fixed_inputs, action_set, dtype), lower_slope="parallel",
                         intermediate="backward", intersect_ibp=False)


def obbt_bounds(net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
                dtype: torch.dtype | None = torch.float64, time_limit: float | None = None) -> LayerBounds:
    """CROWN bounds tightened by LP (see :mod:`solvers.obbt`), then the output bound by CROWN.

    ``time_limit`` caps the seconds spent on LPs; neurons not reached keep their CROWN bounds.
    """
    from solvers.obbt import tighten  # ortools is imported only when OBBT is asked for

    deadline = None if time_limit is None else time.perf_counter() + time_limit
    weights, biases, domain = _setup(net, fixed_inputs, action_set, dtype)
    start = linear_layers(weights, biases, domain, intermediate="forward" if len(weights) <= 3 else "backward")
    tightened = tighten(weights, biases, domain, start, deadline)
    final = linear_layers(weights, biases, domain, intermediate="backward", given=tightened)
    # CROWN is not monotone in its intermediate bounds (the adaptive slopes change), so keep the better one.
    final.output_upper = torch.minimum(final.output_upper, start.output_upper)
    final.output_lower = torch.maximum(final.output_lower, start.output_lower)
    return final


METHODS = {"ibp": interval_bounds, "crown": crown_bounds, "wong-kolter": wong_kolter_bounds, "obbt": obbt_bounds}


def compute_bounds(method: str, net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
                   dtype: torch.dtype | None = None, time_limit: float | None = None) -> LayerBounds:
    """Bounds by name: ``"ibp"``, ``"crown"``, ``"wong-kolter"`` or ``"obbt"``.

    ``fixed_inputs`` may have no rows (``[0, F]``): every bound then has a leading dimension of 0.
    ``time_limit`` caps OBBT's LP time (the other methods are one batched pass and ignore it).
    """
    if method not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; choose one of {', '.join(METHODS)}.")
    if method == "obbt":
        return obbt_bounds(net, fixed_inputs, action_set, dtype=dtype, time_limit=time_limit)
    return METHODS[method](net, fixed_inputs, action_set, dtype=dtype)
