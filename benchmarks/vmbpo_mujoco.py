"""Benchmark: VMBPO (model-based and model-free E-step) and MBPO against rlcore SAC and Stable-Baselines3 SAC.

    python benchmarks/vmbpo_mujoco.py                       # the issue-23 grid, in parts: skips finished runs
    python benchmarks/vmbpo_mujoco.py --envs InvertedPendulum-v5           # one environment of the grid
    python benchmarks/vmbpo_mujoco.py --envs Hopper-v5 --methods vmbpo_mf --seeds 0   # a single run
    python benchmarks/vmbpo_mujoco.py --report-only         # rebuild the table and plots from finished runs
    python benchmarks/vmbpo_mujoco.py --envs Hopper-v5 --speed-check 2000 --warmup 500   # SAC vs SB3 speed

The grid (issue 23): InvertedPendulum-v5 at 20k environment steps, Hopper-v5 and HalfCheetah-v5 at 100k
(Walker2d-v5 at 100k when asked for), methods VMBPO (model-based E-step), VMBPO (model-free E-step), MBPO,
rlcore SAC and SB3 SAC, seeds 0-2. Every (env, method, seed) run is a separate process with one torch thread
(``--workers`` at a time; 2 on a 2-core machine); each finished run is written atomically to
``benchmarks/results/vmbpo_mujoco_runs/<env>_<method>_s<seed>_<steps>.json`` and skipped when the script is run
again (``--force`` reruns), so the grid can be run a few hours at a time. An rlcore run stopped part-way resumes
from its last checkpoint (every 5 % of its budget, in ``runs/bench/``) when the script is run again, its wall-clock
time summed over its sessions; an SB3 run starts again. The report lists the runs of the grid that are missing.

All methods use the same budget, the same uniformly random warm-up steps, batch 256, (256, 256) networks,
Adam 3e-4, one update per environment step (VMBPO and MBPO: the same, plus their model; MBPO's paper uses 20,
``--mbpo-updates-per-step``), and the same evaluation protocol (``rlcore.loops.evaluation.evaluate``:
deterministic policy, ``--eval-episodes`` fresh episodes every ``--eval-interval`` steps, fixed evaluation
seed). SB3 SAC trains on ``gym.make(env)``, the same task without a constraint, as rlcore's runs. Wall-clock
time includes evaluation for every method. At each evaluation a run also records the critic's mean Q: for the
rlcore agents the mean of the updates' batch ``q_mean`` since the previous evaluation (the run's
``eval/q_mean``), for SB3 the mean of its twin critics on a replay batch of 256.

Outputs ``benchmarks/results/vmbpo_mujoco.json``, ``vmbpo_mujoco.md`` and one PNG per environment
(``vmbpo_mujoco_<env>.png``: evaluation return and mean Q against environment steps, and return against
wall-clock time; mean over seeds with the min-max band).

``--executor ray`` runs each (env, method, seed) as a Ray task (one CPU, a fresh worker process per run;
``--ray-address`` to join a cluster), and ``--speed-check`` as one task (its two sides alternate in one process,
so they stay on one node); the result files are written here as each run finishes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from _grid import add_executor_arguments, run_grid, run_location, save_result

ROOT = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("VMBPO_BENCH_RESULTS", ROOT / "results"))
RUNS = RESULTS / "vmbpo_mujoco_runs"
NOTES = RESULTS / "vmbpo_mujoco_notes.md"
"""The report's notes paragraph (conditions of the runs, what they show), used when --notes is not given."""
METHODS = ("vmbpo_mb", "vmbpo_mf", "mbpo", "sac", "sb3_sac")
LABELS = {"vmbpo_mb": "VMBPO (model-based E-step)", "vmbpo_mf": "VMBPO (model-free E-step)", "mbpo": "MBPO",
          "sac": "rlcore SAC", "sb3_sac": "SB3 SAC"}
# The issue-23 budgets.
DEFAULT_STEPS = {"InvertedPendulum-v5": 20_000, "Hopper-v5": 100_000, "HalfCheetah-v5": 100_000,
                 "Walker2d-v5": 100_000}
DEFAULT_ENVS = ("InvertedPendulum-v5", "Hopper-v5", "HalfCheetah-v5")
DEFAULT_SEEDS = (0, 1, 2)
# Relative cost per environment step (measured), to start the longest runs first.
COST = {"vmbpo_mb": 3.0, "mbpo": 2.5, "vmbpo_mf": 1.6, "sac": 1.0, "sb3_sac": 1.1}
# Returns whose first crossing (by the mean over seeds) measures sample efficiency.
THRESHOLDS = {"InvertedPendulum-v5": 150.0, "Hopper-v5": 250.0, "HalfCheetah-v5": 1000.0, "Walker2d-v5": 250.0}


def run_path(env_id: str, method: str, seed: int, steps: int) -> Path:
    """Where the record of one run lives (its budget in the name: a run at another budget is another run)."""
    return RUNS / f"{env_id}_{method}_s{seed}_{steps}.json"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One (env, method, seed) run in this process; returns and stores its record."""
    import torch

    torch.set_num_threads(1)
    env_id, method, seed, steps = job["env"], job["method"], job["seed"], job["steps"]
    # An rlcore run killed part-way resumes from its last checkpoint (every 5 % of the budget), so that the longest
    # runs can span working sessions; SB3 runs and --force start afresh.
    location = run_location(job["run_dir"], resumable=method != "sb3_sac" and not job.get("fresh"))
    resumed = "resume" in location
    common = dict(env=env_id, total_steps=steps, seed=seed, learning_starts=job["warmup"], random_steps=job["warmup"],
                  eval_interval=job["eval_interval"], eval_episodes=job["eval_episodes"],
                  checkpoint_interval=max(steps // 20, 1), log_interval=1000, progress=False, torch_threads=1,
                  **location)
    start = time.perf_counter()
    if method == "sb3_sac":
        evaluations = _run_sb3(job)
    elif method == "sac":
        from rlcore.algos import sac

        evaluations = sac.train(sac.SACConfig(**common)).evaluations
    elif method == "mbpo":
        from rlcore.algos import mbpo

        evaluations = mbpo.train(mbpo.MBPOConfig(**common, updates_per_step=job["mbpo_updates_per_step"])).evaluations
    else:
        from rlcore.algos import vmbpo

        variant = "model_based" if method == "vmbpo_mb" else "model_free"
        evaluations = vmbpo.train(vmbpo.VMBPOConfig(**common, variant=variant)).evaluations
    # A resumed run's evaluations count its seconds over all its sessions (the run session's clock).
    wall = evaluations[-1]["wall_seconds"] if resumed else time.perf_counter() - start
    record = {"env": env_id, "method": method, "seed": seed, "steps": steps, "wall_seconds": wall,
              "steps_per_second": steps / wall, "invocation": job["invocation"], "workers": job["workers"],
              "resumed": resumed,
              "curve": [{"step": e["step"], "return_mean": e["return_mean"], "return_std": e["return_std"],
                         "q_mean": e.get("q_mean"), "wall_seconds": e["wall_seconds"]} for e in evaluations]}
    _write_atomic(run_path(env_id, method, seed, steps), json.dumps(record, indent=1))
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

    def q_mean() -> float | None:
        """The twin critics' mean Q on a replay batch of 256 (None before the first update)."""
        if model.replay_buffer is None or model.replay_buffer.size() < job["warmup"]:
            return None
        batch = model.replay_buffer.sample(256)
        with torch.no_grad():
            return float(torch.cat(model.critic(batch.observations, batch.actions)).mean())

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % job["eval_interval"] == 0 or self.num_timesteps == job["steps"]:
                returns = evaluate(policy, eval_env, seed=job["seed"] + 1_000_003)
                evaluations.append({"step": self.num_timesteps, "return_mean": float(returns.mean()),
                                    "return_std": summarize(returns)[1], "q_mean": q_mean(),
                                    "wall_seconds": time.perf_counter() - start})
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


def _speed_check_job(job: dict[str, Any]) -> dict[str, Any]:
    """:func:`speed_check` of one job (a module-level function of one argument, for :func:`_grid.run_grid`)."""
    return speed_check(job["env"], job["steps"], job["warmup"], job["repeats"])


# --------------------------------------------------------------------------------------------- report


def _per_run(run: dict[str, Any]) -> dict[str, Any]:
    """The critic check of one run: its largest mean Q against its best evaluation return."""
    qs = [p["q_mean"] for p in run["curve"] if p.get("q_mean") is not None]
    best = max(p["return_mean"] for p in run["curve"])
    max_q = max(qs) if qs else None
    return {"seed": run["seed"], "best_return": best, "final_return": run["curve"][-1]["return_mean"],
            "max_q_mean": max_q, "final_q_mean": qs[-1] if qs else None,
            "q_over_best_return": max_q / best if max_q is not None and best > 0 else None,
            "ms_per_step": 1000.0 * run["wall_seconds"] / run["steps"], "invocation": run.get("invocation"),
            "resumed": run.get("resumed", False)}


def _nan_reduce(reduce: Any, values: Any) -> list[float]:
    """``reduce`` over seeds, ignoring missing Q values (an evaluation before the first update has none)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns are NaN, which is what we want
        return reduce(values, 0).tolist()


def _aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    table: dict[str, Any] = {}
    for env_id in sorted({r["env"] for r in records}):
        table[env_id] = {}
        for method in METHODS:
            runs = sorted((r for r in records if r["env"] == env_id and r["method"] == method), key=lambda r: r["seed"])
            if not runs:
                continue
            steps = sorted({p["step"] for r in runs for p in r["curve"]})
            common = [s for s in steps if all(any(p["step"] == s for p in r["curve"]) for r in runs)]

            def column(key: str, runs=runs, common=common) -> np.ndarray:
                return np.array([[next((p.get(key) for p in r["curve"] if p["step"] == s), None) for s in common]
                                 for r in runs], dtype=float)  # None -> nan

            curves, q_curves = column("return_mean"), column("q_mean")
            has_q = bool(np.isfinite(q_curves).any())
            mean_curve = curves.mean(0)
            threshold = THRESHOLDS.get(env_id)
            reached = [s for s, v in zip(common, mean_curve, strict=True) if threshold is not None and v >= threshold]
            finals = curves[:, -1]
            table[env_id][method] = {
                "seeds": [r["seed"] for r in runs], "steps": common, "mean_curve": mean_curve.tolist(),
                "min_curve": curves.min(0).tolist(), "max_curve": curves.max(0).tolist(),
                "q_mean_curve": _nan_reduce(np.nanmean, q_curves) if has_q else None,
                "q_min_curve": _nan_reduce(np.nanmin, q_curves) if has_q else None,
                "q_max_curve": _nan_reduce(np.nanmax, q_curves) if has_q else None,
                "final_mean": float(finals.mean()), "final_std": float(finals.std()),
                "final_per_seed": finals.tolist(), "area_under_curve": float(mean_curve.mean()),
                "area_per_seed": curves.mean(1).tolist(),
                "threshold": threshold, "steps_to_threshold": reached[0] if reached else None,
                "steps_per_second": float(np.mean([r["steps_per_second"] for r in runs])),
                "ms_per_step": float(np.mean([1000.0 * r["wall_seconds"] / r["steps"] for r in runs])),
                "wall_seconds_mean": float(np.mean([r["wall_seconds"] for r in runs])),
                "wall_curves": [[p["wall_seconds"] for p in r["curve"]] for r in runs],
                "runs": [_per_run(r) for r in runs],
            }
        sac = table[env_id].get("sac")
        for row in table[env_id].values():
            # Sample efficiency against SAC's final return at this budget (issue 23's target on Hopper).
            if sac is not None:
                hit = [s for s, v in zip(row["steps"], row["mean_curve"], strict=True) if v >= sac["final_mean"]]
                row["steps_to_sac_final"] = hit[0] if hit else None
                row["cost_vs_sac"] = row["ms_per_step"] / sac["ms_per_step"]
    return table


def _verdict(vmbpo: dict[str, Any], sac: dict[str, Any]) -> str:
    """Sample efficiency by the mean return over evaluations: a win only when every seed of one method is
    above every seed of the other, otherwise "ahead on average" within the seed spread; with fewer than three
    seeds a side, only which one is ahead so far."""
    seeds = min(len(vmbpo["area_per_seed"]), len(sac["area_per_seed"]))
    if seeds < 3:
        return "is ahead of" if vmbpo["area_under_curve"] > sac["area_under_curve"] else "is behind"
    if min(vmbpo["area_per_seed"]) > max(sac["area_per_seed"]):
        return "beats"
    if vmbpo["area_under_curve"] > sac["area_under_curve"]:
        return "is ahead on average, within the seed spread (not a clear win), of"
    return "does NOT beat"


def missing_runs(envs: list[str], methods: list[str], seeds: list[int], budgets: dict[str, int]) -> list[str]:
    """The runs of the grid without a result file, as ``env method seed`` strings."""
    return [f"{env} {LABELS[m]} seed {seed} ({budgets[env]:,} steps)" for env in envs for m in methods for seed in seeds
            if not run_path(env, m, seed, budgets[env]).exists()]


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "–" if value is None else format(value, spec)


def _markdown(table: dict[str, Any], settings: dict[str, Any]) -> str:
    lines = ["# VMBPO and MBPO on MuJoCo: results", "",
             f"Generated by `benchmarks/vmbpo_mujoco.py` on {settings['date']} ({settings['machine']}).", "",
             "**Budget.** " + ", ".join(f"{env}: {table[env][next(iter(table[env]))]['steps'][-1]:,} steps" for env in
                                        table) +
             f"; seeds per method: see the table; {settings['workers']} runs at a time, one torch thread each, on a "
             "2-core CPU. The grid of issue 23 is InvertedPendulum-v5 at 20k, Hopper-v5 and HalfCheetah-v5 at "
             "100k steps, 5 methods, 3 seeds; the runs still missing are listed at the end.", "",
             "| env | method | final return (mean ± std over seeds) | mean return over evaluations | "
             "steps to threshold | steps to SAC's final return | ms per env step (× SAC) |",
             "|---|---|---|---|---|---|---|"]
    for env_id, methods in table.items():
        for method, row in methods.items():
            reached = f"{row['steps_to_threshold']:,}" if row["steps_to_threshold"] is not None else "not reached"
            to_sac = row.get("steps_to_sac_final", "–")  # absent: no SAC run of this env yet
            to_sac = "not reached" if to_sac is None else to_sac if isinstance(to_sac, str) else f"{to_sac:,}"
            cost = row.get("cost_vs_sac")
            lines.append(f"| {env_id} | {LABELS[method]} | {row['final_mean']:.1f} ± {row['final_std']:.1f} "
                         f"(n={len(row['seeds'])}) | {row['area_under_curve']:.1f} | "
                         f"{reached} (≥ {row['threshold']:g}) | {to_sac} | "
                         f"{row['ms_per_step']:.1f}{f' ({cost:.2f}×)' if cost is not None else ''} |")
    lines += ["", "## Critic against return", "",
              "Per run: the largest mean Q over the run (the batch mean of the critic the policy maximises, "
              "averaged between evaluations; for VMBPO the optimistic `Qbar + b`) against the best evaluation "
              "return (undiscounted Monte-Carlo return of 5 episodes). Issue 23's target for VMBPO: at most 3×.", "",
              "| env | method | seed | best return | final return | max mean Q | final mean Q | max Q / best return |",
              "|---|---|---|---|---|---|---|---|"]
    for env_id, methods in table.items():
        for method, row in methods.items():
            for run in row["runs"]:
                ratio = run["q_over_best_return"]
                lines.append(f"| {env_id} | {LABELS[method]} | {run['seed']} | {run['best_return']:.1f} | "
                             f"{run['final_return']:.1f} | {_fmt(run['max_q_mean'], '.1f')} | "
                             f"{_fmt(run['final_q_mean'], '.1f')} | {_fmt(ratio, '.2f')} |")
    lines += ["", "## Findings", ""]
    for env_id, methods in table.items():
        if "sac" in methods and "sb3_sac" in methods:
            lo, hi = min(methods["sb3_sac"]["final_per_seed"]), max(methods["sb3_sac"]["final_per_seed"])
            mean = methods["sac"]["final_mean"]
            where = "inside" if lo <= mean <= hi else ("above" if mean > hi else "below")
            lines.append(f"- {env_id}: rlcore SAC's final mean return {mean:.1f} is {where} SB3's seed range "
                         f"[{lo:.1f}, {hi:.1f}].")
        if "sac" in methods:
            for method in ("vmbpo_mb", "vmbpo_mf", "mbpo"):
                if method not in methods:
                    continue
                v, s = methods[method], methods["sac"]
                verdict = _verdict(v, s)
                overlap = (min(v["final_per_seed"]) <= max(s["final_per_seed"])
                           and min(s["final_per_seed"]) <= max(v["final_per_seed"]))
                seeds = len(v["area_per_seed"]), len(s["area_per_seed"])
                so_far = (f" with {seeds[0]} and {seeds[1]} seed(s) so far (no verdict before 3 each)"
                          if min(seeds) < 3 else "")
                lines.append(f"- {env_id}: {LABELS[method]} {verdict} rlcore SAC on "
                             f"sample efficiency at this budget{so_far} (mean return over evaluations "
                             f"{v['area_under_curve']:.1f} vs {s['area_under_curve']:.1f}; "
                             f"final {v['final_mean']:.1f} vs {s['final_mean']:.1f}"
                             f"{'; the final returns of the seeds overlap' if overlap else ''}); it costs "
                             f"{v['cost_vs_sac']:.2f}× SAC's wall-clock time per environment step.")
        for method in ("vmbpo_mb", "vmbpo_mf"):
            ratios = [r["q_over_best_return"] for r in methods.get(method, {}).get("runs", [])]
            if ratios and all(x is not None for x in ratios):
                ok = "meets" if max(ratios) <= 3 else "does NOT meet"
                lines.append(f"- {env_id}: {LABELS[method]} {ok} the critic target (max mean Q / best return "
                             f"{min(ratios):.2f}-{max(ratios):.2f} over seeds, target ≤ 3).")
    invocations = {r["invocation"] for m in table.values() for row in m.values() for r in row["runs"]}
    lines.append(f"- Wall-clock cost per step comes from {len(invocations)} invocation(s) of the script, "
                 f"{settings['workers']} runs at a time; methods of one environment ran in the same invocation "
                 "unless the run records (`invocation`) say otherwise.")
    resumed = sorted(f"{env_id} {LABELS[method]} seed {r['seed']}" for env_id, methods in table.items()
                     for method, row in methods.items() for r in row["runs"] if r.get("resumed"))
    if resumed:
        lines.append(f"- Resumed from a checkpoint in a later invocation: {', '.join(resumed)}; their wall-clock "
                     "time is summed over their invocations (the work lost after the last checkpoint not counted).")
    speed = settings.get("speed_check")
    if speed:
        rates = speed["median_steps_per_second"]
        lines.append(f"- Dedicated speed check ({speed['env']}, {speed['steps']:,} steps of which {speed['warmup']:,} "
                     f"random, no evaluation, the two alternating in one process, median of {speed['repeats']}): "
                     f"rlcore SAC {rates['sac']:.1f} steps/s, SB3 SAC {rates['sb3_sac']:.1f} steps/s, ratio "
                     f"{speed['ratio_rlcore_over_sb3']:.2f}.")
    lines += ["", "Curves: " + ", ".join(f"`vmbpo_mujoco_{env}.png`" for env in table), ""]
    missing = settings.get("missing", [])
    lines += ["## Missing runs", ""]
    lines += [f"- {m}" for m in missing] if missing else ["None: the grid is complete."]
    lines.append("")
    if settings.get("notes"):
        lines += ["## Notes", "", settings["notes"], ""]
    return "\n".join(lines)


def _plot(table: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    for env_id, methods in table.items():
        fig, (ax_steps, ax_q, ax_wall) = plt.subplots(1, 3, figsize=(16, 4.2))
        for method, row in methods.items():
            steps, mean = np.array(row["steps"]), np.array(row["mean_curve"])
            line, = ax_steps.plot(steps, mean, label=f"{LABELS[method]} (n={len(row['seeds'])})")
            ax_steps.fill_between(steps, row["min_curve"], row["max_curve"], alpha=0.2, color=line.get_color())
            if row["q_mean_curve"] is not None:
                ax_q.plot(steps, row["q_mean_curve"], color=line.get_color())
                ax_q.fill_between(steps, row["q_min_curve"], row["q_max_curve"], alpha=0.2, color=line.get_color())
            wall = np.array([w[: len(steps)] for w in row["wall_curves"]]).mean(0)
            ax_wall.plot(wall, mean, color=line.get_color())
        ax_steps.set(xlabel="environment steps", ylabel="evaluation return", title=env_id)
        ax_q.set(xlabel="environment steps", ylabel="mean Q of the critic", title=f"{env_id}: critic")
        ax_q.set_yscale("symlog", linthresh=10.0)
        ax_wall.set(xlabel="wall-clock seconds (mean over seeds)", ylabel="evaluation return", title=env_id)
        ax_steps.legend(fontsize=8)
        for ax in (ax_steps, ax_q, ax_wall):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(RESULTS / f"vmbpo_mujoco_{env_id}.png", dpi=100)
        plt.close(fig)


def report(workers: int, notes: str = "", grid: tuple[list[str], list[str], list[int], dict[str, int]] | None = None
           ) -> dict[str, Any]:
    """Rebuild the JSON, markdown and plots from every finished run; ``grid`` names the runs that should exist."""
    records = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*_s*_*.json"))]
    if not notes and NOTES.exists():
        notes = NOTES.read_text().strip()
    if not records:
        raise SystemExit(f"no finished runs in {RUNS}.")
    table = _aggregate(records)
    envs, methods, seeds, budgets = grid or (list(DEFAULT_ENVS), list(METHODS), list(DEFAULT_SEEDS), DEFAULT_STEPS)
    settings = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPUs", "workers": workers, "notes": notes,
                "missing": missing_runs(envs, methods, seeds, budgets)}
    speed_path = RUNS / "speed_check.json"
    if speed_path.exists():
        settings["speed_check"] = json.loads(speed_path.read_text())
    _write_atomic(RESULTS / "vmbpo_mujoco.json", json.dumps({"settings": settings, "results": table}, indent=1))
    _write_atomic(RESULTS / "vmbpo_mujoco.md", _markdown(table, settings))
    _plot(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument("--steps", nargs="*", default=[], help="ENV=STEPS overrides of the per-env budget")
    parser.add_argument("--warmup", type=int, default=1000, help="uniformly random steps before learning")
    parser.add_argument("--eval-interval", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--mbpo-updates-per-step", type=float, default=1.0,
                        help="MBPO's SAC updates per environment step (the paper: 20)")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one process each)")
    parser.add_argument("--force", action="store_true", help="rerun runs that already have a result")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the table and plots")
    parser.add_argument("--notes", default="", help="a paragraph appended to the markdown report (default: the "
                        "contents of benchmarks/results/vmbpo_mujoco_notes.md)")
    parser.add_argument("--notes-file", default=None, help="read the notes paragraph from this file")
    parser.add_argument("--speed-check", type=int, default=0, metavar="STEPS",
                        help="instead of the benchmark, time rlcore SAC against SB3 SAC for STEPS steps on the "
                             "first --envs (3 repeats) and store the result for the report")
    add_executor_arguments(parser)
    args = parser.parse_args()
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    budgets = dict(DEFAULT_STEPS)
    for item in args.steps:
        env_id, _, value = item.partition("=")
        if not value.isdigit():
            parser.error(f"--steps takes ENV=STEPS, got {item!r}")
        budgets[env_id] = int(value)
    notes = Path(args.notes_file).read_text().strip() if args.notes_file else args.notes
    RUNS.mkdir(parents=True, exist_ok=True)
    # One thread per process, also for the BLAS pools of the spawned workers.
    os.environ["OMP_NUM_THREADS"] = "1"
    if args.speed_check:
        job = {"env": args.envs[0], "steps": args.speed_check, "warmup": args.warmup, "repeats": 3}
        (result,) = run_grid(_speed_check_job, [job], workers=0, executor=args.executor,
                             ray_address=args.ray_address)
        _write_atomic(RUNS / "speed_check.json", json.dumps(result, indent=1))
        print(json.dumps(result["median_steps_per_second"]), f"ratio {result['ratio_rlcore_over_sb3']:.2f}")
        return
    if not args.report_only:
        invocation = time.strftime("%Y-%m-%dT%H:%M:%S")
        jobs = []
        for env_id in args.envs:
            for method in args.methods:
                for seed in args.seeds:
                    steps = budgets.get(env_id, 15_000)
                    if run_path(env_id, method, seed, steps).exists() and not args.force:
                        continue
                    jobs.append({"env": env_id, "method": method, "seed": seed, "steps": steps,
                                 "warmup": args.warmup, "eval_interval": args.eval_interval,
                                 "eval_episodes": args.eval_episodes, "invocation": invocation,
                                 "workers": args.workers, "mbpo_updates_per_step": args.mbpo_updates_per_step,
                                 "fresh": args.force,
                                 "run_dir": ROOT.parent / "runs" / "bench" / f"{env_id}_{method}_s{seed}_{steps}"})
        # Seed by seed, so that a benchmark stopped early still compares every method on the same seeds;
        # within a seed the longest runs first, so that the workers finish together.
        jobs.sort(key=lambda j: (j["seed"], -j["steps"] * COST[j["method"]]))
        print(f"{len(jobs)} runs on {args.workers} workers", flush=True)

        def done(record: dict[str, Any]) -> None:
            # The worker wrote it already; a Ray task on another node wrote it there.
            save_result(run_path(record["env"], record["method"], record["seed"], record["steps"]),
                        json.dumps(record, indent=1))
            last = record["curve"][-1]["return_mean"] if record["curve"] else math.nan
            print(f"{record['env']} {record['method']} seed {record['seed']}: final return {last:.1f}, "
                  f"{record['steps_per_second']:.1f} steps/s", flush=True)
            report(args.workers, notes)  # after every run, so the report is current when stopped part-way

        run_grid(_run_one, jobs, workers=args.workers, executor=args.executor, ray_address=args.ray_address,
                 on_result=done, fresh_process_per_job=True)
    report(args.workers, notes)
    print(f"wrote {RESULTS / 'vmbpo_mujoco.md'}")


if __name__ == "__main__":
    main()
