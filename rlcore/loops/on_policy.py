"""The one training loop for on-policy agents: collect a rollout -> update -> evaluate -> log -> checkpoint.

An on-policy agent provides

* ``explore(obs) -> (actions, extras)``: act for training; ``extras`` is a dict of ``[N, ...]`` tensors the
  agent wants back with the rollout (for example the log-probs of the sampled actions, the normalised
  observations it acted on). It may update running statistics (an observation normaliser).
* ``update(rollout) -> dict of detached tensors``: learn from a whole :class:`Rollout`.
* ``act(obs, step, deterministic)``, ``state_dict()``, ``load_state_dict()``: as for off-policy agents, so
  ``rlcore eval`` and the evaluation protocol treat both kinds alike.

Everything else (run directory, config, TensorBoard, evaluation, checkpoints, bit-for-bit resume, progress
bar) lives here, mirroring :func:`rlcore.loops.off_policy.train_off_policy`, so PPO and RWR share one loop.
Checkpoints are written at rollout boundaries, where the agent holds no half-collected data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rlcore import envs
from rlcore.envs.structured import obs_to
from rlcore.loops.rollout_storage import Rollout, RolloutStorage, episode_statistics
from rlcore.loops.session import (
    EnvSource,
    RunConfig,
    RunSession,
    TrainResult,
    run_session,
)


@dataclass
class OnPolicyConfig(RunConfig):
    """Settings shared by every on-policy algorithm (the common ones are in `RunConfig`)."""

    total_steps: int = 100_000
    """Environment steps to train for (summed over parallel environments), rounded up to whole rollouts of
    num_steps * num_envs steps (the default 100,000 trains 49 rollouts of 2,048: 100,352 steps)."""
    eval_interval: int = 10_000
    """Evaluate every this many environment steps (and at the end), at the next rollout boundary."""
    checkpoint_interval: int = 20_000
    """Write a checkpoint every this many environment steps (and at the end), at a rollout boundary."""
    num_steps: int = 2048
    """Steps per environment in each rollout (a rollout holds num_steps * num_envs transitions)."""

    def validate(self) -> None:
        super().validate()
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}.")


class OnPolicyAgent(Protocol):
    """What :func:`train_on_policy` needs of an agent: ``explore`` (sampled actions and what the update needs
    of them, such as log-probabilities and values), an update on a whole rollout with the fraction of the budget
    done (for annealing), deterministic acting for evaluation, and its whole state for checkpoints."""

    def explore(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def update(self, rollout: Rollout, progress: float) -> dict[str, torch.Tensor]: ...

    def act(self, obs: torch.Tensor, step: int = 0, deterministic: bool = False) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


AgentFactory = Callable[[Any, envs.BatchedEnv], OnPolicyAgent]


def train_on_policy(algo: str, config: OnPolicyConfig, make_agent: AgentFactory, env: EnvSource | None = None,
                    eval_env: EnvSource | None = None) -> TrainResult:
    """Train ``make_agent(config, env)``; resume from ``config.resume`` if set.

    ``env`` / ``eval_env`` are environments or factories ``seed -> BatchedEnv`` (see
    :class:`~rlcore.loops.session.RunSession`); None builds them from ``config.env``. ``update`` receives
    ``progress`` in [0, 1), the fraction of ``total_steps`` done before the rollout (for learning-rate annealing).
    """
    return run_session(algo, config, make_agent, _run, env, eval_env, distributed_loop="run_on_policy")


def _run(session: RunSession, config: OnPolicyConfig, agent: OnPolicyAgent) -> TrainResult:
    env = session.env
    storage = RolloutStorage(config.num_steps, env.num_envs, env.device)
    obs, _ = env.reset(seed=config.seed)
    episode_return = torch.zeros(env.num_envs, device=env.device)
    episode_length = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)
    checkpoint = session.start(agent)
    logger = session.logger
    if checkpoint is not None:
        loop = checkpoint["loop"]
        obs = obs_to(loop["obs"], env.device)
        episode_return, episode_length = (loop[k].to(env.device) for k in ("episode_return", "episode_length"))

    def loop_state() -> dict[str, Any]:
        return {"loop": {"obs": obs, "episode_return": episode_return, "episode_length": episode_length}}

    collect_total = update_total = 0.0
    while not session.finished:
        rollout_start = time.perf_counter()
        for t in range(config.num_steps):
            actions, extras = agent.explore(obs)
            next_obs, reward, terminated, truncated, info = env.step(actions)
            storage.add(t, obs, actions, reward, terminated, truncated, info["final_obs"], extras)
            if "episode_metrics" in info:
                logger.accumulate_masked(info["episode_metrics"], terminated | truncated)
            obs = next_obs
        rollout = storage.rollout
        collect_seconds = time.perf_counter() - rollout_start
        # Finished episodes are summed on the device once per rollout (no host sync, no work per step).
        count, ended_return, ended_length, episode_return, episode_length = episode_statistics(
            rollout.rewards, rollout.terminated | rollout.truncated, episode_return, episode_length)
        if count > 0:
            logger.accumulate({"episode_return": ended_return / count, "episode_length": ended_length / count})
        step = session.step
        new_step = step + config.num_steps * env.num_envs
        update_start = time.perf_counter()
        logger.accumulate(agent.update(rollout, step / config.total_steps))
        update_total += time.perf_counter() - update_start
        collect_total += collect_seconds

        # One rollout is one logging period: its mean metrics, and the speed of collection and of the whole.
        logger.flush(new_step)
        now = time.perf_counter()
        logger.scalar("train/steps_per_second", (new_step - step) / max(now - rollout_start, 1e-9), new_step)
        logger.scalar("train/collect_seconds", collect_seconds, new_step)
        session.advance(new_step, agent, loop_state)
    return session.finish(agent, {"collect_seconds_this_session": collect_total,
                                  "update_seconds_this_session": update_total})
