"""Which split should `bnb` make? Input splits against ReLU splits, measured on the boxes where it stalls.

Issue 22 asks whether branching on unstable ReLUs (the beta-CROWN / BaB-SR idea), or a hybrid, beats the input
splitting that ``solvers.bnb`` does. This script answers it per split, on the frontier where input splitting
stalls: for each of a set of 6-dim nets it runs ``bnb``'s own search (CROWN bounds, ``slope_steps=0``) until the
frontier holds ``--frontier`` boxes, draws ``--boxes`` of them, and for each box bounds the two children of every
candidate split. A split's worth is the share of the box's gap (its bound minus the sample's incumbent) that
the larger of its children's bounds removes; its cost is the bounding calls it needs. Candidates:

* ``input (bnb rule)``: halve the dimension ``bnb`` picks (``argmax width_i (|c_i| + mean |c|)``): 2 calls;
* ``input (best dim)``: the best of the action dimensions (an oracle): 2 A calls;
* ``relu L1 / L2 phase (best)``: fix one unstable neuron of hidden layer 1 or 2 active / inactive in the
  relaxation (its interval clipped at 0, the split's constraint otherwise unused), best neuron (an oracle);
* ``hyperplane (best)``: split on a layer-1 neuron *with* its constraint: layer-1 pre-activations are affine in
  the action, so each child is the box intersected with a half-space, and every support over it (intermediate
  and output bounds) is the exact one-constraint LP, by its one-dimensional dual (``max_box (c - λ g).a + λ h``
  at ``λ = 0`` and every breakpoint ``c_i / g_i``); best neuron (an oracle);
* ``hyperplane (score)``: the same split at the neuron with the largest BaB-SR-style score (the output bound's
  positive back-substitution coefficient on the neuron times its relaxation's intercept): 2 calls.

Writes ``benchmarks/results/maxq_branching.{json,md}``. One torch thread; about a minute per net.

    python benchmarks/maxq_branching.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from _grid import add_executor_arguments, run_grid
from maxq_certified import load_cell

import solvers
from solvers import ActionSet
from solvers._common import Deadline
from solvers.bnb import BranchAndBoundSolver, _Search
from solvers.bounds import Domain, _backward, _interval_step, _layer_bias, _relaxation, linear_layers
from solvers.gradient_ascent import GradientAscentSolver

RESULTS = Path(__file__).resolve().parent / "results"
NETS = [
    {"key": "fitted-32x16-6", "kind": "fitted", "hidden": [32, 16], "action_dim": 6},
    {"key": "random-32x16-6", "kind": "random", "hidden": [32, 16], "action_dim": 6},
    {"key": "HalfCheetah-v5-32x16-20000", "kind": "real", "file": "HalfCheetah-v5-32x16-20000.pt"},
    {"key": "Walker2d-v5-32x16-20000", "kind": "real", "file": "Walker2d-v5-32x16-20000.pt"},
]


@dataclass(frozen=True)
class HalfSpaceDomain(Domain):
    """A box intersected with one half-space ``g . a <= h`` per row; supports are exact (one-constraint LPs)."""

    g: torch.Tensor | None = None
    h: torch.Tensor | None = None

    def support(self, coef: torch.Tensor) -> torch.Tensor:
        # Weak duality: for every λ >= 0, max over the box of (c - λ g).a + λ h bounds the LP; the dual is convex
        # piecewise linear in λ with kinks at c_i / g_i, so its minimum is at 0 or a kink.
        shape, n = coef.shape, coef.shape[0]
        c = coef.reshape(n, -1, shape[-1])
        g = self.g[:, None, :]
        safe = torch.where(g != 0, g, torch.ones_like(g))
        lam = torch.where(g != 0, c / safe, torch.zeros_like(c)).clamp_min(0)
        lam = torch.cat([torch.zeros_like(lam[..., :1]), lam], -1)
        shifted = c[..., None, :] - lam[..., None] * g[:, :, None, :]
        mid = ((self.low + self.high) / 2)[:, None, None, :]
        half = ((self.high - self.low) / 2)[:, None, None, :]
        value = (shifted * mid).sum(-1) + (shifted.abs() * half).sum(-1) + lam * self.h[:, None, None]
        return value.amin(-1).reshape(shape[:-1])

    def support_exact(self, coef: torch.Tensor) -> torch.Tensor:
        return self.support(coef)

    def support_shared(self, weight: torch.Tensor) -> torch.Tensor:
        return self.support(weight.expand(self.low.shape[0], -1, -1))


class Bounder:
    """CROWN bounds of a 2-hidden-layer net over boxes, with optional phase fixes and a layer-1 half-space."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> None:
        if len(weights) != 3:
            raise ValueError(f"this experiment handles nets with 2 hidden layers, got {len(weights) - 1}.")
        self.w, self.b = weights, biases

    def __call__(self, low, high, idx, layer=None, neuron=None, phase=None, half_space=False):
        n, rows = low.shape[0], torch.arange(low.shape[0])
        w, b1 = self.w, self.b[0][idx]
        biases = [b1, *self.b[1:]]
        domain: Domain = Domain(low, high)
        if half_space:  # phase +1: w_j.a + b_j >= 0, i.e. -w_j.a <= b_j; phase -1: w_j.a <= -b_j
            wj, bj = w[0][neuron], b1[rows, neuron]
            domain = HalfSpaceDomain(low, high, g=torch.where(phase[:, None] > 0, -wj, wj),
                                     h=torch.where(phase > 0, bj, -bj))
        l1 = b1 - domain.support_shared(-w[0])
        u1 = b1 + domain.support_shared(w[0])
        if layer == 1:
            l1, u1 = self._fix(l1, u1, rows, neuron, phase)
        empty = (l1 > u1 + 1e-12).any(1)
        l1 = torch.minimum(l1, u1)
        relax = [_relaxation(l1, u1, "adaptive")]
        layer2 = w[1].expand(n, -1, -1)
        u2 = _backward(layer2, _layer_bias(self.b[1], n), w, biases, relax, domain)[0]
        l2 = -_backward(-layer2, -_layer_bias(self.b[1], n), w, biases, relax, domain)[0]
        ibp_l2, ibp_u2 = _interval_step(w[1], self.b[1], l1, u1)
        l2, u2 = torch.maximum(l2, ibp_l2), torch.minimum(u2, ibp_u2)
        if layer == 2:
            l2, u2 = self._fix(l2, u2, rows, neuron, phase)
        empty |= (l2 > u2 + 1e-12).any(1)
        l2 = torch.minimum(l2, u2)
        relax.append(_relaxation(l2, u2, "adaptive"))
        out = _backward(w[2].expand(n, -1, -1), _layer_bias(self.b[2], n), w, biases, relax, domain)[0].squeeze(-1)
        return torch.where(empty, torch.full_like(out, -torch.inf), out), (l1, u1, l2, u2, relax)

    @staticmethod
    def _fix(lower, upper, rows, neuron, phase):
        lower, upper = lower.clone(), upper.clone()
        lower[rows, neuron] = torch.where(phase > 0, lower[rows, neuron].clamp_min(0), lower[rows, neuron])
        upper[rows, neuron] = torch.where(phase < 0, upper[rows, neuron].clamp_max(0), upper[rows, neuron])
        return lower, upper


def stalled_frontier(net: solvers.ReLUNet, states: torch.Tensor, frontier: int):
    """``bnb``'s search (CROWN bounds) run until its frontier holds ``frontier`` boxes: (boxes, incumbents)."""
    options = BranchAndBoundSolver(gap=1e-3, time_limit=1e9, slope_steps=0)
    dtype = torch.float64
    net_d, x = net.to(net.device, dtype), states.to(dtype)
    weights, biases = net_d.fold_fixed_inputs(x)
    aset = ActionSet.box(-1.0, 1.0, dim=net.action_dim)
    search = _Search(options, net_d, x, aset, weights, biases, 1e-3, 0.0, Deadline(None))
    incumbent_a, incumbent_v = GradientAscentSolver(num_starts=32, iterations=30, seed=0).ascend(net_d, x, aset, None)
    search.inc_a, search.inc_v = incumbent_a.clone(), incumbent_v
    batch = x.shape[0]
    search.start(aset.low.to(dtype).expand(batch, -1), aset.high.to(dtype).expand(batch, -1), torch.arange(batch))
    for _ in range(200):
        if bool(search.prune_and_check().all()) or search.size() >= frontier:
            break
        search.branch(options.boxes_per_iteration)
    return search.boxes, search.inc_v, weights, biases


def measure(job: dict) -> dict:
    """One net: its stalled frontier, a sample of its boxes, every candidate split of each."""
    torch.set_num_threads(1)
    cell, frontier, boxes, seed = job["cell"], job["frontier"], job["boxes"], job["seed"]
    module, states, action_dim, _ = load_cell(cell)
    net = solvers.ReLUNet.from_torch(module, fixed_dim=states.shape[1])
    found, incumbent, weights, biases = stalled_frontier(net, states, frontier)
    if len(found) == 0:  # bnb certified every state before its frontier grew
        return {"net": cell["key"], "frontier": 0, "boxes": 0, "strategies": {}}
    # The frontier's set of boxes is deterministic, its order is not (bnb bounds children in chunks sized by the
    # clock): sort it (by sample, then lower corner) before drawing the sample.
    order = torch.arange(len(found))
    for column in [*reversed(found.low.T), found.idx]:
        order = order[torch.sort(column[order], stable=True).indices]
    rows = order[torch.randperm(len(found), generator=torch.Generator().manual_seed(seed))[:boxes]]
    low, high, idx = found.low[rows], found.high[rows], found.idx[rows]
    n, take = len(idx), torch.arange(len(idx))
    bound = Bounder(weights, biases)
    parent, (l1, u1, l2, u2, relax) = bound(low, high, idx)
    gap = (parent - incumbent[idx]).clamp_min(1e-12)
    ones = torch.ones(n, dtype=torch.long)

    def halves(dim):
        middle = (low[take, dim] + high[take, dim]) / 2
        left_high, right_low = high.clone(), low.clone()
        left_high[take, dim], right_low[take, dim] = middle, middle
        return torch.maximum(bound(low, left_high, idx)[0], bound(right_low, high, idx)[0])

    def neuron_split(neuron, layer, half_space):
        kw = {"layer": layer, "neuron": neuron, "half_space": half_space}
        return torch.maximum(bound(low, high, idx, phase=ones, **kw)[0], bound(low, high, idx, phase=-ones, **kw)[0])

    def best_neuron(layer, lower, upper, half_space):
        best = parent.clone()
        for j in range(lower.shape[1]):
            unstable = (lower[:, j] < 0) & (upper[:, j] > 0)
            children = neuron_split(torch.full((n,), j), layer, half_space)
            best = torch.where(unstable, torch.minimum(best, children), best)
        return best

    coef = linear_layers(weights, [biases[0][idx], *biases[1:]], Domain(low, high), need_output_lower=False
                         ).output_coef
    width, magnitude = high - low, coef.abs()
    rule_dim = (width * (magnitude + magnitude.mean(1, keepdim=True))).argmax(1)
    # BaB-SR-style score of each layer-1 neuron: what its upper relaxation's intercept adds to the output bound.
    s_u2, _, s_l2 = relax[1]
    out_rows = weights[2].expand(n, -1, -1)
    on_layer1 = ((out_rows.clamp_min(0) * s_u2[:, None] + out_rows.clamp_max(0) * s_l2[:, None]) @ weights[1])[:, 0]
    _, t_u1, _ = relax[0]
    score = torch.where((l1 < 0) & (u1 > 0), on_layer1.clamp_min(0) * t_u1, torch.full_like(t_u1, -1.0))
    strategies = {
        "input (bnb rule)": (lambda: halves(rule_dim), 2),
        "input (best dim)": (lambda: torch.stack([halves(torch.full((n,), d)) for d in range(action_dim)]).amin(0),
                             2 * action_dim),
        "relu L1 phase (best)": (lambda: best_neuron(1, l1, u1, False), 2 * l1.shape[1]),
        "relu L2 phase (best)": (lambda: best_neuron(2, l2, u2, False), 2 * l2.shape[1]),
        "hyperplane (best)": (lambda: best_neuron(1, l1, u1, True), 2 * l1.shape[1]),
        "hyperplane (score)": (lambda: neuron_split(score.argmax(1), 1, True), 2),
    }
    out = {"net": cell["key"], "frontier": len(found), "boxes": n,
           "unstable_l1": float(((l1 < 0) & (u1 > 0)).sum(1).double().mean()),
           "unstable_l2": float(((l2 < 0) & (u2 > 0)).sum(1).double().mean()), "strategies": {}}
    for name, (run, calls) in strategies.items():
        tic = time.perf_counter()
        children = torch.minimum(run(), parent)
        seconds = time.perf_counter() - tic
        removed = (parent - children) / gap
        out["strategies"][name] = {"mean": float(removed.mean()), "median": float(removed.median()),
                                   "calls": calls, "ms_per_box": 1e3 * seconds / n}
    return out


def markdown(results: list[dict]) -> str:
    lines = ["# bnb's branching: input splits against ReLU splits", "",
             f"Generated by `benchmarks/maxq_branching.py` ({platform.machine()}, one torch thread). Per net: bnb's "
             "search (CROWN bounds) until its frontier holds the stated boxes, then a random sample of them. Gap "
             "removed: the share of a box's gap (bound minus incumbent) that the larger of a split's two child "
             "bounds removes (above 1: both children fall below the incumbent). Calls: bounding calls per split. "
             "ms/box: the measured time of those calls.", "",
             "| net | frontier | unstable L1 / L2 per box | split | gap removed (mean) | (median) | calls | ms/box |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if not r["strategies"]:
            lines.append(f"| {r['net']} | 0 (all certified first) | – | – | – | – | – | – |")
        for name, s in r["strategies"].items():
            lines.append(f"| {r['net']} | {r['frontier']:,} | {r['unstable_l1']:.1f} / {r['unstable_l2']:.1f} | "
                         f"{name} | {s['mean']:.3f} | {s['median']:.3f} | {s['calls']} | {s['ms_per_box']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frontier", type=int, default=8192, help="boxes in the frontier before sampling")
    parser.add_argument("--boxes", type=int, default=400, help="boxes sampled from it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="nets at a time (one process and thread each)")
    add_executor_arguments(parser)
    args = parser.parse_args()
    jobs = [{"cell": cell, "frontier": args.frontier, "boxes": args.boxes, "seed": args.seed} for cell in NETS]
    found = run_grid(measure, jobs, workers=args.workers, executor=args.executor, ray_address=args.ray_address,
                     on_result=lambda r: print(json.dumps({k: v for k, v in r.items() if k != "strategies"}),
                                               flush=True))
    order = [cell["key"] for cell in NETS]
    results = sorted(found, key=lambda r: order.index(r["net"]))
    settings = {k: v for k, v in vars(args).items() if k not in ("executor", "ray_address")}
    (RESULTS / "maxq_branching.json").write_text(json.dumps({"settings": settings, "results": results}, indent=1))
    text = markdown(results)
    (RESULTS / "maxq_branching.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
