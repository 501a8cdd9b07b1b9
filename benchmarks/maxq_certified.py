"""Certified max-Q at 6 action dimensions: branch-and-bound with optimised slopes against SCIP, on real nets.

Nets: the Q-networks saved from CAQL runs (``benchmarks/data/q_networks``, from ``collect_q_networks.py``:
Hopper-v5 with 3 action dims, HalfCheetah-v5 and Walker2d-v5 with 6; early, middle and late in training;
(32, 16) and (64, 64)) on the 64 replay states saved with each, and the synthetic nets of
``maxq_solvers.py`` with 6 action dims ("fitted" to multimodal bumps, and "random" at PyTorch's default
initialisation) on 64 random states. The action set is the box [-1, 1]^A throughout.

Solvers, all on the same states in one process, one after another (so that the ratios within a row compare
like with like), the certificate being a proven gap of at most 1e-3:

* ``bnb``: today's default (CROWN bounds, the ReLU lower slopes optimised by Adam once input splitting
  stalls, warm-started from the parent box), the 64 states as one batch with a 15 s limit;
* ``bnb-crown``: the configuration before the optimised slopes (``slope_steps=0``), the baseline column;
* ``bnb-f32``: ``bnb`` in float32 (its bounds widened by an empirical margin, not a derived one);
* ``exact``: the portfolio (``bnb`` for 80 % of the limit, SCIP for the states it leaves open);
* ``scip``: the improved MIP (CROWN bounds, gradient-ascent hint), ``scip-anderson``: the same with the
  ideal ReLU inequalities of Anderson et al. separated as cuts, and ``scip-bigm``: the plain big-M model
  on interval bounds with SCIP's default settings; each on the first ``--mip-states`` states, one at a
  time, 3 s per state.

``certified/s`` = certified states / seconds spent. Every cell's result is written to
``benchmarks/results/maxq_certified_runs/<cell>.json`` as soon as it is measured, and a cell whose file
exists is not measured again (``--redo`` measures all again); the summary is rebuilt from those files.

    python benchmarks/maxq_certified.py                # every cell, about 25 minutes on one core
    python benchmarks/maxq_certified.py --workers 2    # cells side by side, one torch thread each
    python benchmarks/maxq_certified.py --summarise-only
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

from _grid import add_executor_arguments, run_grid

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "q_networks"
RESULTS = HERE / "results"
RUNS = RESULTS / "maxq_certified_runs"
CERT_GAP = 1e-3
BNB_LIMIT = 15.0
MIP_LIMIT = 3.0
SYNTHETIC = [("fitted", (32, 16)), ("fitted", (64, 64)), ("random", (32, 16)), ("random", (64, 64))]


def cells() -> list[dict]:
    """Every cell: the real nets on disk, then the synthetic ones."""
    out = []
    for path in sorted(DATA.glob("*.pt")):
        out.append({"key": path.stem, "kind": "real", "file": path.name})
    for kind, hidden in SYNTHETIC:
        out.append({"key": f"{kind}-{hidden[0]}x{hidden[1]}-6", "kind": kind, "hidden": list(hidden),
                    "action_dim": 6})
    return out


def load_cell(cell: dict):
    """``(module, states, action_dim, description)`` of a cell."""
    import torch
    from collect_q_networks import load_q_network
    from maxq_solvers import STATE_DIM, cell_seed, make_net

    if cell["kind"] == "real":
        module, states, record = load_q_network(DATA / cell["file"])
        return module, states, record["action_dim"], {
            "task": record["task"], "hidden": record["hidden_sizes"], "stage": record["stage"], "step": record["step"]}
    hidden, action_dim = tuple(cell["hidden"]), cell["action_dim"]
    kind = "trained" if cell["kind"] == "fitted" else "random"
    seed = cell_seed(hidden, action_dim, kind)  # the nets of maxq_solvers.py
    module = make_net(hidden, action_dim, kind, seed)
    states = torch.randn(64, STATE_DIM, generator=torch.Generator().manual_seed(seed + 1))
    return module, states, action_dim, {"task": cell["kind"], "hidden": list(hidden), "stage": None, "step": None}


def solver_specs() -> dict[str, tuple[str, dict, str]]:
    """label -> (registered name, options, "batch" | "mip")."""
    mip = {"workers": 1, "time_limit": MIP_LIMIT, "gap": CERT_GAP}
    return {
        "bnb": ("bnb", {"gap": CERT_GAP, "time_limit": BNB_LIMIT}, "batch"),
        "bnb-crown": ("bnb", {"gap": CERT_GAP, "time_limit": BNB_LIMIT, "slope_steps": 0}, "batch"),
        "bnb-f32": ("bnb", {"gap": CERT_GAP, "time_limit": BNB_LIMIT, "dtype": "float32"}, "batch"),
        "exact": ("exact", {"gap": CERT_GAP, "time_limit": BNB_LIMIT}, "batch"),
        "scip": ("scip", mip, "mip"),
        "scip-anderson": ("scip", {**mip, "formulation": "anderson"}, "mip"),
        "scip-bigm": ("scip", {**mip, "bounds": "ibp", "separating": "default", "incumbent": None,
                               "skip_certified": False}, "mip"),
    }


def measure(spec: dict) -> dict:
    import torch

    import solvers
    from solvers import ActionSet
    from solvers.bounds import compute_bounds

    torch.set_num_threads(1)
    module, states, action_dim, description = load_cell(spec)
    net = solvers.ReLUNet.from_torch(module, fixed_dim=states.shape[1])
    aset = ActionSet.box(-1.0, 1.0, dim=action_dim)
    unstable = compute_bounds("crown", net, states[:8], aset, dtype=torch.float64).unstable() / 8
    out = {**spec, **description, "action_dim": action_dim, "states": states.shape[0],
           "unstable_per_state": unstable, "solvers": {}}
    for label, (name, options, mode) in solver_specs().items():
        solver = solvers.make(name, **options)
        solver.solve(net, states[:2], aset)  # warm-up: first-call costs (imports, allocator) are not measured
        if mode == "batch":
            result = solver.solve(net, states, aset)
            seconds, values, upper = result.solve_seconds, result.values, result.upper_bounds
            status, per_state = result.status, None
        else:
            picked = [solver.solve(net, states[b:b + 1], aset) for b in range(spec["mip_states"])]
            per_state = [r.solve_seconds for r in picked]
            seconds = sum(per_state)
            values, upper = torch.cat([r.values for r in picked]), torch.cat([r.upper_bounds for r in picked])
            status = torch.cat([r.status for r in picked])
        certified = int(((upper - values) <= CERT_GAP * (1 + 1e-6)).sum())
        out["solvers"][label] = {"states": int(values.shape[0]), "seconds": seconds, "certified": certified,
                                 "certified_frac": certified / values.shape[0],
                                 "certified_per_s": certified / max(seconds, 1e-9),
                                 "state_seconds": per_state, "values": values.tolist(), "upper": upper.tolist(),
                                 "status": status.tolist()}
        if name == "exact":
            out["solvers"][label]["stages"] = dict(solver.last_stages)
    # Soundness: no solver's bound below any solver's value on a shared state.
    best_value = [max(run["values"][i] for run in out["solvers"].values() if i < run["states"])
                  for i in range(states.shape[0])]
    out["unsound"] = {label: sum(u < best_value[i] - 1e-6 for i, u in enumerate(run["upper"]))
                      for label, run in out["solvers"].items()}
    return out


def _over(rate: float, baseline: float) -> float:
    """``rate / baseline``; infinite where only the baseline certified nothing, 1 where neither did."""
    if baseline > 0:
        return rate / baseline
    return math.inf if rate > 0 else 1.0


def summarise(specs: list[dict]) -> dict:
    rows = [json.loads((RUNS / f"{s['key']}.json").read_text()) for s in specs if (RUNS / f"{s['key']}.json").exists()]
    for row in rows:
        runs = row["solvers"]
        scip = runs["scip"]["certified_per_s"]
        row["ratios"] = {
            "bnb_over_scip": _over(runs["bnb"]["certified_per_s"], scip),
            "bnb_over_bnb_crown": _over(runs["bnb"]["certified_per_s"], runs["bnb-crown"]["certified_per_s"]),
            "f32_over_bnb_crown": _over(runs["bnb-f32"]["certified_per_s"], runs["bnb-crown"]["certified_per_s"]),
            "scip_over_bigm_time": runs["scip-bigm"]["seconds"] / max(runs["scip"]["seconds"], 1e-9),
            "anderson_over_bigm_median": statistics.median(runs["scip-bigm"]["state_seconds"])
            / max(statistics.median(runs["scip-anderson"]["state_seconds"]), 1e-9),
            "anderson_over_scip_median": statistics.median(runs["scip"]["state_seconds"])
            / max(statistics.median(runs["scip-anderson"]["state_seconds"]), 1e-9),
        }
    targets = []
    small6 = [r for r in rows if r["action_dim"] == 6 and tuple(r["hidden"]) == (32, 16) and r["kind"] != "random"]
    targets.append({
        "target": "real and fitted 6-dim (32, 16) nets: bnb certifies >= 95% of 64 states within 1e-3, at >= 3x "
                  "improved SCIP's certified states per second",
        "measured": {r["key"]: {"certified": r["solvers"]["bnb"]["certified_frac"],
                                "x_scip": round(r["ratios"]["bnb_over_scip"], 2)} for r in small6},
        "met": bool(small6) and all(r["solvers"]["bnb"]["certified_frac"] >= 0.95 and r["ratios"]["bnb_over_scip"] >= 3
                                    for r in small6)})
    rand = [r for r in rows if r["kind"] == "random" and tuple(r["hidden"]) == (32, 16)]
    targets.append({
        "target": "random 6-dim (32, 16) nets: bnb >= 2x the certified states/s of today's bnb (bnb-crown)",
        "measured": {r["key"]: round(r["ratios"]["bnb_over_bnb_crown"], 2) for r in rand},
        "met": bool(rand) and all(r["ratios"]["bnb_over_bnb_crown"] >= 2 for r in rand),
        "note": "float64, the rigorous default; bnb-f32 reaches "
                + ", ".join(f"{r['ratios']['f32_over_bnb_crown']:.2f}x" for r in rand)})
    six = [r for r in rows if r["action_dim"] == 6]
    targets.append({
        "target": "Anderson-formulation SCIP >= 5x the plain big-M SCIP (median time per state) on the 6-dim nets",
        "measured": {r["key"]: round(r["ratios"]["anderson_over_bigm_median"], 2) for r in six},
        "met": bool(six) and all(r["ratios"]["anderson_over_bigm_median"] >= 5 for r in six),
        "note": "plain big-M solves stopped by the 3 s limit count at the limit, so these ratios are lower bounds; "
                "against the improved big-M model (same bounds and hint, no cuts) the cuts give a median of "
                + (f"{statistics.median(r['ratios']['anderson_over_scip_median'] for r in six):.2f}x" if six else "-")})
    unsound = {r["key"]: {k: v for k, v in r["unsound"].items() if v} for r in rows if any(r["unsound"].values())}
    targets.append({"target": "every bound sound: no upper bound below any solver's value",
                    "measured": unsound or "none", "met": not unsound})
    return {"machine": f"{platform.machine()} CPU, one torch thread per cell", "rows": rows, "targets": targets}


def _ratio(row: dict, name: str, baseline: str) -> str:
    """A ratio of certified rates, or what it is when the baseline certified nothing."""
    if row["solvers"][baseline]["certified"] == 0:
        return "baseline 0" if row["solvers"]["bnb"]["certified"] else "both 0"
    return f"{row['ratios'][name]:.2f}"


def markdown(report: dict) -> str:
    from maxq_solvers import target_lines

    lines = ["# Certified max-Q at 6 action dimensions", "",
             f"Machine: {report['machine']}. Cells ran two at a time on the machine's two cores, the solvers of a "
             "cell one after another; compare within a row. Regenerate with `python benchmarks/maxq_certified.py`.",
             "",
             "`cert` = certified fraction (gap <= 1e-3); `cert/s` = certified states per second; bnb, bnb-crown and "
             f"exact solve the 64 states as one batch ({BNB_LIMIT:g} s limit), the SCIP columns the first few states "
             f"one at a time ({MIP_LIMIT:g} s each). `x scip` = bnb's cert/s over scip's; `x crown` = bnb's over "
             "bnb-crown's (the configuration before optimised slopes); `anderson x bigm` = the plain big-M model's "
             "median seconds per state over scip-anderson's.", "",
             "| net | A | hidden | stage | unstable | bnb cert | bnb cert/s | bnb-crown cert | bnb-crown cert/s | "
             "bnb-f32 cert/s | exact cert (to SCIP) | scip cert/s | scip-anderson cert/s | scip-bigm cert/s | "
             "x scip | x crown | anderson x bigm |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        s = r["solvers"]
        stage = f"{r['stage']} ({r['step']})" if r["stage"] else "-"
        lines.append(
            f"| {r['task']} | {r['action_dim']} | {tuple(r['hidden'])} | {stage} | {r['unstable_per_state']:.0f} | "
            f"{s['bnb']['certified_frac']:.2f} | {s['bnb']['certified_per_s']:.1f} | "
            f"{s['bnb-crown']['certified_frac']:.2f} | {s['bnb-crown']['certified_per_s']:.1f} | "
            f"{s['bnb-f32']['certified_per_s']:.1f} | "
            f"{s['exact']['certified_frac']:.2f} ({s['exact']['stages'].get('scip', 0)}) | "
            f"{s['scip']['certified_per_s']:.1f} | {s['scip-anderson']['certified_per_s']:.1f} | "
            f"{s['scip-bigm']['certified_per_s']:.1f} | {_ratio(r, 'bnb_over_scip', 'scip')} | "
            f"{_ratio(r, 'bnb_over_bnb_crown', 'bnb-crown')} | {r['ratios']['anderson_over_bigm_median']:.2f} |")
    lines += ["", "## Targets", ""]
    lines += target_lines(report["targets"])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="cells measured side by side (one thread each)")
    parser.add_argument("--mip-states", type=int, default=6, help="states the SCIP columns solve per cell")
    parser.add_argument("--only", nargs="+", help="cell keys to measure (default: all)")
    parser.add_argument("--redo", action="store_true", help="measure cells whose result file exists again")
    parser.add_argument("--summarise-only", action="store_true")
    add_executor_arguments(parser)
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    every = [{**c, "mip_states": args.mip_states} for c in cells()]
    specs = [c for c in every if not args.only or c["key"] in args.only]
    if not args.summarise_only:
        todo = [s for s in specs if args.redo or not (RUNS / f"{s['key']}.json").exists()]
        print(f"{len(specs)} cells, {len(specs) - len(todo)} done, {len(todo)} to do", flush=True)
        started = time.perf_counter()

        def save(result: dict) -> None:
            partial = RUNS / f"{result['key']}.json.tmp"
            partial.write_text(json.dumps(result, indent=1))
            partial.replace(RUNS / f"{result['key']}.json")
            bnb = result["solvers"]["bnb"]
            print(f"[{time.perf_counter() - started:6.0f}s] {result['key']}: bnb cert {bnb['certified_frac']:.2f} "
                  f"at {bnb['certified_per_s']:.1f}/s, scip {result['solvers']['scip']['certified_per_s']:.1f}/s",
                  flush=True)

        run_grid(measure, todo, workers=args.workers, executor=args.executor, ray_address=args.ray_address,
                 on_result=save)
    report = summarise(every)  # every cell on disk, whatever --only measured this time
    (RESULTS / "maxq_certified.json").write_text(json.dumps(
        {**report, "rows": [{k: v for k, v in r.items() if k != "solvers"} | {"solvers": {
            label: {k: v for k, v in run.items() if k not in ("values", "upper", "status")}
            for label, run in r["solvers"].items()}} for r in report["rows"]]}, indent=1))
    (RESULTS / "maxq_certified.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
