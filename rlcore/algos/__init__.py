"""Algorithms, registered by name for the CLI and for :func:`rlcore.algos.get`.

Registering an algorithm here is all it takes to put it in the CLI and under the contract test
(``tests/test_algorithm_contract.py``: a short run, bit-for-bit resume, ``rlcore eval``, bad configs rejected
before anything is written), which runs it with its ``smoke`` settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlcore.algos import caql, mbpo, ppo, rwr, sac, vmbpo
from rlcore.loops.checkpoint import load_latest_checkpoint
from rlcore.loops.run_dir import config_from_dict, load_config, load_run_record
from rlcore.loops.session import check_device, make_env


@dataclass(frozen=True)
class Algorithm:
    """A registered algorithm: what ``rlcore train NAME``, ``rlcore eval`` and the contract test use."""

    name: str
    """The registered name (CLI, run directories, checkpoints)."""
    config_cls: type
    """Its config dataclass (a `RunConfig`), read by tyro on the command line."""
    train: Callable[..., Any]
    """``train(config, env=None, eval_env=None) -> TrainResult``."""
    make_agent: Callable[[Any, Any], Any]
    """``make_agent(config, env) -> agent``: the untrained agent for ``env`` (``rlcore eval`` loads a checkpoint
    into it); a ValueError for an environment the algorithm cannot use."""
    smoke: dict[str, Any] = field(default_factory=dict)
    """Config overrides for a run of a few hundred steps that exercises every part of the update."""
    discrete_actions: bool = False
    """Whether the algorithm takes Discrete action spaces (the others refuse them with a ValueError)."""


_OFF_POLICY_SMOKE = dict(total_steps=300, learning_starts=100, eval_interval=150, checkpoint_interval=150,
                         eval_episodes=2, log_interval=100)
_MODEL_SMOKE = dict(random_steps=100, batch_size=32, hidden_sizes=(32, 32), model_hidden_sizes=(32, 32),
                    model_warmup_updates=20, rollouts_per_update=16, holdout_size=200, elite_interval=50)
_ON_POLICY_SMOKE = dict(total_steps=256, num_steps=64, num_minibatches=4, update_epochs=2, eval_interval=128,
                        checkpoint_interval=128, eval_episodes=2, hidden_sizes=(16, 16))

ALGORITHMS: dict[str, Algorithm] = {
    "caql": Algorithm("caql", caql.CAQLConfig, caql.train, caql.make_agent, _OFF_POLICY_SMOKE),
    "sac": Algorithm("sac", sac.SACConfig, sac.train, sac.make_agent,
                     {**_OFF_POLICY_SMOKE, "random_steps": 100, "batch_size": 32, "hidden_sizes": (32, 32)}),
    "vmbpo": Algorithm("vmbpo", vmbpo.VMBPOConfig, vmbpo.train, vmbpo.make_agent,
                       {**_OFF_POLICY_SMOKE, **_MODEL_SMOKE}),
    # Pendulum has no known termination function: the smoke run trains the learned one, and k grows to 3.
    "mbpo": Algorithm("mbpo", mbpo.MBPOConfig, mbpo.train, mbpo.make_agent,
                      {**_OFF_POLICY_SMOKE, **_MODEL_SMOKE, "epoch_length": 50, "rollout_schedule": (1, 4, 1, 3)}),
    "ppo": Algorithm("ppo", ppo.PPOConfig, ppo.train, ppo.make_agent, _ON_POLICY_SMOKE, discrete_actions=True),
    "rwr": Algorithm("rwr", rwr.RWRConfig, rwr.train, rwr.make_agent, _ON_POLICY_SMOKE, discrete_actions=True),
}


def get(name: str) -> Algorithm:
    """The algorithm registered as ``name``; a ValueError listing the registered names otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; available: {', '.join(sorted(ALGORITHMS))}.")
    return ALGORITHMS[name]


def run_config(run_dir: str | Path, device: str = "cpu") -> tuple[Algorithm, Any]:
    """The algorithm and config a run directory was trained with (its ``config.json``), on ``device``."""
    check_device(device)
    name, saved = load_config(run_dir)
    algorithm = get(name)
    return algorithm, config_from_dict(algorithm.config_cls, {**saved, "device": device})


@dataclass(frozen=True)
class TrainedAgent:
    """A run's agent with its newest checkpoint loaded: ``agent.act(obs, step, deterministic=True)`` plays it."""

    agent: Any
    config: Any
    """The run's config (its ``device`` replaced by the one asked for)."""
    step: int
    """The environment step the checkpoint was written at."""
    algorithm: Algorithm


def load_agent(run_dir: str | Path, env: Any = None, device: str = "cpu") -> TrainedAgent:
    """Load a run's trained agent from its newest checkpoint that loads, on ``device``.

    The agent is built for ``env``'s observation and action spaces (the environment it is to act in); by default
    for the environment of the run's config, which a run trained on an environment object does not have, so such
    a run needs ``env``. A run of an adapter (slate, dialogue, diffusion, retrieval) is not an algorithm's run:
    its adapter's command line evaluates it.
    """
    algorithm, config = run_config(run_dir, device)
    if env is None and not load_run_record(run_dir).get("env_from_config", True):
        raise ValueError(f"{run_dir} was trained on an environment object; pass the environment its agent is to "
                         "act in: rlcore.algos.load_agent(run_dir, env=...).")
    checkpoint = load_latest_checkpoint(run_dir, map_location=device)
    shape_env = make_env(config, 1) if env is None else env
    try:
        agent = algorithm.make_agent(config, shape_env)
    finally:
        if env is None:
            shape_env.close()
    agent.load_state_dict(checkpoint["agent"])
    return TrainedAgent(agent, config, checkpoint["step"], algorithm)
