"""KL divergence to a reference policy: closed forms, and sample estimates from log-ratios.

Direction: every function here returns KL(π ‖ π_ref) = E_π[log π − log π_ref], the penalty of DPOK and of
KL-regularised RL (maximise E_π[r] − β KL(π ‖ π_ref)).
"""

from __future__ import annotations

from typing import Literal

import torch

from rlcore.objectives._checks import Reduction, as_mask, check_finite, check_tensor, reduce

KLEstimator = Literal["k1", "k2", "k3"]


def diag_gaussian_kl(
    mean: torch.Tensor,
    log_std: torch.Tensor,
    ref_mean: torch.Tensor,
    ref_log_std: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Closed-form KL between diagonal Gaussians, summed over the last (action) dimension.

        KL(N(μ, σ²) ‖ N(μ', σ'²)) = Σ_d [ log σ'_d − log σ_d + (σ_d² + (μ_d − μ'_d)²) / (2 σ'_d²) − ½ ]

    With equal variances this is ‖μ − μ'‖² / (2σ²), DPOK's per-step penalty between the fine-tuned and the
    pretrained denoising kernels.

    Args:
        mean: μ of π, shape broadcastable to ``[..., D]``.
        log_std: log σ of π, broadcastable to the same shape.
        ref_mean: μ' of π_ref, broadcastable to the same shape.
        ref_log_std: log σ' of π_ref, broadcastable to the same shape.
        mask: bool of the batch shape ``[...]``; False entries are ignored.
        reduction: "mean" over the valid entries, "sum", or "none" (per-sample KL of shape ``[...]``).
    """
    for name, x in (("mean", mean), ("log_std", log_std), ("ref_mean", ref_mean), ("ref_log_std", ref_log_std)):
        check_tensor(name, x)
        check_finite(name, x)
    try:
        shape = torch.broadcast_shapes(mean.shape, log_std.shape, ref_mean.shape, ref_log_std.shape)
    except RuntimeError as err:
        raise ValueError(f"diag_gaussian_kl: shapes do not broadcast: mean {tuple(mean.shape)}, log_std "
                         f"{tuple(log_std.shape)}, ref_mean {tuple(ref_mean.shape)}, ref_log_std "
                         f"{tuple(ref_log_std.shape)}.") from err
    if len(shape) == 0:
        raise ValueError("diag_gaussian_kl: the inputs need an action dimension (last axis); got scalars.")
    # Written with the std ratio exp(log σ − log σ') so that no σ'² is formed on its own (it may underflow).
    kl = (ref_log_std - log_std) + 0.5 * (torch.exp(2.0 * (log_std - ref_log_std))
                                          + ((mean - ref_mean) * torch.exp(-ref_log_std)) ** 2) - 0.5
    kl = kl.expand(shape).sum(-1)
    return reduce(kl, as_mask(mask, kl.shape), reduction)


def categorical_kl(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Closed-form KL between categoricals given by (unnormalised) logits over the last dimension.

        KL(p ‖ q) = Σ_{k: p_k > 0} p_k (log p_k − log q_k),   p = softmax(logits), q = softmax(ref_logits)

    Logits may be ``-inf`` for candidates that are not on offer (probability exactly 0). Terms with p_k = 0
    contribute 0; a candidate with p_k > 0 and q_k = 0 makes the KL +inf, as it should.

    Args:
        logits: ``[..., K]`` logits of π; carries the gradient.
        ref_logits: ``[..., K]`` logits of π_ref.
        mask: bool of the batch shape ``[...]``; False entries are ignored.
        reduction: "mean" over the valid entries, "sum", or "none" (per-sample KL of shape ``[...]``).
    """
    check_tensor("logits", logits)
    check_tensor("ref_logits", ref_logits)
    if logits.shape != ref_logits.shape or logits.dim() == 0:
        raise ValueError(f"categorical_kl: logits and ref_logits must have the same shape [..., K], got "
                         f"{tuple(logits.shape)} and {tuple(ref_logits.shape)}.")
    check_finite("logits", logits, allow_neg_inf=True)
    check_finite("ref_logits", ref_logits, allow_neg_inf=True)
    log_p = torch.log_softmax(logits, dim=-1)
    log_q = torch.log_softmax(ref_logits, dim=-1)
    support = log_p > -torch.inf
    zero = torch.zeros((), dtype=log_p.dtype, device=log_p.device)
    # Replace -inf by 0 off the support before multiplying: 0 · (−inf) would be NaN in the forward pass and,
    # through torch.where's backward, in the gradient too.
    diff = torch.where(support, log_p - log_q, zero)
    kl = (log_p.exp() * diff).sum(-1)
    return reduce(kl, as_mask(mask, kl.shape), reduction)


def sample_kl(
    log_ratio: torch.Tensor,
    estimator: KLEstimator = "k3",
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Sample estimate of KL(π ‖ π_ref) from log-ratios at samples **x ~ π**.

    With ℓ = log π(x) − log π_ref(x) and x ~ π (Schulman, "Approximating KL divergence", 2020):

        k1 = ℓ                      unbiased, high variance, can be negative
        k2 = ½ ℓ²                   biased (exact to second order), always ≥ 0
        k3 = (e^{−ℓ} − 1) + ℓ       unbiased, always ≥ 0, low variance (default)

    The values estimate the KL. Their gradients, with the samples held fixed (no reparameterisation), are not
    all ∇KL: in expectation ∇k1 = 0, ∇k2 = ∇KL(π ‖ π_ref) (the score-function gradient), and
    ∇k3 = ∇KL(π_ref ‖ π). As a penalty in a loss, use k2, or the closed forms when they exist, or k1/k3 with
    reparameterised samples (``rsample``), for which the pathwise gradient of any unbiased estimate is right.

    Args:
        log_ratio: ℓ = log π(x) − log π_ref(x) at x ~ π, any shape (sum per-dimension or per-step log-probs
            first if the KL of a joint is wanted).
        estimator: "k1", "k2" or "k3".
        mask: bool, same shape; False entries are ignored.
        reduction: "mean" over the valid entries, "sum", or "none".
    """
    check_tensor("log_ratio", log_ratio)
    check_finite("log_ratio", log_ratio)
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k2":
        kl = 0.5 * log_ratio**2
    elif estimator == "k3":
        kl = torch.expm1(-log_ratio) + log_ratio
    else:
        raise ValueError(f"estimator must be 'k1', 'k2' or 'k3', got {estimator!r}.")
    return reduce(kl, as_mask(mask, kl.shape), reduction)
