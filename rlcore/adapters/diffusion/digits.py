"""The digits test bed: a class-conditional ``diffusers`` UNet over scikit-learn's 8x8 digits, the classifiers
that reward it, and a localized defect with the detector that finds it (for Focus-N-Fix).

Everything is built from scikit-learn's bundled ``load_digits`` (1,797 grey 8x8 images, 10 classes; nothing is
downloaded) and trained by the library on first use, then cached under ``$RLCORE_CACHE_DIR`` (default
``~/.cache/rlcore``) ``/diffusion/digits-<hash>.pt``, written atomically; the hash covers every setting of
:class:`DigitsConfig`. Pixels are scaled to [-1, 1] (ink is +1).

* **The defect.** A "zero with a dot": ink above ``defect_ink`` (in [0, 1] units) inside the forbidden patch
  (rows 3-4, columns 3-4: the hole of a zero) of an image of class ``defect_class``. A share
  ``defect_fraction`` of that class's pretraining images is given such a dot, so the pretrained model draws
  defective zeros as often as the data has them, which is what Focus-N-Fix has to repair locally.
  :meth:`DigitsBed.true_defect_map` is that rule, the ground truth against which a fix is measured.
* **The denoiser:** ``UNet2DModel`` (two resolution levels of ``channels``, no attention, ``num_class_embeds=10``:
  the class is the prompt), trained by DDPM's ε-loss under a ``DDPMScheduler`` (100 train timesteps, the
  ring's stretched linear β) on all images, defects included.
* **Rewards:** two small CNN classifiers trained on disjoint halves of the (clean) images, with Gaussian-noise
  augmentation so that they score imperfect samples sensibly: :meth:`DigitsBed.class_reward` (the prompted
  class's probability under the first, the one to optimise) and :meth:`DigitsBed.held_out_class_reward`
  (under the second, the reward-hacking monitor); :meth:`DigitsBed.thickness` (mean ink, a target attribute).
* **The defect detector** (the localized reward model of Focus-N-Fix): a small fully-convolutional net that
  reads the image and its class and predicts the per-pixel defect probability, trained on images with dots
  placed in the patch of half of them, every class, labelled by the rule. :meth:`DigitsBed.defect_map` and
  :meth:`DigitsBed.defect_score` (its expected number of defective pixels) are what fine-tuning uses.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rlcore.adapters.cache import cache_file, save_atomic
from rlcore.adapters.diffusion.sampling import rollout
from rlcore.adapters.diffusion.steps import GaussianSteps

FORMAT = 2
NUM_CLASSES = 10
PATCH = (slice(3, 5), slice(3, 5))
"""The forbidden patch (rows, columns) of the defect: the hole of a zero."""


@dataclass(frozen=True)
class DigitsConfig:
    """The digits test bed: the data, the defect, the networks and their training (all of it is the cache key)."""

    channels: tuple[int, int] = (16, 32)
    """The UNet's channels at 8x8 and 4x4."""
    train_timesteps: int = 100
    """DDPM train timesteps."""
    inference_steps: int = 20
    """Gaussian steps per sample."""
    pretrain_steps: int = 2_000
    """Adam steps of the denoiser."""
    batch_size: int = 128
    """Images per pretraining step."""
    learning_rate: float = 2e-3
    """Peak Adam step size of the denoiser (cosine decay)."""
    defect_class: int = 0
    """The class whose images may carry the defect."""
    defect_fraction: float = 0.35
    """Share of ``defect_class``'s pretraining images given a dot in the forbidden patch."""
    defect_ink: float = 0.5
    """Ink (in [0, 1]) above which a patch pixel counts as defective."""
    classifier_steps: int = 800
    """Adam steps of each classifier and of the detector."""
    seed: int = 0
    """Seed of the splits, the dots and every network."""

    def validate(self) -> None:
        if not 0 <= self.defect_class < NUM_CLASSES:
            raise ValueError(f"defect_class must be a digit in 0..9, got {self.defect_class!r}.")
        if not 0.0 <= self.defect_fraction <= 1.0:
            raise ValueError(f"defect_fraction must be in [0, 1], got {self.defect_fraction!r}.")
        if not 0.0 < self.defect_ink < 1.0:
            raise ValueError(f"defect_ink must be in (0, 1), got {self.defect_ink!r}.")
        for name in ("train_timesteps", "inference_steps", "pretrain_steps", "batch_size", "classifier_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DigitsConfig.{name} must be an integer >= 1, got {value!r}.")
        if self.inference_steps > self.train_timesteps:
            raise ValueError(f"inference_steps ({self.inference_steps}) cannot exceed train_timesteps "
                             f"({self.train_timesteps}).")


class DigitClassifier(nn.Module):
    """``[N, 1, 8, 8]`` images in [-1, 1] to ``[N, 10]`` class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 32, 3, padding=1),
                                 nn.SiLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 64), nn.SiLU(),
                                 nn.Linear(64, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DefectDetector(nn.Module):
    """Per-pixel defect logits ``[N, 1, 8, 8]`` from an image and its class (one-hot planes beside the image)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1 + NUM_CLASSES + 2, 32, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(32, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 1, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        planes = F.one_hot(labels.long(), NUM_CLASSES).float()[:, :, None, None].expand(-1, -1, 8, 8)
        # Coordinates let a convolution tell the patch from the rest of the image.
        rows = torch.linspace(-1, 1, 8, device=x.device)[None, None, :, None].expand(n, 1, 8, 8)
        cols = torch.linspace(-1, 1, 8, device=x.device)[None, None, None, :].expand(n, 1, 8, 8)
        return self.net(torch.cat([x, planes, rows, cols], 1))


def make_unet(config: DigitsConfig) -> nn.Module:
    """The class-conditional ``UNet2DModel`` of the bed (untrained)."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ValueError("the diffusion adapter needs diffusers: pip install 'rlcore[diffusion]'.") from None
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=tuple(config.channels),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=NUM_CLASSES,
                       norm_num_groups=min(config.channels) // 4)


def make_scheduler(config: DigitsConfig) -> Any:
    from diffusers import DDPMScheduler

    scale = 1000 / config.train_timesteps  # DDPM's linear β (1e-4 to 0.02 over 1000 steps), stretched
    return DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_start=1e-4 * scale, beta_end=0.02 * scale,
                         clip_sample=True)


def load_images() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``([1797, 1, 8, 8] in [-1, 1], [1797] int64 labels)``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError("the digits test bed reads scikit-learn's bundled digits: pip install scikit-learn "
                         "(part of 'rlcore[diffusion]').") from None
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0 * 2 - 1
    return images, torch.tensor(data.target, dtype=torch.long)


def rule_defect_map(x: torch.Tensor, labels: torch.Tensor, config: DigitsConfig) -> torch.Tensor:
    """The defect's definition: ``[N, 1, 8, 8]`` bool, patch pixels with ink above ``defect_ink`` in images of
    ``defect_class``."""
    ink = (x + 1) / 2
    inside = torch.zeros_like(x, dtype=torch.bool)
    inside[:, :, PATCH[0], PATCH[1]] = True
    return inside & (ink > config.defect_ink) & (labels.to(x.device) == config.defect_class)[:, None, None, None]


def add_dots(x: torch.Tensor, rows: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A copy of ``x`` with ink (0.75 to 1 in [0, 1] units) in the forbidden patch of the ``rows`` mask."""
    out = x.clone()
    ink = torch.rand(x.shape[0], 1, 2, 2, generator=g) * 0.25 + 0.75
    patch = out[:, :, PATCH[0], PATCH[1]]
    out[:, :, PATCH[0], PATCH[1]] = torch.where(rows[:, None, None, None], torch.maximum(patch, ink * 2 - 1), patch)
    return out


def _fit(model: nn.Module, steps: int, lr: float, batch: Any, loss_fn: Any) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = loss_fn(model, *batch())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


def train_networks(config: DigitsConfig) -> dict[str, dict[str, torch.Tensor]]:
    """Train the denoiser, both classifiers and the detector (seeded; the global RNG is left alone)."""
    config.validate()
    images, labels = load_images()
    g = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(labels), generator=g)
    halves = order[: len(order) // 2], order[len(order) // 2:]
    is_defect_class = labels == config.defect_class
    dotted = is_defect_class & (torch.rand(len(labels), generator=g) < config.defect_fraction)
    pretrain_images = add_dots(images, dotted, g)
    scheduler = make_scheduler(config)
    alpha_bar = scheduler.alphas_cumprod.float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet, classifiers, detector = make_unet(config), (DigitClassifier(), DigitClassifier()), DefectDetector()

    def denoiser_batch() -> tuple[torch.Tensor, ...]:
        rows = torch.randint(len(labels), (config.batch_size,), generator=g)
        t = torch.randint(config.train_timesteps, (config.batch_size,), generator=g)
        return pretrain_images[rows], labels[rows], t, torch.randn(config.batch_size, 1, 8, 8, generator=g)

    def denoiser_loss(model: nn.Module, x0, y, t, eps) -> torch.Tensor:
        a = alpha_bar[t][:, None, None, None]
        return (model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, class_labels=y).sample - eps).pow(2).mean()

    optimizer = torch.optim.Adam(unet.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.pretrain_steps)
    from tqdm.auto import tqdm

    for _ in tqdm(range(config.pretrain_steps), desc="digits denoiser", leave=False, file=sys.stderr):
        loss = denoiser_loss(unet, *denoiser_batch())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()

    def classifier_batch(half: torch.Tensor):
        def batch() -> tuple[torch.Tensor, torch.Tensor]:
            rows = half[torch.randint(len(half), (128,), generator=g)]
            noise = torch.rand(128, 1, 1, 1, generator=g) * 0.3 * torch.randn(128, 1, 8, 8, generator=g)
            return (images[rows] + noise).clamp(-1, 1), labels[rows]
        return batch

    def classifier_loss(model: nn.Module, x, y) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    for classifier, half in zip(classifiers, halves, strict=True):
        _fit(classifier, config.classifier_steps, 2e-3, classifier_batch(half), classifier_loss)

    def detector_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = torch.randint(len(labels), (128,), generator=g)
        # Half the class is the defect class, so that the class, not the dot alone, decides.
        y = torch.where(torch.rand(128, generator=g) < 0.5, torch.full((128,), config.defect_class), labels[rows])
        x = add_dots(images[rows], torch.rand(128, generator=g) < 0.5, g)
        x = (x + torch.rand(128, 1, 1, 1, generator=g) * 0.2 * torch.randn(128, 1, 8, 8, generator=g)).clamp(-1, 1)
        return x, y, rule_defect_map(x, y, config).float()

    def detector_loss(model: nn.Module, x, y, target) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(model(x, y), target)

    _fit(detector, config.classifier_steps, 2e-3, detector_batch, detector_loss)
    return {"unet": unet.eval().requires_grad_(False).state_dict(), "classifier": classifiers[0].state_dict(),
            "held_out_classifier": classifiers[1].state_dict(), "detector": detector.state_dict()}


@dataclass
class DigitsBed:
    """The pretrained digits denoiser, its scheduler, its rewards and its defect detector.

    Attributes:
        model: the pretrained class-conditional ``UNet2DModel`` (the reference of fine-tuning).
        scheduler: its ``DDPMScheduler``.
        num_inference_steps: Gaussian steps per sample.
        classifier, held_out_classifier: the two classifiers (disjoint training halves).
        detector: the defect detector.
        config: what defines the bed.
    """

    model: nn.Module
    scheduler: Any
    num_inference_steps: int
    classifier: DigitClassifier
    held_out_classifier: DigitClassifier
    detector: DefectDetector
    config: DigitsConfig

    sample_shape = (1, 8, 8)

    @property
    def steps(self) -> GaussianSteps:
        return GaussianSteps.from_scheduler(self.scheduler, self.num_inference_steps)

    def labels(self, n: int, label: int | None = None) -> torch.Tensor:
        """``[n]`` prompts: every class in turn, or ``label`` throughout."""
        if label is None:
            return torch.arange(n) % NUM_CLASSES
        if not 0 <= int(label) < NUM_CLASSES:
            raise ValueError(f"label must be a digit in 0..9, got {label!r}.")
        return torch.full((n,), int(label), dtype=torch.long)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | int | None = None) -> torch.Tensor:
        """``[n, 1, 8, 8]`` samples of the pretrained model for ``labels`` (default every class in turn)."""
        y = labels if isinstance(labels, torch.Tensor) else self.labels(n, labels)
        return rollout(self.model, self.steps, (n, *self.sample_shape), torch.Generator().manual_seed(int(seed)),
                       condition=y).samples

    @torch.no_grad()
    def class_reward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[N]`` probability of the prompted class under the reward classifier."""
        return self.classifier(x.clamp(-1, 1)).softmax(1).gather(1, labels.long()[:, None]).squeeze(1)

    @torch.no_grad()
    def held_out_class_reward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[N]`` the same under the held-out classifier (trained on the other half): the hacking monitor."""
        return self.held_out_classifier(x.clamp(-1, 1)).softmax(1).gather(1, labels.long()[:, None]).squeeze(1)

    @staticmethod
    def thickness(x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``[N]`` mean ink in [0, 1] (stroke thickness; ``labels`` are ignored)."""
        return ((x.clamp(-1, 1) + 1) / 2).flatten(1).mean(1)

    @torch.no_grad()
    def defect_map(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 8, 8]`` the detector's per-pixel defect probability."""
        return torch.sigmoid(self.detector(x.clamp(-1, 1), labels))

    def defect_score(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[N]`` the detector's expected number of defective pixels."""
        return self.defect_map(x, labels).flatten(1).sum(1)

    def true_defect_map(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 8, 8]`` bool, the defect's definition (see the module docstring)."""
        return rule_defect_map(x.clamp(-1, 1), labels, self.config)

    def defect_rate(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        """Share of the images that carry the defect by its definition."""
        return float(self.true_defect_map(x, labels).flatten(1).any(1).float().mean())


def cache_path(config: DigitsConfig, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`digits` keeps the trained networks of ``config``."""
    return cache_file("diffusion", "digits", {"format": FORMAT, **asdict(config)}, cache_dir)


def digits(seed: int = 0, cache_dir: str | Path | None = None, **overrides: Any) -> DigitsBed:
    """The digits test bed of ``seed`` (see the module docstring): trained on first use (a few minutes on one CPU
    core), then read from the cache. ``overrides`` are other :class:`DigitsConfig` fields."""
    known = set(DigitsConfig.__dataclass_fields__) - {"seed"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"digits got unknown setting(s) {unknown}; accepted: {sorted(known)}.")
    if "channels" in overrides:
        overrides["channels"] = tuple(overrides["channels"])
    config = DigitsConfig(seed=int(seed), **overrides)
    config.validate()
    path = cache_path(config, cache_dir)
    with torch.random.fork_rng(devices=[]):  # the networks' initialisation (overwritten) leaves the global RNG alone
        nets = {"unet": make_unet(config), "classifier": DigitClassifier(),
                "held_out_classifier": DigitClassifier(), "detector": DefectDetector()}
    states = None
    if path.is_file():
        try:
            states = torch.load(path, map_location="cpu", weights_only=True)
            for name, net in nets.items():
                net.load_state_dict(states[name])
        except Exception:  # a damaged or outdated cache file is retrained, not fatal
            states = None
    if states is None:
        sys.stderr.write(f"rlcore: training the digits test bed once ({config.pretrain_steps} denoiser steps, a few "
                         f"minutes); it is cached at {path}\n")
        states = train_networks(config)
        save_atomic(states, path)
        for name, net in nets.items():
            net.load_state_dict(states[name])
    for net in nets.values():
        net.eval().requires_grad_(False)
    return DigitsBed(nets["unet"], make_scheduler(config), config.inference_steps, nets["classifier"],
                     nets["held_out_classifier"], nets["detector"], config)


__all__ = ["PATCH", "DefectDetector", "DigitClassifier", "DigitsBed", "DigitsConfig", "add_dots", "cache_path",
           "digits", "load_images", "make_scheduler", "make_unet", "rule_defect_map", "train_networks"]
