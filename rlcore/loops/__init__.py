"""The run session and the two training loops, with their storage.

* :mod:`~rlcore.loops.session`: :class:`RunConfig`, :class:`EnvConfig`, :class:`RunSession` (validation,
  environments, run directory, evaluation, checkpoints, progress, summary) and :class:`TrainResult`;
* :mod:`~rlcore.loops.off_policy`: :class:`TrainConfig` and :func:`train_off_policy` (collect -> replay ->
  update), over :mod:`~rlcore.loops.replay`;
* :mod:`~rlcore.loops.on_policy`: :class:`OnPolicyConfig` and :func:`train_on_policy` (rollout -> update), over
  :mod:`~rlcore.loops.rollout_storage`;
* :mod:`~rlcore.loops.evaluation` (the evaluation protocol), :mod:`~rlcore.loops.checkpoint` and
  :mod:`~rlcore.loops.run_dir` (what a run writes, and how it survives a crash).
"""

from rlcore.loops.evaluation import EvaluationResult, evaluate, evaluate_episodes, summarize
from rlcore.loops.off_policy import OffPolicyAgent, TrainConfig, train_off_policy
from rlcore.loops.on_policy import OnPolicyAgent, OnPolicyConfig, train_on_policy
from rlcore.loops.replay import ReplayBuffer, TransitionBatch
from rlcore.loops.rollout_storage import Rollout, RolloutStorage, episode_statistics
from rlcore.loops.session import EnvConfig, EnvFactory, EnvSource, RunConfig, RunSession, TrainResult, make_env

__all__ = ["EnvConfig", "EnvFactory", "EnvSource", "EvaluationResult", "OffPolicyAgent", "OnPolicyAgent",
           "OnPolicyConfig", "ReplayBuffer", "Rollout", "RolloutStorage", "RunConfig", "RunSession", "TrainConfig",
           "TrainResult", "TransitionBatch", "episode_statistics", "evaluate", "evaluate_episodes", "make_env",
           "summarize", "train_off_policy", "train_on_policy"]
