"""Squared-error value loss, optionally clipped around the values recorded at collection time."""

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


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor | None = None,
    clip_eps: float | None = None,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Value regression loss, with PPO2's optional clipping.

        unclipped:  L_i = ½ (V(s_i) − R_i)²
        clipped:    V_clip = V_old + clip(V − V_old, −ε, ε),   L_i = ½ max((V − R)², (V_clip − R)²)

    The clipped form (as in OpenAI baselines' PPO2 and CleanRL's ``clip_vloss``) keeps the value from moving
    more than ε away from its value at collection time, in the direction that would lower the loss.

    Args:
        values: V(s_i) under the current parameters; carries the gradient.
        returns: regression targets R_i (for example GAE returns), treated as constants.
        old_values: V_old(s_i) recorded at collection time; required when ``clip_eps`` is given.
        clip_eps: ε > 0 to clip, None for the plain loss.
        mask: bool, same shape; False entries are ignored.
        reduction: "mean" over the valid entries, "sum", or "none".

    Returns:
        (loss, metrics) with ``explained_variance`` = 1 − Var[R − V] / Var[R] (detached; 1 is perfect,
        0 no better than a constant) and, when clipped, ``clip_fraction``.
    """
    check_tensor("values", values)
    check_tensor("returns", returns)
    check_same_shape(values=values, returns=returns, old_values=old_values)
    m = as_mask(mask, values.shape)
    check_finite("returns", returns)
    target = returns.detach()
    error = (values - target) ** 2
    metrics: dict[str, torch.Tensor] = {}
    if clip_eps is not None:
        check_positive("clip_eps", clip_eps)
        if old_values is None:
            raise ValueError("value_loss: clip_eps was given but old_values is None; pass the values recorded "
                             "at collection time, or clip_eps=None for the unclipped loss.")
        check_finite("old_values", old_values)
        old = old_values.detach()
        clipped = old + (values - old).clamp(-clip_eps, clip_eps)
        error = torch.max(error, (clipped - target) ** 2)
        metrics["clip_fraction"] = masked_mean(((values - old).abs() > clip_eps).to(values.dtype), m)
    elif old_values is not None:
        raise ValueError("value_loss: old_values is only used with clip_eps; pass clip_eps or drop old_values.")
    loss = reduce(0.5 * error, m, reduction)
    with torch.no_grad():
        residual = target - values
        var_r = masked_mean((target - masked_mean(target, m)) ** 2, m)
        var_res = masked_mean((residual - masked_mean(residual, m)) ** 2, m)
        metrics["explained_variance"] = 1.0 - var_res / var_r.clamp_min(1e-12)
    return loss, metrics
