"""Sinusoidal timestep embeddings (Vaswani et al., as in DDPM), shared by the adapters' denoisers."""

from __future__ import annotations

import math

import torch


def timestep_embedding(t: torch.Tensor, dim: int = 32) -> torch.Tensor:
    """``[N, dim]`` embedding of timesteps ``t [N]``: sines and cosines at ``dim / 2`` geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


__all__ = ["timestep_embedding"]
