"""The ReLU MLP that the Q-networks and actors are built from (Glorot-uniform weights, zero biases)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> list[nn.Module]:
    """Layers of a ReLU MLP ``in -> hidden... -> out`` with Glorot-uniform weights and zero biases."""
    layers: list[nn.Module] = []
    sizes = [in_dim, *hidden_sizes]
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [_glorot(nn.Linear(fan_in, fan_out)), nn.ReLU()]
    layers.append(_glorot(nn.Linear(sizes[-1], out_dim)))
    return layers


def _glorot(layer: nn.Linear) -> nn.Linear:
    # TensorFlow's default initialisation, which the CAQL paper's networks used.
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer

