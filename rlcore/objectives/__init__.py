"""Policy-gradient and reward-weighted-regression primitives, as pure functions over tensors.

Every loss takes per-sample tensors of any batch shape (log-probs, returns or advantages, an optional bool
``mask``) and a ``reduction`` ("mean" over the valid entries, "sum", "none"), and returns
``(loss, metrics)`` with metrics a dict of detached tensors (no host sync). Divergences and returns return a
tensor. Nothing here knows about observations, images, items or text: a caller builds log π(a|s) however
its policy does, and these functions turn it into a loss.

    =========================  =====================================================
    REINFORCE with a baseline  ``reinforce_loss``
    PPO clipped surrogate      ``clipped_pg_loss``
    value regression           ``value_loss`` (optionally clipped)
    KL to a reference          ``diag_gaussian_kl``, ``categorical_kl``, ``sample_kl`` (k1/k2/k3)
    f-divergences              ``f_divergence`` (kl, reverse_kl, chi2, js)
    reward-weighted regression ``rwr_loss``, ``rwr_weights``, ``reward_weighted_loss``
    returns and advantages     ``discounted_returns``, ``gae``, ``normalize_advantages``
    TD targets and losses      ``clipped_double_q_targets``, ``bellman_loss``, ``soft_q_targets``,
                               ``linex_loss``, ``bounded_soft_backup``, ``polyak_update``,
                               ``temperature_step`` (:mod:`~.td`)
    =========================  =====================================================

Value checks (NaN, infinities) wait on the device, so they are opt-in inside the training loops: they are on
in direct use and off inside :mod:`rlcore.loops` (see :func:`validate_args`).
"""

from rlcore.objectives._checks import set_validate_args, validate_args, validate_args_enabled
from rlcore.objectives.f_divergence import f_divergence
from rlcore.objectives.kl import categorical_kl, diag_gaussian_kl, sample_kl
from rlcore.objectives.policy_gradient import clipped_pg_loss, reinforce_loss
from rlcore.objectives.returns import discounted_returns, gae, normalize_advantages
from rlcore.objectives.rwr import reward_weighted_loss, rwr_loss, rwr_weights
from rlcore.objectives.td import (
    bellman_loss,
    bounded_soft_backup,
    clipped_double_q_targets,
    hinge_multiplier_step,
    linex_loss,
    polyak_update,
    soft_optimistic_backup,
    soft_q_targets,
    temperature_step,
)
from rlcore.objectives.value import value_loss

__all__ = [
    "bellman_loss",
    "bounded_soft_backup",
    "categorical_kl",
    "clipped_double_q_targets",
    "clipped_pg_loss",
    "diag_gaussian_kl",
    "discounted_returns",
    "f_divergence",
    "gae",
    "hinge_multiplier_step",
    "linex_loss",
    "normalize_advantages",
    "polyak_update",
    "reinforce_loss",
    "reward_weighted_loss",
    "rwr_loss",
    "rwr_weights",
    "sample_kl",
    "set_validate_args",
    "soft_optimistic_backup",
    "soft_q_targets",
    "temperature_step",
    "validate_args",
    "validate_args_enabled",
    "value_loss",
]
