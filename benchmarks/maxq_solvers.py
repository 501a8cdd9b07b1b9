"""Benchmark of the max-Q solvers on the same nets and states: seconds per state and gap to the best bound.

Cells: hidden sizes (32, 16), (64, 64), (256, 256) x action dims 1, 3, 6, 17 x weights "trained" (a net
fitted for 600 Adam steps to a multimodal target, as in ``maxq-solvers.md``) and "random" (PyTorch's
default initialisation).
The state has 11 dimensions and the action set is the box [-1, 1]^A. In every cell the MIP solvers see
the first ``--mip-states`` states, one at a time on one core (so their seconds are per state), and
``bnb`` / ``ga`` solve ``--batch-states`` states as one batch (seconds per state = batch time / batch
size). The baseline column is the plain big-M model on interval bounds with default SCIP settings and
no hint; ``scip`` is the improved model (CROWN bounds, GA hint, the aggregation separator off, samples
certified by CROWN skipped). Gap to best = min over solvers of the proven upper bound - the solver's value.

A second part measures how well time limits are kept: on hard nets ((64, 64) and (256, 256), 6 action
dims, 16 states, gap 0 so that only the limit stops a solve) it times whole ``solve`` calls with
``time_limit`` 0.01, 0.1 and 1 s and reports the overrun, elapsed - limit (median and max over repeats
and nets). The MIP solvers run on one worker (this process); ``time_limit`` is the budget of the whole
batch for every solver.

    python benchmarks/maxq_solvers.py --quick          # about two minutes
    python benchmarks/maxq_solvers.py                  # the full grid, about 40 minutes on 2 cores
    python benchmarks/maxq_solvers.py --time-limits    # only the overrun part, about 5 minutes

Writes ``benchmarks/results/maxq_solvers.json`` and ``.md`` (``--out`` to change the folder). The
overrun part keeps the rows already in the json and measures only the missing ones (``--redo`` measures
them all again); ``--time-limits`` leaves the grid's results as they are.

``--executor ray`` runs the whole measurement as one Ray task of ``--threads`` CPUs (``--ray-address`` to join a
cluster): its cells share one time budget and one machine description, and the solvers of a cell are compared
with each other, so they stay together on one node. The report is written here when the task ends (the overrun
part is then saved at the end only, not after every row).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from _grid import add_executor_arguments, run_grid
from torch import nn

import solvers
from solvers import ActionSet, SolveStatus
from solvers.bounds import compute_bounds

STATE_DIM = 11
CERT_GAP = 1e-3


@dataclass
class Settings:
    hidden: list[tuple[int, ...]]
    action_dims: list[int]
    weights: list[str]
    mip_states: int
    batch_states: int
    time_limit: float
    bnb_time_limit: float
    budget_s: float
    ortools_cells: int
    """Largest hidden width on which the OR-Tools backends run (with A <= 6, trained nets: they are slowest)."""


FULL = Settings([(32, 16), (64, 64), (256, 256)], [1, 3, 6, 17], ["trained", "random"], mip_states=4,
                batch_states=64, time_limit=3.0, bnb_time_limit=15.0, budget_s=22 * 60, ortools_cells=64)
QUICK = Settings([(32, 16), (64, 64)], [1, 6], ["trained"], mip_states=2, batch_states=16, time_limit=2.0,
                 bnb_time_limit=10.0, budget_s=4 * 60, ortools_cells=32)


def cell_seed(hidden: tuple[int, ...], action_dim: int, kind: str) -> int:
    """The seed of a cell's net (``seed + 1``: of its states): the same nets in every run and every script."""
    return zlib.crc32(f"{hidden}-{action_dim}-{kind}".encode()) % 10_000


def make_net(hidden: tuple[int, ...], action_dim: int, kind: str, seed: int) -> nn.Sequential:
    """A ReLU MLP on [state, action]: PyTorch's default initialisation (what a critic starts from),
    or that initialisation fitted to a multimodal target."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sizes = [STATE_DIM + action_dim, *hidden, 1]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()] if i < len(sizes) - 2 else [nn.Linear(sizes[i], 1)]
    net = nn.Sequential(*layers)
    if kind == "trained":
        _fit(net, action_dim, generator)
    return net


def _target(states: torch.Tensor, actions: torch.Tensor, params: dict) -> torch.Tensor:
    """Three Gaussian bumps whose centres and heights move with the state, minus a small quadratic.

    The bumps' width grows with the action dimension (variance 0.09 A) so that they keep a fixed share
    of the box's volume; Q then ranges over about [-0.5, 1.5], as in the spec's trained nets."""
    centres = torch.tanh(torch.einsum("kas,bs->bka", params["centres"], states))
    heights = torch.sigmoid(states @ params["heights"].T)
    distance = ((actions.unsqueeze(1) - centres) ** 2).sum(-1)
    width = 0.09 * actions.shape[1]
    return (heights * torch.exp(-distance / (2 * width))).sum(-1) - 0.1 * (actions**2).sum(-1)


def _fit(net: nn.Sequential, action_dim: int, generator: torch.Generator, steps: int = 600) -> None:
    params = {"centres": torch.randn(3, action_dim, STATE_DIM, generator=generator) * 0.5,
              "heights": torch.randn(3, STATE_DIM, generator=generator)}
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        states = torch.randn(512, STATE_DIM, generator=generator)
        actions = torch.rand(512, action_dim, generator=generator) * 2 - 1
        loss = ((net(torch.cat([states, actions], 1)).squeeze(1) - _target(states, actions, params)) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def solver_specs(time_limit: float, bnb_time_limit: float) -> dict[str, tuple[str, dict, str]]:
    """name -> (registered solver, options, "mip" | "batch")."""
    mip = {"workers": 1, "time_limit": time_limit, "gap": CERT_GAP}
    return {
        "scip-baseline": ("scip", {**mip, "bounds": "ibp", "separating": "default", "incumbent": None,
                                   "skip_certified": False}, "mip"),
        "scip": ("scip", mip, "mip"),
        "scip-obbt": ("scip", {**mip, "bounds": "obbt"}, "mip"),
        "ortools-scip": ("ortools-scip", mip, "mip"),
        "ortools-highs": ("ortools-highs", mip, "mip"),
        "ortools-cbc": ("ortools-cbc", mip, "mip"),
        "bnb": ("bnb", {"gap": CERT_GAP, "time_limit": bnb_time_limit}, "batch"),
        "bnb-f32": ("bnb", {"gap": CERT_GAP, "time_limit": bnb_time_limit, "dtype": "float32"}, "batch"),
        "ga": ("ga", {}, "batch"),
    }


def run_cell(hidden, action_dim, kind, settings: Settings, deadline: float, log) -> dict:
    seed = cell_seed(hidden, action_dim, kind)
    module = make_net(hidden, action_dim, kind, seed)
    net = solvers.ReLUNet.from_torch(module, fixed_dim=STATE_DIM)
    states = torch.randn(settings.batch_states, STATE_DIM, generator=torch.Generator().manual_seed(seed + 1))
    aset = ActionSet.box(-1.0, 1.0, dim=action_dim)
    unstable = {m: compute_bounds(m, net, states[: settings.mip_states], aset, dtype=torch.float64).unstable()
                / settings.mip_states for m in ("ibp", "crown")}
    cell = {"hidden": list(hidden), "action_dim": action_dim, "weights": kind,
            "unstable_neurons_per_state": unstable, "solvers": {}}
    small = max(hidden) <= settings.ortools_cells and action_dim <= 6 and kind == "trained"
    for label, (name, options, mode) in solver_specs(settings.time_limit, settings.bnb_time_limit).items():
        if label.startswith("ortools") and not small:
            continue
        if label == "scip-obbt" and max(hidden) > 64:
            continue
        if time.perf_counter() > deadline and mode == "mip":
            cell["solvers"][label] = {"skipped": "benchmark budget spent"}
            continue
        solver = solvers.make(name, **options)
        if mode == "mip":
            seconds, results = [], []
            for b in range(settings.mip_states):
                result = solver.solve(net, states[b:b + 1], aset)
                seconds.append(result.solve_seconds)
                results.append(result)
            values = torch.cat([r.values for r in results])
            upper = torch.cat([r.upper_bounds for r in results])
            status = torch.cat([r.status for r in results])
        else:
            solver.solve(net, states[:2], aset)  # warm-up (allocator, first-call overheads)
            result = solver.solve(net, states, aset)
            seconds = [result.solve_seconds / settings.batch_states] * settings.batch_states
            values, upper, status = result.values, result.upper_bounds, result.status
        cell["solvers"][label] = {
            "states": len(values), "seconds": seconds, "values": values.tolist(), "upper": upper.tolist(),
            "status": status.tolist(),
        }
        log(f"  {label:14s} {statistics.median(seconds):8.4f} s/state  status {_counts(status)}")
    _summarise(cell, settings.mip_states)
    return cell


OVERRUN_NETS = [((64, 64), 6, "random"), ((64, 64), 6, "trained"), ((256, 256), 6, "random"),
                ((256, 256), 6, "trained")]
OVERRUN_LIMITS = (0.01, 0.1, 1.0)
OVERRUN_SOLVERS = {
    "bnb": ("bnb", {}),
    "bnb-f32": ("bnb", {"dtype": "float32"}),
    "scip": ("scip", {"workers": 1}),
    "scip-obbt": ("scip", {"workers": 1, "bounds": "obbt"}),
    "ortools-scip": ("ortools-scip", {"workers": 1}),
    "ortools-highs": ("ortools-highs", {"workers": 1}),
    "ortools-cbc": ("ortools-cbc", {"workers": 1}),
}
OVERRUN_STATES = 16
OVERRUN_REPEATS = 3


def overrun_key(row: dict) -> str:
    return f"{row['solver']}|{tuple(row['hidden'])}|{row['action_dim']}|{row['weights']}|{row['limit']}"


def measure_overruns(existing: list[dict], log, redo: bool = False, save=None) -> list[dict]:
    """Time-limit overruns (elapsed - limit) of whole solve calls on hard nets; keeps ``existing`` rows.

    ``save(rows)``, if given, is called after every new row (so an interrupted run keeps its work)."""
    rows = {} if redo else {overrun_key(r): r for r in existing}
    for hidden, action_dim, kind in OVERRUN_NETS:
        seed = cell_seed(hidden, action_dim, kind)  # the nets of the grid
        net = None
        states = torch.randn(OVERRUN_STATES, STATE_DIM, generator=torch.Generator().manual_seed(seed + 1))
        aset = ActionSet.box(-1.0, 1.0, dim=action_dim)
        for label, (name, options) in OVERRUN_SOLVERS.items():
            for limit in OVERRUN_LIMITS:
                row = {"solver": label, "hidden": list(hidden), "action_dim": action_dim, "weights": kind,
                       "limit": limit}
                if overrun_key(row) in rows:
                    continue
                if net is None:
                    net = solvers.ReLUNet.from_torch(make_net(hidden, action_dim, kind, seed), fixed_dim=STATE_DIM)
                solver = solvers.make(name, gap=0.0, time_limit=limit, **options)
                solver.solve(net, states[:2], aset)  # warm-up (imports, allocator)
                elapsed, status = [], []
                for _ in range(OVERRUN_REPEATS):
                    tic = time.perf_counter()
                    result = solver.solve(net, states, aset)
                    elapsed.append(time.perf_counter() - tic)
                    status.append(_counts(result.status))
                over = [e - limit for e in elapsed]
                row |= {"states": OVERRUN_STATES, "elapsed": elapsed, "overrun_median": statistics.median(over),
                        "overrun_max": max(over), "status": status}
                rows[overrun_key(row)] = row
                if save is not None:
                    save(list(rows.values()))
                log(f"  {label:14s} {tuple(hidden)} {kind:7s} limit {limit:5.2f} s: overrun median "
                    f"{row['overrun_median']:+.3f} s, max {row['overrun_max']:+.3f} s  {status[-1]}")
    order = {overrun_key(r): i for i, r in enumerate(_overrun_grid())}
    return sorted(rows.values(), key=lambda r: order.get(overrun_key(r), len(order)))


def _overrun_grid() -> list[dict]:
    return [{"solver": label, "hidden": list(h), "action_dim": a, "weights": w, "limit": limit}
            for label in OVERRUN_SOLVERS for limit in OVERRUN_LIMITS for h, a, w in OVERRUN_NETS]


def overrun_summary(rows: list[dict]) -> list[dict]:
    """Per solver and limit: median and max overrun over every net and repeat."""
    out = []
    for label in dict.fromkeys(r["solver"] for r in rows):
        for limit in OVERRUN_LIMITS:
            picked = [r for r in rows if r["solver"] == label and r["limit"] == limit]
            if not picked:
                continue
            over = [e - limit for r in picked for e in r["elapsed"]]
            out.append({"solver": label, "limit": limit, "calls": len(over), "overrun_median": statistics.median(over),
                        "overrun_max": max(over)})
    return out


def _counts(status: torch.Tensor) -> dict[str, int]:
    return {s.name.lower(): int((status == s).sum()) for s in SolveStatus if int((status == s).sum())}


def _summarise(cell: dict, shared: int) -> None:
    """Per solver: median / p90 seconds, states/s, certified fraction and gap to the best bound."""
    runs = {k: v for k, v in cell["solvers"].items() if "values" in v}
    best = [min(v["upper"][i] for v in runs.values()) for i in range(shared)]
    for run in runs.values():
        seconds = sorted(run["seconds"])
        run["median_s"] = statistics.median(seconds)
        run["p90_s"] = seconds[min(len(seconds) - 1, math.ceil(0.9 * len(seconds)) - 1)]
        run["states_per_s"] = len(seconds) / sum(seconds) if sum(seconds) > 0 else math.inf
        own = [u - v for u, v in zip(run["upper"], run["values"], strict=True)]
        run["certified_frac"] = sum(g <= CERT_GAP + 1e-9 for g in own) / len(own)
        to_best = [best[i] - run["values"][i] for i in range(shared)]
        run["gap_to_best_median"] = statistics.median(to_best)
        run["gap_to_best_max"] = max(to_best)
    cell["best_bound"] = best


def targets(cells: list[dict]) -> list[dict]:
    out = []

    def cert_rate(hidden, dim):
        rates = []
        for c in cells:
            if tuple(c["hidden"]) == hidden and c["action_dim"] == dim:
                bnb = c["solvers"].get("bnb", {})
                if "states_per_s" in bnb:
                    rates.append((c["weights"], bnb["states_per_s"], bnb["certified_frac"]))
        return rates

    for hidden, dim, goal in (((32, 16), 6, 100.0), ((64, 64), 6, 10.0)):
        rates = cert_rate(hidden, dim)
        met = bool(rates) and all(r >= goal and f == 1.0 for _, r, f in rates)
        out.append({"target": f"{hidden} nets, {dim} action dims: certified within {CERT_GAP} at >= {goal} states/s",
                    "measured": {w: {"states_per_s": round(r, 2), "certified_frac": f} for w, r, f in rates},
                    "met": met})
    ratios = []
    for c in cells:
        base, improved = c["solvers"].get("scip-baseline", {}), c["solvers"].get("scip", {})
        if "median_s" in base and "median_s" in improved:
            ratios.append(sum(base["seconds"]) / max(sum(improved["seconds"]), 1e-9))
    geo = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else float("nan")
    out.append({"target": "SCIP with the improved model >= 10x faster than the baseline column",
                "measured": {"geometric_mean_speedup": round(geo, 2), "cells": len(ratios),
                             "min": round(min(ratios), 2) if ratios else None,
                             "max": round(max(ratios), 2) if ratios else None},
                "met": bool(ratios) and geo >= 10.0,
                "note": "baseline runs that hit the time limit count at the limit, so these ratios are lower bounds"})
    out.append({"target": "bnb on a GPU >= 10x the CPU rate", "measured": None, "met": None,
                "note": "not measured: no GPU on this machine"})
    return out


def target_lines(targets: list[dict]) -> list[str]:
    """One markdown bullet per target: met / NOT met / not measured, what was measured, and the note."""
    lines = []
    for t in targets:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"- **{verdict}**: {t['target']}: {json.dumps(t['measured'])}"
                     + (f" ({t['note']})" if t.get("note") else ""))
    return lines


def markdown(report: dict) -> str:
    lines = ["# Max-Q solver benchmark", "",
             f"Machine: {report['machine']}. Budget: {report['budget']}.", "",
             "The machine's 2 cores were shared with other work during the recorded run (load average "
             "about 7-12), so every solver got well under one core: the timings are noisy and pessimistic, "
             "and MIP solves hit their wall-clock limits sooner. Compare columns within a row, not with other "
             "machines. Regenerate with `python benchmarks/maxq_solvers.py` (or `--quick`).", "",
             "Seconds are per state (MIP solvers: one state per solve on one core; `bnb`/`ga`: one batch, "
             "batch time / batch size). `cert` = fraction of states with a proven gap <= 1e-3. "
             "`gap to best` = best proven upper bound among all solvers minus the solver's value "
             "(median / max, over the states the MIP solvers saw). `unstable` = unstable neurons per "
             "state under IBP / CROWN.", "",
             "| hidden | A | weights | unstable | solver | states | median s | p90 s | states/s | cert | gap to best |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in report["cells"]:
        unstable = c["unstable_neurons_per_state"]
        for label, run in c["solvers"].items():
            head = f"| {tuple(c['hidden'])} | {c['action_dim']} | {c['weights']} | " \
                   f"{unstable['ibp']:.0f} / {unstable['crown']:.0f} | {label} |"
            if "skipped" in run:
                lines.append(head + f" skipped: {run['skipped']} | | | | | |")
                continue
            lines.append(head + f" {run['states']} | {run['median_s']:.4f} | {run['p90_s']:.4f} | "
                         f"{run['states_per_s']:.1f} | {run['certified_frac']:.2f} | "
                         f"{run['gap_to_best_median']:.1e} / {run['gap_to_best_max']:.1e} |")
    lines += ["", "## Targets (2-core CPU)", ""]
    lines += target_lines(report["targets"])
    if report.get("time_limit_overrun"):
        lines += overrun_markdown(report["time_limit_overrun"])
    return "\n".join(lines) + "\n"


def overrun_markdown(section: dict) -> list[str]:
    rows = section["rows"]
    lines = ["", "## Time limits", "",
             f"{section.get('note', '')} Machine: {section.get('machine', 'not recorded')}.", "",
             "Overrun = elapsed - time_limit of one `solve` call (seconds), median / max over "
             f"{OVERRUN_REPEATS} calls on each net; `time_limit` is the budget of the whole batch for every solver.",
             "", "| solver | time_limit s | calls | median overrun s | max overrun s |", "|---|---|---|---|---|"]
    for r in overrun_summary(rows):
        lines.append(f"| {r['solver']} | {r['limit']:g} | {r['calls']} | {r['overrun_median']:+.3f} | "
                     f"{r['overrun_max']:+.3f} |")
    lines += ["", "Per net:", "", "| solver | hidden | A | weights | time_limit s | median overrun s | "
              "max overrun s | statuses (last call) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        counts = r["status"][-1]
        lines.append(f"| {r['solver']} | {tuple(r['hidden'])} | {r['action_dim']} | {r['weights']} | {r['limit']:g} | "
                     f"{r['overrun_median']:+.3f} | {r['overrun_max']:+.3f} | "
                     f"{', '.join(f'{k} {v}' for k, v in counts.items())} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run on a few small cells")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown from the json")
    parser.add_argument("--time-limits", action="store_true",
                        help="only the time-limit overrun part (rows already in the json are kept)")
    parser.add_argument("--redo", action="store_true", help="measure every overrun row again")
    add_executor_arguments(parser)
    args = parser.parse_args()
    path = args.out / "maxq_solvers.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    if args.render:
        report = previous
        report["targets"] = targets(report["cells"])
        path.write_text(json.dumps(report, indent=1))
        (args.out / "maxq_solvers.md").write_text(markdown(report))
        return
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    if args.time_limits and "cells" not in previous:
        raise SystemExit(f"--time-limits adds to an existing {path}; run the grid first.")
    job = {"quick": args.quick, "threads": args.threads, "time_limits": args.time_limits, "redo": args.redo,
           "previous": previous, "save_to": str(path) if args.executor == "process" else None}
    (report,) = run_grid(measure, [job], workers=0, executor=args.executor, ray_address=args.ray_address,
                         cpus_per_job=args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    (args.out / "maxq_solvers.md").write_text(markdown(report))
    log(f"wrote {path} and {args.out / 'maxq_solvers.md'}")


def measure(job: dict) -> dict:
    """One invocation's measurement, in this process: the grid (and, unless quick, the overrun part), or with
    ``time_limits`` the overrun part added to ``job["previous"]``; returns the report.

    ``job["save_to"]``: where to write the report after every new overrun row (None: only returned)."""
    torch.set_num_threads(job["threads"])
    settings = QUICK if job["quick"] else FULL
    start = time.perf_counter()
    deadline = start + settings.budget_s
    previous = job["previous"]

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    if job["time_limits"]:
        report = previous
        save = None
        if job["save_to"] is not None:
            path = Path(job["save_to"])

            def save(rows: list[dict]) -> None:
                report["time_limit_overrun"] = {**report.get("time_limit_overrun", {}), "rows": rows}
                path.write_text(json.dumps(report, indent=1))

        report["time_limit_overrun"] = _overrun_section(previous, log, job["redo"], save)
        return report

    cells = []
    for hidden in settings.hidden:
        for dim in settings.action_dims:
            for kind in settings.weights:
                log(f"cell hidden={hidden} A={dim} weights={kind}")
                cells.append(run_cell(hidden, dim, kind, settings, deadline, log))
    report = {
        "machine": f"{platform.machine()} CPU with {os.cpu_count()} cores, {torch.get_num_threads()} torch "
                   f"thread(s), no GPU; "
                   f"torch {torch.__version__}, Python {platform.python_version()}",
        "budget": f"{'quick' if job['quick'] else 'full'} run: MIP time limit {settings.time_limit} s per state, "
                  f"{settings.mip_states} MIP states and {settings.batch_states} batched states per cell, "
                  f"bnb time limit {settings.bnb_time_limit} s per batch, MIP runs skipped after "
                  f"{settings.budget_s / 60:.0f} min; took {(time.perf_counter() - start) / 60:.1f} min",
        "settings": {k: v for k, v in vars(settings).items() if k != "hidden"} | {"hidden": settings.hidden},
        "cells": cells,
    }
    report["targets"] = targets(cells)
    if not job["quick"]:
        report["time_limit_overrun"] = _overrun_section(previous, log, job["redo"])
    return report


def _overrun_section(previous: dict, log, redo: bool, save=None) -> dict:
    log("time-limit overruns")
    rows = measure_overruns(previous.get("time_limit_overrun", {}).get("rows", []), log, redo, save)
    return {"machine": f"{platform.machine()} CPU with {os.cpu_count()} cores, {torch.get_num_threads()} torch "
                       f"thread(s); torch {torch.__version__}",
            "note": f"Hard nets (the grid's (64, 64) and (256, 256) nets with 6 action dims), {OVERRUN_STATES} states "
                    "per call, gap 0; MIP solvers on one worker (this process), after one warm-up call.",
            "rows": rows, "summary": overrun_summary(rows)}


if __name__ == "__main__":
    main()
