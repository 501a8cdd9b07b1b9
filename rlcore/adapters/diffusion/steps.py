"""The reverse-diffusion steps of a ``diffusers`` scheduler as Gaussian policies, with exact log-probs and KL.

Reverse diffusion over the scheduler's inference timesteps ``t_0 > t_1 > ... > t_{S-1}`` is an MDP whose
action at step ``i`` is ``x_{t_{i+1}}`` drawn from a Gaussian whose mean depends on the denoiser's noise
prediction ``ε = ε_θ(x_t, t, c)`` and whose standard deviation ``σ_i`` does not depend on θ. With
``x̂_0 = (x_t − sqrt(1 − ᾱ_t) ε) / sqrt(ᾱ_t)`` and ``ᾱ'`` the previous timestep's ᾱ:

* **DDPM** (``DDPMScheduler``, ``variance_type="fixed_small"``): the posterior
  ``μ = sqrt(ᾱ') β / (1 − ᾱ_t) · x̂_0 + sqrt(α) (1 − ᾱ') / (1 − ᾱ_t) · x_t``, ``σ² = (1 − ᾱ') / (1 − ᾱ_t) · β``
  with ``α = ᾱ_t / ᾱ'`` and ``β = 1 − α``;
* **DDIM** (``DDIMScheduler``) with ``eta > 0``: ``σ = η sqrt((1 − ᾱ') / (1 − ᾱ_t)) sqrt(1 − ᾱ_t / ᾱ')`` and
  ``μ = sqrt(ᾱ') x̂_0 + sqrt(1 − ᾱ' − σ²) ε``. ``eta = 0`` is deterministic: not a policy, refused.

Both equal the scheduler's own ``step`` with the same noise (tested). Where a step's σ would be 0 (DDPM's last
step, or a final ᾱ' of 1), the step is given the variance ``β`` of its transition instead (DDPM's
``fixed_large``), so that every step is a proper Gaussian and the policy gradient reaches the last denoiser
call too; that step's noise is tiny. ``x̂_0`` is clipped when the scheduler's config asks for it
(``clip_sample``), which keeps the mean a deterministic function of ``ε``.

Per step, over ``D`` flattened dimensions: ``log π(x' | x_t) = −‖x' − μ‖² / (2σ²) − D log σ − D/2 log 2π`` and,
between two denoisers at the same ``x_t`` (same σ), the closed form ``KL = ‖μ − μ_ref‖² / (2σ²)``
(:func:`rlcore.objectives.diag_gaussian_kl`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from rlcore.objectives import diag_gaussian_kl

DIVERGENCES = ("kl", "reverse_kl", "chi2")
"""The f-divergences of :meth:`GaussianSteps.divergence`."""


@dataclass
class GaussianSteps:
    """The S Gaussian steps of a scheduler at ``num_inference_steps`` (see the module docstring).

    Attributes:
        timesteps: ``[S]`` int64, the model's timestep at each step.
        sqrt_alpha_bar, sqrt_one_minus_alpha_bar: ``[S]`` of ``t_i``.
        sqrt_alpha_bar_prev: ``[S]`` of the step's target timestep.
        coef_x0, coef_eps, coef_xt: ``μ = coef_x0 · x̂_0 + coef_eps · ε + coef_xt · x_t``.
        std: ``[S]`` σ_i > 0.
        clip: the ``x̂_0`` clip range, or None.
    """

    timesteps: torch.Tensor
    sqrt_alpha_bar: torch.Tensor
    sqrt_one_minus_alpha_bar: torch.Tensor
    coef_x0: torch.Tensor
    coef_eps: torch.Tensor
    coef_xt: torch.Tensor
    std: torch.Tensor
    clip: float | None
    kind: str
    eta: float

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @classmethod
    def from_scheduler(cls, scheduler: Any, num_inference_steps: int, eta: float = 1.0) -> GaussianSteps:
        """The steps of a ``diffusers`` ``DDPMScheduler`` or ``DDIMScheduler`` (with ``eta > 0``)."""
        name = type(scheduler).__name__
        if name not in ("DDPMScheduler", "DDIMScheduler"):
            raise ValueError(f"scheduler must be a diffusers DDPMScheduler or DDIMScheduler (each step a Gaussian), "
                             f"got {name}.")
        if getattr(scheduler.config, "prediction_type", "epsilon") != "epsilon":
            raise ValueError(f"the denoiser must predict the noise (prediction_type='epsilon'), got "
                             f"{scheduler.config.prediction_type!r}.")
        if name == "DDIMScheduler" and not eta > 0:
            raise ValueError(f"DDIM with eta = {eta} is deterministic, not a policy; use eta > 0 (1.0 is DDPM-like).")
        variance = getattr(scheduler.config, "variance_type", None)
        if name == "DDPMScheduler" and variance not in ("fixed_small", "fixed_small_log"):
            raise ValueError(f"DDPMScheduler variance_type must be 'fixed_small', got {variance!r}.")
        total = scheduler.config.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= total:
            raise ValueError(f"num_inference_steps must be an integer in [1, {total}], got {num_inference_steps!r}.")
        scheduler.set_timesteps(num_inference_steps)
        ab = scheduler.alphas_cumprod.double()
        final = getattr(scheduler, "final_alpha_cumprod", torch.tensor(1.0)).double()
        ts = scheduler.timesteps.long()
        prev = torch.cat([ts[1:], torch.tensor([-1])])
        ab_t = ab[ts]
        ab_prev = torch.where(prev >= 0, ab[prev.clamp(min=0)], final)
        alpha = ab_t / ab_prev
        beta = 1 - alpha
        if name == "DDPMScheduler":
            var = (1 - ab_prev) / (1 - ab_t) * beta
            coef_x0 = ab_prev.sqrt() * beta / (1 - ab_t)
            coef_xt = alpha.sqrt() * (1 - ab_prev) / (1 - ab_t)
            coef_eps = torch.zeros_like(coef_x0)
        else:
            var = eta ** 2 * (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
            coef_x0 = ab_prev.sqrt()
            coef_eps = (1 - ab_prev - var).clamp(min=0).sqrt()
            coef_xt = torch.zeros_like(coef_x0)
        var = torch.where(var > 1e-12, var, beta.clamp(min=1e-12))  # the last step: a proper Gaussian too
        clip = float(scheduler.config.clip_sample_range) if scheduler.config.clip_sample else None
        f = torch.float32
        return cls(ts, ab_t.sqrt().to(f), (1 - ab_t).sqrt().to(f), coef_x0.to(f), coef_eps.to(f), coef_xt.to(f),
                   var.sqrt().to(f), clip, "ddpm" if name == "DDPMScheduler" else "ddim", float(eta))

    def to(self, device: torch.device | str) -> GaussianSteps:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return GaussianSteps(**moved)

    def mean(self, x_t: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        """μ of step ``i`` from ``x_t`` and the noise prediction ``eps`` (any shape ``[N, ...]``)."""
        x0 = (x_t - self.sqrt_one_minus_alpha_bar[i] * eps) / self.sqrt_alpha_bar[i]
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        return self.coef_x0[i] * x0 + self.coef_eps[i] * eps + self.coef_xt[i] * x_t

    def log_prob(self, x_prev: torch.Tensor, mean: torch.Tensor, i: int,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """``log π(x_prev | x_t)`` ``[N]``, summed over every non-batch dimension, or, with ``mask`` (bool, the
        samples' shape), over the masked elements only: the log-prob of that region's marginal (the dimensions
        are independent given ``x_t``), whose gradient does not reach the mean outside it."""
        sigma = self.std[i]
        per_element = -(x_prev - mean).pow(2) / (2 * sigma ** 2) - torch.log(sigma) - 0.5 * math.log(2 * math.pi)
        if mask is not None:
            per_element = per_element * mask
        return per_element.flatten(1).sum(1)

    def kl(self, mean: torch.Tensor, ref_mean: torch.Tensor, i: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Closed-form ``KL(π_θ(·|x_t) ‖ π_ref(·|x_t))`` ``[N]`` of step ``i`` (same σ: ``‖μ − μ_ref‖² / 2σ²``);
        with ``mask``, the KL of the masked elements' marginals."""
        if mask is not None:
            return ((mean - ref_mean).pow(2) * mask).flatten(1).sum(1) / (2 * self.std[i] ** 2)
        log_std = torch.log(self.std[i]).expand(mean[0].numel())
        return diag_gaussian_kl(mean.flatten(1), log_std, ref_mean.flatten(1), log_std, reduction="none")

    def divergence(self, mean: torch.Tensor, ref_mean: torch.Tensor, i: int, kind: str = "kl") -> torch.Tensor:
        """Closed-form f-divergence ``D_f(π_θ(·|x_t) ‖ π_ref(·|x_t))`` ``[N]`` of step ``i``: with equal variances
        KL and reverse KL are both ``‖μ − μ_ref‖² / 2σ²`` and Pearson χ² is ``exp(‖μ − μ_ref‖² / σ²) − 1``."""
        if kind not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {', '.join(map(repr, DIVERGENCES))}; got {kind!r}.")
        kl = self.kl(mean, ref_mean, i)
        return torch.expm1(2 * kl) if kind == "chi2" else kl


__all__ = ["DIVERGENCES", "GaussianSteps"]
