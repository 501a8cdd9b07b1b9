"""Policy-gradient surrogates: REINFORCE with a baseline and the clipped-ratio (PPO) surrogate.

Both take per-sample log-probabilities of the actions that were taken, of any batch shape (``[B]`` for a
one-step problem, ``[T, N]`` for a rollout); the sum over action dimensions or over the steps of a
trajectory is the caller's, so the same function serves a Gaussian action, a masked choice among candidates
or a whole denoising trajectory.
"""

from __future__ import annotations

import torch

from rlcore.objectives._checks import (
    Reduction,
    as_mask,
    check_finite,
    check_positive,
    check_same_shape,
    check_tensor,
    masked_mean,
    reduce,
)


def reinforce_loss(
    log_prob: torch.Tensor,
    returns: torch.Tensor,
    baseline: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE with a baseline (Williams, 1992).

        L_i = −(R_i − b_i) · log π(a_i | s_i),     ∇_θ E[L] = −E[(R − b) ∇_θ log π(a|s)]

    ``returns`` and ``baseline`` are treated as constants (detached): a learned baseline is trained by its own
    loss (``value_loss``), and letting the policy loss move it would bias the gradient.

    Args:
        log_prob: log π(a_i | s_i) of the sampled actions, any shape; carries the gradient.
        returns: R_i (Monte-Carlo return, or an advantage with ``baseline=None``), same shape.
        baseline: b_i (for example V(s_i) or the batch mean reward), same shape; None means 0.
        mask: bool, same shape; False entries are ignored (padding, steps after the end of an episode).
        reduction: "mean" over the valid entries, "sum", or "none" (per-sample, masked entries 0).

    Returns:
        (loss, metrics) with metrics ``advantage_mean`` and ``advantage_std`` (detached).
    """
    check_tensor("log_prob", log_prob)
    check_tensor("returns", returns)
    if baseline is not None:
        check_tensor("baseline", baseline)
    check_same_shape(log_prob=log_prob, returns=returns, baseline=baseline)
    m = as_mask(mask, log_prob.shape)
    check_finite("returns", returns)
    advantage = returns.detach()
    if baseline is not None:
        check_finite("baseline", baseline)
        advantage = advantage - baseline.detach()
    loss = reduce(-advantage * log_prob, m, reduction)
    mean = masked_mean(advantage, m)
    metrics = {
        "advantage_mean": mean,
        "advantage_std": masked_mean((advantage - mean) ** 2, m).sqrt(),
    }
    return loss, metrics


def clipped_pg_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float = 0.2,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped-ratio surrogate of PPO (Schulman et al., 2017, eq. 7).

        ρ_i = exp(log π(a_i|s_i) − log π_old(a_i|s_i))
        L_i = −min(ρ_i A_i, clip(ρ_i, 1 − ε, 1 + ε) A_i)

    The gradient is −A_i ∇ρ_i where the unclipped term is the smaller one and 0 where clipping is active,
    so a sample stops pushing once the policy has moved by more than ε in the direction its advantage asks.
    DPOK uses a very tight ε = 1e-4; PPO's default is 0.2.

    Args:
        log_prob: log π(a_i|s_i) under the current parameters; carries the gradient.
        old_log_prob: log π_old(a_i|s_i) recorded when the action was sampled (treated as a constant).
        advantages: A_i, same shape (treated as a constant; normalise it first if wanted).
        clip_eps: ε > 0.
        mask: bool, same shape; False entries are ignored.
        reduction: "mean" over the valid entries, "sum", or "none".

    Returns:
        (loss, metrics) with ``ratio_mean``, ``clip_fraction`` (share of samples whose ratio is outside
        [1−ε, 1+ε]) and ``approx_kl`` = mean((ρ − 1) − log ρ), the k3 estimate of KL(π_old ‖ π).
    """
    check_tensor("log_prob", log_prob)
    check_tensor("old_log_prob", old_log_prob)
    check_tensor("advantages", advantages)
    check_same_shape(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages)
    check_positive("clip_eps", clip_eps)
    m = as_mask(mask, log_prob.shape)
    check_finite("old_log_prob", old_log_prob)
    check_finite("advantages", advantages)
    adv = advantages.detach()
    log_ratio = log_prob - old_log_prob.detach()
    ratio = log_ratio.exp()
    surrogate = torch.min(ratio * adv, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv)
    loss = reduce(-surrogate, m, reduction)
    with torch.no_grad():
        metrics = {
            "ratio_mean": masked_mean(ratio, m),
            "clip_fraction": masked_mean(((ratio - 1.0).abs() > clip_eps).to(ratio.dtype), m),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, m),
        }
    return loss, metrics
