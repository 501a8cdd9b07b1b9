"""A rollout actor: one process that owns a :class:`~rlcore.envs.BatchedEnv` and a copy of the acting policy.

The actor is a plain class (Ray wraps it in :mod:`rlcore.distributed.pool`), so its logic is testable without
Ray. It answers numbered requests: request ``seq`` must follow the batch ``seq - 1`` it sent last, and every
batch it sends carries its state just after that batch (environments, observations, generators, the policy
version it acts with). The learner keeps the state of the last batch it accepted; a restarted actor (Ray re-runs
the constructor) is given that state back and asked again for the batch that was lost, so it produces exactly the
transitions it would have produced had it not died: none is lost, none is delivered twice.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from rlcore.envs.spaces import sample_actions
from rlcore.envs.structured import obs_to

WORKER_SEED_STRIDE = 1_000
"""Actor ``i`` runs with seed ``config.seed + i * WORKER_SEED_STRIDE`` (actor 0 with the run's own seed)."""


class StaleActorError(RuntimeError):
    """A request that does not follow the actor's last batch: the actor was restarted and lost its state."""


def is_rng_state(value: Any) -> bool:
    """Whether an agent state entry is a generator state (``torch.Generator.get_state()``: a 1-D uint8 tensor)."""
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1


def without_rng(state: Any) -> Any:
    """``state`` (nested dicts) without its generator states."""
    if isinstance(state, dict):
        return {k: without_rng(v) for k, v in state.items() if not is_rng_state(v)}
    return state


def rng_states(state: Any) -> dict[str, Any]:
    """Only the generator states of ``state`` (nested dicts), at their places."""
    found = {}
    for key, value in state.items() if isinstance(state, dict) else ():
        if is_rng_state(value):
            found[key] = value.clone()
        elif isinstance(value, dict) and (inner := rng_states(value)):
            found[key] = inner
    return found


def merged(base: Any, update: Any) -> Any:
    """``base`` with the entries of ``update`` put in (recursively for nested dicts)."""
    if not (isinstance(base, dict) and isinstance(update, dict)):
        return update
    return {**base, **{k: merged(base[k], v) if k in base else v for k, v in update.items()}}


def policy_weights(agent: Any) -> dict[str, Any]:
    """What the learner sends its actors: the parts of its state that acting reads (``agent.acting_state_keys``
    where the agent names them, else all of it), without generator states (the actors keep their own streams, so
    that exploration noise is not replayed from the learner's)."""
    state = agent.state_dict()
    keys = getattr(agent, "acting_state_keys", None)
    if keys is not None:
        state = {k: state[k] for k in keys}
    return without_rng(state)


def _stack(values: list[Any]) -> Any:
    if isinstance(values[0], dict):
        return {key: torch.stack([v[key] for v in values]) for key in values[0]}
    return torch.stack(values)


def _cpu(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _cpu(v) for key, v in value.items()}
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


class RolloutActor:
    """Collects batches of transitions for a learner.

    Args:
        make_agent: the algorithm's ``make_agent(config, env)``; its agent only acts (``act`` for off-policy
            agents, ``explore`` for on-policy ones) and receives the learner's weights.
        config: the run's config; the actor uses it with its own seed (see :data:`WORKER_SEED_STRIDE`) and
            ``device=config.distributed.actor_device``.
        index: this actor's number, 0 to workers - 1.
        env_factory: ``seed -> BatchedEnv``, or None to build ``config.env`` with ``config.num_envs`` copies.
        on_policy: collect with ``explore`` (and return its extras) rather than ``act``.
    """

    def __init__(self, make_agent: Any, config: Any, index: int, env_factory: Any = None,
                 on_policy: bool = False) -> None:
        torch.set_num_threads(1)
        device = config.distributed.actor_device
        self.config = dataclasses.replace(config, seed=config.seed + index * WORKER_SEED_STRIDE, device=device)
        self.index, self.on_policy = index, on_policy
        seed = self.config.seed
        self.env = env_factory(seed) if env_factory is not None else self.config.env.make(config.num_envs, device)
        self.agent = make_agent(self.config, self.env)
        self.explore_generator = torch.Generator(device=self.env.device).manual_seed(seed + 1)
        self.obs, _ = self.env.reset(seed=seed)
        self.episode_return = torch.zeros(self.env.num_envs, device=self.env.device)
        self.episode_length = torch.zeros(self.env.num_envs, dtype=torch.long, device=self.env.device)
        self.seq, self.version = -1, -1

    def ping(self) -> int:
        return self.index

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Everything that decides the next batch, apart from the policy weights (the learner holds those, by
        version): picklable and on the CPU."""
        return _cpu({"seq": self.seq, "version": self.version, "env": self.env.state_dict(), "obs": self.obs,
                     "episode_return": self.episode_return, "episode_length": self.episode_length,
                     "explore_generator": self.explore_generator.get_state(),
                     "agent_rng": rng_states(self.agent.state_dict())})

    def restore(self, state: dict[str, Any] | None, weights: dict[str, Any] | None) -> int:
        """Go back to ``state`` (None: the state at construction) acting with ``weights``; returns ``state``'s seq."""
        if weights is not None:
            self._load_weights(weights, state["agent_rng"] if state is not None else None)
        if state is None:
            return self.seq
        device = self.env.device
        self.env.load_state_dict(state["env"])
        self.obs = obs_to(state["obs"], device)
        self.episode_return = state["episode_return"].to(device)
        self.episode_length = state["episode_length"].to(device)
        self.explore_generator.set_state(state["explore_generator"])
        self.seq, self.version = state["seq"], state["version"]
        return self.seq

    def _load_weights(self, weights: dict[str, Any], rng: dict[str, Any] | None = None) -> None:
        """Act with ``weights`` from now on, keeping this actor's own generators (or ``rng``'s, on a restore)."""
        own = self.agent.state_dict()
        rng = rng if rng is not None else rng_states(own)
        self.agent.load_state_dict(merged(merged(own, weights), rng))

    # ------------------------------------------------------------------ collecting
    def collect(self, request: dict[str, Any], weights: dict[str, Any] | None = None) -> dict[str, Any]:
        """Collect the batch ``request["seq"]``: ``request["steps"]`` steps of every environment, starting at the
        run's step ``request["step"]``, after loading ``weights`` (version ``request["version"]``) when given.
        Returns the stacked ``[T, N, ...]`` transitions and the actor's state after them."""
        if request["seq"] != self.seq + 1:
            raise StaleActorError(f"rollout actor {self.index} was asked for batch {request['seq']} but last sent "
                                  f"batch {self.seq}: it was restarted and must be restored first.")
        if weights is not None:
            self._load_weights(weights)
            self.version = request["version"]
        env, num_envs = self.env, self.env.num_envs
        random_steps = getattr(self.config, "random_steps", 0)
        columns: dict[str, list[Any]] = {}
        for t in range(request["steps"]):
            step = request["step"] + t * num_envs
            extras: dict[str, torch.Tensor] = {}
            if self.on_policy:
                actions, extras = self.agent.explore(self.obs)
            elif step < random_steps:
                actions = sample_actions(env.action_space, num_envs, self.explore_generator, self.obs, env.action_set)
            else:
                actions = self.agent.act(self.obs, step, deterministic=False)
            next_obs, reward, terminated, truncated, info = env.step(actions)
            self.episode_return = self.episode_return + reward
            self.episode_length = self.episode_length + 1
            row = {"obs": self.obs, "actions": info["applied_actions"] if not self.on_policy else actions,
                   "reward": reward, "final_obs": info["final_obs"], "terminated": terminated,
                   "truncated": truncated, "episode_return": self.episode_return,
                   "episode_length": self.episode_length, **{f"extra/{k}": v for k, v in extras.items()},
                   **{f"metric/{k}": v for k, v in info.get("episode_metrics", {}).items()}}
            for key, value in row.items():
                columns.setdefault(key, []).append(value)
            done = terminated | truncated
            self.episode_return = self.episode_return * ~done
            self.episode_length = self.episode_length * ~done
            self.obs = next_obs
        self.seq += 1
        data = {key: _stack(values) for key, values in columns.items()}
        return {"index": self.index, "seq": self.seq, "version": self.version, "data": _cpu(data),
                "state": self.state()}
