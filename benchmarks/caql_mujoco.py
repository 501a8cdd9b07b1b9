"""CAQL on constrained tasks against rlcore SAC and Stable-Baselines3 SAC and TD3, under one protocol.

The paper's claim under test: "CAQL outperforms policy-based methods in heavily constrained environments".
Every method trains on the same task with the same action constraint (rlcore through
``rlcore.envs.make(..., action_set=...)``, SB3 through :class:`rlcore.envs.wrappers.ActionSetWrapper`, both
projecting with the same :class:`solvers.ActionSet`), the same step budget and seeds, and is evaluated by the same
protocol: :func:`rlcore.loops.evaluation.evaluate`, deterministic policy, separate environments,
``--eval-episodes`` whole episodes, every ``total_steps / 5`` steps.

Suite (issue 21): Pendulum-v1 with actions in [-1, 1] and [-0.66, 0.66] at 20k steps; Hopper-v5 in [-0.25, 0.25]^3
and [-0.5, 0.5]^3 and HalfCheetah-v5 in [-0.25, 0.25]^6 at 100k steps; methods CAQL-GA, CAQL-exact, rlcore SAC,
SB3 SAC and SB3 TD3 (SB3 defaults); seeds 1, 2, 3. CAQL-exact is the exact-max-Q configuration chosen by
``benchmarks/caql_ablation.py`` (:data:`EXACT`).

    python benchmarks/caql_mujoco.py                          # whatever is missing of the suite
    python benchmarks/caql_mujoco.py --tasks Hopper-v5:0.25 --methods caql-ga sb3-sac
    python benchmarks/caql_mujoco.py --quick                  # a smoke budget (2k/3k steps), separate files
    python benchmarks/caql_mujoco.py --summarise-only

A run whose result file exists is skipped, and rlcore runs checkpoint into their cached run directory and resume
from it, so the suite can be run a few hours at a time. Writes ``benchmarks/results/caql_mujoco.json`` and ``.md``
(final return mean ± std over seeds, wall seconds, environment steps per second, per task and method; the
interquartile mean of returns normalised per task as (R - R_random) / (R_best - R_random); which runs are
missing), and a learning-curve PNG per task. The report always covers the whole suite at the run's budget: a
``--tasks`` or ``--methods`` part runs only its own runs and leaves the others' results in it. Runs are cached
in ``benchmarks/results/caql_mujoco_runs/``.

``--executor ray`` runs each (task, method, seed) as a Ray task (one CPU; ``--ray-address`` to join a cluster);
the result files are written here as each run finishes. A run resumes from its checkpoint only on a node that
sees ``caql_mujoco_runs/runs/`` (on a cluster: a shared filesystem).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _grid import add_executor_arguments, run_grid, run_location, save_result

RESULTS = Path(__file__).resolve().parent / "results"

# The most informative pair first, so that a suite cut short still compares every method on both kinds of task.
SUITE = ["Pendulum-v1:1", "Hopper-v5:0.25", "Pendulum-v1:0.66", "Hopper-v5:0.5", "HalfCheetah-v5:0.25"]
METHODS = ["caql-ga", "caql-exact", "rlcore-sac", "sb3-sac", "sb3-td3"]
PAPER_TARGET = {"hard_update_interval": 5_000}
PAPER_NETS = {"hidden_sizes": (32, 16), "action_hidden_sizes": (32, 16)}
VARIANTS = {"caql-ga-paper-nets": PAPER_NETS, "caql-exact-paper-nets": PAPER_NETS,
            "caql-ga-paper-target": {**PAPER_NETS, **PAPER_TARGET},
            "caql-exact-paper-target": {**PAPER_NETS, **PAPER_TARGET},
            "caql-ga-wide": {**PAPER_TARGET, "hidden_sizes": (256, 256), "action_hidden_sizes": (256, 256)},
            "caql-ga-explore": {**PAPER_NETS, **PAPER_TARGET, "noise_min": 0.1},
            "caql-ga-target250": {**PAPER_NETS, "hard_update_interval": 250},
            "caql-ga-target1000": {**PAPER_NETS, "hard_update_interval": 1_000}}
"""Configurations probed beside the suite, run only when named in ``--methods``: reported in their own table and
left out of the suite's aggregate and verdicts. ``caql-ga-paper-nets`` and ``caql-exact-paper-nets``: CAQL-GA and
CAQL-exact with the paper's (32, 16) networks (CAQL's default until 2026-12-07, now (64, 64) with gradient ascent
and ``pwl1d``; ``bnb``'s default stays (32, 16), so on Hopper and HalfCheetah CAQL-exact is unchanged).
``caql-ga-paper-target`` and ``caql-exact-paper-target``: the same with the paper's second target network,
re-copied every 5,000 updates (the default until 2026-12-07, now 500; the minimum with a copy that old lets the
values grow by one Bellman backup per copy, 20 in 100k steps). ``caql-ga-wide`` (with the paper's copy interval, as
it ran): CAQL-GA with SAC's (256, 256) networks. ``caql-ga-explore`` (paper networks and copy interval): CAQL-GA
whose exploration noise stops decaying at 0.1 half-widths (TD3's 0.1 of the action range's half-width) rather than
0.025, which the default reaches after about 12k steps (the paper decays by 0.999 per episode, so over 100k Hopper
steps its noise stays above 0.5). ``caql-ga-target250`` and ``caql-ga-target1000`` (paper networks): CAQL-GA with
the second target network re-copied every 250 or 1,000 updates, either side of the default 500."""
EXACT = {"loss": "l2", "dual_filter": False, "solver_time_limit": 0.5}
"""CAQL-exact's settings besides the solver (``pwl1d`` for 1-D actions, ``bnb`` otherwise; the time limit applies
to ``bnb`` only): the squared loss without the dual filter, from ``benchmarks/results/caql_ablation.md`` (3 seeds
per cell). Pendulum-v1 (exact = ``pwl1d``): exact + squared loss learned best (-316 with the filter, -332
without; GA -368); the hinge loss, under which the filter is exact, overestimated and learned worst (-641 to
-1000). Hopper-v5 bound 0.25 at 30k steps (exact = ``bnb``): exact + squared loss without the filter had the best
mean (124.9 ± 80.1; with the filter 65.9 ± 37.7; GA's best cell 95.4 ± 66.8), the spreads overlapping (seed 1
learned nothing in 7 of the 8 cells). Over both tasks, filter off is the better exact cell."""


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
    location = run_location(spec["run_dir"], resumable=not method.startswith("sb3-"))  # SB3 keeps no checkpoint
    resumed = "resume" in location
    start = time.perf_counter()
    curve: list[tuple[int, float, float]] = []
    if method.startswith("caql-"):
        exact = method.startswith("caql-exact")
        one_dimensional = action_set.with_dim(_action_dim(env_id)).dim == 1
        options = {**(EXACT if exact else {}), **VARIANTS.get(method, {})}
        if one_dimensional or not exact:
            options.pop("solver_time_limit", None)
        config = CAQLConfig(env=env_config, solver=("pwl1d" if one_dimensional else "bnb") if exact else "ga",
                            total_steps=steps, eval_interval=eval_interval, eval_episodes=spec["eval_episodes"],
                            seed=seed, checkpoint_interval=max(steps // 20, 1), progress=False,
                            **location, **options)
        result = train(config)
        for record in result.evaluations:
            curve.append((record["step"], record["return_mean"], record["return_std"]))
        summary = json.loads((result.run_dir / "summary.json").read_text())
        extra = {k: v for k, v in summary.items() if k.startswith("maxq_")}
    elif method == "rlcore-sac":
        from rlcore.algos.sac import SACConfig
        from rlcore.algos.sac import train as train_sac

        result = train_sac(SACConfig(env=env_config, total_steps=steps, eval_interval=eval_interval,
                                     eval_episodes=spec["eval_episodes"], seed=seed,
                                     checkpoint_interval=max(steps // 20, 1), progress=False,
                                     **location))
        curve = [(r["step"], r["return_mean"], r["return_std"]) for r in result.evaluations]
        extra = {}
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

        algorithm = {"sb3-sac": SAC, "sb3-td3": TD3}[method]
        model = algorithm("MlpPolicy", train_env, seed=seed, verbose=0, device="cpu")
        model.learn(total_timesteps=steps, callback=Evaluate())
        extra = {}
    # A resumed rlcore run's evaluations count its seconds over all its sessions (the run session's clock).
    seconds = result.evaluations[-1]["wall_seconds"] if resumed else time.perf_counter() - start
    eval_env.close()
    return {**spec, "curve": curve, "final_return": curve[-1][1] if curve else float("nan"),
            "wall_seconds": seconds, "steps_per_second": steps / seconds, "resumed": resumed, **extra}


def _action_dim(env_id: str) -> int:
    import gymnasium as gym

    env = gym.make(env_id)
    try:
        return int(env.action_space.shape[0])
    finally:
        env.close()


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
    table: dict[str, dict[str, dict]] = {}
    for run in runs:
        task = run["task"]
        cell = table.setdefault(task, {}).setdefault(run["method"], {"returns": [], "wall": [], "sps": [],
                                                                     "seeds": [], "eval_means": []})
        cell["returns"].append(run["final_return"])
        cell["eval_means"].append(statistics.mean(p[1] for p in run["curve"]) if run["curve"] else float("nan"))
        cell["seeds"].append(run["seed"])
        cell["wall"].append(run["wall_seconds"])
        cell["sps"].append(run["steps_per_second"])
        if "maxq_fraction_avoided" in run:
            cell.setdefault("avoided", []).append(run["maxq_fraction_avoided"])
    normalised: dict[str, list[float]] = {}
    complete = max((len(methods) for methods in table.values()), default=0)
    aggregated = [task for task, methods in table.items() if len(methods) == complete]
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
    return {"budget": budget, "random_returns": randoms, "tasks": table, "aggregated_tasks": aggregated,
            "normalised_iqm": {m: iqm(v) for m, v in normalised.items()}}


def write_markdown(summary: dict, path: Path) -> None:
    budget = summary["budget"]
    lines = ["# CAQL on constrained tasks vs SAC and TD3", "",
             "The paper's claim under test: CAQL outperforms policy-based methods in heavily constrained "
             "environments. Methods: CAQL-GA, CAQL-exact (exact max-Q: `pwl1d` for 1-D actions, `bnb` otherwise, "
             f"{'hinge' if EXACT['loss'] == 'hinge' else 'squared'} loss, dual filter "
             f"{'on' if EXACT['dual_filter'] else 'off'}, the ablation's choice), rlcore SAC, SB3 SAC and SB3 TD3 "
             "with their defaults.", "",
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
    aggregated = summary.get("aggregated_tasks", list(summary["tasks"]))
    waiting = [task for task in summary["tasks"] if task not in aggregated]
    scope = f"over {', '.join(aggregated)}" + (f" (not yet {', '.join(waiting)}, where some methods have not run)"
                                                 if waiting else "")
    lines += ["", "Interquartile mean over tasks and seeds of the normalised return "
              "(R - R_random) / (R_best method - R_random), 1 = the best method's mean on every task; every method "
              f"{scope}:", "", "| method | normalised IQM |", "|---|---|"]
    for method, value in sorted(summary["normalised_iqm"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {method} | {value:.2f} |")
    lines += ["", "Task by task: is CAQL (either variant) ahead of both SB3 SAC and SB3 TD3?", ""]
    for task, methods in summary["tasks"].items():
        caql = max((methods[m]["return_mean"] for m in ("caql-ga", "caql-exact") if m in methods), default=None)
        rivals = [methods[m]["return_mean"] for m in ("sb3-sac", "sb3-td3") if m in methods]
        if caql is None or len(rivals) < 2:
            lines.append(f"- {task}: not all of CAQL, SB3 SAC and SB3 TD3 have run yet.")
        else:
            verdict = "yes" if caql > max(rivals) else "no"
            lines.append(f"- {task}: **{verdict}** (best CAQL {caql:.1f}; SB3 SAC {rivals[0]:.1f}, "
                         f"TD3 {rivals[1]:.1f})")
    if summary.get("variants"):
        lines += ["", "Variants probed beside the suite (not in the aggregate or the verdicts above; "
                  "the suite's same-seed runs for comparison: CAQL-exact's for a `caql-exact-` variant, CAQL-GA's "
                  "otherwise):", "",
                  "| task | variant | seeds | final returns | the suite's, same seeds | mean return over "
                  "evaluations (the suite's) | wall s (the suite's) |", "|---|---|---|---|---|---|---|"]

        def listed(values: list[float]) -> str:
            return ", ".join(f"{v:.1f}" for v in values) or "-"

        for task, methods in summary["variants"].items():
            for method, cell in methods.items():
                base = "caql-exact" if method.startswith("caql-exact") else "caql-ga"
                suite_cell = summary["tasks"].get(task, {}).get(base, {})
                same = [i for i, seed in enumerate(suite_cell.get("seeds", [])) if seed in cell["seeds"]]
                suite_wall = f"{statistics.mean(suite_cell['wall'][i] for i in same):.0f}" if same else "-"
                lines.append(f"| {task} | {method} | {cell['seeds']} | {listed(cell['returns'])} | "
                             f"{listed([suite_cell['returns'][i] for i in same])} | {listed(cell['eval_means'])} "
                             f"({listed([suite_cell['eval_means'][i] for i in same])}) | "
                             f"{cell['wall_seconds']:.0f} ({suite_wall}) |")
    if budget["missing_runs"]:
        lines += ["", f"Not run yet ({len(budget['missing_runs'])} runs, carried over to later sessions): "
                  f"{', '.join(budget['missing_runs'])}."]
    notes = path.with_name(f"{path.stem}_notes.md")  # what the runs cannot say themselves (reruns, conditions)
    if notes.exists():
        lines += ["", "## Notes", "", notes.read_text().strip()]
    path.write_text("\n".join(lines) + "\n")


def plot(runs: list[dict], out_dir: Path, prefix: str) -> list[str]:
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
        name = f"{prefix}_" + task.replace(":", "_").replace(".", "p") + ".png"
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def run_specs(tasks: list[str], methods: list[str], seeds: list[int], mujoco_steps: int, pendulum_steps: int,
              eval_episodes: int, cache: Path) -> list[dict]:
    """One spec per (task, seed, method), in that order; ``key`` names the run's result file."""
    specs = []
    for task in tasks:
        env_id, bound, set_kind = parse_task(task)
        steps = pendulum_steps if env_id.startswith("Pendulum") else mujoco_steps
        for seed in seeds:
            for method in methods:
                key = f"{task}-{method}-s{seed}-{steps}".replace(":", "_")
                specs.append({"task": task, "env": env_id, "bound": bound, "set": set_kind, "method": method,
                              "seed": seed, "steps": steps, "eval_episodes": eval_episodes, "key": key,
                              "run_dir": str(cache / "runs" / key)})
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke budget (Pendulum 2k, MuJoCo 3k steps, seed 1), written to caql_mujoco_quick_*")
    parser.add_argument("--tasks", nargs="+", help="ENV:BOUND[:SET] items (default: the issue's suite)")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=[*METHODS, *VARIANTS],
                        help=f"default: the suite's {METHODS}; variants probed beside it: {list(VARIANTS)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 1 2 3 (quick: 1)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run for MuJoCo tasks (default 100k)")
    parser.add_argument("--pendulum-steps", type=int, default=None, help="steps per run for Pendulum (default 20k)")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (one torch thread each)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--summarise-only", action="store_true",
                        help="only aggregate the runs already cached (the table says which are missing)")
    add_executor_arguments(parser)
    args = parser.parse_args()

    tasks = args.tasks or SUITE
    seeds = args.seeds or ([1] if args.quick else [1, 2, 3])
    mujoco_steps = args.steps or (3_000 if args.quick else 100_000)
    pendulum_steps = args.pendulum_steps or (2_000 if args.quick else 20_000)
    name = "caql_mujoco_quick" if args.quick else "caql_mujoco"
    cache = args.out / "caql_mujoco_runs"
    cache.mkdir(parents=True, exist_ok=True)
    # Task by task and seed by seed, every method of a seed together: a suite cut short leaves whole comparisons.
    specs = run_specs(tasks, args.methods, seeds, mujoco_steps, pendulum_steps, args.eval_episodes, cache)
    # The report always covers the whole suite at this budget, so a run of one part never hides the others' results.
    whole_suite = run_specs(SUITE, METHODS, [1] if args.quick else [1, 2, 3],
                            mujoco_steps, pendulum_steps, args.eval_episodes, cache)
    report_specs = list({s["key"]: s for s in whole_suite + specs if s["method"] in METHODS}.values())
    todo = [] if args.summarise_only else [s for s in specs if not (cache / f"{s['key']}.json").exists()]
    print(f"{len(specs)} runs, {len(specs) - len(todo)} cached, {len(todo)} to do, {args.workers} workers")
    started = time.perf_counter()

    def save(done: dict) -> None:
        save_result(cache / f"{done['key']}.json", json.dumps(done))
        print(f"[{time.perf_counter() - started:7.0f}s] {done['task']:24} {done['method']:9} seed {done['seed']}: "
              f"return {done['final_return']:9.1f}  ({done['wall_seconds']:.0f} s)", flush=True)

    run_grid(run_one, todo, workers=args.workers, executor=args.executor, ray_address=args.ray_address,
             on_result=save)
    missing = [s["key"] for s in report_specs if not (cache / f"{s['key']}.json").exists()]
    variants = [s for s in run_specs(SUITE, list(VARIANTS), [1] if args.quick else [1, 2, 3], mujoco_steps,
                                     pendulum_steps, args.eval_episodes, cache)
                if (cache / f"{s['key']}.json").exists()]
    runs = [json.loads((cache / f"{s['key']}.json").read_text()) for s in report_specs if s["key"] not in missing]
    variant_runs = [json.loads((cache / f"{s['key']}.json").read_text()) for s in variants]
    tasks = list(dict.fromkeys(r["task"] for r in runs + variant_runs))  # a variant's task may have no suite run yet
    randoms = {task: random_return(*parse_task(task), args.eval_episodes) for task in tasks}
    command = "python benchmarks/caql_mujoco.py" + (" --quick" if args.quick else "")
    budget = {"machine": "2-core x86_64 CPU, no GPU, one torch thread per run, runs in parallel processes",
              "description": f"Pendulum {pendulum_steps} steps, MuJoCo {mujoco_steps} steps per run",
              "seeds": sorted({s["seed"] for s in report_specs}), "eval_episodes": args.eval_episodes,
              "command": command.strip(),
              "suite_wall_seconds": time.perf_counter() - started, "missing_runs": missing}
    summary = summarise(runs, randoms, budget)
    summary["variants"] = summarise(variant_runs, randoms, budget)["tasks"] if variant_runs else {}
    summary["figures"] = plot(runs, args.out, name)
    (args.out / f"{name}.json").write_text(json.dumps({**summary, "runs": runs + variant_runs}, indent=1))
    write_markdown(summary, args.out / f"{name}.md")
    print((args.out / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
