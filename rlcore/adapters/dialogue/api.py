"""The Python API: :func:`train_manager`, :func:`evaluate` and :func:`sample_conversation`.

::

    from rlcore.adapters import dialogue
    env = dialogue.DialogueEnv(num_envs=64, seed=0)
    manager = dialogue.train_manager(env, method="ppo", total_steps=50_000, seed=0)      # or method="q"
    dialogue.evaluate(manager, num_users=2_000, seed=123)   # {"mean_return", "return_std", "mean_turns", ...}

**Which task ``evaluate`` plays.** ``evaluate`` builds its own environment of held-out users from ``seed`` (so
it never disturbs a training environment). The task (experts, encoder, reward, users' parameters) comes from
``env=`` when given (its config and experts), else from the policy's ``env_config`` (a trained manager remembers
its task), else the default ``DialogueConfig()``. A manager whose task differs from ``env``'s is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import Any

import torch

from rlcore.adapters.common import check_settings
from rlcore.adapters.dialogue import ppo, q
from rlcore.adapters.dialogue.env import DialogueEnv
from rlcore.adapters.dialogue.simulator import DialogueConfig
from rlcore.loops.evaluation import evaluate_episodes, summarize

METHODS = ("ppo", "q")
"""Values of :func:`train_manager`'s ``method``."""
_CONFIGS = {"ppo": ppo.DialoguePPOConfig, "q": q.DialogueQConfig}
_TRAIN = {"ppo": ppo.train, "q": q.train}


def train_manager(env: DialogueEnv, method: str = "ppo", total_steps: int = 50_000, seed: int = 0, *,
                  run_dir: str | None = None, log_root: str = "runs", progress: bool = False,
                  **overrides: Any) -> Any:
    """Train a dialogue manager on ``env`` (its task, its ``num_envs`` conversations at a time) and return it.

    An ordinary rlcore run (run directory under ``log_root`` or at ``run_dir``: config, TensorBoard, evaluations,
    checkpoints). The manager remembers its task (``manager.env_config``) for :func:`evaluate`, and its run
    (``manager.train_result``).

    Args:
        env: the :class:`~rlcore.adapters.dialogue.env.DialogueEnv` to train on (built from a config: its
            experts are the config's family).
        method: ``"ppo"`` (:mod:`~rlcore.adapters.dialogue.ppo`) or ``"q"`` (:mod:`~rlcore.adapters.dialogue.q`).
        total_steps: bot turns to train for (summed over ``env.num_envs``).
        seed: seed of the networks, exploration, replay and of the evaluation users during training.
        run_dir: the run directory (None: a new one under ``log_root``).
        log_root: parent folder of new run directories.
        progress: show a progress bar.
        overrides: any other field of :class:`~rlcore.adapters.dialogue.ppo.DialoguePPOConfig` or
            :class:`~rlcore.adapters.dialogue.q.DialogueQConfig` (``gamma``, ``learning_rate``...).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}.")
    if not isinstance(env, DialogueEnv):
        raise ValueError(f"env must be a DialogueEnv, got {type(env).__name__}; build one with "
                         "dialogue.DialogueEnv(num_envs=..., seed=...).")
    if env.custom_experts:
        raise ValueError("train_manager needs an env built from a DialogueConfig (experts='template' or 'moe'), so "
                         "that its evaluations and checkpoints can rebuild it; for custom experts call "
                         "dialogue.ppo.train(config, env=..., eval_env=...) with your own factories.")
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}.")
    cls = _CONFIGS[method]
    check_settings(cls, overrides, f"method {method!r}")
    config = cls(dialogue=dataclasses.replace(env.config), num_envs=env.num_envs, total_steps=total_steps, seed=seed,
                 device=str(env.device), run_dir=run_dir, log_root=log_root, progress=progress, **overrides)
    eval_env = ppo.env_factories(config)[1]
    result = _TRAIN[method](config, env=env, eval_env=eval_env)
    manager = result.agent
    manager.train_result = result
    return manager


def _task(policy: Any, env: DialogueEnv | None) -> DialogueConfig:
    own = getattr(policy, "env_config", None)
    if env is not None:
        if not isinstance(env, DialogueEnv):
            raise ValueError(f"env must be a DialogueEnv or None, got {type(env).__name__}.")
        if own is not None and own.key() != env.config.key():
            raise ValueError(f"the policy belongs to the task {own}, env is {env.config}; evaluate it without env= "
                             "(its own task is rebuilt) or in an env of the same config.")
        return env.config
    return own if own is not None else DialogueConfig()


def _eval_env(policy: Any, env: DialogueEnv | None, num_envs: int, seed: int, record: bool = False) -> DialogueEnv:
    config = _task(policy, env)
    device = getattr(policy, "device", env.device if env is not None else "cpu")
    fields = asdict(config)
    if env is not None and env.custom_experts:
        fields["experts"] = env.experts
    return DialogueEnv(num_envs, seed=seed, device=device, record=record, **fields)


@torch.no_grad()
def evaluate(policy: Any, num_users: int = 1_000, seed: int = 0, env: DialogueEnv | None = None,
             max_batch: int = 1_000) -> dict[str, float]:
    """Hold ``num_users`` conversations with held-out users (from ``seed``) using ``policy``'s deterministic choices.

    The task is ``env``'s, else the policy's, else the default one (see the module docstring). Users are served
    ``max_batch`` at a time.

    Returns:
        ``mean_return`` and ``return_std`` (population std) of the users' returns, ``mean_turns`` (bot turns per
        user), ``accepted`` (recommendations accepted per user), ``left_rate`` (share of users who left before
        the turn limit), ``final_satisfaction`` and ``num_users``.
    """
    if not isinstance(num_users, int) or num_users < 1:
        raise ValueError(f"num_users must be an integer >= 1, got {num_users!r}.")
    if not callable(getattr(policy, "act", None)):
        raise ValueError(f"policy must have act(obs, step, deterministic) -> candidate indices (a dialogue baseline "
                         f"or a trained manager), got {type(policy).__name__}.")
    eval_env = _eval_env(policy, env, min(num_users, max_batch), seed)
    if hasattr(policy, "prepare"):
        policy.prepare(eval_env, seed)
    result = evaluate_episodes(lambda obs: policy.act(obs, 0, deterministic=True), eval_env, seed=seed,
                               episodes=num_users)
    mean, std = summarize(result.returns)
    m = result.metrics
    return {"mean_return": mean, "return_std": std, "mean_turns": float(m["episode_length"].mean()),
            "accepted": float(m["accepted"].mean()), "left_rate": float(m["left"].mean()),
            "final_satisfaction": float(m["satisfaction"].mean()), "num_users": num_users}


@torch.no_grad()
def sample_conversation(policy: Any, seed: int = 0, env: DialogueEnv | None = None) -> list[str]:
    """The text of one conversation of ``policy`` with the user of ``seed``: ``"user: ..."`` and
    ``"bot (<expert>): ..."`` lines, ending when the user leaves or at the turn limit."""
    eval_env = _eval_env(policy, env, 1, seed, record=True)
    if hasattr(policy, "prepare"):
        policy.prepare(eval_env, seed)
    obs, _ = eval_env.reset(seed=seed)
    for _ in range(eval_env.config.episode_length):
        obs, _, terminated, truncated, _ = eval_env.step(policy.act(obs, 0, deterministic=True))
        if bool(terminated[0] | truncated[0]):
            break
    return eval_env.finished_transcripts[-1]


__all__ = ["METHODS", "check_settings", "evaluate", "sample_conversation", "train_manager"]
