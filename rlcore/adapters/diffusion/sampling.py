"""Rolling out a denoiser: noise predictions from any ε-model, trajectories with their log-probs and KL.

:func:`predict_noise` calls a plain ``nn.Module`` as ``model(x_t, t)`` (or ``model(x_t, t, condition)``), a
``diffusers`` ``UNet2DModel`` as ``model(x_t, t, class_labels=condition).sample`` and a
``UNet2DConditionModel`` as ``model(x_t, t, encoder_hidden_states=condition).sample``. :func:`rollout` runs
the S Gaussian steps of :class:`~rlcore.adapters.diffusion.steps.GaussianSteps` for a batch, recording every
state, the log-prob of every step under the sampling model and, with a reference model, the closed-form KL of
every step to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlcore.adapters.diffusion.steps import GaussianSteps


def predict_noise(model: nn.Module, x_t: torch.Tensor, t: int | torch.Tensor, condition: Any = None) -> torch.Tensor:
    """``ε(x_t, t, condition)`` of any supported denoiser (see the module docstring)."""
    timestep = torch.as_tensor(t, device=x_t.device)
    if timestep.dim() == 0:
        timestep = timestep.expand(x_t.shape[0])
    name = type(model).__name__
    if name == "UNet2DConditionModel":
        out = model(x_t, timestep, encoder_hidden_states=condition)
    elif name == "UNet2DModel":
        out = model(x_t, timestep, class_labels=condition)
    else:
        out = model(x_t, timestep) if condition is None else model(x_t, timestep, condition)
    return out.sample if hasattr(out, "sample") else out


@dataclass
class Trajectory:
    """A batch of reverse-diffusion trajectories.

    Attributes:
        states: ``[S + 1, N, ...]``: ``x_{t_0}`` (noise), ..., ``x_0`` (the samples).
        log_probs: ``[S, N]`` log-prob of every step under the model that sampled it.
        kl: ``[S, N]`` closed-form KL of every step to the reference model (zeros without one).
        noise: ``[S, N, ...]`` the standard normal draw of every step (``x' = μ + σ · noise``).
        condition: the condition the batch was sampled with (or None).
    """

    states: torch.Tensor
    log_probs: torch.Tensor
    kl: torch.Tensor
    noise: torch.Tensor
    condition: Any = None

    @property
    def samples(self) -> torch.Tensor:
        return self.states[-1]


@torch.no_grad()
def rollout(model: nn.Module, steps: GaussianSteps, shape: tuple[int, ...], generator: torch.Generator,
            condition: Any = None, reference: nn.Module | None = None, device: str | torch.device = "cpu",
            ) -> Trajectory:
    """Sample ``shape = (N, ...)`` by the S Gaussian steps of ``model``, recording log-probs and KL to ``reference``."""
    x = torch.randn(shape, generator=generator, device=device)
    states, log_probs, kls, noises = [x], [], [], []
    for i in range(steps.num_steps):
        t = int(steps.timesteps[i])
        mean = steps.mean(x, predict_noise(model, x, t, condition), i)
        noises.append(torch.randn(shape, generator=generator, device=device))
        x = mean + steps.std[i] * noises[-1]
        log_probs.append(steps.log_prob(x, mean, i))
        if reference is not None:
            kls.append(steps.kl(mean, steps.mean(states[-1], predict_noise(reference, states[-1], t, condition), i), i))
        else:
            kls.append(torch.zeros(shape[0], device=device))
        states.append(x)
    return Trajectory(torch.stack(states), torch.stack(log_probs), torch.stack(kls), torch.stack(noises), condition)


__all__ = ["Trajectory", "predict_noise", "rollout"]
