"""Running observation statistics as a module, so that they are saved and evaluated with the agent."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ObsNormalizer(nn.Module):
    """Running mean and variance of observations (Chan et al.'s parallel update), clipped standardisation.

        normalise(o) = clip((o − μ) / sqrt(σ² + ε), −clip, clip)

    A module with buffers, so the statistics live in the agent's ``state_dict`` and a saved agent evaluates
    with the statistics it trained with (what CleanRL's wrapper-based normalisation loses).

    Both methods run at every environment step, so they are kept to a few same-dtype ops: the count is
    mirrored in a Python float (the batch's share is a plain number: no 0-dim tensor arithmetic, no host
    sync), and :meth:`forward` applies float32 copies of μ and 1/sqrt(σ² + ε) that are derived from the
    float64 statistics whenever these change (they are not saved).
    """

    def __init__(self, shape: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.register_buffer("mean32", torch.zeros(shape), persistent=False)
        self.register_buffer("inv_std32", torch.ones(shape), persistent=False)
        self._count = 1e-4
        self._refresh()

    @torch.no_grad()
    def update(self, obs: torch.Tensor) -> None:
        """Fold a batch ``[B, shape]`` into the statistics.

            μ ← μ + δ n/(m + n),   σ² ← (m σ² + n s² + δ² m n/(m + n)) / (m + n),   δ = x̄ − μ
        """
        mean, var = self.mean, self.var  # (each buffer lookup goes through Module.__getattr__)
        x = obs.reshape(-1, mean.shape[0]).to(torch.float64)
        n = x.shape[0]
        frac = n / (self._count + n)  # the batch's share of the new total
        if n == 1:  # one environment: x̄ = x and s² = 0, without var_mean's cost
            delta = x[0] - mean
            var.mul_(1 - frac)
        else:
            batch_var, batch_mean = torch.var_mean(x, dim=0, unbiased=False)
            delta = batch_mean - mean
            var.lerp_(batch_var, frac)
        mean.add_(delta, alpha=frac)
        var.addcmul_(delta, delta, value=frac * (1 - frac))
        self._count += n
        self.count.fill_(self._count)
        self._refresh()

    def _refresh(self) -> None:
        # Only buffers that need no gradient are involved, so no no_grad context is needed.
        self.mean32.copy_(self.mean)
        self.inv_std32.copy_(self.var.add(self.eps).rsqrt_())

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._count = float(self.count)
        self._refresh()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self.mean32, self.inv_std32
        if obs.dtype != mean.dtype:
            mean, inv_std = mean.to(obs.dtype), inv_std.to(obs.dtype)
        return ((obs - mean) * inv_std).clamp_(-self.clip, self.clip)

