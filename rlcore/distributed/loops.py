"""The learner's loops for a distributed run: the local loops' bookkeeping, with collection on rollout actors.

Off-policy (CAQL, SAC, MBPO, VMBPO): the learner takes the actors' batches in a fixed round-robin order and
replays each one step by step into the replay buffer, with the updates, logging and evaluation the local loop
does after every environment step, then sends the actor its next request (before learning from the batch when
``pipeline`` is on). Weights go out with the first request after ``sync_interval`` updates. The fixed order makes
a run deterministic for a given seed and number of workers; with one worker, ``batch_steps=1``, ``sync_interval=1`` and
``pipeline=False`` the learner ends bit for bit where the local loop ends (the actor acts on the weights the local
loop would act on, with the same generator streams).

On-policy (PPO, RWR): every rollout, each actor collects ``num_steps`` steps of its ``num_envs`` environments with
the current weights; the learner joins them along the environment dimension (``workers * num_envs`` columns),
updates its observation statistics from them (``agent.observe``), and learns from the whole. PPO and RWR draw
their action noise and their minibatch order from one generator, which the actors cannot share with the learner,
so a distributed on-policy run is deterministic but not equal to a local one.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from rlcore.distributed.actor import policy_weights
from rlcore.distributed.pool import RolloutPool
from rlcore.envs.structured import obs_to
from rlcore.loops.off_policy import UpdateSchedule
from rlcore.loops.replay import ReplayBuffer
from rlcore.loops.rollout_storage import RolloutStorage, episode_statistics
from rlcore.loops.session import RunSession, TrainResult


def _row(value: Any, t: int) -> Any:
    return {k: v[t] for k, v in value.items()} if isinstance(value, dict) else value[t]


def _prefixed(data: dict[str, Any], prefix: str, t: int | None = None) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: (v if t is None else v[t]) for k, v in data.items() if k.startswith(prefix)}


def _summary(pool: RolloutPool, seconds_waiting: float) -> dict[str, Any]:
    return {"workers": pool.workers, "actor_restarts": pool.restarts,
            "transitions_per_worker": list(pool.transitions_received),
            "learner_seconds_waiting_for_actors": seconds_waiting}


def run_off_policy(session: RunSession, config: Any, agent: Any, make_agent: Any, env_factory: Any) -> TrainResult:
    settings = config.distributed
    env = session.env
    replay = ReplayBuffer(config.buffer_size, config.device, seed=config.seed)
    batches, pushed_updates = 0, 0
    checkpoint = session.start(agent)
    logger = session.logger
    schedule = UpdateSchedule(config, session.step)
    pool = RolloutPool(make_agent, config, env_factory, on_policy=False)
    try:
        if checkpoint is not None:
            replay.load_state_dict(checkpoint["replay"])
            loop = checkpoint["loop"]
            schedule.load_state_dict(loop)
            batches, pushed_updates = loop["batches"], loop["pushed_updates"]
            pool.load_state_dict(checkpoint["pool"])
        else:
            pool.push(policy_weights(agent))
        logger.layout_q_against_return()

        def loop_state() -> dict[str, Any]:
            return {"replay": replay.state_dict(), "pool": pool.state_dict(), "loop": {
                **schedule.state_dict(), "batches": batches, "pushed_updates": pushed_updates}}

        def push_if_due() -> None:
            nonlocal pushed_updates
            if schedule.updates_done - pushed_updates >= settings.sync_interval:
                pool.push(policy_weights(agent))
                pushed_updates = schedule.updates_done

        per_batch = settings.batch_steps * config.num_envs
        # Requests already out (sent again by load_state_dict on resume) count as steps in flight.
        in_flight = sum(r is not None for r in pool.outstanding) * per_batch
        for index in range(pool.workers):
            if pool.outstanding[index] is None and session.step + in_flight < config.total_steps:
                pool.request(index, session.step + in_flight, settings.batch_steps)
                in_flight += per_batch
        waiting = 0.0
        while not session.finished:
            started = time.perf_counter()
            index = batches % pool.workers  # a fixed round-robin: the run does not depend on which actor is faster
            batch = pool.receive(index)
            waiting += time.perf_counter() - started
            in_flight -= per_batch
            batches += 1
            if settings.pipeline:
                push_if_due()
                if session.step + per_batch + in_flight < config.total_steps:
                    pool.request(index, session.step + per_batch + in_flight, settings.batch_steps)
                    in_flight += per_batch
            data = batch["data"]
            step = session.step
            for t in range(settings.batch_steps):  # the batch, step by step, as the local loop would have seen it
                replay.add(_row(data["obs"], t), data["actions"][t], data["reward"][t], _row(data["final_obs"], t),
                           data["terminated"][t])
                done = (data["terminated"][t] | data["truncated"][t]).to(env.device)
                logger.accumulate_masked({"episode_return": data["episode_return"][t].to(env.device),
                                          "episode_length": data["episode_length"][t].to(env.device),
                                          **{k: v.to(env.device) for k, v in _prefixed(data, "metric/", t).items()}},
                                         done)
                if hasattr(agent, "env_step") and step >= config.random_steps:
                    agent.env_step = step  # the clock that agent.act(obs, step) keeps in a local run
                new_step = step + config.num_envs
                schedule.after_step(agent, replay, logger, step, new_step, config.num_envs)
                step = new_step
            if not settings.pipeline:
                push_if_due()
                if step + in_flight < config.total_steps:
                    pool.request(index, step + in_flight, settings.batch_steps)
                    in_flight += per_batch
            session.advance(step, agent, loop_state, schedule.critic_summary)
        summary = agent.summary() if hasattr(agent, "summary") else {}
        return session.finish(agent, {**summary, **_summary(pool, waiting)})
    finally:
        pool.close()


def run_on_policy(session: RunSession, config: Any, agent: Any, make_agent: Any, env_factory: Any) -> TrainResult:
    workers = config.distributed.workers
    num_envs = workers * config.num_envs
    storage = RolloutStorage(config.num_steps, num_envs, config.device)
    episode_return = torch.zeros(num_envs, device=config.device)
    episode_length = torch.zeros(num_envs, dtype=torch.long, device=config.device)
    checkpoint = session.start(agent)
    logger = session.logger
    pool = RolloutPool(make_agent, config, env_factory, on_policy=True)
    try:
        if checkpoint is not None:
            loop = checkpoint["loop"]
            episode_return, episode_length = (loop[k].to(config.device) for k in ("episode_return", "episode_length"))
            pool.load_state_dict(checkpoint["pool"])

        def loop_state() -> dict[str, Any]:
            return {"pool": pool.state_dict(),
                    "loop": {"episode_return": episode_return, "episode_length": episode_length}}

        waiting = 0.0
        while not session.finished:
            started = time.perf_counter()
            pool.push(policy_weights(agent))
            for index in range(workers):
                pool.request(index, session.step, config.num_steps)
            datas = [pool.receive(index)["data"] for index in range(workers)]
            waiting += time.perf_counter() - started

            def joined(key: str, datas: list[dict[str, Any]] = datas) -> Any:
                first = datas[0][key]
                if isinstance(first, dict):
                    return {k: torch.cat([d[key][k] for d in datas], dim=1) for k in first}
                return torch.cat([d[key] for d in datas], dim=1)

            columns = {key: joined(key) for key in datas[0]}
            extras_keys = [k for k in columns if k.startswith("extra/")]
            for t in range(config.num_steps):
                obs = obs_to(_row(columns["obs"], t), config.device)
                if hasattr(agent, "observe"):
                    agent.observe(obs)
                storage.add(t, obs, columns["actions"][t], columns["reward"][t], columns["terminated"][t],
                            columns["truncated"][t], _row(columns["final_obs"], t),
                            {k[len("extra/"):]: columns[k][t] for k in extras_keys})
                metrics = _prefixed(columns, "metric/", t)
                if metrics:
                    logger.accumulate_masked(metrics, columns["terminated"][t] | columns["truncated"][t])
            rollout = storage.rollout
            count, ended_return, ended_length, episode_return, episode_length = episode_statistics(
                rollout.rewards, rollout.terminated | rollout.truncated, episode_return, episode_length)
            if count > 0:
                logger.accumulate({"episode_return": ended_return / count, "episode_length": ended_length / count})
            step = session.step
            new_step = step + config.num_steps * num_envs
            logger.accumulate(agent.update(rollout, step / config.total_steps))
            logger.flush(new_step)
            session.advance(new_step, agent, loop_state)
        return session.finish(agent, _summary(pool, waiting))
    finally:
        pool.close()
