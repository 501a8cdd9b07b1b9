"""The one training loop for off-policy agents: collect -> store -> update -> evaluate -> log -> checkpoint.

An agent provides ``act(obs, step, deterministic)``, ``update(batch) -> dict of detached tensors``,
``state_dict()`` and ``load_state_dict()``; everything else (environments, replay, evaluation,
TensorBoard, checkpoints, resume, the progress bar) lives here, so a fix lands once for every
algorithm.

**Critic against return.** When ``update`` reports ``q_mean`` (the mean Q of its batch), each evaluation record
also holds ``q_mean``, the average of those since the previous evaluation, and TensorBoard shows it as
``eval/q_mean`` in one chart with ``eval/return_mean`` ("q_mean vs eval return"), so that a critic that runs away
from the returns the policy actually gets is visible in every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rlcore import envs
from rlcore.envs.spaces import sample_actions
from rlcore.envs.structured import obs_to
from rlcore.loops.checks import require_at_least
from rlcore.loops.replay import ReplayBuffer, TransitionBatch
from rlcore.loops.session import (
    EnvSource,
    RunConfig,
    RunSession,
    TrainResult,
    crossed,
    make_env,
    run_session,
)

__all__ = ["AgentFactory", "OffPolicyAgent", "RunConfig", "TrainConfig", "TrainResult", "UpdateSchedule", "make_env",
           "train_off_policy"]


@dataclass
class TrainConfig(RunConfig):
    """Settings shared by every off-policy algorithm (the common ones are in `RunConfig`)."""

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
    log_interval: int = 1_000
    """Write training scalars to TensorBoard every this many environment steps."""

    def validate(self) -> None:
        super().validate()
        require_at_least(self, 1, "batch_size", "buffer_size", "log_interval")
        require_at_least(self, 0, "updates_per_step", "learning_starts", "random_steps")


class OffPolicyAgent(Protocol):
    """What :func:`train_off_policy` needs of an agent: acting (``step`` for schedules such as decaying
    exploration noise; ``deterministic`` for evaluation), an update on a replay batch returning metrics as
    tensors (read at logging time, so no step waits for the device), and its whole state for checkpoints."""

    def act(self, obs: torch.Tensor, step: int, deterministic: bool = False) -> torch.Tensor: ...

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


AgentFactory = Callable[[Any, envs.BatchedEnv], OffPolicyAgent]


def train_off_policy(algo: str, config: TrainConfig, make_agent: AgentFactory, env: EnvSource | None = None,
                     eval_env: EnvSource | None = None) -> TrainResult:
    """Train ``make_agent(config, env)``; resume from ``config.resume`` if set.

    ``env`` / ``eval_env`` are environments or factories ``seed -> BatchedEnv`` (see
    :class:`~rlcore.loops.session.RunSession`); None builds them from ``config.env``.
    """
    return run_session(algo, config, make_agent, _run, env, eval_env, distributed_loop="run_off_policy")


class UpdateSchedule:
    """The learner's side of each environment step, shared by the local and the distributed off-policy loops:
    ``updates_per_step`` credit once ``learning_starts`` steps are in, the updates, the critic's ``q_mean``
    (summed as tensors: no host sync per update) and the training scalars every ``log_interval`` steps."""

    def __init__(self, config: TrainConfig, step: int) -> None:
        self.config = config
        self.update_credit, self.updates_done = 0.0, 0
        self.q_sum, self.q_count = torch.zeros((), dtype=torch.float64, device=config.device), 0
        self.last_log_time, self.last_log_step = time.perf_counter(), step

    def after_step(self, agent: OffPolicyAgent, replay: ReplayBuffer, logger: Any, step: int, new_step: int,
                   num_envs: int) -> None:
        """What follows the environment step from ``step`` to ``new_step`` (``num_envs`` transitions stored)."""
        config = self.config
        if new_step >= config.learning_starts:
            self.update_credit += config.updates_per_step * num_envs
            while self.update_credit >= 1:
                metrics = agent.update(replay.sample(config.batch_size))
                logger.accumulate(metrics)
                if "q_mean" in metrics:
                    self.q_sum = self.q_sum + metrics["q_mean"].detach().to(self.q_sum.dtype)
                    self.q_count += 1
                self.update_credit -= 1
                self.updates_done += 1
        if crossed(step, new_step, config.log_interval):
            now = time.perf_counter()
            logger.flush(new_step)
            logger.scalar("train/steps_per_second",
                          (new_step - self.last_log_step) / max(now - self.last_log_time, 1e-9), new_step)
            self.last_log_time, self.last_log_step = now, new_step

    def critic_summary(self) -> dict[str, float]:
        """Called at each evaluation: the mean of the updates' q_mean since the previous one (then reset)."""
        summary = {"q_mean": float(self.q_sum) / self.q_count} if self.q_count else {}
        self.q_sum, self.q_count = torch.zeros_like(self.q_sum), 0
        return summary

    def state_dict(self) -> dict[str, Any]:
        return {"update_credit": self.update_credit, "updates_done": self.updates_done, "q_sum": self.q_sum,
                "q_count": self.q_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.update_credit, self.updates_done = state["update_credit"], state["updates_done"]
        if "q_sum" in state:  # checkpoints of rlcore 0.1 have no critic sums
            self.q_sum, self.q_count = state["q_sum"].to(self.q_sum.device), state["q_count"]


def _run(session: RunSession, config: TrainConfig, agent: OffPolicyAgent) -> TrainResult:
    env = session.env
    replay = ReplayBuffer(config.buffer_size, config.device, seed=config.seed)
    explore_generator = torch.Generator(device=env.device).manual_seed(config.seed + 1)
    obs, _ = env.reset(seed=config.seed)
    episode_return = torch.zeros(env.num_envs, device=env.device)
    episode_length = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)
    checkpoint = session.start(agent)
    logger = session.logger
    schedule = UpdateSchedule(config, session.step)
    if checkpoint is not None:
        replay.load_state_dict(checkpoint["replay"])
        loop = checkpoint["loop"]
        schedule.load_state_dict(loop)
        obs = obs_to(loop["obs"], env.device)
        episode_return, episode_length = (loop[k].to(env.device) for k in ("episode_return", "episode_length"))
        explore_generator.set_state(loop["explore_generator"])

    def loop_state() -> dict[str, Any]:
        return {"replay": replay.state_dict(), "loop": {
            **schedule.state_dict(), "obs": obs, "episode_return": episode_return, "episode_length": episode_length,
            "explore_generator": explore_generator.get_state()}}

    logger.layout_q_against_return()
    while not session.finished:
        step = session.step
        if step < config.random_steps:
            actions = sample_actions(env.action_space, env.num_envs, explore_generator, obs, env.action_set)
        else:
            actions = agent.act(obs, step, deterministic=False)
        next_obs, reward, terminated, truncated, info = env.step(actions)
        replay.add(obs, info["applied_actions"], reward, info["final_obs"], terminated)
        episode_return += reward
        episode_length += 1
        done = terminated | truncated
        logger.accumulate_masked({"episode_return": episode_return, "episode_length": episode_length,
                                  **info.get("episode_metrics", {})}, done)
        episode_return = episode_return * ~done
        episode_length = episode_length * ~done
        obs = next_obs
        new_step = step + env.num_envs
        schedule.after_step(agent, replay, logger, step, new_step, env.num_envs)
        session.advance(new_step, agent, loop_state, schedule.critic_summary)
    return session.finish(agent, agent.summary() if hasattr(agent, "summary") else {})
