"""How a trained agent's episodes go: their length and ending, the reward's parts, actions at the bound, Q vs return.

Replays the deterministic policy of finished rlcore runs (CAQL or SAC on a gymnasium MuJoCo task, the run's own
action set) for a few episodes and prints, per run, the mean over episodes of:

- ``length``, ``terminated`` (the fraction that fell rather than ran out of time), the final height and angle
  (``obs[0:2]``, Hopper's and Walker2d's health checks);
- every ``reward_*`` part the environment reports in ``info`` (forward, control, survive), summed per episode;
- ``at_bound``: the fraction of action coordinates within 1 % of the box's width of one of its faces (a bang-bang
  policy scores ~1);
- ``q_start`` against ``return_start``: the critic's Q at the first state and action (CAQL: its Q-network; SAC:
  the minimum of its two critics) against the discounted return that followed, the same ``gamma``. A critic far
  below the return cannot value what it leads to; far above, it is overestimating.

    python benchmarks/diagnose_episodes.py benchmarks/results/caql_mujoco_runs/runs/Hopper-v5_0.5-caql-ga-s2-100000

The run directories are those benchmarks keep beside their results (``caql_mujoco_runs/runs/``, git-ignored): a
diagnosis needs the run's checkpoint on this machine. ``--out FILE`` also writes the per-episode figures as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from _grid import add_executor_arguments, run_grid, save_result

from solvers import ActionSet


def critic_value(agent, obs: torch.Tensor, action: torch.Tensor) -> float | None:
    """The agent's Q at (obs, action): CAQL's Q-network, or the minimum of SAC's twin critics; None without one."""
    with torch.no_grad():
        if hasattr(agent, "q"):
            return float(agent.q(obs, action).squeeze())
        if hasattr(agent, "critic"):  # SAC's twin critics, stacked: [2, batch]
            return float(agent.critic(obs, action).min(dim=0).values.squeeze())
    return None


def diagnose(run_dir: Path, episodes: int, seed: int) -> dict:
    from rlcore.algos import load_agent

    trained = load_agent(run_dir)  # built for one copy of the run's environment, exactly as training built it
    agent, config = trained.agent, trained.config
    if config.env.backend != "gymnasium":
        raise ValueError(f"{run_dir} trained on the {config.env.backend!r} backend; this diagnosis replays "
                         "gymnasium tasks only (it reads the reward's parts from gymnasium's info).")
    env = gym.make(config.env.id)
    action_set = config.env.make_action_set()
    if action_set is None:
        action_set = ActionSet.box(env.action_space.low, env.action_space.high)
    action_set = action_set.with_dim(env.action_space.shape[0])
    width = (action_set.high - action_set.low).numpy()
    rows = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        parts: dict[str, float] = {}
        rewards, at_bound, q_start = [], [], None
        terminated = truncated = False
        while not (terminated or truncated):
            obs_t = torch.as_tensor(obs, dtype=torch.float32)[None]
            action = action_set.project(agent.act(obs_t, trained.step, deterministic=True))
            if q_start is None:
                q_start = critic_value(agent, obs_t, action)
            a = action[0].numpy()
            to_bound = np.minimum(a - action_set.low.numpy(), action_set.high.numpy() - a)
            at_bound.append(to_bound <= 0.01 * width)
            obs, reward, terminated, truncated, info = env.step(a)
            rewards.append(float(reward))
            for key, value in info.items():
                if key.startswith("reward_"):
                    parts[key] = parts.get(key, 0.0) + float(value)
        discounted = sum(config.gamma ** t * r for t, r in enumerate(rewards))
        rows.append({"length": len(rewards), "return": sum(rewards), "terminated": bool(terminated),
                     "final_height": float(obs[0]), "final_angle": float(obs[1]), **parts,
                     "at_bound": float(np.mean(at_bound)), "q_start": q_start, "return_start": discounted})
    env.close()
    keys = [k for k in rows[0] if rows[0][k] is not None]
    mean = {k: float(np.mean([row[k] for row in rows])) for k in keys}
    return {"run": run_dir.name, "algo": trained.algorithm.name, "step": trained.step, "mean": mean, "episodes": rows}


def _diagnose_job(job: dict) -> dict:
    return diagnose(Path(job["run_dir"]), job["episodes"], job["seed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1000, help="episode seeds seed, seed + 1, ...")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one run after another, here)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    add_executor_arguments(parser)
    args = parser.parse_args()
    for run_dir in args.run_dirs:
        if not (run_dir / "config.json").exists():
            raise SystemExit(f"{run_dir} holds no run (no config.json); pass a run directory of a finished run.")

    def show(result: dict) -> None:
        print(f"{result['run']} (step {result['step']}): "
              + ", ".join(f"{k} {v:.3g}" for k, v in result["mean"].items()), flush=True)

    torch.set_num_threads(1)
    jobs = [{"run_dir": str(d), "episodes": args.episodes, "seed": args.seed} for d in args.run_dirs]
    results = run_grid(_diagnose_job, jobs, workers=args.workers, executor=args.executor,
                       ray_address=args.ray_address, on_result=show)
    if args.out:
        save_result(args.out, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
