"""CAQL on the paper's constrained suite against Stable-Baselines3 SAC and TD3, under one protocol.

Every method trains on the same task with the same action constraint (CAQL through
``rlcore.envs.make(..., action_set=...)``, SB3 through :class:`rlcore.envs.wrappers.ActionSetWrapper`,
both projecting with the same :class:`solvers.ActionSet`), the same step budget and seeds, and is
evaluated by the same protocol: :func:`rlcore.loops.evaluation.evaluate`, deterministic policy, separate
environments, ``--eval-episodes`` whole episodes, every ``total_steps / 5`` steps.

    python benchmarks/caql_mujoco.py --quick            # Pendulum and Hopper, small budget, 2 seeds
    python benchmarks/caql_mujoco.py --tasks Hopper-v5:0.25 HalfCheetah-v5:0.5:l2_ball --steps 200000 --seeds 1 2 3

Writes ``benchmarks/results/caql_mujoco.json`` and ``.md`` (final return mean ± std over seeds, wall
seconds, environment steps per second, per task and method; the interquartile mean of returns
normalised per task as (R - R_random) / (R_best - R_random)), and a learning-curve PNG per task.
Finished runs are cached in ``benchmarks/results/caql_mujoco_runs/`` so an interrupted suite resumes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# The most informative pair first, so that a suite cut short still compares every method on both tasks.
QUICK_TASKS = ["Pendulum-v1:1", "Hopper-v5:0.25", "Pendulum-v1:0.66", "Pendulum-v1:2", "Hopper-v5:0.5", "Hopper-v5:1"]
FULL_TASKS = [*QUICK_TASKS, "Walker2d-v5:0.25", "Walker2d-v5:0.5", "HalfCheetah-v5:0.25", "HalfCheetah-v5:0.5",
              "Ant-v5:0.1", "Ant-v5:0.25", "Humanoid-v5:0.1", "Humanoid-v5:0.25",
              "Hopper-v5:0.5:l2_ball", "HalfCheetah-v5:0.5:l2_ball"]
METHODS = ["caql-ga", "caql-cem", "caql-bnb", "sac", "td3"]


def parse_task(task: str) -> tuple[str, float, str]:
    parts = task.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"a task is ENV:BOUND or ENV:BOUND:SET (box, l2_ball, l1_ball), got {task!r}.")
    return parts[0], float(parts[1]), parts[2] if len(parts) == 3 else "box"


def run_one(spec: dict) -> dict:
    """Train one (task, method, seed) and return its evaluation curve and timings."""
    import torch

    torch.set_num_threads(1)
    from rlcore import envs
    from rlcore.algos.caql import CAQLConfig, train
    from rlcore.loops import EnvConfig
    from rlcore.loops.evaluation import evaluate, summarize

    env_id, bound, set_kind, method, seed, steps = (spec[k] for k in ("env", "bound", "set", "method", "seed",
                                                                      "steps"))
    eval_interval = max(steps // 5, 1)
    env_config = EnvConfig(env_id, action_bound=bound, action_set=set_kind)
    action_set = env_config.make_action_set()
    eval_env = envs.make(env_id, num_envs=spec["eval_episodes"], action_set=action_set)
    eval_seed = 1_000_003 + seed
    start = time.perf_counter()
    curve: list[tuple[int, float, float]] = []
    if method.startswith("caql-"):
        solver = method.removeprefix("caql-")
        exact = solver in ("bnb", "scip")
        config = CAQLConfig(env=env_config, solver=solver, total_steps=steps,
                            eval_interval=eval_interval, eval_episodes=spec["eval_episodes"], seed=seed,
                            checkpoint_interval=steps, progress=False, run_dir=spec["run_dir"],
                            dual_filter=exact, cluster_radius=0.1 if exact else 0.0,
                            solver_time_limit=1.0 if exact else None,
                            solver_options={"ga_starts": 8, "ga_iterations": 20} if exact else {})
        result = train(config)
        for record in result.evaluations:
            curve.append((record["step"], record["return_mean"], record["return_std"]))
        summary = json.loads((result.run_dir / "summary.json").read_text())
        extra = {k: v for k, v in summary.items() if k.startswith("maxq_")}
    else:
        import gymnasium as gym
        from stable_baselines3 import SAC, TD3
        from stable_baselines3.common.callbacks import BaseCallback

        from rlcore.envs.wrappers import ActionSetWrapper

        train_env = ActionSetWrapper(gym.make(env_id), action_set)

        def policy(obs: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(model.predict(obs.numpy(), deterministic=True)[0], dtype=torch.float32)

        class Evaluate(BaseCallback):
            def _on_step(self) -> bool:
                if self.num_timesteps % eval_interval == 0:
                    returns = evaluate(policy, eval_env, seed=eval_seed)
                    curve.append((self.num_timesteps, *summarize(returns)))
                return True

        algorithm = {"sac": SAC, "td3": TD3}[method]
        model = algorithm("MlpPolicy", train_env, seed=seed, verbose=0, device="cpu")
        model.learn(total_timesteps=steps, callback=Evaluate())
        extra = {}
    seconds = time.perf_counter() - start
    eval_env.close()
    return {**spec, "curve": curve, "final_return": curve[-1][1] if curve else float("nan"),
            "wall_seconds": seconds, "steps_per_second": steps / seconds, **extra}


def random_return(env_id: str, bound: float, set_kind: str, episodes: int) -> float:
    import torch

    from rlcore import envs
    from rlcore.loops import EnvConfig
    from rlcore.loops.evaluation import evaluate

    env = envs.make(env_id, num_envs=episodes, action_set=EnvConfig(env_id, action_bound=bound,
                                                                    action_set=set_kind).make_action_set())
    generator = torch.Generator().manual_seed(0)
    returns = evaluate(lambda obs: env.action_set.sample(obs.shape[0], generator), env, seed=1_000_003)
    return float(returns.mean())


def iqm(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    middle = ordered[n // 4: n - n // 4] or ordered
    return sum(middle) / len(middle)


def summarise(runs: list[dict], randoms: dict[str, float], budget: dict) -> dict:
    import statistics

    table: dict[str, dict[str, dict]] = {}
    for run in runs:
        task = run["task"]
        cell = table.setdefault(task, {}).setdefault(run["method"], {"returns": [], "wall": [], "sps": []})
        cell["returns"].append(run["final_return"])
        cell["wall"].append(run["wall_seconds"])
        cell["sps"].append(run["steps_per_second"])
        if "maxq_fraction_avoided" in run:
            cell.setdefault("avoided", []).append(run["maxq_fraction_avoided"])
    normalised: dict[str, list[float]] = {}
    complete = max((len(methods) for methods in table.values()), default=0)
    for task, methods in table.items():
        best = max(statistics.mean(c["returns"]) for c in methods.values())
        for method, cell in methods.items():
            cell["return_mean"] = statistics.mean(cell["returns"])
            cell["return_std"] = statistics.pstdev(cell["returns"])
            cell["wall_seconds"] = statistics.mean(cell["wall"])
            cell["steps_per_second"] = statistics.mean(cell["sps"])
            # Where no method beats a random policy the task says nothing about the ranking: all score 0.
            span = best - randoms[task]
            if len(methods) < complete:  # a task cut short by the time budget stays out of the aggregate
                continue
            normalised.setdefault(method, []).extend(
                (r - randoms[task]) / span if span > 1e-9 else 0.0 for r in cell["returns"])
    return {"budget": budget, "random_returns": randoms, "tasks": table,
            "normalised_iqm": {m: iqm(v) for m, v in normalised.items()}}


def write_markdown(summary: dict, path: Path) -> None:
    budget = summary["budget"]
    lines = ["# CAQL on constrained tasks vs SAC and TD3", "",
             f"Machine: {budget['machine']}. Budget: {budget['description']}. Seeds: {budget['seeds']}. "
             f"Evaluation: deterministic policy, {budget['eval_episodes']} episodes on separate environments, "
             "5 times per run; the table shows the last one. Command: `" + budget["command"] + "`.", "",
             "| task | method | final return (mean ± std over seeds) | wall s | env steps/s | max-Q solves avoided |",
             "|---|---|---|---|---|---|"]
    for task, methods in summary["tasks"].items():
        best = max(methods, key=lambda m: methods[m]["return_mean"])
        for method, cell in methods.items():
            mark = "**" if method == best else ""
            avoided = f"{100 * sum(cell['avoided']) / len(cell['avoided']):.0f}%" if "avoided" in cell else ""
            lines.append(f"| {task} | {method} | {mark}{cell['return_mean']:.1f} ± {cell['return_std']:.1f}{mark} | "
                         f"{cell['wall_seconds']:.0f} | {cell['steps_per_second']:.0f} | {avoided} |")
    lines += ["", "Interquartile mean over tasks and seeds of the normalised return "
              "(R - R_random) / (R_best method - R_random), 1 = the best method's mean on every task:", "",
              "| method | normalised IQM |", "|---|---|"]
    for method, value in sorted(summary["normalised_iqm"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {method} | {value:.2f} |")
    if budget["missing_runs"]:
        lines += ["", f"Not run (out of time): {', '.join(budget['missing_runs'])}."]
    path.write_text("\n".join(lines) + "\n")


def plot(runs: list[dict], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = []
    for task in sorted({r["task"] for r in runs}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for method in METHODS:
            curves = [r["curve"] for r in runs if r["task"] == task and r["method"] == method and r["curve"]]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            steps = np.array([p[0] for p in curves[0][:length]])
            values = np.array([[p[1] for p in c[:length]] for c in curves])
            ax.plot(steps, values.mean(0), label=method)
            ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return")
        ax.legend()
        name = "caql_mujoco_" + task.replace(":", "_").replace(".", "p") + ".png"
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Pendulum and Hopper at a small budget")
    parser.add_argument("--tasks", nargs="+", help="ENV:BOUND[:SET] items (default: the paper's full suite)")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=None, help="steps per run for MuJoCo tasks")
    parser.add_argument("--pendulum-steps", type=int, default=None, help="steps per run for Pendulum")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (one torch thread each)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--summarise-only", action="store_true",
                        help="only aggregate the runs already cached (the table says which are missing)")
    args = parser.parse_args()

    tasks = args.tasks or (QUICK_TASKS if args.quick else FULL_TASKS)
    mujoco_steps = args.steps or (6_000 if args.quick else 200_000)
    pendulum_steps = args.pendulum_steps or (5_000 if args.quick else 30_000)
    cache = args.out / "caql_mujoco_runs"
    cache.mkdir(parents=True, exist_ok=True)
    specs = []
    for task in tasks:
        env_id, bound, set_kind = parse_task(task)
        steps = pendulum_steps if env_id.startswith("Pendulum") else mujoco_steps
        for method in args.methods:
            for seed in args.seeds:
                key = f"{task}-{method}-s{seed}-{steps}".replace(":", "_")
                specs.append({"task": task, "env": env_id, "bound": bound, "set": set_kind, "method": method,
                              "seed": seed, "steps": steps, "eval_episodes": args.eval_episodes, "key": key,
                              "run_dir": str(cache / "runs" / key)})
    todo = [] if args.summarise_only else [s for s in specs if not (cache / f"{s['key']}.json").exists()]
    print(f"{len(specs)} runs, {len(specs) - len(todo)} cached, {len(todo)} to do, {args.workers} workers")
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        # Task by task, so that an interrupted suite leaves whole tasks finished.
        for done in pool.imap_unordered(run_one, todo):
            (cache / f"{done['key']}.json").write_text(json.dumps(done))
            print(f"[{time.perf_counter() - started:7.0f}s] {done['task']:24} {done['method']:9} seed {done['seed']}: "
                  f"return {done['final_return']:9.1f}  ({done['wall_seconds']:.0f} s)", flush=True)
    missing = [s["key"] for s in specs if not (cache / f"{s['key']}.json").exists()]
    runs = [json.loads((cache / f"{s['key']}.json").read_text()) for s in specs if s["key"] not in missing]
    tasks = [task for task in tasks if any(r["task"] == task for r in runs)]
    randoms = {task: random_return(*parse_task(task), args.eval_episodes) for task in tasks}
    command = "python benchmarks/caql_mujoco.py " + ("--quick" if args.quick else "") + (
        f" --tasks {' '.join(args.tasks)}" if args.tasks else "")
    budget = {"machine": "2-core x86_64 CPU, no GPU, one torch thread per run, runs in parallel processes",
              "description": f"Pendulum {pendulum_steps} steps, MuJoCo {mujoco_steps} steps per run",
              "seeds": args.seeds, "eval_episodes": args.eval_episodes, "command": command.strip(),
              "suite_wall_seconds": time.perf_counter() - started, "missing_runs": missing}
    summary = summarise(runs, randoms, budget)
    summary["figures"] = plot(runs, args.out)
    (args.out / "caql_mujoco.json").write_text(json.dumps({**summary, "runs": runs}, indent=1))
    write_markdown(summary, args.out / "caql_mujoco.md")
    print((args.out / "caql_mujoco.md").read_text())


if __name__ == "__main__":
    main()
