"""Reward-weighted regression: weighted maximum likelihood of the sampled actions.

Two weightings, both constants for the gradient:

* exponentiated (Peters & Schaal, 2007; DiffCon under a KL regulariser): w_i ∝ exp(R_i/β), normalised over
  the batch. If the samples come from π_ref, minimising the loss fits π to p*(x) ∝ π_ref(x) exp(r(x)/β), the
  maximiser of E_π[r] − β KL(π ‖ π_ref) (a moment projection onto the policy family).
* plain (Lee et al., 2023): w_i = R_i, the reward itself.
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
    reduce,
)


def rwr_weights(returns: torch.Tensor, beta: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Self-normalised exponentiated weights, scaled to average 1 over the valid samples.

        w_i = n · exp(R_i/β) / Σ_j exp(R_j/β) = n · softmax(R/β)_i,     n = number of valid samples

    Computed as a softmax (max subtracted), so R/β of any size neither overflows nor underflows to 0/0.
    Masked samples get weight 0 and do not enter the normalisation. Scaling to mean 1 (not sum 1) keeps a
    "mean"-reduced weighted loss on the scale of a plain negative log-likelihood.

    Args:
        returns: R_i, any shape; the normalisation is over all its (valid) elements.
        beta: temperature β > 0; small β concentrates the weight on the best samples.
        mask: bool, same shape.

    Returns:
        Detached weights of the shape of ``returns``.
    """
    check_tensor("returns", returns)
    check_positive("beta", beta)
    check_finite("returns", returns)
    m = as_mask(mask, returns.shape)
    scores = returns.detach().reshape(-1) / beta
    if m is not None:
        scores = scores.masked_fill(~m.reshape(-1), -torch.inf)
    # All-masked batch: softmax of all -inf would be NaN; give zero weights instead.
    n = scores.numel() if m is None else m.sum()
    w = torch.softmax(scores, dim=0).nan_to_num(0.0) * n
    return w.reshape(returns.shape)


def rwr_loss(
    log_prob: torch.Tensor,
    returns: torch.Tensor,
    beta: float,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reward-weighted regression with batch-normalised exponentiated weights.

        L_i = −w_i · log π(a_i|s_i),   w = rwr_weights(R, β)   ("mean" reduction: −Σ_i softmax(R/β)_i log π(a_i|s_i))

    Args:
        log_prob: log π(a_i|s_i) of the sampled actions; carries the gradient.
        returns: R_i, same shape (for an on-policy variant that keeps p* as the target, pass
            R_i + β (log π_ref(a_i) − log π_old(a_i)), which importance-corrects samples drawn from π_old).
        beta: temperature β > 0.
        mask: bool, same shape; False entries are ignored.
        reduction: "mean" over the valid entries, "sum", or "none".

    Returns:
        (loss, metrics) with ``ess`` (effective sample size 1/Σ softmax², between 1 and n) and ``max_weight``
        (largest softmax weight), the two numbers that tell whether β is too small for the batch.
    """
    check_tensor("log_prob", log_prob)
    check_tensor("returns", returns)
    check_same_shape(log_prob=log_prob, returns=returns)
    w = rwr_weights(returns, beta, mask)
    m = as_mask(mask, log_prob.shape)
    loss = reduce(-w * log_prob, m, reduction)
    n = w.numel() if m is None else m.sum().clamp_min(1)
    p = w / n
    metrics = {"ess": 1.0 / (p**2).sum().clamp_min(1e-30), "max_weight": p.max()}
    return loss, metrics


def reward_weighted_loss(
    log_prob: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Plain reward-weighted likelihood (Lee et al., 2023, "Aligning Text-to-Image Models using Human Feedback").

        L_i = −R_i · log π(a_i|s_i)

    The reward enters as a constant weight (detached), not normalised: with rewards in [0, 1] (a classifier
    probability) this is a likelihood that counts good samples more. Unlike ``reinforce_loss`` there is no
    baseline and the samples usually come from a fixed (pretrained) model, so this is supervised learning on
    scored samples, not a policy gradient.

    Args:
        log_prob: log π(a_i|s_i); carries the gradient.
        rewards: R_i, same shape.
        mask: bool, same shape; False entries are ignored.
        reduction: "mean" over the valid entries, "sum", or "none".

    Returns:
        (loss, metrics) with ``weight_mean``.
    """
    check_tensor("log_prob", log_prob)
    check_tensor("rewards", rewards)
    check_same_shape(log_prob=log_prob, rewards=rewards)
    check_finite("rewards", rewards)
    m = as_mask(mask, log_prob.shape)
    w = rewards.detach()
    loss = reduce(-w * log_prob, m, reduction)
    return loss, {"weight_mean": reduce(w, m, "mean")}
