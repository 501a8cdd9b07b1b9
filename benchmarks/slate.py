"""Slate adapter benchmark: episode return and choice rate of every slate policy on held-out users, over seeds,
and how well EM recovers the simulator's user types.

Methods (all in the default world, ``SlateEnvConfig()``: 200 items, slates of 4, 4 user types, world seed 0,
satisfaction reward, 10-turn sessions):

* ``random``, ``greedy`` (best immediate expected reward under the true choice model), ``diverse`` (one fixed
  farthest-point slate): no training;
* ``ppo``: PPO over slates (sequential masked picks), ``--steps`` user turns;
* ``slateq_true``: SlateQ with the simulator's choice model, ``--steps`` user turns;
* ``slateq_learned``: SlateQ with the choice model EM learned from 2,000 logged users served random slates
  (its recovery error against the true model is recorded).

Each (method, seed) is one run in its own process with one torch thread, at most ``--workers`` (default 2) at
once; its result goes to ``benchmarks/results/slate_runs/<method>_s<seed>.json`` and a run whose file exists
is skipped, so an interrupted benchmark continues where it stopped. Evaluation: ``slate.evaluate`` with
deterministic slates on ``--users`` held-out users (reset seed ``50_000 + seed``, never used in training).
Spread over seeds is the sample standard deviation (``n − 1``) of the per-seed means. ``--executor ray`` runs
each run's process as a Ray task instead (one CPU; ``--ray-address`` to join a cluster, whose nodes need this
repository and environment at the same paths); the result files and failed runs' logs are written here.

    python benchmarks/slate.py                      # run what is missing, then write the report
    python benchmarks/slate.py --summarise-only

Writes ``benchmarks/results/slate.json`` (every run, with per-seed numbers) and ``slate.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _grid import ONE_THREAD, Command, add_executor_arguments, run_commands

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "slate_runs"
METHODS = ["random", "greedy", "diverse", "ppo", "slateq_true", "slateq_learned"]
LABELS = {"random": "random slate", "greedy": "greedy (immediate, true model)", "diverse": "fixed diverse slate",
          "ppo": "PPO over slates", "slateq_true": "SlateQ, true choice model",
          "slateq_learned": "SlateQ, EM-learned choice model"}


def run_one(method: str, seed: int, steps: int, users: int) -> dict:
    """Train (if the method learns) and evaluate one (method, seed); returns the result record."""
    import torch

    torch.set_num_threads(1)
    from rlcore.adapters import slate

    started = time.perf_counter()
    env_config = slate.SlateEnvConfig()
    record: dict = {"method": method, "seed": seed, "steps": 0, "users": users}
    if method in ("random", "greedy", "diverse"):
        policy = {"random": slate.RandomSlate, "greedy": slate.GreedySlate, "diverse": slate.DiverseSlate}[method]()
    else:
        env = slate.SlateEnv.from_config(env_config, num_envs=64)
        kind = "ppo" if method == "ppo" else "slateq"
        extra = {} if kind == "ppo" else {"choice_model": method.removeprefix("slateq_")}
        run_dir = ROOT / "runs" / "slate_bench" / f"{method}_s{seed}_{steps}"
        if run_dir.exists():  # a run cut short earlier: start it again from scratch
            import shutil

            shutil.rmtree(run_dir)
        policy = slate.train_agent(env, method=kind, total_steps=steps, seed=seed, run_dir=str(run_dir), **extra)
        record["steps"] = steps
        record["training_evaluations"] = [
            {"step": e["step"], "return_mean": e["return_mean"], "choice_rate": e["metrics"]["choice_rate"]}
            for e in policy.train_result.evaluations]
        if method == "slateq_learned":
            true_model = slate.ChoiceModel.from_world(env_config)
            record["em_recovery"] = slate.recovery_error(true_model, policy.choice)
    record.update(slate.evaluate(policy, env_seed=50_000 + seed, num_users=users))
    record["wall_seconds"] = time.perf_counter() - started
    return record


def summarise(runs: list[dict]) -> dict:
    table = {}
    for method in METHODS:
        these = sorted((r for r in runs if r["method"] == method), key=lambda r: r["seed"])
        if not these:
            continue
        returns = [r["mean_return"] for r in these]
        rates = [r["choice_rate"] for r in these]
        entry = {"seeds": [r["seed"] for r in these], "returns": returns, "choice_rates": rates,
                 "return_mean": statistics.mean(returns),
                 "return_std": statistics.stdev(returns) if len(returns) > 1 else 0.0,
                 "return_min": min(returns), "return_max": max(returns),
                 "choice_rate_mean": statistics.mean(rates),
                 "mean_length": statistics.mean(r["mean_length"] for r in these),
                 "user_return_std": statistics.mean(r["return_std"] for r in these),
                 "wall_seconds": statistics.mean(r["wall_seconds"] for r in these)}
        if method == "slateq_learned":
            keys = [k for k in these[0]["em_recovery"] if k != "permutation"]
            entry["em_recovery"] = {k: statistics.mean(r["em_recovery"][k] for r in these) for k in keys}
            entry["em_recovery_max"] = {k: max(r["em_recovery"][k] for r in these) for k in keys}
        table[method] = entry
    verdict = {}
    if {"slateq_true", "greedy", "random"} <= table.keys():
        by_seed = {r["seed"]: r["mean_return"] for r in runs if r["method"] == "slateq_true"}
        greedy = {r["seed"]: r["mean_return"] for r in runs if r["method"] == "greedy"}
        random = {r["seed"]: r["mean_return"] for r in runs if r["method"] == "random"}
        verdict["slateq_ahead_every_seed"] = all(by_seed[s] > max(greedy[s], random[s]) for s in by_seed)
        verdict["slateq_ahead_by_spread"] = (table["slateq_true"]["return_mean"] - table["slateq_true"]["return_std"]
                                             > table["greedy"]["return_mean"] + table["greedy"]["return_std"])
    if {"slateq_true", "slateq_learned"} <= table.keys():
        ratio = table["slateq_learned"]["return_mean"] / table["slateq_true"]["return_mean"]
        verdict["learned_over_true"] = ratio
        verdict["learned_within_10_percent"] = ratio >= 0.9
    return {"methods": table, "verdict": verdict}


def write_markdown(summary: dict, budget: dict, path: Path) -> None:
    t, v = summary["methods"], summary["verdict"]
    lines = [
        "# Slates: SlateQ with a true and an EM-learned choice model", "",
        f"Machine: {budget['machine']}. World: `SlateEnvConfig()` (200 items, slates of 4, 4 user types, world "
        f"seed 0, satisfaction reward, sessions of at most 10 turns). Budget: {budget['steps']} user turns per "
        f"learning run (64 users in parallel); seeds {budget['seeds']}; evaluation on {budget['users']} held-out "
        f"users per seed (reset seed 50000 + seed), deterministic slates. Spread: sample std over seeds of the "
        f"per-seed means (for the untrained baselines the seeds differ only in the held-out users). "
        f"{budget['workers']} runs at a time, one torch thread each; suite wall clock "
        f"{budget['suite_wall_seconds'] / 60:.0f} min. Versions: {budget['versions']}. Command: "
        f"`{budget['command']}`.", "",
        "| method | episode return, mean ± std over seeds [min, max] | choice rate | turns per user | wall s per run |",
        "|---|---|---|---|---|"]
    for method in METHODS:
        if method not in t:
            continue
        c = t[method]
        lines.append(f"| {LABELS[method]} | {c['return_mean']:.2f} ± {c['return_std']:.2f} [{c['return_min']:.2f}, "
                     f"{c['return_max']:.2f}] | {c['choice_rate_mean']:.3f} | {c['mean_length']:.2f} | "
                     f"{c['wall_seconds']:.0f} |")
    if "slateq_learned" in t:
        e, worst = t["slateq_learned"]["em_recovery"], t["slateq_learned"]["em_recovery_max"]
        lines += ["", "EM recovery of the 4 user types from 2,000 logged users (random slates), after matching types "
                  "(mean over seeds, worst seed in brackets): preference distance ‖θ̂ − θ‖ "
                  f"{e['preference_error']:.3f} [{worst['preference_error']:.3f}] (θ are unit vectors), relative "
                  f"sensitivity error {e['sensitivity_error']:.3f} [{worst['sensitivity_error']:.3f}], appeal weight "
                  f"{e['appeal_error']:.3f} [{worst['appeal_error']:.3f}], no-choice utility "
                  f"{e['no_choice_error']:.3f} [{worst['no_choice_error']:.3f}], largest type-weight error "
                  f"{e['weight_error']:.3f} [{worst['weight_error']:.3f}]."]
    if v:
        lines += ["", "Targets (issue 27):", ""]
        if "slateq_ahead_every_seed" in v:
            lines.append(f"* SlateQ (true model) ahead of greedy and random on every seed: "
                         f"{'met' if v['slateq_ahead_every_seed'] else 'NOT met'}; its mean minus one std above "
                         f"greedy's mean plus one std: {'yes' if v['slateq_ahead_by_spread'] else 'no'}.")
        if "learned_over_true" in v:
            lines.append(f"* SlateQ with the EM-learned model within 10 % of SlateQ with the true one: "
                         f"{'met' if v['learned_within_10_percent'] else 'NOT met'} (ratio of mean returns "
                         f"{v['learned_over_true']:.3f}).")
    lines += ["", "Greedy sees what SlateQ sees (the user's most probable type, the true choice model) and "
              "maximises the expected reward of this turn's pick; it offers appealing items, which are picked "
              "often but have low quality, so users run out of patience early (few turns per user). SlateQ's "
              "value of a pick includes the turns that its quality buys."]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--steps", type=int, default=50_000, help="user turns per learning run")
    parser.add_argument("--users", type=int, default=2_000, help="held-out users per evaluation")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (one process and torch thread each)")
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--run", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--machine", default="2-core x86_64 CPU shared with other jobs, no GPU")
    add_executor_arguments(parser)
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)

    if args.run:  # a worker process: one run, written atomically
        method, seed = args.run[0], int(args.run[1])
        record = run_one(method, seed, args.steps, args.users)
        path = RUNS / f"{method}_s{seed}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)
        return

    started = time.perf_counter()
    # The slow runs first, so that the two workers stay busy to the end.
    order = sorted(((m, s) for s in args.seeds for m in args.methods),
                   key=lambda ms: (ms[0] not in ("slateq_true", "slateq_learned"), ms[0] != "ppo", ms[1]))
    todo = [(m, s) for m, s in order if not (RUNS / f"{m}_s{s}.json").exists()]
    print(f"{len(order)} runs, {len(order) - len(todo)} done already, {len(todo)} to do", flush=True)
    if not args.summarise_only:
        failed = []
        commands = {Command([sys.executable, __file__, "--run", method, str(seed), "--steps", str(args.steps),
                             "--users", str(args.users)], result=RUNS / f"{method}_s{seed}.json",
                            log=RUNS / f"{method}_s{seed}.log"): (method, seed) for method, seed in todo}

        def done(command: Command, returncode: int) -> None:
            method, seed = commands[command]
            status = "done" if returncode == 0 else f"FAILED ({returncode})"
            if returncode != 0:
                failed.append((method, seed))
            else:  # the log only matters for a run that failed
                (RUNS / f"{method}_s{seed}.log").unlink(missing_ok=True)
            print(f"[{time.perf_counter() - started:6.0f}s] {method} seed {seed}: {status}", flush=True)

        run_commands(list(commands), workers=args.workers, executor=args.executor, ray_address=args.ray_address,
                     env=ONE_THREAD, on_done=done)
        todo = []  # every run was started (what tells the suite time below that something ran)
        if failed:
            raise SystemExit(f"runs failed: {failed}; see their logs in {RUNS}")
    runs = [json.loads((RUNS / f"{m}_s{s}.json").read_text()) for m, s in order if (RUNS / f"{m}_s{s}.json").exists()]

    import torch

    import rlcore

    previous = RESULTS / "slate.json"
    suite = time.perf_counter() - started
    if not todo and previous.exists() and suite < 60:  # nothing was run now: keep the suite time of the last run
        suite = json.loads(previous.read_text())["budget"].get("suite_wall_seconds", suite)
    budget = {"machine": f"{args.machine} ({platform.machine()}, {os.cpu_count()} cores)", "steps": args.steps,
              "seeds": args.seeds, "users": args.users, "workers": args.workers, "suite_wall_seconds": suite,
              "versions": f"rlcore {rlcore.__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}",
              "command": " ".join(["python benchmarks/slate.py",
                                   *(arg for arg in sys.argv[1:] if arg != "--summarise-only")])}
    summary = summarise(runs)
    (RESULTS / "slate.json").write_text(json.dumps({"budget": budget, **summary, "runs": runs}, indent=1))
    write_markdown(summary, budget, RESULTS / "slate.md")
    print((RESULTS / "slate.md").read_text())


if __name__ == "__main__":
    main()
