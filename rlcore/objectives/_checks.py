"""Input checks and the masked reduction shared by every objective.

Checks that need the value of a tensor (NaN, infinities, a masked row with no
candidate) synchronise the host with the device. Like ``torch.distributions``'
``validate_args`` they can be switched off; here they are **on in direct use**
(a NaN passed on quietly costs far more than a check when writing a new loss)
and **off inside rlcore's training loops** (:mod:`rlcore.loops` runs under
``validate_args(False)``, so a step never waits on the device for a check).
The checks on shapes, which are free, always run.

The setting is a context variable, not a module global: ``with
validate_args(False):`` changes it for that block (and that thread or task)
only; ``set_validate_args`` changes it for the current context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

import torch

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")
_VALIDATE_ARGS: ContextVar[bool] = ContextVar("rlcore_validate_args", default=True)


def set_validate_args(enabled: bool) -> None:
    """Turn the value checks (NaN / infinity) of ``rlcore.objectives`` and ``rlcore.networks.distributions``
    on or off in the current context (on by default; see :func:`validate_args` for a scoped change)."""
    _VALIDATE_ARGS.set(bool(enabled))


@contextlib.contextmanager
def validate_args(enabled: bool) -> Iterator[None]:
    """``with validate_args(False): ...`` runs the block with value checks off (the training loops do this),
    and restores the previous setting afterwards, even on an exception."""
    token = _VALIDATE_ARGS.set(bool(enabled))
    try:
        yield
    finally:
        _VALIDATE_ARGS.reset(token)


def validate_args_enabled() -> bool:
    """Whether value checks are on in the current context."""
    return _VALIDATE_ARGS.get()


def check_tensor(name: str, x: object) -> torch.Tensor:
    """Return ``x`` if it is a tensor, else raise a ValueError naming the argument."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}. Wrap it with torch.as_tensor(...).")
    return x


def check_finite(name: str, x: torch.Tensor, allow_neg_inf: bool = False) -> None:
    """Raise a ValueError if ``x`` holds NaN or infinities (``-inf`` allowed when ``allow_neg_inf``)."""
    if not x.is_floating_point() or not _VALIDATE_ARGS.get():
        return
    # One fused kernel and one sync on the common path; the detailed count only once something is wrong.
    if torch.isfinite(x).all() if not allow_neg_inf else not (torch.isnan(x) | torch.isposinf(x)).any():
        return
    bad = torch.isnan(x) | (torch.isposinf(x) if allow_neg_inf else torch.isinf(x))
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite value(s) (shape {tuple(x.shape)}); "
                         "check the upstream computation (a log of zero, a division by a zero std, ...).")


def check_same_shape(**tensors: torch.Tensor | None) -> None:
    """Raise a ValueError unless every non-None tensor has the same shape."""
    given = {k: v for k, v in tensors.items() if v is not None}
    shapes = {k: tuple(v.shape) for k, v in given.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k}={s}" for k, s in shapes.items())
        raise ValueError(f"shapes must match, got {listed}.")


def check_positive(name: str, value: float) -> None:
    """Raise a ValueError unless ``value`` is a finite number > 0."""
    if not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")


def as_mask(mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """Check a sample mask against the per-sample shape and return it as bool (True = sample counts)."""
    if mask is None:
        return None
    check_tensor("mask", mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask must have the per-sample shape {tuple(shape)}, got {tuple(mask.shape)}.")
    # 0/1 floats (for example 1 - done) are accepted; anything nonzero counts as valid.
    return mask if mask.dtype == torch.bool else mask != 0


def reduce(values: torch.Tensor, mask: torch.Tensor | None, reduction: Reduction) -> torch.Tensor:
    """Reduce per-sample ``values`` over all their elements, ignoring those where ``mask`` is False.

    mean = Σ_i m_i v_i / max(Σ_i m_i, 1),  sum = Σ_i m_i v_i,  none = m ⊙ v (masked entries set to 0).

    ``torch.where`` rather than a product, so that a masked entry holding ``inf`` or NaN (the log-prob of an
    invalid candidate, say) cannot poison the result or its gradient.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    if mask is not None:
        values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    count = values.numel() if mask is None else mask.sum().clamp_min(1)
    return total / count


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Detached mean of ``values`` over the valid entries (for metrics)."""
    return reduce(values.detach(), mask, "mean")
