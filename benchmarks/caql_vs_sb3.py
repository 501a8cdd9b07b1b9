"""Default ``rlcore train`` (CAQL on Pendulum-v1) against Stable-Baselines3 SAC with its defaults, in one run.

For each seed the two trainings run side by side, one process and one torch thread each, so that both see the
same machine load. Both are evaluated by the same protocol every ``--eval-interval`` steps: the deterministic
policy, ``--eval-episodes`` whole episodes on separate environments seeded ``1_000_003 + seed``
(:func:`rlcore.loops.evaluation.evaluate`). Time is training time: wall-clock seconds less the seconds spent
in evaluations, which differ between the two libraries' evaluation code and are not part of learning.

Reported per seed and as the median over seeds: the training seconds at the first evaluation at or above
``--threshold`` (-200) for each side and their ratio (CAQL / SB3: below 1, CAQL is faster), and the return of
the last evaluation (15k steps) of each side.

    python benchmarks/caql_vs_sb3.py                    # 5 seeds; runs whose result file exists are skipped
    python benchmarks/caql_vs_sb3.py --summarise-only

Results: ``benchmarks/results/caql_vs_sb3.{json,md,png}``; one JSON per run in ``caql_vs_sb3_runs/``.

``--executor ray`` runs each seed, both sides at once as in a local run, as one Ray task with 2 CPUs, so that the
two sides share one node (``--ray-address`` to join a cluster, whose nodes need this repository and environment
at the same paths); seeds run side by side as the cluster has room, and the run files are written here.
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

from _grid import ONE_THREAD, add_executor_arguments, run_grid, save_result

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "caql_vs_sb3_runs"
METHODS = ("rlcore-caql", "sb3-sac")


def run_one(method: str, seed: int, steps: int, eval_interval: int, eval_episodes: int, out: Path) -> None:
    """Train one side and write its curve of (step, train seconds, return mean, return std) to ``out``."""
    import torch

    torch.set_num_threads(1)
    from rlcore import envs
    from rlcore.loops.evaluation import evaluate, summarize

    eval_seed = 1_000_003 + seed
    curve: list[dict[str, float]] = []
    started = time.perf_counter()
    if method == "rlcore-caql":
        import tempfile

        from rlcore.algos.caql import CAQLConfig, train

        with tempfile.TemporaryDirectory() as tmp:
            # The defaults of `rlcore train`, with the evaluation of this benchmark.
            result = train(CAQLConfig(total_steps=steps, eval_interval=eval_interval, eval_episodes=eval_episodes,
                                      seed=seed, progress=False, run_dir=str(Path(tmp) / "run")))
        curve = [{"step": r["step"], "train_seconds": r["train_seconds"], "return_mean": r["return_mean"],
                  "return_std": r["return_std"]} for r in result.evaluations]
        solver = result.agent.solver.name
    else:
        import gymnasium as gym
        from stable_baselines3 import SAC
        from stable_baselines3.common.callbacks import BaseCallback

        eval_env = envs.make("Pendulum-v1", num_envs=eval_episodes)
        evaluation_seconds = 0.0

        def policy(obs: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(model.predict(obs.numpy(), deterministic=True)[0], dtype=torch.float32)

        class Evaluate(BaseCallback):
            def _on_step(self) -> bool:
                nonlocal evaluation_seconds
                if self.num_timesteps % eval_interval == 0:
                    eval_start = time.perf_counter()
                    mean, std = summarize(evaluate(policy, eval_env, seed=eval_seed))
                    evaluation_seconds += time.perf_counter() - eval_start
                    curve.append({"step": self.num_timesteps,
                                  "train_seconds": time.perf_counter() - started - evaluation_seconds,
                                  "return_mean": mean, "return_std": std})
                return True

        model = SAC("MlpPolicy", gym.make("Pendulum-v1"), seed=seed, verbose=0, device="cpu")
        model.learn(total_timesteps=steps, callback=Evaluate())
        eval_env.close()
        solver = None
    record = {"method": method, "seed": seed, "steps": steps, "eval_interval": eval_interval,
              "eval_episodes": eval_episodes, "curve": curve, "wall_seconds": time.perf_counter() - started,
              "solver": solver}
    tmp_path = out.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(record, indent=1))
    tmp_path.replace(out)


def run_seed(job: dict) -> dict:
    """Both sides of a seed at once, one process and one core each: the same machine load for both.

    Returns the job with ``failed`` (the exit code of a side that failed, else None) and the text of each side's
    result file, which the driver writes (the sides may have run on another node)."""
    seed, started = job["seed"], time.perf_counter()
    RUNS.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **ONE_THREAD}
    processes = [subprocess.Popen([sys.executable, __file__, "--child", method, str(seed), str(job["steps"]),
                                   str(job["eval_interval"]), str(job["eval_episodes"])], env=environment)
                 for method in job["methods"]]
    for process in processes:
        if process.wait() != 0:
            return {**job, "failed": process.returncode}
    return {**job, "failed": None, "seconds": time.perf_counter() - started,
            "results": {method: (RUNS / f"{method}-s{seed}.json").read_text() for method in job["methods"]}}


def run_missing(seeds: list[int], steps: int, eval_interval: int, eval_episodes: int, executor: str = "process",
                ray_address: str | None = None) -> None:
    """The seeds whose runs are missing, one seed after another in this process (``executor="process"``) or as
    Ray tasks of 2 CPUs each."""
    RUNS.mkdir(parents=True, exist_ok=True)
    jobs = [{"seed": seed, "methods": todo, "steps": steps, "eval_interval": eval_interval,
             "eval_episodes": eval_episodes}
            for seed in seeds if (todo := [m for m in METHODS if not (RUNS / f"{m}-s{seed}.json").exists()])]

    def save(done: dict) -> None:
        if done["failed"] is not None:
            raise SystemExit(f"seed {done['seed']}: a run failed (exit {done['failed']})")
        for method, text in done["results"].items():
            save_result(RUNS / f"{method}-s{done['seed']}.json", text)
        print(f"seed {done['seed']}: {', '.join(done['methods'])} done in {done['seconds']:.0f} s", flush=True)

    run_grid(run_seed, jobs, workers=0, executor=executor, ray_address=ray_address, on_result=save,
             cpus_per_job=len(METHODS))


def first_at(curve: list[dict[str, float]], threshold: float) -> dict[str, float] | None:
    return next((point for point in curve if point["return_mean"] >= threshold), None)


def summarise(threshold: float) -> dict:
    loaded = [json.loads(path.read_text()) for path in sorted(RUNS.glob("*.json"))]
    records = {(r["method"], r["seed"]): r for r in loaded}
    seeds = sorted({seed for _, seed in records})
    rows = []
    for seed in seeds:
        if not all((m, seed) in records for m in METHODS):
            continue
        caql, sac = records[("rlcore-caql", seed)], records[("sb3-sac", seed)]
        hit_caql, hit_sac = first_at(caql["curve"], threshold), first_at(sac["curve"], threshold)
        rows.append({
            "seed": seed,
            "caql_seconds_to_threshold": hit_caql["train_seconds"] if hit_caql else None,
            "caql_steps_to_threshold": hit_caql["step"] if hit_caql else None,
            "sac_seconds_to_threshold": hit_sac["train_seconds"] if hit_sac else None,
            "sac_steps_to_threshold": hit_sac["step"] if hit_sac else None,
            "time_ratio": (hit_caql["train_seconds"] / hit_sac["train_seconds"]) if hit_caql and hit_sac else None,
            "caql_final_return": caql["curve"][-1]["return_mean"], "sac_final_return": sac["curve"][-1]["return_mean"],
            "caql_train_seconds": caql["curve"][-1]["train_seconds"],
            "sac_train_seconds": sac["curve"][-1]["train_seconds"],
            "caql_solver": caql.get("solver"),
        })

    def median(key: str) -> float | None:
        values = [row[key] for row in rows if row[key] is not None]
        return statistics.median(values) if values else None

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    intervals = {r["eval_interval"] for r in loaded}
    summary = {"threshold": threshold, "machine": machine, "rows": rows, "eval_interval": min(intervals, default=0),
               "median": {key: median(key) for key in ("time_ratio", "caql_seconds_to_threshold",
                                                       "sac_seconds_to_threshold", "caql_final_return",
                                                       "sac_final_return", "caql_train_seconds",
                                                       "sac_train_seconds")},
               "missing_seeds": [s for s in seeds if not all((m, s) in records for m in METHODS)]}
    (RESULTS / "caql_vs_sb3.json").write_text(json.dumps(summary, indent=2))
    write_markdown(summary)
    plot(records)
    return summary


def write_markdown(summary: dict) -> None:
    def fmt(value: float | None, spec: str = ".0f") -> str:
        return "never" if value is None else format(value, spec)

    median = summary["median"]
    threshold = summary["threshold"]
    lines = [
        "# Default `rlcore train` (CAQL, Pendulum-v1) against Stable-Baselines3 SAC", "",
        f"Side by side in one run, one process and one torch thread each, on {summary['machine']}. "
        f"Seconds are training seconds (wall-clock less evaluations); evaluation: 10 deterministic episodes every "
        f"{summary['eval_interval']} steps on separate environments. "
        "Reproduce: `python benchmarks/caql_vs_sb3.py`.", "",
        f"| seed | CAQL s to {threshold:.0f} (step) | SB3 SAC s to {threshold:.0f} (step) | ratio | CAQL return "
        "at 15k | SB3 SAC return at 15k | CAQL s for 15k | SB3 SAC s for 15k |",
        "|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        lines.append(
            f"| {row['seed']} | {fmt(row['caql_seconds_to_threshold'])} ({fmt(row['caql_steps_to_threshold'], 'd')}) | "
            f"{fmt(row['sac_seconds_to_threshold'])} ({fmt(row['sac_steps_to_threshold'], 'd')}) | "
            f"{fmt(row['time_ratio'], '.2f')} | {row['caql_final_return']:.1f} | {row['sac_final_return']:.1f} | "
            f"{row['caql_train_seconds']:.0f} | {row['sac_train_seconds']:.0f} |")
    if summary["rows"]:
        lines.append(
            f"| **median** | {fmt(median['caql_seconds_to_threshold'])} | {fmt(median['sac_seconds_to_threshold'])} | "
            f"**{fmt(median['time_ratio'], '.2f')}** | **{median['caql_final_return']:.1f}** | "
            f"**{median['sac_final_return']:.1f}** | {median['caql_train_seconds']:.0f} | "
            f"{median['sac_train_seconds']:.0f} |")
        ratio, caql, sac = median["time_ratio"], median["caql_final_return"], median["sac_final_return"]
        ratio_met = ratio is not None and ratio <= 0.5
        lines += ["", "Targets (issue 21): time ratio at most 0.5, CAQL's return at 15k within 10 % of SB3 SAC's. "
                  f"Measured: ratio {fmt(ratio, '.2f')} ({'met' if ratio_met else 'not met'}); "
                  f"returns {caql:.1f} against {sac:.1f} "
                  f"({'met' if caql >= sac - 0.1 * abs(sac) else 'not met'})."]
    if summary["missing_seeds"]:
        lines += ["", f"Seeds not yet run on both sides: {summary['missing_seeds']}."]
    lines += ["", "![returns against training seconds](caql_vs_sb3.png)", ""]
    (RESULTS / "caql_vs_sb3.md").write_text("\n".join(lines) + "\n")


def plot(records: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"rlcore-caql": "tab:blue", "sb3-sac": "tab:orange"}
    for (method, seed), record in sorted(records.items()):
        curve = record["curve"]
        label = method if seed == min(s for m, s in records if m == method) else None
        for axis, key in zip(axes, ("train_seconds", "step"), strict=True):
            axis.plot([p[key] for p in curve], [p["return_mean"] for p in curve], color=colours[method], alpha=0.7,
                      label=label)
    for axis, xlabel in zip(axes, ("training seconds", "environment steps"), strict=True):
        axis.axhline(-200, color="grey", linestyle=":")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("evaluation return")
        axis.legend()
    figure.suptitle("Pendulum-v1: default rlcore CAQL vs SB3 SAC (one thread each, side by side)")
    figure.tight_layout()
    figure.savefig(RESULTS / "caql_vs_sb3.png", dpi=100)
    plt.close(figure)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        method, seed, steps, interval, episodes = sys.argv[2:7]
        run_one(method, int(seed), int(steps), int(interval), int(episodes), RUNS / f"{method}-s{seed}.json")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--steps", type=int, default=15_000)
    parser.add_argument("--eval-interval", type=int, default=1_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=-200.0)
    parser.add_argument("--summarise-only", action="store_true")
    add_executor_arguments(parser)
    args = parser.parse_args()
    if not args.summarise_only:
        run_missing(args.seeds, args.steps, args.eval_interval, args.eval_episodes, args.executor, args.ray_address)
    summary = summarise(args.threshold)
    print((RESULTS / "caql_vs_sb3.md").read_text())
    if not summary["rows"]:
        print("no complete seed yet")


if __name__ == "__main__":
    main()
