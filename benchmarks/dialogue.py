"""Dialogue adapter benchmark: episode return and conversation length of every dialogue manager on held-out users,
over seeds, with the template experts and with the learned MoE-LM experts.

Methods, for each expert family (``DialogueConfig(experts=...)``, everything else default: 6 topics, 20-turn
limit, reward = change in satisfaction):

* ``uniform``, ``greedy`` (the one-step greedy oracle: best expected immediate reward from the simulator's
  latent user state), ``fixed_<intent>`` for each of the 5 experts: no training;
* ``ppo``: the PPO manager (masked categorical over candidates), ``--steps`` bot turns;
* ``q``: the Q manager over (state, candidate-embedding) pairs with clipped double-Q targets, ``--steps`` turns.

Each (family, method, seed) is one run in its own process with one torch thread, at most ``--workers``
(default 2) at once; its result goes to ``benchmarks/results/dialogue_runs/<family>_<method>_s<seed>.json`` and
a run whose file exists is skipped, so an interrupted benchmark continues where it stopped. Evaluation:
``dialogue.evaluate`` with deterministic choices on ``--users`` held-out users (reset seed ``50_000 + seed``,
never used in training). Spread over seeds: the sample standard deviation (``n − 1``) of the per-seed means.
The MoE-LM is trained once (and cached) before the runs start, so that the workers do not all train it.
``--executor ray`` runs each run's process as a Ray task instead (one CPU; ``--ray-address`` to join a cluster,
whose nodes need this repository and environment at the same paths; a node that does not share this machine's
MoE-LM cache trains its own); the result files and failed runs' logs are written here.

    python benchmarks/dialogue.py                      # run what is missing, then write the report
    python benchmarks/dialogue.py --summarise-only

The history encoder is the default (``"learned"``: the tracker's features joined with the MoE-LM's encoding of
the last exchange). The learners' runs of the earlier default (``"tracker"``, the features alone; seeds 0 and 1)
are kept in ``dialogue_runs/tracker_history/`` and reported beside them as an ablation.

Writes ``benchmarks/results/dialogue.json`` (every run, with per-seed numbers and a sample conversation of each
manager) and ``dialogue.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _grid import ONE_THREAD, Command, add_executor_arguments, run_commands

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "dialogue_runs"
INTENTS = ["ask", "recommend", "empathise", "change_topic", "stay_on_topic"]
METHODS = ["uniform", *(f"fixed_{i}" for i in INTENTS), "greedy", "ppo", "q"]
FAMILIES = ["template", "moe"]
LABELS = {"uniform": "uniform choice", "greedy": "one-step greedy oracle", "ppo": "PPO manager", "q": "Q manager",
          **{f"fixed_{i}": f"fixed expert: {i}" for i in INTENTS}}


def run_one(family: str, method: str, seed: int, steps: int, users: int) -> dict:
    """Train (if the method learns) and evaluate one (family, method, seed); returns the result record."""
    import torch

    torch.set_num_threads(1)
    from rlcore.adapters import dialogue

    started = time.perf_counter()
    env = dialogue.DialogueEnv(num_envs=64, seed=seed, experts=family)
    record: dict = {"family": family, "method": method, "seed": seed, "steps": 0, "users": users,
                    "history_encoder": env.config.history_encoder}
    if method == "uniform":
        policy = dialogue.Uniform()
    elif method == "greedy":
        policy = dialogue.GreedyOracle()
    elif method.startswith("fixed_"):
        policy = dialogue.FixedExpert(method.removeprefix("fixed_"))
    else:
        run_dir = ROOT / "runs" / "dialogue_bench" / f"{family}_{method}_s{seed}_{steps}"
        if run_dir.exists():  # a run cut short earlier: start it again from scratch
            import shutil

            shutil.rmtree(run_dir)
        policy = dialogue.train_manager(env, method=method, total_steps=steps, seed=seed, run_dir=str(run_dir))
        record["steps"] = steps
        record["training_evaluations"] = [{"step": e["step"], "return_mean": e["return_mean"]}
                                          for e in policy.train_result.evaluations]
        record["train_seconds"] = time.perf_counter() - started
    held_out = 50_000 + seed
    record.update(dialogue.evaluate(policy, num_users=users, seed=held_out, env=env))
    if method in ("greedy", "ppo", "q"):
        record["sample_conversation"] = dialogue.sample_conversation(policy, seed=held_out, env=env)
    record["wall_seconds"] = time.perf_counter() - started
    return record


def summarise(runs: list[dict]) -> dict:
    table: dict = {}
    for family in FAMILIES:
        for method in METHODS:
            these = sorted((r for r in runs if r["family"] == family and r["method"] == method),
                           key=lambda r: r["seed"])
            if not these:
                continue
            returns = [r["mean_return"] for r in these]
            table[f"{family}/{method}"] = {
                "family": family, "method": method, "seeds": [r["seed"] for r in these], "returns": returns,
                "return_mean": statistics.mean(returns),
                "return_std": statistics.stdev(returns) if len(returns) > 1 else 0.0,
                "return_min": min(returns), "return_max": max(returns),
                "mean_turns": statistics.mean(r["mean_turns"] for r in these),
                "accepted": statistics.mean(r["accepted"] for r in these),
                "left_rate": statistics.mean(r["left_rate"] for r in these),
                "user_return_std": statistics.mean(r["return_std"] for r in these),
                "wall_seconds": statistics.mean(r["wall_seconds"] for r in these)}
    verdict = {}
    for family in FAMILIES:
        greedy = table.get(f"{family}/greedy")
        learned = [table[k] for k in (f"{family}/ppo", f"{family}/q") if k in table]
        if greedy and learned:
            best = max(learned, key=lambda e: e["return_mean"])
            verdict[family] = {"best_manager": best["method"], "ratio_to_greedy": best["return_mean"] /
                               greedy["return_mean"], "target_met": best["return_mean"] >= 1.5 * greedy["return_mean"]}
    return {"methods": table, "verdict": verdict}


def write_markdown(summary: dict, runs: list[dict], budget: dict, path: Path, ablation: dict | None = None) -> None:
    t, v = summary["methods"], summary["verdict"]
    lines = [
        "# Dialogue: RL managers over expert candidates against the one-step greedy oracle", "",
        f"Machine: {budget['machine']}. Task: `DialogueConfig()` (6 topics, users with latent interests, patience "
        f"and satisfaction; at most 20 bot turns; reward = change in satisfaction; history encoder 'learned': the "
        f"dialogue-state tracker's features joined with the MoE-LM's learned encoding of the last exchange), with "
        f"the template experts and "
        f"with the MoE-LM's expert heads (trained once by the library on the simulator's dialogues, cached). "
        f"Budget: {budget['steps']} bot turns per learning run (64 conversations in parallel); seeds "
        f"{budget['seeds']} (the table says how many each row has); evaluation on {budget['users']} held-out users "
        f"per seed (reset seed 50000 + seed), deterministic choices. Spread: sample std over seeds of the per-seed "
        f"means (for the untrained baselines the seeds differ only in the users). {budget['workers']} runs at a "
        f"time, one torch thread each; {budget['run_wall_seconds'] / 3600:.1f} h of runs in all (wall clock of "
        f"each run, summed). Versions: {budget['versions']}. Command: `{budget['command']}`.", "",
        "| experts | manager | seeds | episode return, mean ± std over seeds [min, max] | bot turns per user | "
        "accepted recommendations | users who left | wall s per run |",
        "|---|---|---|---|---|---|---|---|"]
    for family in FAMILIES:
        for method in METHODS:
            c = t.get(f"{family}/{method}")
            if c is None:
                continue
            lines.append(f"| {family} | {LABELS[method]} | {len(c['seeds'])} | {c['return_mean']:.2f} ± "
                         f"{c['return_std']:.2f} "
                         f"[{c['return_min']:.2f}, {c['return_max']:.2f}] | {c['mean_turns']:.1f} | "
                         f"{c['accepted']:.2f} | {c['left_rate']:.0%} | {c['wall_seconds']:.0f} |")
    if v:
        lines += ["", "Target (issue 26): the best RL manager at least 1.5x the greedy oracle's return on held-out "
                  "users.", ""]
        for family, entry in v.items():
            lines.append(f"* {family} experts: best manager {entry['best_manager']}, "
                         f"{entry['ratio_to_greedy']:.2f}x the greedy oracle: "
                         f"{'met' if entry['target_met'] else 'NOT met'}.")
    if ablation:
        lines += ["", "History encoder ablation: the learners with the former default, `history_encoder='tracker'` "
                  "(the tracker's features alone), same budget and evaluation:", "",
                  "| experts | manager | history encoder | seeds | episode return, mean ± std over seeds |",
                  "|---|---|---|---|---|"]
        for key, c in ablation["methods"].items():
            own = t.get(key)
            if own is not None:
                lines.append(f"| {c['family']} | {LABELS[c['method']]} | learned (default) | {len(own['seeds'])} | "
                             f"{own['return_mean']:.2f} ± {own['return_std']:.2f} |")
            lines.append(f"| {c['family']} | {LABELS[c['method']]} | tracker | {len(c['seeds'])} | "
                         f"{c['return_mean']:.2f} ± {c['return_std']:.2f} |")
    samples = [r for r in runs if r["family"] == "template" and r["seed"] == min(budget["seeds"])
               and "sample_conversation" in r]
    if samples:
        lines += ["", f"A conversation of each manager with the same held-out user (template experts, seed "
                  f"{min(budget['seeds'])}):", ""]
        for r in sorted(samples, key=lambda r: ["greedy", "ppo", "q"].index(r["method"])):
            lines += [f"*{LABELS[r['method']]}*:", "", "```text", *r["sample_conversation"], "```", ""]
    lines += ["The greedy oracle sees the user's latent state and takes the best expected immediate reward: it "
              "recommends in whatever topic the user opened with and never asks, because asking costs a little "
              "now. The managers see only what was said; both mix chit-chat between recommendations so that novelty "
              "(and the user's patience) lasts, and the Q manager also asks for the user's favourite topic and "
              "moves there when the opening topic pays poorly. Users who left: share of users who left before the "
              "20-turn limit. The MoE-LM's recommend head often repeats an item; the simulator counts "
              "recommendations per topic, not per item, so a repeat is not penalised."]
    path.write_text("\n".join(lines).rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--steps", type=int, default=50_000, help="bot turns per learning run")
    parser.add_argument("--users", type=int, default=2_000, help="held-out users per evaluation")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (one process and torch thread each)")
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--run", nargs=3, metavar=("FAMILY", "METHOD", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--machine", default="2-core x86_64 CPU shared with other jobs, no GPU")
    add_executor_arguments(parser)
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)

    if args.run:  # a worker process: one run, written atomically
        family, method, seed = args.run[0], args.run[1], int(args.run[2])
        record = run_one(family, method, seed, args.steps, args.users)
        path = RUNS / f"{family}_{method}_s{seed}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)
        return

    started = time.perf_counter()
    # The learning runs first (MoE-LM ones, the slowest, before the template ones), so both workers stay busy.
    order = sorted(((f, m, s) for f in args.families for s in args.seeds for m in args.methods),
                   key=lambda fms: (fms[1] not in ("ppo", "q"), fms[0] != "moe", fms[2], fms[1]))
    todo = [(f, m, s) for f, m, s in order if not (RUNS / f"{f}_{m}_s{s}.json").exists()]
    print(f"{len(order)} runs, {len(order) - len(todo)} done already, {len(todo)} to do", flush=True)
    if not args.summarise_only and todo:
        env = {**os.environ, **ONE_THREAD}
        if "moe" in {f for f, _, _ in todo}:  # train (or find) the MoE-LM once, before the workers need it
            subprocess.run([sys.executable, "-c", "import torch; torch.set_num_threads(1); "
                            "from rlcore.adapters.dialogue import load_moe_lm; load_moe_lm()"], env=env, check=True)
        failed = []
        commands = {}
        for family, method, seed in todo:
            command = Command([sys.executable, __file__, "--run", family, method, str(seed), "--steps", str(args.steps),
                               "--users", str(args.users)], result=RUNS / f"{family}_{method}_s{seed}.json",
                              log=RUNS / f"{family}_{method}_s{seed}.log")
            commands[command] = (family, method, seed)

        def done(command: Command, returncode: int) -> None:
            family, method, seed = key = commands[command]
            status = "done" if returncode == 0 else f"FAILED ({returncode})"
            if returncode != 0:
                failed.append(key)
            else:  # the log only matters for a run that failed
                (RUNS / f"{family}_{method}_s{seed}.log").unlink(missing_ok=True)
            print(f"[{time.perf_counter() - started:6.0f}s] {family} {method} seed {seed}: {status}", flush=True)

        run_commands(list(commands), workers=args.workers, executor=args.executor, ray_address=args.ray_address,
                     env=ONE_THREAD, on_done=done)
        todo = []  # every run was started (what tells the suite time below that something ran)
        if failed:
            raise SystemExit(f"runs failed: {failed}; see their logs in {RUNS}")
    runs = [json.loads((RUNS / f"{f}_{m}_s{s}.json").read_text()) for f, m, s in order
            if (RUNS / f"{f}_{m}_s{s}.json").exists()]

    import torch

    import rlcore

    previous = RESULTS / "dialogue.json"
    suite = time.perf_counter() - started
    if not todo and previous.exists() and suite < 60:  # nothing was run now: keep the suite time of the last run
        suite = json.loads(previous.read_text())["budget"].get("suite_wall_seconds", suite)
    budget = {"machine": f"{args.machine} ({platform.machine()}, {os.cpu_count()} cores)", "steps": args.steps,
              "run_wall_seconds": sum(r["wall_seconds"] for r in runs),
              "seeds": args.seeds, "users": args.users, "workers": args.workers, "suite_wall_seconds": suite,
              "versions": f"rlcore {rlcore.__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}",
              "command": " ".join(["python benchmarks/dialogue.py",
                                   *(arg for arg in sys.argv[1:] if arg != "--summarise-only")])}
    summary = summarise(runs)
    tracker_runs = [json.loads(p.read_text()) for p in sorted((RUNS / "tracker_history").glob("*.json"))]
    ablation = summarise(tracker_runs) if tracker_runs else None
    (RESULTS / "dialogue.json").write_text(json.dumps({"budget": budget, **summary, "runs": runs,
                                                       "tracker_history_ablation": ablation}, indent=1))
    write_markdown(summary, runs, budget, RESULTS / "dialogue.md", ablation)
    print((RESULTS / "dialogue.md").read_text())


if __name__ == "__main__":
    main()
