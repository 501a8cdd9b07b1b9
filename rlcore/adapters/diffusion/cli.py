"""``rlcore train diffusion``: fine-tune a shipped test bed's pretrained denoiser, in a run directory that resumes.

    rlcore train diffusion [--bed ring|digits] [--reward NAME] [--method dpok] [--field value ...]
    rlcore train diffusion --resume RUN_DIR [--steps N]     continue from the last checkpoint (bit for bit)

Rewards by name, each with the held-out reward it is monitored by (logged beside it, never optimised):

    =========  ==============  ==============================================  ===============================
    bed        ``--reward``    optimised                                       monitored by
    =========  ==============  ==============================================  ===============================
    ring       ``right``       the x coordinate                                the upper-right direction
    ring       ``upper-right`` ``(x + y) / 2``                                 the x coordinate
    digits     ``class``       the prompted class's probability (classifier 1)  classifier 2 (the other half)
    digits     ``thickness``   mean ink                                         classifier 2's class probability
    digits     ``defect``      minus the detector's defect score                minus the rule's defective pixels
    =========  ==============  ==============================================  ===============================

``--focus-n-fix`` (with ``--reward defect``) fine-tunes region-aware: the detector's map of the reference's
sample is the region (`finetune`'s ``region=``). The run directory
holds ``config.json``, ``checkpoint.pt`` (and the previous one), TensorBoard logs (reward, held-out reward,
KL, sample grids) and, at the end, ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from rlcore.adapters.common import open_run_dir, read_run_config, removed_on_bad_input
from rlcore.adapters.diffusion.finetune import METHODS, FinetuneConfig, FinetuneResult, finetune
from rlcore.loops.run_dir import save_config, save_summary

ALGO = "diffusion"
RESUME_MAY_CHANGE = ("steps", "run_dir", "log_root")
"""What ``--resume`` may change: the number of iterations; the rest is the run's own."""
REWARDS = {"ring": ("right", "upper-right"), "digits": ("class", "thickness", "defect")}


@dataclass
class DiffusionRunConfig:
    """Fine-tune a test bed's pretrained denoiser against a named reward (see ``rlcore train diffusion --help``)."""

    bed: Literal["ring", "digits"] = "ring"
    """The test bed: the 2-D ring or the 8x8 digits."""
    reward: str = "right"
    """ring: right, upper-right; digits: class, thickness, defect."""
    method: Literal["dpok", "ppo", "rwr", "fpg"] = "dpok"
    """The fine-tuning method."""
    kl_weight: float = 0.1
    """β, the weight of the divergence to the pretrained model."""
    steps: int = 300
    """Iterations."""
    seed: int = 0
    """Seed of the run (the test bed's own seed is 0)."""
    labels: tuple[int, ...] = ()
    """digits: the prompts to fine-tune on (default: all ten; with --reward defect, the defect class)."""
    focus_n_fix: bool = False
    """digits, --reward defect: region-aware fixing inside the detector's map only."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """The method's settings."""
    run_dir: str | None = None
    """The run directory (default: a new one under --log-root)."""
    log_root: str = "runs"
    """Where new run directories go."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint."""

    def validate(self) -> None:
        if self.reward not in REWARDS[self.bed]:
            raise ValueError(f"--reward {self.reward!r} is not a reward of the {self.bed} bed; choose one of "
                             f"{', '.join(REWARDS[self.bed])}.")
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if self.focus_n_fix and (self.bed, self.reward) != ("digits", "defect"):
            raise ValueError("--focus-n-fix repairs the digits bed's defect: use --bed digits --reward defect.")
        if any(not 0 <= y <= 9 for y in self.labels):
            raise ValueError(f"--labels must be digits in 0..9, got {list(self.labels)}.")


@dataclass
class Task:
    """What a run config resolves to: the bed's model and scheduler, the rewards, the conditions, the region."""

    bed: Any
    reward: Callable[..., torch.Tensor]
    held_out: Callable[..., torch.Tensor]
    sample_shape: tuple[int, ...]
    conditions: torch.Tensor | None = None
    region: Callable[..., torch.Tensor] | None = None


def make_task(config: DiffusionRunConfig) -> Task:
    """The bed (pretrained on first use, then cached), the named reward and its monitor."""
    from rlcore.adapters.diffusion import testbeds

    config.validate()
    if config.bed == "ring":
        bed = testbeds.ring(seed=0)

        def right(x: torch.Tensor) -> torch.Tensor:
            return x[:, 0]

        def upper_right(x: torch.Tensor) -> torch.Tensor:
            return (x[:, 0] + x[:, 1]) / 2

        pair = (right, upper_right) if config.reward == "right" else (upper_right, right)
        return Task(bed, *pair, sample_shape=(2,))
    bed = testbeds.digits(seed=0)
    labels = config.labels or ((bed.config.defect_class,) if config.reward == "defect" else tuple(range(10)))
    conditions = torch.tensor(labels, dtype=torch.long)
    if config.reward == "class":
        return Task(bed, bed.class_reward, bed.held_out_class_reward, bed.sample_shape, conditions)
    if config.reward == "thickness":
        return Task(bed, bed.thickness, bed.held_out_class_reward, bed.sample_shape, conditions)

    def fewer_defects(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -bed.defect_score(x, y)

    def fewer_true_defects(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -bed.true_defect_map(x, y).flatten(1).sum(1).float()

    return Task(bed, fewer_defects, fewer_true_defects, bed.sample_shape, conditions,
                bed.defect_map if config.focus_n_fix else None)


def train(config: DiffusionRunConfig | None = None) -> tuple[FinetuneResult, Path]:
    """Run (or, with ``config.resume``, continue) a fine-tuning run; returns the result and its run directory."""
    config = config or DiffusionRunConfig()
    task = make_task(config)
    run_dir, created = open_run_dir(config, ALGO, f"{config.bed}-{config.reward}", RESUME_MAY_CHANGE)
    start = time.perf_counter()
    with removed_on_bad_input(run_dir, created):
        result = finetune(task.bed.model, task.bed.scheduler, task.reward, config.method, config.kl_weight,
                          config.steps, config.seed, config.finetune, task.sample_shape, progress=sys.stderr.isatty(),
                          held_out_reward=task.held_out, conditions=task.conditions, region=task.region,
                          run_dir=run_dir, resume=config.resume is not None)
    if config.resume is not None:  # a longer run keeps its config: --steps may grow
        save_config(run_dir, ALGO, dataclasses.replace(config, resume=None))
    summary = {"bed": config.bed, "reward": config.reward, "method": config.method, "kl_weight": config.kl_weight,
               "steps": config.steps, "expected_reward": result.expected_reward,
               "held_out_reward": result.held_out_reward, "kl_to_reference": result.kl_to_reference,
               "trajectory_kl": result.trajectory_kl, "trainable_parameters": result.trainable_parameters,
               "seconds_this_invocation": round(time.perf_counter() - start, 2)}
    save_summary(run_dir, summary)
    return result, run_dir


def train_main(argv: list[str]) -> int:
    """``rlcore train diffusion ...``; returns the exit status."""
    config = read_run_config("diffusion", ALGO, DiffusionRunConfig, argv, (__doc__ or "").strip())
    if config is None:
        return 2
    try:
        result, run_dir = train(config)
    except ValueError as error:
        print(f"rlcore train diffusion: {error}", file=sys.stderr)
        return 2
    print(f"reward {result.expected_reward:.4f}, held-out reward {result.held_out_reward:.4f}, KL to the pretrained "
          f"model {result.kl_to_reference:.4f} ({result.trainable_parameters} trainable parameters)")
    print(f"run directory: {run_dir}  (tensorboard --logdir {run_dir.parent})")
    return 0


__all__ = ["REWARDS", "DiffusionRunConfig", "Task", "make_task", "train", "train_main"]
