"""Benchmark: VMBPO (model-based and model-free E-step) against rlcore SAC and Stable-Baselines3 SAC.

    python benchmarks/vmbpo_mujoco.py                       # the committed results: 3 envs, 3 seeds, 2 workers
    python benchmarks/vmbpo_mujoco.py --envs Hopper-v5 --methods sac sb3_sac --seeds 0 1 2 \
        --steps Hopper-v5=100000 --workers 2
    python benchmarks/vmbpo_mujoco.py --report-only         # rebuild the table and plots from finished runs
    python benchmarks/vmbpo_mujoco.py --envs Hopper-v5 --speed-check 2000 --warmup 500   # SAC vs SB3 speed

Every (env, method, seed) run is a separate process with one torch thread; finished runs are stored in
``benchmarks/results/vmbpo_mujoco_runs/`` and skipped when the script is run again (``--force`` reruns),
so a benchmark can be extended seed by seed. All methods use the same budget, the same uniformly random
warm-up steps, batch 256, (256, 256) networks, Adam 3e-4, one update per environment step (VMBPO: the
same, plus its model), and the same evaluation protocol (``rlcore.loops.evaluation.evaluate``: deterministic
policy, ``--eval-episodes`` fresh episodes every ``--eval-interval`` steps, fixed evaluation seed).
Wall-clock time includes evaluation for every method.

Outputs ``benchmarks/results/vmbpo_mujoco.json``, ``vmbpo_mujoco.md`` and one learning-curve PNG per
environment (``vmbpo_mujoco_<env>.png``: return against environment steps and against wall-clock time,
mean over seeds with the min-max band).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("VMBPO_BENCH_RESULTS", ROOT / "results"))
RUNS = RESULTS / "vmbpo_mujoco_runs"
METHODS = ("vmbpo_mb", "vmbpo_mf", "sac", "sb3_sac")
LABELS = {"vmbpo_mb": "VMBPO (model-based E-step)", "vmbpo_mf": "VMBPO (model-free E-step)",
          "sac": "rlcore SAC", "sb3_sac": "SB3 SAC"}
# The committed results' budgets (about two hours for three seeds of every method on 2 cores).
DEFAULT_STEPS = {"InvertedPendulum-v5": 20_000, "Hopper-v5": 30_000, "HalfCheetah-v5": 25_000,
                 "Walker2d-v5": 30_000}
DEFAULT_ENVS = ("InvertedPendulum-v5", "Hopper-v5", "HalfCheetah-v5")
# Returns whose first crossing (by the mean over seeds) measures sample efficiency.
THRESHOLDS = {"InvertedPendulum-v5": 150.0, "Hopper-v5": 250.0, "HalfCheetah-v5": 1000.0, "Walker2d-v5": 250.0}


def _run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One (env, method, seed) run in this process; returns and stores its record."""
    import torch

    torch.set_num_threads(1)
    env_id, method, seed, steps = job["env"], job["method"], job["seed"], job["steps"]
    common = dict(env=env_id, total_steps=steps, seed=seed, learning_starts=job["warmup"], random_steps=job["warmup"],
                  eval_interval=job["eval_interval"], eval_episodes=job["eval_episodes"], checkpoint_interval=steps,
                  log_interval=1000, progress=False, run_dir=str(job["run_dir"]), torch_threads=1)
    start = time.perf_counter()
    if method == "sb3_sac":
        evaluations = _run_sb3(job)
    elif method == "sac":
        from rlcore.algos import sac

        evaluations = sac.train(sac.SACConfig(**common)).evaluations
    else:
        from rlcore.algos import vmbpo

        variant = "model_based" if method == "vmbpo_mb" else "model_free"
        evaluations = vmbpo.train(vmbpo.VMBPOConfig(**common, variant=variant)).evaluations
    wall = time.perf_counter() - start
    record = {"env": env_id, "method": method, "seed": seed, "steps": steps, "wall_seconds": wall,
              "steps_per_second": steps / wall,
              "curve": [{"step": e["step"], "return_mean": e["return_mean"], "return_std": e["return_std"],
                         "wall_seconds": e["wall_seconds"]} for e in evaluations]}
    path = RUNS / f"{env_id}_{method}_{seed}.json"
    path.write_text(json.dumps(record, indent=1))
    return record


def _run_sb3(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Stable-Baselines3 SAC with rlcore's budget and evaluation protocol."""
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from rlcore import envs
    from rlcore.loops.evaluation import evaluate, summarize

    env = gym.make(job["env"])
    model = SAC("MlpPolicy", env, learning_rate=3e-4, buffer_size=1_000_000, learning_starts=job["warmup"],
                batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1,
                policy_kwargs={"net_arch": [256, 256]}, seed=job["seed"], device="cpu", verbose=0)
    eval_env = envs.make(job["env"], num_envs=job["eval_episodes"])
    evaluations: list[dict[str, Any]] = []
    start = time.perf_counter()

    def policy(obs: torch.Tensor) -> torch.Tensor:
        actions, _ = model.predict(obs.numpy(), deterministic=True)
        return torch.as_tensor(np.asarray(actions), dtype=torch.float32)

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % job["eval_interval"] == 0 or self.num_timesteps == job["steps"]:
                returns = evaluate(policy, eval_env, seed=job["seed"] + 1_000_003)
                evaluations.append({"step": self.num_timesteps, "return_mean": float(returns.mean()),
                                    "return_std": summarize(returns)[1], "wall_seconds": time.perf_counter() - start})
            return True

    model.learn(total_timesteps=job["steps"], callback=Evaluate())
    eval_env.close()
    env.close()
    return evaluations


def speed_check(env_id: str, steps: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Environment steps per second of rlcore SAC and SB3 SAC on ``env_id``, alternating in this process,
    without evaluation (``warmup`` random steps, then one update per step); the median over ``repeats``."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC

    from rlcore.algos import sac

    torch.set_num_threads(1)
    rates: dict[str, list[float]] = {"sac": [], "sb3_sac": []}
    for repeat in range(repeats):
        start = time.perf_counter()
        sac.train(sac.SACConfig(env=env_id, total_steps=steps, learning_starts=warmup, random_steps=warmup,
                                eval_interval=10 * steps, eval_episodes=1, checkpoint_interval=10 * steps,
                                progress=False, seed=repeat, run_dir=str(ROOT.parent / "runs" / "bench" / "speed")))
        rates["sac"].append(steps / (time.perf_counter() - start))
        env = gym.make(env_id)
        start = time.perf_counter()
        SAC("MlpPolicy", env, learning_starts=warmup, batch_size=256, buffer_size=1_000_000, train_freq=1,
            gradient_steps=1, policy_kwargs={"net_arch": [256, 256]}, seed=repeat, device="cpu").learn(steps)
        rates["sb3_sac"].append(steps / (time.perf_counter() - start))
        env.close()
    median = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    return {"env": env_id, "steps": steps, "warmup": warmup, "repeats": repeats, "steps_per_second": rates,
            "median_steps_per_second": median, "ratio_rlcore_over_sb3": median["sac"] / median["sb3_sac"]}


# --------------------------------------------------------------------------------------------- report


def _aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    table: dict[str, Any] = {}
    for env_id in sorted({r["env"] for r in records}):
        table[env_id] = {}
        for method in METHODS:
            runs = [r for r in records if r["env"] == env_id and r["method"] == method]
            if not runs:
                continue
            steps = sorted({p["step"] for r in runs for p in r["curve"]})
            common = [s for s in steps if all(any(p["step"] == s for p in r["curve"]) for r in runs)]
            curves = np.array([[next(p["return_mean"] for p in r["curve"] if p["step"] == s) for s in common]
                               for r in runs])
            mean_curve = curves.mean(0)
            threshold = THRESHOLDS.get(env_id)
            reached = [s for s, v in zip(common, mean_curve, strict=True) if threshold is not None and v >= threshold]
            finals = curves[:, -1]
            areas = curves.mean(1)
            table[env_id][method] = {
                "seeds": [r["seed"] for r in runs], "steps": common, "mean_curve": mean_curve.tolist(),
                "min_curve": curves.min(0).tolist(), "max_curve": curves.max(0).tolist(),
                "final_mean": float(finals.mean()), "final_std": float(finals.std()),
                "final_per_seed": finals.tolist(), "area_under_curve": float(mean_curve.mean()),
                "area_per_seed": areas.tolist(),
                "threshold": threshold, "steps_to_threshold": reached[0] if reached else None,
                "steps_per_second": float(np.mean([r["steps_per_second"] for r in runs])),
                "wall_seconds_mean": float(np.mean([r["wall_seconds"] for r in runs])),
                "wall_curves": [[p["wall_seconds"] for p in r["curve"]] for r in runs],
            }
    return table


def _verdict(vmbpo: dict[str, Any], sac: dict[str, Any]) -> str:
    """Sample efficiency by the mean return over evaluations: a win only when every seed of one method is
    above every seed of the other, otherwise "ahead on average" within the seed spread."""
    if min(vmbpo["area_per_seed"]) > max(sac["area_per_seed"]):
        return "beats"
    if vmbpo["area_under_curve"] > sac["area_under_curve"]:
        return "is ahead on average, within the seed spread (not a clear win), of"
    return "does NOT beat"


def _markdown(table: dict[str, Any], settings: dict[str, Any]) -> str:
    lines = ["# VMBPO on MuJoCo: results", "",
             f"Generated by `benchmarks/vmbpo_mujoco.py` on {settings['date']} ({settings['machine']}).", "",
             "**Budget.** " + ", ".join(f"{env}: {table[env][next(iter(table[env]))]['steps'][-1]:,} steps" for env in
                                        table) +
             f"; seeds per method: see the table; {settings['workers']} runs at a time, one torch thread each, on a "
             "2-core CPU (the notes say how busy). This is far below the paper's budgets (hundreds of thousands "
             "of steps), so it measures early learning only.", "",
             "| env | method | final return (mean ± std over seeds) | mean return over evaluations | "
             "steps to threshold | env steps / s | wall s per run |", "|---|---|---|---|---|---|---|"]
    for env_id, methods in table.items():
        for method, row in methods.items():
            reached = f"{row['steps_to_threshold']:,}" if row["steps_to_threshold"] is not None else "not reached"
            lines.append(f"| {env_id} | {LABELS[method]} | {row['final_mean']:.1f} ± {row['final_std']:.1f} "
                         f"(n={len(row['seeds'])}) | {row['area_under_curve']:.1f} | "
                         f"{reached} (≥ {row['threshold']:g}) | {row['steps_per_second']:.1f} | "
                         f"{row['wall_seconds_mean']:.0f} |")
    lines += ["", "## Findings", ""]
    for env_id, methods in table.items():
        if "sac" in methods and "sb3_sac" in methods:
            ratio = methods["sac"]["steps_per_second"] / methods["sb3_sac"]["steps_per_second"]
            lo, hi = min(methods["sb3_sac"]["final_per_seed"]), max(methods["sb3_sac"]["final_per_seed"])
            mean = methods["sac"]["final_mean"]
            where = "inside" if lo <= mean <= hi else ("above" if mean > hi else "below")
            lines.append(f"- {env_id}: in these concurrent runs rlcore SAC ran at {ratio:.2f}x the steps per second of "
                         "SB3 SAC (the load on the shared CPU varied from run to run; the dedicated check below is "
                         "the fair comparison); its final "
                         f"mean return {mean:.1f} is "
                         f"{where} SB3's seed range [{lo:.1f}, {hi:.1f}].")
        if "sac" in methods:
            for method in ("vmbpo_mb", "vmbpo_mf"):
                if method not in methods:
                    continue
                v, s = methods[method], methods["sac"]
                verdict = _verdict(v, s)
                overlap = (min(v["final_per_seed"]) <= max(s["final_per_seed"])
                           and min(s["final_per_seed"]) <= max(v["final_per_seed"]))
                lines.append(f"- {env_id}: {LABELS[method]} {verdict} rlcore SAC on "
                             "sample efficiency at this budget (mean return over evaluations "
                             f"{v['area_under_curve']:.1f} vs {s['area_under_curve']:.1f}; "
                             f"final {v['final_mean']:.1f} vs {s['final_mean']:.1f}"
                             f"{'; the final returns of the seeds overlap' if overlap else ''}).")
    speed = settings.get("speed_check")
    if speed:
        rates = speed["median_steps_per_second"]
        lines.append(f"- Dedicated speed check ({speed['env']}, {speed['steps']:,} steps of which {speed['warmup']:,} "
                     f"random, no evaluation, the two alternating in one process, median of {speed['repeats']}): "
                     f"rlcore SAC {rates['sac']:.1f} steps/s, SB3 SAC {rates['sb3_sac']:.1f} steps/s, ratio "
                     f"{speed['ratio_rlcore_over_sb3']:.2f}.")
    lines += ["", "Learning curves: " + ", ".join(f"`vmbpo_mujoco_{env}.png`" for env in table), ""]
    if settings.get("notes"):
        lines += ["## Notes", "", settings["notes"], ""]
    return "\n".join(lines)


def _plot(table: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    for env_id, methods in table.items():
        fig, (ax_steps, ax_wall) = plt.subplots(1, 2, figsize=(11, 4))
        for method, row in methods.items():
            steps, mean = np.array(row["steps"]), np.array(row["mean_curve"])
            line, = ax_steps.plot(steps, mean, label=f"{LABELS[method]} (n={len(row['seeds'])})")
            ax_steps.fill_between(steps, row["min_curve"], row["max_curve"], alpha=0.2, color=line.get_color())
            wall = np.array([w[: len(steps)] for w in row["wall_curves"]]).mean(0)
            ax_wall.plot(wall, mean, color=line.get_color())
        ax_steps.set(xlabel="environment steps", ylabel="evaluation return", title=env_id)
        ax_wall.set(xlabel="wall-clock seconds (mean over seeds)", ylabel="evaluation return", title=env_id)
        ax_steps.legend(fontsize=8)
        for ax in (ax_steps, ax_wall):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(RESULTS / f"vmbpo_mujoco_{env_id}.png", dpi=100)
        plt.close(fig)


def report(workers: int, notes: str = "") -> dict[str, Any]:
    records = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json")) if p.name != "speed_check.json"]
    if not records:
        raise SystemExit(f"no finished runs in {RUNS}.")
    table = _aggregate(records)
    settings = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPUs", "workers": workers, "notes": notes}
    speed_path = RUNS / "speed_check.json"
    if speed_path.exists():
        settings["speed_check"] = json.loads(speed_path.read_text())
    (RESULTS / "vmbpo_mujoco.json").write_text(json.dumps({"settings": settings, "results": table}, indent=1))
    (RESULTS / "vmbpo_mujoco.md").write_text(_markdown(table, settings))
    _plot(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", nargs="*", default=[], help="ENV=STEPS overrides of the per-env budget")
    parser.add_argument("--warmup", type=int, default=1000, help="uniformly random steps before learning")
    parser.add_argument("--eval-interval", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one process each)")
    parser.add_argument("--force", action="store_true", help="rerun runs that already have a result")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the table and plots")
    parser.add_argument("--notes", default="", help="a paragraph appended to the markdown report")
    parser.add_argument("--speed-check", type=int, default=0, metavar="STEPS",
                        help="instead of the benchmark, time rlcore SAC against SB3 SAC for STEPS steps on the "
                             "first --envs (3 repeats) and store the result for the report")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    budgets = dict(DEFAULT_STEPS)
    for item in args.steps:
        env_id, _, value = item.partition("=")
        if not value.isdigit():
            parser.error(f"--steps takes ENV=STEPS, got {item!r}")
        budgets[env_id] = int(value)
    RUNS.mkdir(parents=True, exist_ok=True)
    if args.speed_check:
        result = speed_check(args.envs[0], args.speed_check, args.warmup, repeats=3)
        (RUNS / "speed_check.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result["median_steps_per_second"]), f"ratio {result['ratio_rlcore_over_sb3']:.2f}")
        return
    if not args.report_only:
        jobs = []
        for env_id in args.envs:
            for method in args.methods:
                for seed in args.seeds:
                    if (RUNS / f"{env_id}_{method}_{seed}.json").exists() and not args.force:
                        continue
                    jobs.append({"env": env_id, "method": method, "seed": seed,
                                 "steps": budgets.get(env_id, 15_000), "warmup": args.warmup,
                                 "eval_interval": args.eval_interval, "eval_episodes": args.eval_episodes,
                                 "run_dir": ROOT.parent / "runs" / "bench" / f"{env_id}_{method}_{seed}"})
        # Seed by seed, so that a benchmark stopped early still compares every method on the same seeds;
        # within a seed the longest runs first, so that the workers finish together.
        cost = {"vmbpo_mb": 4.0, "vmbpo_mf": 2.0, "sac": 1.0, "sb3_sac": 1.2}
        jobs.sort(key=lambda j: (j["seed"], -j["steps"] * cost[j["method"]]))
        print(f"{len(jobs)} runs on {args.workers} workers", flush=True)
        with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
            for record in pool.imap_unordered(_run_one, jobs):
                last = record["curve"][-1]["return_mean"] if record["curve"] else math.nan
                print(f"{record['env']} {record['method']} seed {record['seed']}: final return {last:.1f}, "
                      f"{record['steps_per_second']:.1f} steps/s", flush=True)
    report(args.workers, args.notes)
    print(f"wrote {RESULTS / 'vmbpo_mujoco.md'}")


if __name__ == "__main__":
    main()
