"""A KL budget instead of a KL weight: β adapted so that the fine-tuned sampler's KL to the reference ends at a
target.

Every method of :func:`~rlcore.adapters.diffusion.finetune` maximises ``E_p[r] − β D(p ‖ p_ref)``. A user
rarely knows which β gives the trade-off they want, and the same β lands at different KLs for different methods
(measured on the ring at β = 0.5: DPOK and f-divergence PG at 0.7-0.8x the optimum's KL, PPO and RWR at
1.03-1.3x, every one of them near the reward-KL frontier at its own KL). The budgeted problem

    max_p E_p[r]   subject to   KL(p ‖ p_ref) <= ε

has the Lagrangian ``E_p[r] − β (KL − ε)``; for a fixed β its maximiser is the penalised problem's, and the dual
is minimised over ``β >= 0`` by (sub)gradient steps along ``KL(p_β) − ε``. :class:`KLController` takes those
steps on ``log β`` (scale-free: a step changes β by a factor, whatever the reward's units), with the error
measured as ``log(KL / ε)`` and clipped, so that one noisy estimate moves β by at most ``exp(rate)``:

    log β ← log β + rate · clip(log(KL̂ / ε), −1, 1)

which is the multiplicative form of Ziegler et al.'s adaptive KL controller ("Fine-Tuning Language Models from
Human Preferences", 2019; TRL's ``AdaptiveKLController``), with the error on the log scale so that over- and
undershooting by the same factor weigh the same.

The controller steers the KL's level, not its last value: the last iterations' drift and the estimate's noise
stay (measured on the ring, the step size decaying over the last 30 % of the iterations: final KLs from about
10 % under to 5 % over the budget). Where the budget is a hard limit, ``FinetuneConfig(kl_strict=True)``
shrinks the update after training until a probe's KL is within it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class KLController:
    """Dual ascent on ``log β`` towards ``KL = target``; see the module docstring."""

    target: float
    """The KL budget ε (> 0)."""
    beta: float
    """The current β (> 0): the starting value, then the adapted one."""
    rate: float = 0.3
    """Step on ``log β`` per unit of ``log(KL / target)`` (the error is clipped to [−1, 1])."""
    min_beta: float = 1e-6
    max_beta: float = 1e6

    def __post_init__(self) -> None:
        for name in ("target", "beta", "rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"KLController needs {name} > 0 (finite), got {value!r}.")

    def update(self, measured_kl: float) -> float:
        """One dual step from a measured KL; returns the new β. A KL at or below 0 (an estimate's noise when
        the samplers are close) counts as the largest undershoot."""
        error = math.log(measured_kl / self.target) if measured_kl > 0 else -1.0
        step = self.rate * min(max(error, -1.0), 1.0)
        self.beta = min(max(self.beta * math.exp(step), self.min_beta), self.max_beta)
        return self.beta


__all__ = ["KLController"]
