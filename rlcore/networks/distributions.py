"""Policy heads: a diagonal Gaussian (optionally tanh-squashed into an action box) and a categorical over a
dynamic, masked candidate set; with closed-form KL between two heads of the same kind.

Both are thin, explicit objects over tensors of any batch shape: a network produces their parameters, the
algorithm asks for ``sample``/``rsample``, ``log_prob``, ``entropy`` and ``mode``, and the losses in
``rlcore.objectives`` take the log-probs. Action dimensions (Gaussian) are summed in ``log_prob``, so a
log-prob has the batch shape.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rlcore.objectives._checks import check_finite, check_tensor, validate_args_enabled
from rlcore.objectives.kl import categorical_kl, diag_gaussian_kl

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG2 = math.log(2.0)


def _log1m_tanh_sq(u: torch.Tensor) -> torch.Tensor:
    """log(1 − tanh(u)²) = 2 (log 2 − u − softplus(−2u)), exact and finite for any u (no tanh → ±1 rounding)."""
    return 2.0 * (_LOG2 - u - F.softplus(-2.0 * u))


class DiagGaussian:
    """Diagonal Gaussian policy head, optionally squashed by tanh into the box [low, high].

        u ~ N(μ, diag σ²),  σ = exp(log_std)
        unsquashed:  a = u,                           log π(a) = Σ_d log N(u_d; μ_d, σ_d)
        squashed:    a = c + s ⊙ tanh(u),  c = (high + low)/2,  s = (high − low)/2,
                     log π(a) = Σ_d [log N(u_d; μ_d, σ_d) − log(1 − tanh²(u_d)) − log s_d]   (change of variables)

    Args:
        mean: μ, shape ``[..., D]``.
        log_std: log σ, broadcastable to ``mean`` (a state-independent ``[D]`` parameter is fine).
        squash: apply tanh and scale to [low, high] (SAC-style bounded actions).
        low: lower corner of the action box, broadcastable to ``[D]``; only with ``squash=True``. Default −1.
        high: upper corner of the action box, likewise. Default 1.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        log_std: torch.Tensor,
        squash: bool = False,
        low: torch.Tensor | float | None = None,
        high: torch.Tensor | float | None = None,
    ) -> None:
        check_tensor("mean", mean)
        check_tensor("log_std", log_std)
        if mean.dim() == 0:
            raise ValueError("DiagGaussian: mean must have an action dimension [..., D], got a scalar.")
        try:
            # expand (a view) both checks that log_std broadcasts to mean and that it would not enlarge it, at a
            # fraction of torch.broadcast_shapes' cost (this runs once per acting step).
            expanded_log_std = log_std if log_std.shape == mean.shape else log_std.expand(mean.shape)
        except RuntimeError as err:
            raise ValueError(f"DiagGaussian: log_std of shape {tuple(log_std.shape)} does not broadcast to mean "
                             f"of shape {tuple(mean.shape)}; give it the shape of mean or of its last "
                             "dimensions.") from err
        check_finite("mean", mean)
        check_finite("log_std", log_std)
        if (low is not None or high is not None) and not squash:
            raise ValueError("DiagGaussian: low/high scale a tanh-squashed Gaussian; pass squash=True, or clip "
                             "unsquashed actions to the box in the environment.")
        self.mean = mean
        self.log_std = expanded_log_std
        self.squash = squash
        if squash:
            low_t = torch.as_tensor(-1.0 if low is None else low, dtype=mean.dtype, device=mean.device)
            high_t = torch.as_tensor(1.0 if high is None else high, dtype=mean.dtype, device=mean.device)
            if not torch.isfinite(low_t).all() or not torch.isfinite(high_t).all() or not (high_t > low_t).all():
                raise ValueError(f"DiagGaussian: need finite low < high, got low={low_t.tolist()}, "
                                 f"high={high_t.tolist()}.")
            self.loc = (high_t + low_t) / 2
            self.scale = (high_t - low_t) / 2
            self.low, self.high = low_t, high_t

    @property
    def std(self) -> torch.Tensor:
        """σ = exp(log_std)."""
        return self.log_std.exp()

    @property
    def batch_shape(self) -> torch.Size:
        """Shape of a log-prob: ``mean.shape[:-1]``."""
        return self.mean.shape[:-1]

    def _squash(self, u: torch.Tensor) -> torch.Tensor:
        return self.loc + self.scale * torch.tanh(u) if self.squash else u

    def _base_log_prob(self, u: torch.Tensor) -> torch.Tensor:
        z = (u - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z**2 - self.log_std - _HALF_LOG_2PI).sum(-1)

    def _log_prob_from_pre_squash(self, u: torch.Tensor) -> torch.Tensor:
        lp = self._base_log_prob(u)
        if self.squash:
            lp = lp - (_log1m_tanh_sq(u) + torch.log(self.scale)).expand_as(u).sum(-1)
        return lp

    def rsample_and_log_prob(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample a = f(μ + σ ε), ε ~ N(0, I), and its log-prob from the pre-squash u.

        Prefer this to ``log_prob(rsample())`` for a squashed head: it never inverts tanh near the bounds.
        """
        eps = torch.randn(self.mean.shape, dtype=self.mean.dtype, device=self.mean.device, generator=generator)
        u = self.mean + self.log_std.exp() * eps
        return self._squash(u), self._log_prob_from_pre_squash(u)

    def sample_and_log_prob(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``rsample_and_log_prob`` but without gradient (for collecting rollouts)."""
        with torch.no_grad():
            return self.rsample_and_log_prob(generator)

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample (gradient flows into mean and log_std), shape ``[..., D]``."""
        return self.rsample_and_log_prob(generator)[0]

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample without gradient, shape ``[..., D]``."""
        with torch.no_grad():
            return self.rsample(generator)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """log π(a), summed over the action dimension, shape ``batch_shape``.

        For a squashed head the action is mapped back by atanh; actions on or beyond the box edge are moved
        inside by 1e-6 of the half-width (float32 rounding of tanh puts samples exactly on the edge).
        """
        check_tensor("action", action)
        if action.shape[-1:] != self.mean.shape[-1:]:
            raise ValueError(f"DiagGaussian.log_prob: action has last dimension {tuple(action.shape[-1:])}, "
                             f"expected ({self.mean.shape[-1]},).")
        check_finite("action", action)
        if not self.squash:
            return self._base_log_prob(action)
        y = ((action - self.loc) / self.scale).clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        return self._log_prob_from_pre_squash(torch.atanh(y))

    def entropy(self) -> torch.Tensor:
        """H = Σ_d (½ + ½ log 2π + log σ_d), shape ``batch_shape``; unsquashed heads only.

        A tanh-squashed Gaussian has no closed-form entropy; estimate it as −log π(a) at a ~ π
        (``-rsample_and_log_prob()[1]``), as SAC does.
        """
        if self.squash:
            raise NotImplementedError("DiagGaussian.entropy: no closed form for a tanh-squashed Gaussian; use "
                                      "-dist.rsample_and_log_prob()[1] as a one-sample estimate.")
        return (0.5 + _HALF_LOG_2PI + self.log_std).sum(-1)

    @property
    def mode(self) -> torch.Tensor:
        """The deterministic action: μ, or c + s ⊙ tanh(μ) when squashed (the usual convention for evaluation)."""
        return self._squash(self.mean)

    def kl(self, ref: DiagGaussian) -> torch.Tensor:
        """KL(self ‖ ref) per sample, shape ``batch_shape`` (see ``kl_divergence``)."""
        return kl_divergence(self, ref)


class MaskedCategorical:
    """Categorical over a dynamic candidate set: logits ``[..., K]`` and a bool mask ``[..., K]`` of valid ones.

        π(k) = exp(ℓ_k) / Σ_{j valid} exp(ℓ_j)  for valid k,   π(k) = 0 exactly for invalid k

    (the invalid logits are replaced by −inf before the softmax). Actions are candidate indices of shape
    ``[...]``. Every row needs at least one valid candidate; a row with none raises a ValueError.

    Args:
        logits: ``[..., K]`` scores; values at invalid positions are ignored (may be anything, even NaN).
        mask: bool ``[..., K]``, True where the candidate is on offer; None means all valid.
    """

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        check_tensor("logits", logits)
        if logits.dim() == 0:
            raise ValueError("MaskedCategorical: logits must have a candidate dimension [..., K], got a scalar.")
        if mask is None:
            mask = torch.ones(logits.shape, dtype=torch.bool, device=logits.device)
        check_tensor("mask", mask)
        if mask.shape != logits.shape:
            raise ValueError(f"MaskedCategorical: mask must have the shape of logits {tuple(logits.shape)}, got "
                             f"{tuple(mask.shape)}.")
        if mask.dtype != torch.bool:
            raise ValueError(f"MaskedCategorical: mask must be a bool tensor, got {mask.dtype}; pass mask.bool().")
        # A row with no candidate gives NaN probabilities; checking for it waits on the device, so it is a
        # value check (on in direct use, off inside the training loops, like the others).
        empty = ~mask.any(-1) if validate_args_enabled() else None
        if empty is not None and empty.any():
            rows = empty.nonzero().tolist()[:5]
            raise ValueError(f"MaskedCategorical: {int(empty.sum())} row(s) have no valid candidate (first "
                             f"indices {rows}); every state needs at least one action on offer.")
        self.mask = mask
        self.logits = logits.masked_fill(~mask, -torch.inf)
        check_finite("logits (valid entries)", self.logits, allow_neg_inf=True)
        self.log_probs = torch.log_softmax(self.logits, dim=-1)

    @property
    def probs(self) -> torch.Tensor:
        """π(k), ``[..., K]``; exactly 0 at invalid candidates."""
        return self.log_probs.exp()

    @property
    def batch_shape(self) -> torch.Size:
        """Shape of an action and of a log-prob: ``logits.shape[:-1]``."""
        return self.logits.shape[:-1]

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """log π(a) of candidate indices ``action`` (integer, shape ``batch_shape``).

        Raises a ValueError (when validation is on) for an index out of range or pointing at an invalid
        candidate, whose log-prob would be −inf: that is a bug upstream, not a rare action.
        """
        check_tensor("action", action)
        if action.shape != self.batch_shape or action.is_floating_point():
            raise ValueError(f"MaskedCategorical.log_prob: action must be integer indices of shape "
                             f"{tuple(self.batch_shape)}, got {action.dtype} {tuple(action.shape)}.")
        k = self.logits.shape[-1]
        if validate_args_enabled():
            if ((action < 0) | (action >= k)).any():
                raise ValueError(f"MaskedCategorical.log_prob: action indices must be in [0, {k}).")
            if not self.mask.gather(-1, action.long().unsqueeze(-1)).all():
                raise ValueError("MaskedCategorical.log_prob: an action points at an invalid (masked) candidate.")
        return self.log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        """H = −Σ_{k valid} π(k) log π(k), shape ``batch_shape`` (invalid candidates contribute 0)."""
        zero = torch.zeros((), dtype=self.log_probs.dtype, device=self.log_probs.device)
        # where(), not a product, so 0 · (−inf) neither appears in the value nor in the gradient.
        safe = torch.where(self.mask, self.log_probs, zero)
        return -(self.probs * safe).sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Candidate indices, shape ``batch_shape``, int64; never an invalid candidate (probability 0)."""
        with torch.no_grad():
            k = self.logits.shape[-1]
            flat = self.probs.reshape(-1, k)
            return torch.multinomial(flat, 1, generator=generator).reshape(self.batch_shape)

    def sample_and_log_prob(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A sample and its log-probability (no validation of the sample: it is valid by construction)."""
        action = self.sample(generator)
        return action, self.log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)

    @property
    def mode(self) -> torch.Tensor:
        """The most probable valid candidate (argmax of the masked logits), shape ``batch_shape``."""
        return self.logits.argmax(-1)

    def kl(self, ref: MaskedCategorical) -> torch.Tensor:
        """KL(self ‖ ref) per sample, shape ``batch_shape`` (see ``kl_divergence``)."""
        return kl_divergence(self, ref)


def kl_divergence(p: DiagGaussian | MaskedCategorical, q: DiagGaussian | MaskedCategorical) -> torch.Tensor:
    """Closed-form KL(p ‖ q) per sample, shape ``batch_shape``.

    * DiagGaussian: Σ_d [log σ_q − log σ_p + (σ_p² + (μ_p − μ_q)²)/(2σ_q²) − ½]. KL is invariant under a
      bijection applied to both, so two squashed heads with the same box have the KL of their base Gaussians;
      mixing squashed and unsquashed, or different boxes, raises a ValueError.
    * MaskedCategorical: Σ_{k: p_k > 0} p_k (log p_k − log q_k); +inf if p puts mass on a candidate q masks.
    """
    if isinstance(p, DiagGaussian) and isinstance(q, DiagGaussian):
        if p.squash != q.squash or (p.squash and not (torch.equal(p.low, q.low) and torch.equal(p.high, q.high))):
            raise ValueError("kl_divergence: the two DiagGaussians must both be unsquashed or both squashed into "
                             "the same box; the KL between different pushforwards has no closed form.")
        return diag_gaussian_kl(p.mean, p.log_std, q.mean, q.log_std, reduction="none")
    if isinstance(p, MaskedCategorical) and isinstance(q, MaskedCategorical):
        if p.logits.shape != q.logits.shape:
            raise ValueError(f"kl_divergence: candidate sets differ in shape, {tuple(p.logits.shape)} vs "
                             f"{tuple(q.logits.shape)}.")
        return categorical_kl(p.logits, q.logits, reduction="none")
    raise ValueError(f"kl_divergence: no closed form between {type(p).__name__} and {type(q).__name__}; both must "
                     "be DiagGaussian or both MaskedCategorical (use rlcore.objectives.sample_kl otherwise).")
