"""What every training loop shares: the common settings and one run's session.

A :class:`RunSession` owns everything around the algorithm-specific loop: validating the config,
the run directory (new, or the one being resumed), seeding, the training and evaluation
environments, TensorBoard, the evaluation protocol, checkpoints, the progress bar and the summary.
The off-policy loop (:mod:`rlcore.training`) and the on-policy loop (:mod:`rlcore.algos.on_policy`)
keep only what differs: how they collect data and when they update.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from rlcore import envs
from rlcore.checkpoint import global_rng_state, load_checkpoint, save_checkpoint, set_global_rng_state
from rlcore.evaluation import evaluate
from rlcore.runs import RunLogger, new_run_dir, read_evaluations, save_config
from solvers import ActionSet


@dataclass
class RunConfig:
    """Settings shared by every algorithm: the task, the budget, evaluation, checkpoints, where logs go."""

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
    eval_interval: int = 2_500
    """Evaluate every this many environment steps (and at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation (deterministic policy, separate environments)."""
    checkpoint_interval: int = 5_000
    """Write a checkpoint every this many environment steps (and at the end)."""
    seed: int = 1
    """Seed for networks, environments, sampling and exploration."""
    device: str = "cpu"
    """Torch device for networks, storage and environment outputs."""
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
        for name in ("total_steps", "eval_interval", "eval_episodes", "checkpoint_interval", "num_envs",
                     "torch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.action_bound is not None and not self.action_bound > 0:
            raise ValueError(f"action_bound must be > 0, got {self.action_bound}.")

    def make_action_set(self) -> ActionSet | None:
        if self.action_bound is None:
            return None
        c = float(self.action_bound)
        if self.action_set == "box":
            return ActionSet.box(-c, c)
        return getattr(ActionSet, self.action_set)(0.0, c)


@dataclass
class TrainResult:
    """What every ``train`` function returns."""

    agent: Any
    run_dir: Path
    evaluations: list[dict[str, Any]]
    """One record per evaluation: step, return_mean, return_std, returns, wall_seconds."""

    @property
    def final_return(self) -> float:
        return self.evaluations[-1]["return_mean"] if self.evaluations else float("nan")


def make_env(config: RunConfig, num_envs: int) -> envs.BatchedEnv:
    return envs.make(config.env, num_envs=num_envs, device=config.device, action_set=config.make_action_set(),
                     vectorization=config.vectorization if num_envs > 1 else "sync", backend=config.backend)


def crossed(before: int, after: int, interval: int) -> bool:
    """Whether a multiple of ``interval`` lies in ``(before, after]``."""
    return after // interval > before // interval


class RunSession:
    """One training run's directory, environments, logger, evaluations, checkpoints and progress bar.

    Construction validates the config, opens the run directory (loading its checkpoint when resuming),
    seeds the global generators and builds ``env`` and ``eval_env``. The loop then builds its agent and
    storage and calls :meth:`resume`, reports progress through :meth:`advance`, and ends with
    :meth:`finish`.
    """

    def __init__(self, algo: str, config: RunConfig) -> None:
        config.validate()
        torch.set_num_threads(config.torch_threads)
        self.algo, self.config = algo, config
        if config.resume:
            self.run_dir = Path(config.resume)
            self.checkpoint = load_checkpoint(self.run_dir / "checkpoint.pt", map_location=config.device)
        else:
            self.run_dir = Path(config.run_dir) if config.run_dir else new_run_dir(config.log_root, algo,
                                                                                   config.env, config.seed)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.checkpoint = None
        save_config(self.run_dir, algo, config)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        self.env = make_env(config, config.num_envs)
        self.eval_env = make_env(config, config.eval_episodes)
        self.eval_seed = config.seed + 1_000_003
        self.step = self.checkpoint["step"] if self.checkpoint is not None else 0
        self.evaluations = [e for e in read_evaluations(self.run_dir) if e["step"] <= self.step]
        self.logger = RunLogger(self.run_dir, purge_step=self.step if self.checkpoint is not None else None)
        self.start_time, self.start_step = time.perf_counter(), self.step
        self.bar = tqdm(total=config.total_steps, initial=self.step, disable=not config.progress, unit="step",
                        desc=f"{algo} {config.env}", dynamic_ncols=True)

    def resume(self, agent: Any) -> dict[str, Any] | None:
        """Restore the agent, the environments' simulator state and the global RNGs from the checkpoint
        (after the agent was built, so that its initialisation does not consume the restored RNGs);
        returns the checkpoint, whose other parts (replay, loop state) the loop restores, or None."""
        if self.checkpoint is None:
            return None
        agent.load_state_dict(self.checkpoint["agent"])
        self.env.load_state_dict(self.checkpoint["env"])
        set_global_rng_state(self.checkpoint["rng"])
        return self.checkpoint

    def evaluate(self, agent: Any) -> None:
        """The evaluation protocol: deterministic policy, ``eval_episodes`` environments, one episode each."""
        step = self.step
        returns = evaluate(lambda o: agent.act(o, step, deterministic=True), self.eval_env, seed=self.eval_seed)
        # Population std: defined for a single evaluation episode too.
        record = {"step": step, "return_mean": float(returns.mean()), "return_std": float(returns.std(0, correction=0)),
                  "returns": returns.tolist(), "wall_seconds": time.perf_counter() - self.start_time}
        self.evaluations.append(record)
        self.logger.evaluation(record)
        self.bar.set_postfix(eval_return=f"{record['return_mean']:.1f}")

    def save(self, agent: Any, state: dict[str, Any]) -> None:
        """Write the checkpoint: the agent, the environments, the global RNGs and the loop's own ``state``."""
        save_checkpoint(self.run_dir / "checkpoint.pt", {
            "algo": self.algo, "config": dataclasses.asdict(self.config), "step": self.step,
            "agent": agent.state_dict(), "env": self.env.state_dict(), "rng": global_rng_state(), **state})

    def advance(self, new_step: int, agent: Any, state: Callable[[], dict[str, Any]]) -> None:
        """Move to ``new_step``; evaluate and checkpoint when an interval (or the end) is crossed."""
        previous, self.step = self.step, new_step
        self.bar.update(new_step - previous)
        done = new_step >= self.config.total_steps
        if crossed(previous, new_step, self.config.eval_interval) or done:
            self.evaluate(agent)
        if crossed(previous, new_step, self.config.checkpoint_interval) or done:
            self.save(agent, state())

    @property
    def finished(self) -> bool:
        return self.step >= self.config.total_steps

    def finish(self, agent: Any, extra_summary: dict[str, Any] | None = None) -> TrainResult:
        """Close everything and write ``summary.json``."""
        self.bar.close()
        self.logger.close()
        self.env.close()
        self.eval_env.close()
        seconds = time.perf_counter() - self.start_time
        final = self.evaluations[-1] if self.evaluations else {}
        summary = {"algo": self.algo, "env": self.config.env, "seed": self.config.seed, "steps": self.step,
                   "final_return_mean": final.get("return_mean", math.nan),
                   "final_return_std": final.get("return_std", math.nan), "wall_seconds_this_session": seconds,
                   "steps_per_second_this_session": (self.step - self.start_step) / max(seconds, 1e-9),
                   **(extra_summary or {})}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return TrainResult(agent=agent, run_dir=self.run_dir, evaluations=self.evaluations)
