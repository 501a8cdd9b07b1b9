"""f-divergence regularisers D_f(π ‖ π_ref) = E_{π_ref}[f(π/π_ref)], estimated from log-ratios.

With u = π(x)/π_ref(x) and ℓ = log u:

    kind          f(u)                                    D_f
    "kl"          u log u                                 KL(π ‖ π_ref)
    "reverse_kl"  −log u                                  KL(π_ref ‖ π)
    "chi2"        (u − 1)²                                Pearson χ²(π ‖ π_ref)
    "js"          ½ [u log u − (1 + u) log((1 + u)/2)]    Jensen-Shannon (bounded by log 2)

Where the samples come from decides the estimator, so it is an explicit argument:

    samples_from="ref":    x ~ π_ref,   D_f ≈ mean f(u)        (DiffCon's form β E_ref[f(π/π_ref)])
    samples_from="policy": x ~ π,       D_f ≈ mean f(u) / u    (importance weight π_ref/π = 1/u)

Both are unbiased. Every formula is written in ℓ (``expm1``, ``softplus``) so that large ratios do not
overflow before they cancel.

Gradients: with ``samples_from="ref"`` the samples do not depend on π, so differentiating the estimate gives
an unbiased ∇D_f. With ``samples_from="policy"`` the samples must be reparameterised (``rsample``) for the
pathwise gradient to be right; with fixed samples add a score-function term yourself.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from rlcore.objectives._checks import Reduction, as_mask, check_finite, check_tensor, reduce

FDivergence = Literal["kl", "reverse_kl", "chi2", "js"]
SampleSource = Literal["ref", "policy"]
_LOG2 = math.log(2.0)


def _f(kind: str, lr: torch.Tensor) -> torch.Tensor:
    """f(u) at u = exp(lr)."""
    if kind == "kl":
        return lr * lr.exp()
    if kind == "reverse_kl":
        return -lr
    if kind == "chi2":
        return torch.expm1(lr) ** 2
    # JS: log((1 + u)/2) = softplus(ℓ) − log 2.
    u = lr.exp()
    return 0.5 * (u * lr - (1.0 + u) * (F.softplus(lr) - _LOG2))


def _f_over_u(kind: str, lr: torch.Tensor) -> torch.Tensor:
    """f(u)/u at u = exp(lr), the integrand under samples from π."""
    if kind == "kl":
        return lr
    if kind == "reverse_kl":
        return -lr * torch.exp(-lr)
    if kind == "chi2":
        # (u − 1)²/u = u − 2 + 1/u
        return torch.expm1(lr) * (-torch.expm1(-lr))
    return 0.5 * (lr - (1.0 + torch.exp(-lr)) * (F.softplus(lr) - _LOG2))


def f_divergence(
    log_ratio: torch.Tensor,
    kind: FDivergence,
    *,
    samples_from: SampleSource,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Estimate D_f(π ‖ π_ref) from ℓ = log π(x) − log π_ref(x) (see the module docstring for each f).

        samples_from="ref":     D_f ≈ (1/n) Σ_i f(exp ℓ_i),              x_i ~ π_ref
        samples_from="policy":  D_f ≈ (1/n) Σ_i f(exp ℓ_i) exp(−ℓ_i),    x_i ~ π

    Args:
        log_ratio: ℓ at the samples, any shape.
        kind: "kl", "reverse_kl", "chi2" or "js".
        samples_from: "ref" if x ~ π_ref, "policy" if x ~ π. Required, with no default: the wrong one
            silently estimates a different quantity.
        mask: bool, same shape; False entries are ignored.
        reduction: "mean" over the valid entries (the estimate), "sum", or "none" (per-sample integrand).
    """
    check_tensor("log_ratio", log_ratio)
    check_finite("log_ratio", log_ratio)
    if kind not in ("kl", "reverse_kl", "chi2", "js"):
        raise ValueError(f"kind must be one of 'kl', 'reverse_kl', 'chi2', 'js', got {kind!r}.")
    if samples_from == "ref":
        values = _f(kind, log_ratio)
    elif samples_from == "policy":
        values = _f_over_u(kind, log_ratio)
    else:
        raise ValueError(f"samples_from must be 'ref' (x ~ π_ref) or 'policy' (x ~ π), got {samples_from!r}.")
    return reduce(values, as_mask(mask, values.shape), reduction)
