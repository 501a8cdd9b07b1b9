"""CAQL updates per second on a trained agent: each max-Q solver configuration against GA, interleaved in one run.

``caql_speed.py`` times updates on an agent that has seen 2,000 random transitions; its Q-network is nearly
untrained, and an exact solver certifies such a net's maximum in a few branching rounds. This script times the
updates of a finished CAQL run instead: its agent and replay buffer are loaded from the run's checkpoint, and each
configuration (a copy of the agent with the solver or tolerance settings replaced) takes ``--updates`` updates in
turn, ``--rounds`` times round, all in this process and one torch thread, so that every configuration sees the same
machine load. Reported per configuration: the median updates per second over rounds, its ratio to GA's, and the
mean max-Q tolerance (gap) the updates asked for.

    python benchmarks/caql_speed_trained.py \
        benchmarks/results/caql_mujoco_runs/runs/Hopper-v5_0.5-caql-exact-paper-target-s1-100000

The run directories are those benchmarks keep beside their results (git-ignored): a measurement needs the run's
checkpoint on this machine. Results: ``benchmarks/results/caql_speed_trained.{json,md}``, one entry per run
directory (a run measured again replaces its entry).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from _grid import add_executor_arguments, run_grid, save_result

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS: dict[str, dict] = {
    "ga": {"solver": "ga", "solver_time_limit": None, "dynamic_tolerance": None},
    "bnb": {"solver": "bnb", "solver_time_limit": 0.5},
    "bnb-constant-tolerance": {"solver": "bnb", "solver_time_limit": 0.5, "tolerance_decay": 1.0},
}
"""Configurations timed, as overrides of the run's config. ``bnb``: CAQL-exact of the suite (the dynamic tolerance
``0.1 TD-RMSE 0.99^(updates / 200)``, so after 100k updates about 0.0066 of ``0.1 TD-RMSE``, clipped at 1e-4).
``bnb-constant-tolerance``: the tolerance held at ``0.1 TD-RMSE`` (no decay), a certified gap of a tenth of the
TD error's RMS."""


def measure(run_dir: Path, updates: int, rounds: int, names: list[str]) -> dict:
    """Updates per second of each configuration in ``names`` on the run's agent and replay, interleaved."""
    from rlcore.algos import run_config
    from rlcore.algos.caql import network_sizes
    from rlcore.loops.checkpoint import load_latest_checkpoint
    from rlcore.loops.replay import ReplayBuffer
    from rlcore.loops.session import make_env

    algorithm, run = run_config(run_dir)
    if algorithm.name != "caql":
        raise ValueError(f"{run_dir} is a {algorithm.name} run; this benchmark times CAQL runs.")
    checkpoint = load_latest_checkpoint(run_dir, map_location="cpu")  # read once: the agent and the replay
    replay = ReplayBuffer(checkpoint["replay"]["capacity"], "cpu", seed=0)
    replay.load_state_dict(checkpoint["replay"])
    env = make_env(run, 1)
    # The run's own networks, whatever a configuration's solver would have chosen by default.
    q_sizes, action_sizes = network_sizes(run, env.action_set.dim)
    agents = {}
    for name in names:
        config = dataclasses.replace(run, **CONFIGS[name], hidden_sizes=q_sizes, action_hidden_sizes=action_sizes)
        agents[name] = algorithm.make_agent(config, env)
        agents[name].load_state_dict(checkpoint["agent"])
    env.close()
    rates: dict[str, list[float]] = {name: [] for name in names}
    tolerances: dict[str, list[float]] = {name: [] for name in names}
    batch_size = run.batch_size
    for name in names:  # untimed: first calls allocate and warm caches
        for _ in range(3):
            agents[name].update(replay.sample(batch_size))
    for _ in range(rounds):
        for name in names:
            start = time.perf_counter()
            for _ in range(updates):
                metrics = agents[name].update(replay.sample(batch_size))
                if "maxq_tolerance" in metrics:
                    tolerances[name].append(float(metrics["maxq_tolerance"]))
            rates[name].append(updates / (time.perf_counter() - start))
    ga = statistics.median(rates["ga"]) if "ga" in rates else None
    return {"run": run_dir.name, "step": checkpoint["step"], "updates": updates, "rounds": rounds,
            "configs": {name: {"updates_per_second": statistics.median(rates[name]),
                               "per_round": rates[name],
                               "ratio_to_ga": statistics.median(rates[name]) / ga if ga else None,
                               "mean_tolerance": statistics.fmean(tolerances[name]) if tolerances[name] else None}
                        for name in names}}


def _measure_job(job: dict) -> dict:
    torch.set_num_threads(1)
    return measure(Path(job["run_dir"]), job["updates"], job["rounds"], job["configs"])


def report(entries: dict[str, dict]) -> str:
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    lines = ["# CAQL updates per second on trained agents", "",
             f"Each run's agent and replay loaded from its last checkpoint; every configuration takes its updates in "
             f"turn, in one process and one torch thread, on {machine} (ratios within a run only; the machine may "
             "have been busy). Updates only, batch of the run's size, no environment steps. Reproduce: "
             "`python benchmarks/caql_speed_trained.py RUN_DIR`.", "",
             "| run | step | configuration | updates/s (median of rounds) | / GA | mean max-Q tolerance |",
             "|---|---|---|---|---|---|"]
    for entry in entries.values():
        for name, row in entry["configs"].items():
            ratio = "" if row["ratio_to_ga"] is None else f"**{row['ratio_to_ga']:.2f}**"
            tolerance = "" if row["mean_tolerance"] is None else f"{row['mean_tolerance']:.2g}"
            lines.append(f"| {entry['run']} | {entry['step']} | {name} | {row['updates_per_second']:.1f} | {ratio} | "
                         f"{tolerance} |")
    lines += ["", "Configurations (overrides of the run's own config):", ""]
    lines += [f"- `{name}`: {overrides}" for name, overrides in CONFIGS.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--updates", type=int, default=20, help="timed updates per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--workers", type=int, default=0,
                        help="processes, one run directory each (0: one after another, here); timings are "
                             "compared within a run directory only")
    add_executor_arguments(parser)
    args = parser.parse_args()
    if args.updates < 1 or args.rounds < 1:
        parser.error(f"--updates and --rounds must be >= 1, got {args.updates} and {args.rounds}.")
    for run_dir in args.run_dirs:
        if not (run_dir / "config.json").exists():
            raise SystemExit(f"{run_dir} holds no run (no config.json); pass the run directory of a CAQL run.")
    torch.set_num_threads(1)
    out = RESULTS / "caql_speed_trained.json"
    entries = json.loads(out.read_text())["entries"] if out.exists() else {}

    def show(entry: dict) -> None:
        entries[entry["run"]] = entry
        print(", ".join(f"{name} {row['updates_per_second']:.1f}/s" for name, row in entry["configs"].items()),
              f"({entry['run']})", flush=True)

    jobs = [{"run_dir": str(d), "updates": args.updates, "rounds": args.rounds, "configs": args.configs}
            for d in args.run_dirs]
    run_grid(_measure_job, jobs, workers=args.workers, executor=args.executor, ray_address=args.ray_address,
             on_result=show)
    save_result(out, json.dumps({"entries": entries}, indent=1))
    text = report(entries)
    save_result(RESULTS / "caql_speed_trained.md", text)
    print(text)


if __name__ == "__main__":
    main()
