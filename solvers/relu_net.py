"""The network every max-Q solver consumes: a dense ReLU MLP over ``[fixed_input, action]``.

``Q(x, a) = w_L^T relu(W_{L-1} ... relu(W_1 [x; a] + b_1) ...) + b_L`` with a scalar output.
The solvers only see the layer weights; the state part ``x`` is fixed per problem and is
folded into the first layer's bias (:meth:`ReLUNet.fold_fixed_inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ReLUNet:
    """Weights ``[W_1, ..., W_L]`` and biases of a ReLU MLP whose first ``fixed_dim`` inputs are fixed.

    The tensors are detached views of the source module's parameters, so a ``ReLUNet`` built once
    follows the module's in-place optimiser updates.
    """

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    fixed_dim: int

    @classmethod
    def from_torch(cls, module: nn.Module, fixed_dim: int) -> ReLUNet:
        """Read a module made of ``nn.Linear`` layers separated by ``nn.ReLU``, ending in one output.

        ``module`` is an ``nn.Sequential`` (or a subclass, or any module whose ``to_sequential()``
        returns one). Anything else (other activations, normalisation layers, a multi-output head)
        raises a ``ValueError`` that names the offending layer.
        """
        seq = module.to_sequential() if hasattr(module, "to_sequential") else module
        if not isinstance(seq, nn.Sequential):
            raise ValueError(
                f"ReLUNet.from_torch needs an nn.Sequential of Linear and ReLU layers (or a module with "
                f"to_sequential()), got {type(module).__name__}."
            )
        layers = list(seq)
        weights, biases = [], []
        expect_linear = True
        for index, layer in enumerate(layers):
            if expect_linear and isinstance(layer, nn.Linear):
                weights.append(layer.weight.detach())
                bias = layer.bias.detach() if layer.bias is not None else torch.zeros(
                    layer.out_features, device=layer.weight.device, dtype=layer.weight.dtype)
                biases.append(bias)
                expect_linear = False
            elif not expect_linear and isinstance(layer, nn.ReLU):
                expect_linear = True
            else:
                wanted = "nn.Linear" if expect_linear else "nn.ReLU"
                raise ValueError(
                    f"layer {index} of the network is {type(layer).__name__}, expected {wanted}: the max-Q "
                    f"solvers need a plain ReLU MLP (Linear, ReLU, ..., Linear)."
                )
        if not weights or expect_linear:
            raise ValueError("the network must end with an nn.Linear layer (no activation on the output).")
        if weights[-1].shape[0] != 1:
            raise ValueError(f"the network must have one output (a Q-value), it has {weights[-1].shape[0]}.")
        if not 0 <= fixed_dim < weights[0].shape[1]:
            raise ValueError(
                f"fixed_dim={fixed_dim} must leave at least one action input; the first layer has "
                f"{weights[0].shape[1]} inputs."
            )
        return cls(tuple(weights), tuple(biases), int(fixed_dim))

    @property
    def input_dim(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def action_dim(self) -> int:
        return self.input_dim - self.fixed_dim

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(int(w.shape[0]) for w in self.weights[:-1])

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def check_inputs(self, fixed_inputs: torch.Tensor) -> torch.Tensor:
        """Validate a batch of fixed inputs: shape ``[B, fixed_dim]``, finite values."""
        if fixed_inputs.ndim != 2 or fixed_inputs.shape[1] != self.fixed_dim:
            raise ValueError(
                f"fixed_inputs must have shape [batch, {self.fixed_dim}], got {tuple(fixed_inputs.shape)}."
            )
        if not torch.isfinite(fixed_inputs).all():
            raise ValueError("fixed_inputs contain NaN or infinite values.")
        return fixed_inputs.to(self.device, self.weights[0].dtype)

    def fold_fixed_inputs(self, fixed_inputs: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-sample layers of the network as a function of the action alone.

        Returns weights and biases where the first layer is ``W_a`` (shared, ``[h1, A]``) and its bias is
        ``W_x x + b_1`` per sample (``[B, h1]``); deeper layers are shared.
        """
        first = self.weights[0]
        bias0 = fixed_inputs @ first[:, : self.fixed_dim].T + self.biases[0]
        weights = [first[:, self.fixed_dim:], *self.weights[1:]]
        biases = [bias0, *self.biases[1:]]
        return weights, biases

    def forward(self, fixed_inputs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``Q(x, a)`` for ``fixed_inputs[..., F]`` and ``actions[..., A]``; returns shape ``[...]``."""
        hidden = torch.cat([fixed_inputs, actions], dim=-1)
        for weight, bias in zip(self.weights[:-1], self.biases[:-1], strict=True):
            hidden = torch.relu(hidden @ weight.T + bias)
        return (hidden @ self.weights[-1].T + self.biases[-1]).squeeze(-1)

    __call__ = forward

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ReLUNet:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype or t.dtype)

        return ReLUNet(tuple(map(move, self.weights)), tuple(map(move, self.biases)), self.fixed_dim)
