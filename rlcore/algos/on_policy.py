"""The one training loop for on-policy agents: collect a rollout -> update -> evaluate -> log -> checkpoint.

An on-policy agent provides

* ``explore(obs) -> (actions, extras)``: act for training; ``extras`` is a dict of ``[N, ...]`` tensors the
  agent wants back with the rollout (for example the log-probs of the sampled actions, the normalised
  observations it acted on). It may update running statistics (an observation normaliser).
* ``update(rollout) -> dict of detached tensors``: learn from a whole :class:`Rollout`.
* ``act(obs, step, deterministic)``, ``state_dict()``, ``load_state_dict()``: as for off-policy agents, so
  ``rlcore eval`` and the evaluation protocol treat both kinds alike.

Everything else (run directory, config, TensorBoard, evaluation, checkpoints, bit-for-bit resume, progress
bar) lives here, mirroring :func:`rlcore.training.train_off_policy`, so PPO and RWR share one loop.
Checkpoints are written at rollout boundaries, where the agent holds no half-collected data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from rlcore import envs
from rlcore.session import RunConfig, RunSession, TrainResult


@dataclass
class OnPolicyConfig(RunConfig):
    """Settings shared by every on-policy algorithm (the common ones are in :class:`~rlcore.session.RunConfig`)."""

    total_steps: int = 100_000
    """Environment steps to train for (summed over parallel environments)."""
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


@dataclass
class Rollout:
    """``T = num_steps`` steps of ``N = num_envs`` environments, on the env's device.

    ``obs[t]`` is the observation acted on at step t, ``final_obs[t]`` the true next observation (the last
    observation of the episode where it ended at t, ``info["final_obs"]``), so ``next_values`` for
    :func:`rlcore.objectives.gae` are the values of ``final_obs``.
    """

    obs: torch.Tensor
    """[T, N, obs_dim] raw observations."""
    actions: torch.Tensor
    """[T, N, action_dim] actions as sampled by the agent (before the env projects them onto its set)."""
    rewards: torch.Tensor
    """[T, N]"""
    terminated: torch.Tensor
    """[T, N] bool"""
    truncated: torch.Tensor
    """[T, N] bool"""
    final_obs: torch.Tensor
    """[T, N, obs_dim] true next observations."""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """[T, N, ...] per-step tensors returned by ``explore``."""


class RolloutStorage:
    """Preallocated rollout tensors on the device, filled step by step.

    Each step is copied in (environments may reuse their output buffers) through views made once, so a step
    costs one ``copy_`` per field and no indexing, which is most of the storage's cost with small batches.
    """

    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, action_dim: int, device: torch.device) -> None:
        t, n = num_steps, num_envs
        self.rollout = Rollout(
            obs=torch.zeros(t, n, obs_dim, device=device), actions=torch.zeros(t, n, action_dim, device=device),
            rewards=torch.zeros(t, n, device=device), terminated=torch.zeros(t, n, dtype=torch.bool, device=device),
            truncated=torch.zeros(t, n, dtype=torch.bool, device=device),
            final_obs=torch.zeros(t, n, obs_dim, device=device))
        r = self.rollout
        self._views = list(zip(r.obs, r.actions, r.rewards, r.terminated, r.truncated, r.final_obs, strict=True))
        self._extra_views: dict[str, list[torch.Tensor]] = {}

    def add(self, t: int, obs: torch.Tensor, actions: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
            truncated: torch.Tensor, final_obs: torch.Tensor, extras: dict[str, torch.Tensor]) -> None:
        obs_view, actions_view, reward_view, terminated_view, truncated_view, final_obs_view = self._views[t]
        obs_view.copy_(obs.reshape(obs_view.shape))  # [N, *obs_shape] -> [N, obs_dim]
        actions_view.copy_(actions)
        reward_view.copy_(reward)
        terminated_view.copy_(terminated)
        truncated_view.copy_(truncated)
        final_obs_view.copy_(final_obs.reshape(obs_view.shape))
        for key, value in extras.items():
            if key not in self._extra_views:
                storage = torch.zeros((len(self._views), *value.shape), dtype=value.dtype, device=value.device)
                self.rollout.extras[key] = storage
                self._extra_views[key] = list(storage)
            self._extra_views[key][t].copy_(value)


def episode_statistics(rewards: torch.Tensor, done: torch.Tensor, episode_return: torch.Tensor,
                       episode_length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                              torch.Tensor, torch.Tensor]:
    """Returns and lengths of the episodes that ended in a rollout, without a loop over its steps.

    Step ``t`` of env ``n`` belongs to that env's episode number ``k = (done[:t, n]).sum()`` within the rollout;
    episode 0 continues the one in progress (``episode_return``, ``episode_length`` carried in), and those with
    ``k < done[:, n].sum()`` ended. The sums add the rewards in time order, as a step-by-step running sum would.

    Args:
        rewards: ``[T, N]``.
        done: ``[T, N]`` bool, terminated or truncated.
        episode_return: ``[N]`` return so far of the episodes in progress at the rollout's start.
        episode_length: ``[N]`` integer length so far of those episodes.

    Returns:
        (ended_count, ended_return_sum, ended_length_sum, episode_return, episode_length): the number of ended
        episodes and the sums of their returns and lengths (0-dim tensors), and the running return and length
        of the episodes in progress at the rollout's end (``[N]``).
    """
    steps, n = rewards.shape
    ends = done.long()
    episode = ends.cumsum(0) - ends  # episode index of each step within the rollout
    ended = ends.sum(0)  # [N]: episodes 0 .. ended - 1 of env n ended in this rollout
    totals = torch.zeros(steps + 1, n, dtype=rewards.dtype, device=rewards.device)
    totals[0] = episode_return
    totals.scatter_add_(0, episode, rewards)
    lengths = torch.zeros(steps + 1, n, dtype=episode_length.dtype, device=rewards.device)
    lengths[0] = episode_length
    lengths.scatter_add_(0, episode, torch.ones_like(episode, dtype=episode_length.dtype))
    finished = torch.arange(steps + 1, device=rewards.device)[:, None] < ended
    ended_return = (totals * finished).sum()
    ended_length = (lengths * finished).sum()
    index = ended[None]
    return (ended.sum(), ended_return, ended_length, totals.gather(0, index)[0], lengths.gather(0, index)[0])


class ObsNormalizer(nn.Module):
    """Running mean and variance of observations (Chan et al.'s parallel update), clipped standardisation.

        normalise(o) = clip((o − μ) / sqrt(σ² + ε), −clip, clip)

    A module with buffers, so the statistics live in the agent's ``state_dict`` and a saved agent evaluates
    with the statistics it trained with (what CleanRL's wrapper-based normalisation loses).

    Both methods run at every environment step, so they are kept to a few same-dtype ops: the count is
    mirrored in a Python float (the batch's share is a plain number: no 0-dim tensor arithmetic, no host
    sync), and :meth:`forward` applies float32 copies of μ and 1/sqrt(σ² + ε) that are derived from the
    float64 statistics whenever these change (they are not saved).
    """

    def __init__(self, shape: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.register_buffer("mean32", torch.zeros(shape), persistent=False)
        self.register_buffer("inv_std32", torch.ones(shape), persistent=False)
        self._count = 1e-4
        self._refresh()

    @torch.no_grad()
    def update(self, obs: torch.Tensor) -> None:
        """Fold a batch ``[B, shape]`` into the statistics.

            μ ← μ + δ n/(m + n),   σ² ← (m σ² + n s² + δ² m n/(m + n)) / (m + n),   δ = x̄ − μ
        """
        mean, var = self.mean, self.var  # (each buffer lookup goes through Module.__getattr__)
        x = obs.reshape(-1, mean.shape[0]).to(torch.float64)
        n = x.shape[0]
        frac = n / (self._count + n)  # the batch's share of the new total
        if n == 1:  # one environment: x̄ = x and s² = 0, without var_mean's cost
            delta = x[0] - mean
            var.mul_(1 - frac)
        else:
            batch_var, batch_mean = torch.var_mean(x, dim=0, unbiased=False)
            delta = batch_mean - mean
            var.lerp_(batch_var, frac)
        mean.add_(delta, alpha=frac)
        var.addcmul_(delta, delta, value=frac * (1 - frac))
        self._count += n
        self.count.fill_(self._count)
        self._refresh()

    def _refresh(self) -> None:
        # Only buffers that need no gradient are involved, so no no_grad context is needed.
        self.mean32.copy_(self.mean)
        self.inv_std32.copy_(self.var.add(self.eps).rsqrt_())

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._count = float(self.count)
        self._refresh()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self.mean32, self.inv_std32
        if obs.dtype != mean.dtype:
            mean, inv_std = mean.to(obs.dtype), inv_std.to(obs.dtype)
        return ((obs - mean) * inv_std).clamp_(-self.clip, self.clip)


class OnPolicyAgent(Protocol):
    def explore(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def update(self, rollout: Rollout, progress: float) -> dict[str, torch.Tensor]: ...

    def act(self, obs: torch.Tensor, step: int = 0, deterministic: bool = False) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


AgentFactory = Callable[[Any, envs.BatchedEnv], OnPolicyAgent]


def train_on_policy(algo: str, config: OnPolicyConfig, make_agent: AgentFactory) -> TrainResult:
    """Train ``make_agent(config, env)`` on ``config.env``; resume from ``config.resume`` if set.

    ``update`` receives ``progress`` in [0, 1), the fraction of ``total_steps`` done before the rollout (for
    learning-rate annealing).
    """
    session = RunSession(algo, config)
    env, logger = session.env, session.logger
    agent = make_agent(config, env)
    storage = RolloutStorage(config.num_steps, env.num_envs, env.obs_dim, env.action_dim, env.device)
    obs, _ = env.reset(seed=config.seed)
    episode_return = torch.zeros(env.num_envs, device=env.device)
    episode_length = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)
    checkpoint = session.resume(agent)
    if checkpoint is not None:
        loop = checkpoint["loop"]
        obs, episode_return, episode_length = (loop[k].to(env.device) for k in ("obs", "episode_return",
                                                                                   "episode_length"))

    def loop_state() -> dict[str, Any]:
        return {"loop": {"obs": obs, "episode_return": episode_return, "episode_length": episode_length}}

    collect_total = update_total = 0.0
    while not session.finished:
        rollout_start = time.perf_counter()
        for t in range(config.num_steps):
            actions, extras = agent.explore(obs)
            next_obs, reward, terminated, truncated, info = env.step(actions)
            storage.add(t, obs, actions, reward, terminated, truncated, info["final_obs"], extras)
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
