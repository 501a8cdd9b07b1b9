"""rlcore PPO against Stable-Baselines3 PPO on MuJoCo, at the same settings, budget, seeds and evaluation.

Both sides use the same hyperparameters (SB3's PPO defaults, which ``rlcore.algos.ppo.PPOConfig`` follows):
``--num-envs`` environments, ``--num-steps`` steps each per rollout, minibatches of ``--batch-size``,
``--epochs`` passes, Adam 3e-4, γ 0.99, λ 0.95, ε 0.2, no entropy bonus, value weight 0.5, gradient-norm clip
0.5, separate 64-64 tanh policy and value networks with orthogonal initialisation, state-independent
log-std starting at 0, and observation normalisation with running statistics clipped at ±10 (rlcore's
``normalize_obs``; SB3's ``VecNormalize(norm_reward=False)``), no reward normalisation. Each run has one
torch thread; runs go to ``--workers`` parallel processes, interleaved so that both libraries see the same
machine load.

Evaluation is one protocol for both: :func:`rlcore.loops.evaluation.evaluate` with the deterministic policy on a
separate ``rlcore.envs.make(env, num_envs=eval_episodes)`` environment seeded ``seed + 1_000_003``, every
``--eval-interval`` steps (default: a tenth of the run; at the next rollout boundary, after the update) and
at the end. SB3's
``model.predict`` (on observations normalised with its frozen ``VecNormalize`` statistics) is wrapped as a
torch policy for it.

Speed is environment steps per second of training: the run's time minus the time spent in evaluations
(the same wrapped ``evaluate`` on both sides), both in wall-clock seconds and in the process's CPU seconds.
On a machine shared with other jobs the CPU figure is the steadier comparison; both are reported.

    python benchmarks/ppo_mujoco.py                                   # the default (small) budget
    python benchmarks/ppo_mujoco.py --steps InvertedPendulum-v5=1000000 Hopper-v5=1000000 \\
        HalfCheetah-v5=1000000 --seeds 1 2 3 4 5 --workers 4             # the usual 1M-step comparison

Writes ``benchmarks/results/ppo_mujoco.json`` and ``.md`` (final return mean ± std and range over seeds,
wall-clock seconds, steps per second and their ratio, whether the targets are met) and a learning-curve
PNG ``benchmarks/results/ppo_mujoco_<env>.png`` per environment. Finished runs are cached under
``--cache`` (default ``runs/ppo_mujoco_bench``, ignored by git) so that an interrupted suite resumes.

``--executor ray`` runs each (env, method, seed) as a Ray task (one CPU, a fresh worker process per run;
``--ray-address`` to join a cluster); the run files are written to ``--cache`` here as each run finishes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _grid import add_executor_arguments, run_grid, save_result

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ENVS = ["InvertedPendulum-v5", "Hopper-v5", "HalfCheetah-v5"]
DEFAULT_STEPS = {"InvertedPendulum-v5": 20_480, "Hopper-v5": 102_400, "HalfCheetah-v5": 102_400}
"""Default budget per run: multiples of the 2048-step rollout, sized to ~35 minutes on one busy core."""
METHODS = ["rlcore", "sb3"]


class EvaluationClock:
    """Calls :func:`rlcore.loops.evaluation.evaluate` and adds up the wall and CPU seconds spent in it."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from rlcore.loops.evaluation import evaluate

        return self._timed(evaluate, *args, **kwargs)

    def episodes(self, *args: Any, **kwargs: Any) -> Any:
        """``evaluate_episodes``, timed (what the run session calls)."""
        from rlcore.loops.evaluation import evaluate_episodes

        return self._timed(evaluate_episodes, *args, **kwargs)

    def _timed(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu


def train_rlcore(spec: dict, clock: EvaluationClock) -> list[tuple[int, float, float]]:
    """Train rlcore PPO; returns its evaluation curve (step, mean return, std)."""
    from rlcore.algos import ppo
    from rlcore.loops import session

    # The run session calls the evaluate_episodes it imported; time it with the same clock as SB3's evaluations.
    session.evaluate_episodes = clock.episodes
    config = ppo.PPOConfig(
        env=spec["env"], total_steps=spec["steps"], seed=spec["seed"], num_envs=spec["num_envs"],
        num_steps=spec["num_steps"], num_minibatches=spec["num_steps"] * spec["num_envs"] // spec["batch_size"],
        update_epochs=spec["epochs"], eval_interval=spec["eval_interval"], eval_episodes=spec["eval_episodes"],
        checkpoint_interval=spec["steps"], normalize_obs=True, progress=False, run_dir=spec["run_dir"])
    result = ppo.train(config)
    return [(e["step"], e["return_mean"], e["return_std"]) for e in result.evaluations]


def train_sb3(spec: dict, clock: EvaluationClock) -> list[tuple[int, float, float]]:
    """Train SB3 PPO with the same settings; returns its evaluation curve (step, mean return, std)."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    from torch import nn

    from rlcore import envs

    env_id, seed, interval = spec["env"], spec["seed"], spec["eval_interval"]
    venv = VecNormalize(DummyVecEnv([lambda: Monitor(gym.make(env_id)) for _ in range(spec["num_envs"])]),
                        norm_obs=True, norm_reward=False, clip_obs=10.0, epsilon=1e-8)
    model = PPO("MlpPolicy", venv, n_steps=spec["num_steps"], batch_size=spec["batch_size"], n_epochs=spec["epochs"],
                learning_rate=3e-4, gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, vf_coef=0.5,
                max_grad_norm=0.5, policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]},
                                                  "activation_fn": nn.Tanh, "log_std_init": 0.0},
                seed=seed, device="cpu", verbose=0)
    eval_env = envs.make(env_id, num_envs=spec["eval_episodes"])
    curve: list[tuple[int, float, float]] = []

    def policy(obs: torch.Tensor) -> torch.Tensor:
        # normalize_obs reads the running statistics without updating them (frozen, as rlcore's act is).
        actions, _ = model.predict(venv.normalize_obs(obs.numpy()), deterministic=True)
        return torch.as_tensor(actions, dtype=torch.float32)

    from rlcore.loops.evaluation import summarize

    def evaluate_at(step: int) -> None:
        returns = clock(policy, eval_env, seed=seed + 1_000_003)
        curve.append((step, *summarize(returns)))

    class Evaluate(BaseCallback):
        """Evaluate after the update that crosses a multiple of the interval, as rlcore's loop does."""

        def __init__(self) -> None:
            super().__init__()
            self.last = 0

        def _on_rollout_start(self) -> None:  # called once the previous rollout's update is done
            if self.num_timesteps // interval > self.last // interval:
                evaluate_at(self.num_timesteps)
            self.last = self.num_timesteps

        def _on_step(self) -> bool:
            return True

    model.learn(total_timesteps=spec["steps"], callback=Evaluate())
    if not curve or curve[-1][0] != model.num_timesteps:
        evaluate_at(model.num_timesteps)
    eval_env.close()
    return curve


def run_one(spec: dict) -> dict:
    """Train one (env, method, seed); return its curve and timings."""
    import torch

    torch.set_num_threads(1)
    # Both sides' imports, and torch's one-off import on the first optimiser, before the clocks start.
    import stable_baselines3.common.vec_env  # noqa: F401
    from stable_baselines3 import PPO  # noqa: F401

    import rlcore.algos.ppo
    import rlcore.loops.evaluation  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    clock = EvaluationClock()
    wall, cpu = time.perf_counter(), time.process_time()
    curve = (train_rlcore if spec["method"] == "rlcore" else train_sb3)(spec, clock)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    steps = curve[-1][0]
    return {**spec, "curve": curve, "final_return": curve[-1][1], "trained_steps": steps,
            "wall_seconds": wall, "cpu_seconds": cpu, "eval_wall_seconds": clock.wall, "eval_cpu_seconds": clock.cpu,
            "steps_per_second": steps / (wall - clock.wall), "steps_per_cpu_second": steps / (cpu - clock.cpu)}


def summarise(runs: list[dict], budget: dict) -> dict:
    """Per env and method: final return over seeds, time and speed; the speed ratio and the targets."""
    table: dict[str, dict[str, dict]] = {}
    for env_id in dict.fromkeys(r["env"] for r in runs):
        methods = table.setdefault(env_id, {})
        for method in METHODS:
            these = [r for r in runs if r["env"] == env_id and r["method"] == method]
            if not these:
                continue
            returns = [r["final_return"] for r in these]
            methods[method] = {
                "seeds": [r["seed"] for r in these], "final_returns": returns,
                "return_mean": statistics.mean(returns),
                "return_std": statistics.stdev(returns) if len(returns) > 1 else 0.0,
                "return_min": min(returns), "return_max": max(returns),
                "wall_seconds": statistics.mean(r["wall_seconds"] for r in these),
                "steps_per_second": statistics.mean(r["steps_per_second"] for r in these),
                "steps_per_cpu_second": statistics.mean(r["steps_per_cpu_second"] for r in these)}
        if {"rlcore", "sb3"} <= methods.keys():
            ours, theirs = methods["rlcore"], methods["sb3"]
            methods["comparison"] = {
                "speed_ratio_wall": ours["steps_per_second"] / theirs["steps_per_second"],
                "speed_ratio_cpu": ours["steps_per_cpu_second"] / theirs["steps_per_cpu_second"],
                # "Within the seed spread": rlcore's mean is at least SB3's mean minus one std over seeds.
                "return_target_met": ours["return_mean"] >= theirs["return_mean"] - theirs["return_std"],
            }
            comparison = methods["comparison"]
            comparison["speed_target_met"] = comparison["speed_ratio_cpu"] >= 1 and comparison["speed_ratio_wall"] >= 1
    return {"budget": budget, "envs": table}


def write_markdown(summary: dict, path: Path) -> None:
    budget = summary["budget"]
    intervals = set(budget["eval_interval"].values())
    interval = (str(intervals.pop()) if len(intervals) == 1 else
                ", ".join(f"{steps} ({env_id})" for env_id, steps in budget["eval_interval"].items()))
    lines = [
        "# PPO on MuJoCo: rlcore vs Stable-Baselines3", "",
        f"Machine: {budget['machine']}. Budget: {budget['description']}; seeds {budget['seeds']}; "
        f"{budget['workers']} worker process(es), one torch thread each; suite wall clock "
        f"{budget['suite_wall_seconds'] / 60:.0f} min. Settings (both): {budget['settings']}. Evaluation (both): "
        f"`rlcore.loops.evaluation.evaluate`, deterministic policy, {budget['eval_episodes']} episodes on a separate "
        f"environment, every {interval} steps and at the end; the table shows the last one. "
        f"Versions: {budget['versions']}. Command: `{budget['command']}`.", "",
        "| env | method | final return, mean ± std over seeds [min, max] | wall s per run | train steps/s (wall) "
        "| train steps per CPU s |", "|---|---|---|---|---|---|"]
    verdicts = []
    for env_id, methods in summary["envs"].items():
        for method in METHODS:
            if method not in methods:
                continue
            c = methods[method]
            lines.append(f"| {env_id} | {method} | {c['return_mean']:.1f} ± {c['return_std']:.1f} "
                         f"[{c['return_min']:.1f}, {c['return_max']:.1f}] | {c['wall_seconds']:.0f} | "
                         f"{c['steps_per_second']:.0f} | {c['steps_per_cpu_second']:.0f} |")
        if "comparison" in methods:
            cmp = methods["comparison"]
            verdicts.append(
                f"| {env_id} | {cmp['speed_ratio_wall']:.2f} | {cmp['speed_ratio_cpu']:.2f} | "
                f"{'met' if cmp['speed_target_met'] else 'NOT met'} | "
                f"{'met' if cmp['return_target_met'] else 'NOT met'} |")
    lines += ["", "Speed ratio = rlcore's training steps per second / SB3's (evaluation time excluded on both "
              "sides). Targets (issue 9): at least as fast (ratio ≥ 1, by wall clock and by CPU time), and a "
              "return within SB3's seed spread (rlcore's mean ≥ SB3's mean − SB3's std over seeds).", "",
              "| env | speed ratio (wall) | speed ratio (CPU) | speed target | return target |",
              "|---|---|---|---|---|", *verdicts, "",
              f"At small budgets both libraries' returns vary widely between seeds (see the ranges and the "
              f"curves); with {len(budget['seeds'])} seeds the return comparison only rules out large gaps."]
    lines += ["", *(f"![{env_id}](ppo_mujoco_{env_id}.png)" for env_id in summary["envs"])]
    path.write_text("\n".join(lines) + "\n")


def plot(runs: list[dict], out_dir: Path) -> list[str]:
    """One PNG per env: mean evaluation return over seeds, with the min-max band, for each method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = []
    for env_id in dict.fromkeys(r["env"] for r in runs):
        fig, ax = plt.subplots(figsize=(6, 4))
        for method in METHODS:
            curves = [r["curve"] for r in runs if r["env"] == env_id and r["method"] == method]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            steps = np.array([p[0] for p in curves[0][:length]])
            values = np.array([[p[1] for p in c[:length]] for c in curves])
            ax.plot(steps, values.mean(0), label=f"{method} ({len(curves)} seeds)")
            ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
        ax.set_title(f"PPO on {env_id}")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return")
        ax.legend()
        name = f"ppo_mujoco_{env_id}.png"
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def previous_suite_seconds(out_dir: Path, runs: list[dict]) -> float:
    """When every run came from the cache: the suite time of the results written for these runs, if any,
    else the runs' wall clocks summed (the suite time with one worker)."""
    try:
        previous = json.loads((out_dir / "ppo_mujoco.json").read_text())
        if sorted(r["key"] for r in previous["runs"]) == sorted(r["key"] for r in runs):
            return previous["budget"]["suite_wall_seconds"]
    except (OSError, KeyError, ValueError):
        pass
    return sum(r["wall_seconds"] for r in runs)


def parse_steps(items: list[str]) -> dict[str, int]:
    steps = dict(DEFAULT_STEPS)
    for item in items:
        env_id, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            raise SystemExit(f"--steps takes ENV=STEPS items (e.g. Hopper-v5=1000000), got {item!r}.")
        steps[env_id] = int(value)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=ENVS, help="gymnasium ids")
    parser.add_argument("--steps", nargs="*", default=[], metavar="ENV=STEPS",
                        help=f"steps per run for an env (defaults: {DEFAULT_STEPS}; other envs: 102400)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (one torch thread each)")
    parser.add_argument("--num-envs", type=int, default=1, help="parallel environments per run")
    parser.add_argument("--num-steps", type=int, default=2048, help="steps per environment per rollout")
    parser.add_argument("--batch-size", type=int, default=64, help="minibatch size")
    parser.add_argument("--epochs", type=int, default=10, help="passes over each rollout")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--eval-interval", type=int, default=None,
                        help="steps between evaluations (default: a tenth of each env's budget)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the json, md and png results")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "ppo_mujoco_bench",
                        help="folder of finished runs (reused) and of rlcore's run directories")
    parser.add_argument("--machine", default="2-core x86_64 CPU shared with other jobs, no GPU",
                        help="description of the machine, for the results")
    add_executor_arguments(parser)
    args = parser.parse_args()

    budgets = parse_steps(args.steps)
    steps_of = {env_id: budgets.get(env_id, 102_400) for env_id in args.envs}
    args.cache.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    specs = []
    for env_id in args.envs:
        for seed in args.seeds:
            for method in args.methods:  # interleaved: both methods see the same stretch of machine load
                eval_interval = args.eval_interval or max(steps_of[env_id] // 10, 1)
                key = (f"{env_id}-{method}-s{seed}-{steps_of[env_id]}-n{args.num_envs}x{args.num_steps}"
                       f"-b{args.batch_size}-e{args.epochs}-ev{eval_interval}x{args.eval_episodes}")
                specs.append({"env": env_id, "method": method, "seed": seed, "steps": steps_of[env_id],
                              "num_envs": args.num_envs, "num_steps": args.num_steps, "batch_size": args.batch_size,
                              "epochs": args.epochs, "eval_interval": eval_interval,
                              "eval_episodes": args.eval_episodes, "key": key,
                              "run_dir": str(args.cache / "runs" / key)})
    todo = [s for s in specs if not (args.cache / f"{s['key']}.json").exists()]
    print(f"{len(specs)} runs, {len(specs) - len(todo)} cached, {len(todo)} to do, {args.workers} worker(s)",
          flush=True)
    started = time.perf_counter()

    def save(done: dict) -> None:
        save_result(args.cache / f"{done['key']}.json", json.dumps(done))
        print(f"[{time.perf_counter() - started:6.0f}s] {done['env']:20} {done['method']:6} seed {done['seed']}: "
              f"return {done['final_return']:8.1f}, {done['wall_seconds']:5.0f} s, "
              f"{done['steps_per_second']:5.0f} steps/s, {done['steps_per_cpu_second']:5.0f} steps/CPU-s",
              flush=True)

    # A fresh process per run: no run inherits another's warm caches or memory.
    run_grid(run_one, todo, workers=args.workers, executor=args.executor, ray_address=args.ray_address,
             on_result=save, fresh_process_per_job=True)
    runs = [json.loads((args.cache / f"{s['key']}.json").read_text()) for s in specs]

    import gymnasium
    import stable_baselines3
    import torch

    import rlcore

    rlcore_version = getattr(rlcore, "__version__", "dev")
    budget = {
        "machine": f"{args.machine} ({platform.machine()}, {mp.cpu_count()} cores)",
        "description": ", ".join(f"{env_id} {steps_of[env_id]} steps" for env_id in args.envs) + " per run",
        "steps": steps_of, "seeds": args.seeds, "workers": args.workers, "eval_episodes": args.eval_episodes,
        "eval_interval": {env_id: args.eval_interval or max(steps_of[env_id] // 10, 1) for env_id in args.envs},
        "settings": (f"{args.num_envs} env(s) x {args.num_steps} steps per rollout, minibatch {args.batch_size}, "
                     f"{args.epochs} epochs, Adam 3e-4, gamma 0.99, GAE lambda 0.95, clip 0.2, 64-64 tanh "
                     "actor and critic, observation normalisation (no reward normalisation)"),
        "versions": (f"rlcore {rlcore_version}, stable-baselines3 {stable_baselines3.__version__}, torch "
                     f"{torch.__version__}, gymnasium {gymnasium.__version__}, Python {sys.version.split()[0]}"),
        "command": " ".join(["python benchmarks/ppo_mujoco.py", *sys.argv[1:]]),
        "suite_wall_seconds": time.perf_counter() - started if todo else previous_suite_seconds(args.out, runs),
    }
    summary = summarise(runs, budget)
    summary["figures"] = plot(runs, args.out)
    (args.out / "ppo_mujoco.json").write_text(json.dumps({**summary, "runs": runs}, indent=1))
    write_markdown(summary, args.out / "ppo_mujoco.md")
    print((args.out / "ppo_mujoco.md").read_text())


if __name__ == "__main__":
    main()
