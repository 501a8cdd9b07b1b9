"""Learned dynamics: a probabilistic ensemble, termination functions and model rollouts.

=================================  ==========================================================
``ProbabilisticEnsemble``          Gaussian MLPs predicting ``[s' - s, r]``, elites, normalisers
``fit_ensemble``                   train on a data set with a holdout split, select elites
``holdout_mask``                   a fixed, data-defined holdout split for online training
``termination_fn``                 known termination of gymnasium v5 tasks (or ``None``)
``LearnedTermination``             a classifier of ``s'`` for the other tasks
``OnlineDynamics``, ``mixed_batch``  an ensemble trained online on replay batches; the real/model mix
``ModelEnv``, ``collect_rollouts``  model rollouts behind the batched-environment interface
``rollout_horizon``                MBPO's horizon schedule
=================================  ==========================================================
"""

from rlcore.models.dynamics import ModelPrediction, ProbabilisticEnsemble, fit_ensemble, holdout_mask
from rlcore.models.online import ModelSettings, OnlineDynamics, mixed_batch
from rlcore.models.rollouts import ModelEnv, collect_rollouts, rollout_horizon
from rlcore.models.termination import LearnedTermination, termination_fn

__all__ = [
    "LearnedTermination",
    "ModelEnv",
    "ModelPrediction",
    "ModelSettings",
    "OnlineDynamics",
    "ProbabilisticEnsemble",
    "collect_rollouts",
    "fit_ensemble",
    "holdout_mask",
    "mixed_batch",
    "rollout_horizon",
    "termination_fn",
]
