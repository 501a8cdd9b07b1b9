"""The one training loop for off-policy agents: collect -> store -> update -> evaluate -> log -> checkpoint.

An agent provides ``act(obs, step, deterministic)``, ``update(batch) -> dict of detached tensors``,
``state_dict()`` and ``load_state_dict()``; everything else (environments, replay, evaluation,
TensorBoard, checkpoints, resume, the progress bar) lives here, so a fix lands once for every
algorithm.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from rlcore import envs
from rlcore.checkpoint import global_rng_state, load_checkpoint, save_checkpoint, set_global_rng_state
from rlcore.evaluation import evaluate
from rlcore.replay import ReplayBuffer, TransitionBatch
from rlcore.runs import RunLogger, new_run_dir, read_evaluations, save_config
from solvers import ActionSet


@dataclass
class TrainConfig:
    """Settings shared by every off-policy algorithm."""

    env: str = "Pendulum-v1"
    """Gymnasium environment id."""
    action_bound: float | None = None
    """Constrain actions to a set of this size (a box [-c, c]^d, or a ball of radius c; see action_set)."""
    action_set: Literal["box", "l2_ball", "l1_ball"] = "box"
    """Shape of the constraint that action_bound sets."""
    num_envs: int = 1
    """Parallel training environments."""
    vectorization: Literal["sync", "async"] = "sync"
    """Gymnasium vector env type; only 'sync' can be checkpointed exactly."""
    backend: str = "gymnasium"
    """Environment backend: 'gymnasium', 'torch' (tensor envs on `device`), 'mjwarp' or 'auto' (see envs.make)."""
    total_steps: int = 15_000
    """Environment steps to train for (summed over parallel environments)."""
    learning_starts: int = 1_280
    """Environment steps collected before the first update."""
    random_steps: int = 0
    """Environment steps with uniformly random actions from the action set at the start."""
    batch_size: int = 64
    """Transitions per gradient update."""
    buffer_size: int = 100_000
    """Replay capacity (FIFO)."""
    updates_per_step: float = 1.0
    """Gradient updates per environment step."""
    eval_interval: int = 2_500
    """Evaluate every this many environment steps (and at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation (deterministic policy, separate environments)."""
    checkpoint_interval: int = 5_000
    """Write a checkpoint every this many environment steps (and at the end)."""
    log_interval: int = 1_000
    """Write training scalars to TensorBoard every this many environment steps."""
    seed: int = 1
    """Seed for networks, environments, replay sampling and exploration."""
    device: str = "cpu"
    """Torch device for networks, replay and environment outputs."""
    torch_threads: int = 1
    """torch.set_num_threads; one is fastest for small networks (and for parallel seeds)."""
    log_root: str = "runs"
    """Parent folder of new run directories."""
    run_dir: str | None = None
    """Use this run directory instead of a new one under log_root."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint."""
    progress: bool = True
    """Show a progress bar."""

    def validate(self) -> None:
        for name in ("total_steps", "batch_size", "buffer_size", "eval_interval", "eval_episodes",
                     "checkpoint_interval", "log_interval", "num_envs", "torch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.updates_per_step < 0 or self.learning_starts < 0 or self.random_steps < 0:
            raise ValueError("updates_per_step, learning_starts and random_steps must be >= 0.")
        if self.action_bound is not None and not self.action_bound > 0:
            raise ValueError(f"action_bound must be > 0, got {self.action_bound}.")

    def make_action_set(self) -> ActionSet | None:
        if self.action_bound is None:
            return None
        c = float(self.action_bound)
        if self.action_set == "box":
            return ActionSet.box(-c, c)
        return getattr(ActionSet, self.action_set)(0.0, c)


class OffPolicyAgent(Protocol):
    def act(self, obs: torch.Tensor, step: int, deterministic: bool = False) -> torch.Tensor: ...

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    """What :func:`train_off_policy` returns."""

    agent: Any
    run_dir: Path
    evaluations: list[dict[str, Any]]
    """One record per evaluation: step, return_mean, return_std, returns, wall_seconds."""

    @property
    def final_return(self) -> float:
        return self.evaluations[-1]["return_mean"] if self.evaluations else float("nan")


AgentFactory = Callable[[Any, envs.BatchedEnv], OffPolicyAgent]


def make_env(config: TrainConfig, num_envs: int) -> envs.BatchedEnv:
    return envs.make(config.env, num_envs=num_envs, device=config.device, action_set=config.make_action_set(),
                     vectorization=config.vectorization if num_envs > 1 else "sync", backend=config.backend)


def train_off_policy(algo: str, config: TrainConfig, make_agent: AgentFactory) -> TrainResult:
    """Train ``make_agent(config, env)`` on ``config.env``; resume from ``config.resume`` if set."""
    config.validate()
    torch.set_num_threads(config.torch_threads)
    if config.resume:
        run_dir = Path(config.resume)
        checkpoint = load_checkpoint(run_dir / "checkpoint.pt", map_location=config.device)
    else:
        run_dir = Path(config.run_dir) if config.run_dir else new_run_dir(config.log_root, algo, config.env,
                                                                           config.seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = None
    save_config(run_dir, algo, config)

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    env = make_env(config, config.num_envs)
    eval_env = make_env(config, config.eval_episodes)
    agent = make_agent(config, env)
    replay = ReplayBuffer(config.buffer_size, env.obs_dim, env.action_dim, config.device, seed=config.seed)
    explore_generator = torch.Generator(device=env.device).manual_seed(config.seed + 1)
    eval_seed = config.seed + 1_000_003

    step, update_credit, updates_done = 0, 0.0, 0
    obs, _ = env.reset(seed=config.seed)
    episode_return = torch.zeros(env.num_envs, device=env.device)
    episode_length = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)
    if checkpoint is not None:
        agent.load_state_dict(checkpoint["agent"])
        replay.load_state_dict(checkpoint["replay"])
        env.load_state_dict(checkpoint["env"])
        loop = checkpoint["loop"]
        step, update_credit, updates_done = loop["step"], loop["update_credit"], loop["updates_done"]
        obs, episode_return, episode_length = (loop[k].to(env.device) for k in ("obs", "episode_return",
                                                                                   "episode_length"))
        explore_generator.set_state(loop["explore_generator"])
        set_global_rng_state(checkpoint["rng"])
    evaluations = [e for e in read_evaluations(run_dir) if e["step"] <= step]
    logger = RunLogger(run_dir, purge_step=step if checkpoint is not None else None)

    def save(at_step: int) -> None:
        loop = {"step": at_step, "update_credit": update_credit, "updates_done": updates_done, "obs": obs,
                "episode_return": episode_return, "episode_length": episode_length,
                "explore_generator": explore_generator.get_state()}
        save_checkpoint(run_dir / "checkpoint.pt", {
            "algo": algo, "config": dataclasses.asdict(config), "step": at_step, "agent": agent.state_dict(),
            "replay": replay.state_dict(), "env": env.state_dict(), "loop": loop, "rng": global_rng_state()})

    def run_evaluation(at_step: int) -> None:
        returns = evaluate(lambda o: agent.act(o, at_step, deterministic=True), eval_env, seed=eval_seed)
        record = {"step": at_step, "return_mean": float(returns.mean()), "return_std": float(returns.std(0)),
                  "returns": returns.tolist(), "wall_seconds": time.perf_counter() - start_time}
        evaluations.append(record)
        logger.evaluation(record)
        bar.set_postfix(eval_return=f"{record['return_mean']:.1f}")

    start_time, start_step = time.perf_counter(), step
    last_log_time, last_log_step = start_time, step
    bar = tqdm(total=config.total_steps, initial=step, disable=not config.progress, unit="step",
               desc=f"{algo} {config.env}", dynamic_ncols=True)
    while step < config.total_steps:
        if step < config.random_steps:
            actions = env.action_set.sample(env.num_envs, explore_generator)
        else:
            actions = agent.act(obs, step, deterministic=False)
        next_obs, reward, terminated, truncated, info = env.step(actions)
        replay.add(obs, info["applied_actions"], reward, info["final_obs"], terminated)
        episode_return += reward
        episode_length += 1
        done = terminated | truncated
        logger.accumulate_masked({"episode_return": episode_return, "episode_length": episode_length}, done)
        episode_return = episode_return * ~done
        episode_length = episode_length * ~done
        obs = next_obs
        previous_step, step = step, step + env.num_envs
        bar.update(env.num_envs)

        if step >= config.learning_starts:
            update_credit += config.updates_per_step * env.num_envs
            while update_credit >= 1:
                logger.accumulate(agent.update(replay.sample(config.batch_size)))
                update_credit -= 1
                updates_done += 1

        if _crossed(previous_step, step, config.log_interval):
            now = time.perf_counter()
            logger.flush(step)
            logger.scalar("train/steps_per_second", (step - last_log_step) / max(now - last_log_time, 1e-9), step)
            last_log_time, last_log_step = now, step
        if _crossed(previous_step, step, config.eval_interval) or step >= config.total_steps:
            run_evaluation(step)
        if _crossed(previous_step, step, config.checkpoint_interval) or step >= config.total_steps:
            save(step)
    bar.close()
    logger.close()
    env.close()
    eval_env.close()
    extra = agent.summary() if hasattr(agent, "summary") else {}
    _write_summary(run_dir, algo, config, evaluations, step, step - start_step, time.perf_counter() - start_time,
                   extra)
    return TrainResult(agent=agent, run_dir=run_dir, evaluations=evaluations)


def _crossed(before: int, after: int, interval: int) -> bool:
    return after // interval > before // interval


def _write_summary(run_dir: Path, algo: str, config: TrainConfig, evaluations: list[dict[str, Any]], steps: int,
                   session_steps: int, seconds: float, extra: dict[str, Any]) -> None:
    import json

    final = evaluations[-1] if evaluations else {}
    summary = {"algo": algo, "env": config.env, "seed": config.seed, "steps": steps,
               "final_return_mean": final.get("return_mean", math.nan),
               "final_return_std": final.get("return_std", math.nan),
               "wall_seconds_this_session": seconds,
               "steps_per_second_this_session": session_steps / max(seconds, 1e-9)}
    summary.update(extra)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
