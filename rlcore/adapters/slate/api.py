"""The Python API: :func:`train_agent` and :func:`evaluate`.

::

    from rlcore.adapters import slate
    env = slate.SlateEnv(num_envs=64, num_items=200, slate_size=4, num_user_types=4, seed=0)
    agent = slate.train_agent(env, method="slateq", total_steps=50_000, seed=0)
    slate.evaluate(agent, env_seed=321, num_users=2_000)   # {"mean_return", "return_std", "choice_rate", ...}

**Which world ``evaluate`` plays in.** ``evaluate`` builds its own environment, so that evaluation never
disturbs a training environment and always serves fresh users from ``env_seed``. The world (items, user
types, reward, dynamics) comes from, in order:

1. ``env=``, when given (any :class:`~rlcore.adapters.slate.env.SlateEnv`: it is reset with ``env_seed`` and
   played);
2. the policy's ``env_config``: a trained agent remembers the world it was trained in, and a baseline given a
   world (``RandomSlate(env.config)`` or ``RandomSlate(env)``) keeps it;
3. otherwise the default world, ``SlateEnvConfig()`` (200 items, slates of 4, 4 user types, seed 0).

So to compare baselines with an agent trained in another world, give them that world
(``slate.GreedySlate(env)``) or pass ``env=``. A policy whose world differs from ``env``'s is refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from rlcore.adapters.common import check_settings
from rlcore.adapters.slate import ppo, slateq
from rlcore.adapters.slate.env import SlateEnv
from rlcore.adapters.slate.world import SlateEnvConfig
from rlcore.loops.evaluation import evaluate_episodes, summarize

METHODS = ("slateq", "ppo")
"""Values of :func:`train_agent`'s ``method``."""
_CONFIGS = {"slateq": slateq.SlateQConfig, "ppo": ppo.SlatePPOConfig}
_TRAIN = {"slateq": slateq.train, "ppo": ppo.train}


def train_agent(env: SlateEnv, method: str = "slateq", total_steps: int = 50_000, seed: int = 0, *,
                choice_model: str = "true", run_dir: str | None = None, log_root: str = "runs",
                progress: bool = False, **overrides: Any) -> Any:
    """Train a slate agent on ``env`` (its world, its ``num_envs`` users at a time) and return it.

    The run is an ordinary rlcore run (run directory under ``log_root`` or at ``run_dir``: config, TensorBoard,
    evaluations, checkpoints; resumable from Python with the same environment). The agent remembers its world
    (``agent.env_config``) for :func:`evaluate`, and its run (``agent.train_result``).

    Args:
        env: the :class:`~rlcore.adapters.slate.env.SlateEnv` to train on.
        method: ``"slateq"`` (:mod:`~rlcore.adapters.slate.slateq`) or ``"ppo"``
            (:mod:`~rlcore.adapters.slate.ppo`).
        total_steps: user turns to train for (summed over ``env.num_envs``).
        seed: seed of the networks, exploration, replay and the training users.
        choice_model: SlateQ's user model: ``"true"`` (the simulator's) or ``"learned"`` (EM on logged choices).
        run_dir: the run directory (None: a new one under ``log_root``).
        log_root: parent folder of new run directories.
        progress: show a progress bar.
        overrides: any other field of :class:`~rlcore.adapters.slate.slateq.SlateQConfig` or
            :class:`~rlcore.adapters.slate.ppo.SlatePPOConfig` (``gamma``, ``learning_rate``...).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}.")
    if not isinstance(env, SlateEnv):
        raise ValueError(f"env must be a SlateEnv, got {type(env).__name__}; build one with "
                         "slate.SlateEnv(num_envs=..., num_items=..., ...).")
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}.")
    cls = _CONFIGS[method]
    check_settings(cls, overrides, f"method {method!r}")
    if method == "slateq":
        overrides["choice_model"] = choice_model
    elif choice_model != "true":
        raise ValueError(f"choice_model={choice_model!r} applies to method='slateq' only (PPO uses no choice model).")
    config = cls(slate=dataclasses.replace(env.config), num_envs=env.num_envs, total_steps=total_steps, seed=seed,
                 device=str(env.device), run_dir=run_dir, log_root=log_root, progress=progress, **overrides)
    eval_env = slateq.env_factories(config)[1]
    result = _TRAIN[method](config, env=env, eval_env=eval_env)
    agent = result.agent
    agent.train_result = result
    return agent


def _world(policy: Any, env: SlateEnv | None) -> SlateEnvConfig:
    own = getattr(policy, "env_config", None)
    if env is not None:
        if not isinstance(env, SlateEnv):
            raise ValueError(f"env must be a SlateEnv or None, got {type(env).__name__}.")
        if own is not None and own.world_key() != env.config.world_key():
            raise ValueError(f"the policy belongs to the world {own}, env is {env.config}; evaluate it without env= "
                             "(its own world is rebuilt) or in an env of the same config.")
        return env.config
    return own if own is not None else SlateEnvConfig()


@torch.no_grad()
def evaluate(policy: Any, env_seed: int = 0, num_users: int = 1_000, env: SlateEnv | None = None,
             max_batch: int = 1_000) -> dict[str, float]:
    """Serve ``num_users`` held-out users (from ``env_seed``) with ``policy``'s deterministic slates.

    The world is ``env``'s, else the policy's, else the default one (see the module docstring).
    Users are served ``max_batch`` at a time (fewer if ``env`` is given: its ``num_envs``).

    Returns:
        ``mean_return`` and ``return_std`` (population std) of the users' episode returns, ``choice_rate``
        (picks per turn over all turns), ``mean_length`` (turns per user) and ``num_users``.
    """
    if not isinstance(num_users, int) or num_users < 1:
        raise ValueError(f"num_users must be an integer >= 1, got {num_users!r}.")
    if not callable(getattr(policy, "act", None)):
        raise ValueError(f"policy must have act(obs, step, deterministic) -> slates (a slate baseline or a trained "
                         f"agent), got {type(policy).__name__}.")
    config = _world(policy, env)
    device = getattr(policy, "device", "cpu")
    eval_env = env if env is not None else SlateEnv.from_config(config, min(num_users, max_batch), device)
    if hasattr(policy, "prepare"):
        policy.prepare(eval_env, env_seed)
    result = evaluate_episodes(lambda obs: policy.act(obs, 0, deterministic=True), eval_env, seed=env_seed,
                               episodes=num_users)
    mean, std = summarize(result.returns)
    lengths = result.metrics["episode_length"].double()
    choice_rate = float((result.metrics["choice_rate"].double() * lengths).sum() / lengths.sum())
    return {"mean_return": mean, "return_std": std, "choice_rate": choice_rate,
            "mean_length": float(lengths.mean()), "num_users": num_users}


__all__ = ["METHODS", "evaluate", "train_agent"]
