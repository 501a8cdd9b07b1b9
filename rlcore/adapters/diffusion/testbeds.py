"""Test beds the library ships and pretrains itself (nothing is downloaded).

:func:`ring`: a 2-D mixture of 8 Gaussians on a circle (radius 2, std 0.15 each, equal weights), with a small
MLP ε-denoiser pretrained by the library on samples of it under a ``diffusers`` ``DDPMScheduler`` (100 train
timesteps, linear β from 1e-4 to 0.02 scaled to 100 steps, no sample clipping) and sampled with 20 Gaussian
steps. The weights are cached under ``$RLCORE_CACHE_DIR`` (default ``~/.cache/rlcore``)
``/diffusion/ring-<hash>.pt``, written atomically; the hash covers every setting of :class:`RingConfig`.

:func:`digits` (from :mod:`~rlcore.adapters.diffusion.digits`): scikit-learn's 8x8 digits with a
class-conditional ``diffusers`` ``UNet2DModel``, the classifiers that reward it and a localized defect with its
trained detector.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlcore.adapters.cache import cache_file, save_atomic
from rlcore.adapters.diffusion.digits import DigitsBed, DigitsConfig, digits
from rlcore.adapters.diffusion.sampling import rollout
from rlcore.adapters.diffusion.steps import GaussianSteps
from rlcore.networks.embeddings import timestep_embedding

FORMAT = 1


class MLPDenoiser(nn.Module):
    """``ε_θ(x_t, t)`` for points in ``R^dim``: an MLP over the point and a sinusoidal timestep embedding."""

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        self.dim = dim
        blocks: list[nn.Module] = []
        width = dim + 32
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*blocks, nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, timestep_embedding(t)], dim=1))


@dataclass(frozen=True)
class RingConfig:
    """The ring test bed: the data, the denoiser and its pretraining (all of it goes into the cache key)."""

    modes: int = 8
    radius: float = 2.0
    mode_std: float = 0.15
    hidden: int = 128
    layers: int = 3
    train_timesteps: int = 100
    inference_steps: int = 20
    pretrain_steps: int = 4_000
    batch_size: int = 512
    learning_rate: float = 2e-3
    seed: int = 0


@dataclass
class TestBed:
    """A pretrained denoiser, its scheduler, and the data it was trained on.

    Attributes:
        model: the pretrained ε-denoiser (the reference of fine-tuning; do not train it in place: ``finetune``
            copies it).
        scheduler: its ``diffusers`` scheduler.
        num_inference_steps: Gaussian steps per sample.
        config: what defines the bed.
    """

    model: nn.Module
    scheduler: Any
    num_inference_steps: int
    config: RingConfig

    @property
    def steps(self) -> GaussianSteps:
        return GaussianSteps.from_scheduler(self.scheduler, self.num_inference_steps)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``[n, 2]`` samples of the pretrained model (the reference distribution)."""
        return rollout(self.model, self.steps, (n, 2), torch.Generator().manual_seed(int(seed))).samples

    def data(self, n: int, seed: int = 0) -> torch.Tensor:
        """``[n, 2]`` samples of the true mixture the model was trained on."""
        return ring_data(self.config, n, torch.Generator().manual_seed(int(seed)))


def ring_data(config: RingConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    mode = torch.randint(config.modes, (n,), generator=generator)
    angle = 2 * math.pi * mode.float() / config.modes
    centres = config.radius * torch.stack([angle.cos(), angle.sin()], 1)
    return centres + config.mode_std * torch.randn(n, 2, generator=generator)


def _scheduler(config: RingConfig) -> Any:
    try:
        from diffusers import DDPMScheduler
    except ImportError:
        raise ValueError("the diffusion adapter needs diffusers: pip install 'rlcore[diffusion]'.") from None
    # DDPM's linear schedule (1e-4 to 0.02 over 1000 steps) stretched to train_timesteps steps.
    scale = 1000 / config.train_timesteps
    return DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_start=1e-4 * scale, beta_end=0.02 * scale,
                         clip_sample=False)


def pretrain(config: RingConfig, scheduler: Any) -> MLPDenoiser:
    """Fit the denoiser to the ring by the DDPM loss (seeded; the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = MLPDenoiser(2, config.hidden, config.layers)
    g = torch.Generator().manual_seed(config.seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.pretrain_steps)
    alpha_bar = scheduler.alphas_cumprod.float()
    for _ in range(config.pretrain_steps):
        x0 = ring_data(config, config.batch_size, g)
        t = torch.randint(config.train_timesteps, (config.batch_size,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = alpha_bar[t][:, None]
        loss = (model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval().requires_grad_(False)


def cache_path(config: RingConfig, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`ring` keeps the pretrained weights of ``config``."""
    return cache_file("diffusion", "ring", {"format": FORMAT, **asdict(config)}, cache_dir)


def ring(seed: int = 0, cache_dir: str | Path | None = None, **overrides: Any) -> TestBed:
    """The ring test bed of ``seed`` (see the module docstring): pretrained on first use, then read from the cache.

    ``overrides`` are other :class:`RingConfig` fields (``pretrain_steps``, ``hidden``...).
    """
    known = set(RingConfig.__dataclass_fields__) - {"seed"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"ring got unknown setting(s) {unknown}; accepted: {sorted(known)}.")
    config = RingConfig(seed=int(seed), **overrides)
    scheduler = _scheduler(config)
    path = cache_path(config, cache_dir)
    model = None
    if path.is_file():
        try:
            with torch.random.fork_rng(devices=[]):  # the initialisation (overwritten) leaves the global RNG alone
                model = MLPDenoiser(2, config.hidden, config.layers)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            model.eval().requires_grad_(False)
        except Exception:  # a damaged cache file is retrained, not fatal
            model = None
    if model is None:
        sys.stderr.write(f"rlcore: pretraining the ring test bed's denoiser once ({config.pretrain_steps} steps); "
                         f"it is cached at {path}\n")
        model = pretrain(config, scheduler)
        save_atomic(model.state_dict(), path)
    return TestBed(model, scheduler, config.inference_steps, config)


__all__ = ["DigitsBed", "DigitsConfig", "MLPDenoiser", "RingConfig", "TestBed", "cache_path", "digits", "pretrain",
           "ring", "ring_data"]
