"""Stacked MLPs: ``E`` independent networks evaluated together with one batched matmul per layer.

Twin critics (``E = 2``) and dynamics ensembles (``E = 7``) are the same object: weights of shape
``[E, in, out]``, inputs of shape ``[E, B, in]`` (or ``[B, in]``, shared by every member), one
``torch.baddbmm`` per layer. This is the "stack the critics and evaluate them at once" habit of the
house style, without ``torch.func`` machinery.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


class EnsembleLinear(nn.Module):
    """``E`` linear layers ``y_e = x_e W_e + b_e``; each member initialised like ``nn.Linear``."""

    def __init__(self, ensemble_size: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.ensemble_size, self.in_features, self.out_features = ensemble_size, in_features, out_features
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        # nn.Linear's default (Kaiming-uniform with a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both.
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x[E, B, in] -> [E, B, out]``."""
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"ensemble_size={self.ensemble_size}, in_features={self.in_features}, out_features={self.out_features}"


class EnsembleMLP(nn.Module):
    """``E`` MLPs ``in -> hidden... -> out`` with a shared activation, evaluated at once.

    ``forward`` takes ``[B, in]`` (the same input for every member) or ``[E, B, in]`` and returns ``[E, B, out]``.
    """

    def __init__(self, ensemble_size: int, in_dim: int, hidden_sizes: Sequence[int], out_dim: int,
                 activation: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}.")
        if not hidden_sizes or min(hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be a non-empty list of positive sizes, got {tuple(hidden_sizes)}.")
        self.ensemble_size = ensemble_size
        sizes = [in_dim, *hidden_sizes, out_dim]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(EnsembleLinear(ensemble_size, fan_in, fan_out))
            if index < len(sizes) - 2:
                layers.append(activation())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.ensemble_size, -1, -1)
        return self.layers(x)
