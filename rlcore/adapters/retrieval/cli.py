"""``rlcore train retrieval``: the three R4T steps on a catalogue, in a run directory that resumes.

    rlcore train retrieval [--catalogue.num-items 20000 ...] [--field value ...]
    rlcore train retrieval --text                          the real-text catalogue (all-MiniLM-L6-v2, ``text`` extra)
    rlcore train retrieval --resume RUN_DIR [--ppo.iterations N]    continue (the PPO step resumes bit for bit)

Step (i), the PPO fan-out policy, checkpoints every ``--checkpoint-every`` iterations (``checkpoint.pt`` and the
previous one); steps (ii) and (iii) are seeded and short, so a resumed run redoes them. At the end the run
directory holds ``config.json``, ``policy.pt`` and ``retriever.pt`` (state dicts), TensorBoard scalars of the PPO
iterations, and ``summary.json``: every retriever (single query, naive fan-out, MMR, set-reward greedy, the policy,
the distilled retriever) evaluated on the train and test intents.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlcore.adapters.common import open_run_dir, read_run_config, removed_on_bad_input
from rlcore.adapters.retrieval.catalogue import CatalogueConfig
from rlcore.adapters.retrieval.diffusion import DiffusionConfig
from rlcore.adapters.retrieval.ppo import FanOutPPOConfig
from rlcore.loops.run_dir import save_config, save_summary

ALGO = "retrieval-r4t"
RESUME_MAY_CHANGE = ("ppo.iterations", "checkpoint_every", "run_dir", "log_root")
"""What ``--resume`` may change: the PPO budget and the checkpoint interval; the rest is the run's own."""


def _catalogue_config() -> CatalogueConfig:
    return CatalogueConfig(num_items=20_000, num_clusters=40, num_intents=400)


@dataclass
class RetrievalRunConfig:
    """R4T on a synthetic (or the real-text) catalogue: PPO fan-out, pair synthesis, one-pass distillation."""

    catalogue: CatalogueConfig = field(default_factory=_catalogue_config)
    """The synthetic catalogue (CatalogueConfig); its seed is the catalogue's."""
    text: bool = False
    """Use the real-text catalogue (text_catalogue(), all-MiniLM-L6-v2) instead of the synthetic one."""
    num_subqueries: int = 4
    """K, sub-queries per intent."""
    top_k: int = 10
    """Items per sub-query."""
    seed: int = 0
    """Seed of the three steps."""
    ppo: FanOutPPOConfig = field(default_factory=FanOutPPOConfig)
    """Step (i) (FanOutPPOConfig; num_subqueries, top_k and seed are the run's)."""
    samples_per_intent: int = 32
    """Step (ii): fan-outs sampled per train intent."""
    keep: int = 4
    """Step (ii): best fan-outs kept per intent."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    """Step (iii) (DiffusionConfig)."""
    checkpoint_every: int = 25
    """PPO iterations between checkpoints."""
    run_dir: str | None = None
    """The run directory (default: a new one under --log-root)."""
    log_root: str = "runs"
    """Where new run directories go."""
    resume: str | None = None
    """Continue the run in this directory."""


def train(config: RetrievalRunConfig | None = None) -> tuple[dict[str, Any], Path]:
    """Run (or, with ``config.resume``, continue) R4T; returns the summary and the run directory."""
    from torch.utils.tensorboard import SummaryWriter

    from rlcore.adapters import retrieval

    config = config or RetrievalRunConfig()
    cat = (retrieval.text_catalogue(seed=config.catalogue.seed) if config.text
           else retrieval.make_catalogue(config.catalogue))
    name = "text" if config.text else f"n{config.catalogue.num_items}"
    run_dir, created = open_run_dir(config, ALGO, name, RESUME_MAY_CHANGE)
    k, top_k, seed = config.num_subqueries, config.top_k, config.seed
    ppo = dataclasses.replace(config.ppo, num_subqueries=k, top_k=top_k, seed=seed)
    with removed_on_bad_input(run_dir, created):
        training = retrieval.train_fanout(cat, ppo, run_dir=run_dir, resume=config.resume is not None,
                                          checkpoint_every=config.checkpoint_every, progress=sys.stderr.isatty())
    if config.resume is not None:  # a longer run keeps its config: --ppo.iterations may grow
        save_config(run_dir, ALGO, dataclasses.replace(config, resume=None))
    writer = SummaryWriter(str(run_dir), purge_step=0)  # the history is complete: rewrite it
    for step, record in enumerate(training.history):
        for key, value in record.items():
            writer.add_scalar(f"ppo/{key}", value, step)
    writer.close()
    pairs = retrieval.synthesise_pairs(training.policy, cat, "train", config.samples_per_intent, config.keep, top_k,
                                       ppo.reward, seed + 1)
    distilled = retrieval.distill(pairs, cat, dataclasses.replace(config.diffusion, seed=seed + 2))
    torch.save(training.policy.state_dict(), run_dir / "policy.pt")
    torch.save(distilled.retriever.denoiser.state_dict(), run_dir / "retriever.pt")
    retrievers = {"single query": retrieval.SingleQuery(cat, k), "naive fan-out": retrieval.NaiveFanOut(cat, k),
                  "MMR": retrieval.MMR(cat, 40, k), "set-reward greedy": retrieval.SetRewardGreedy(cat, 40, k),
                  "RL fan-out": training.policy, "distilled": distilled.retriever}
    summary: dict[str, Any] = {"ppo_iterations": ppo.iterations, "pairs": len(pairs.rewards), "retrievers": {}}
    for name, r in retrievers.items():
        summary["retrievers"][name] = {split: retrieval.evaluate(r, cat, split=split, top_k=top_k, reward=ppo.reward)
                                       for split in ("train", "test")}
    save_summary(run_dir, summary)
    return summary, run_dir


def train_main(argv: list[str]) -> int:
    """``rlcore train retrieval ...``; returns the exit status."""
    config = read_run_config("retrieval", ALGO, RetrievalRunConfig, argv, (__doc__ or "").strip())
    if config is None:
        return 2
    try:
        summary, run_dir = train(config)
    except ValueError as error:
        print(f"rlcore train retrieval: {error}", file=sys.stderr)
        return 2
    for name, splits in summary["retrievers"].items():
        test = splits["test"]
        print(f"{name:18s} test set reward {test['set_reward']:.3f}  coverage {test['coverage']:.3f}  "
              f"{test['ms_per_query']:.3f} ms/query")
    print(f"run directory: {run_dir}  (tensorboard --logdir {run_dir.parent})")
    return 0


__all__ = ["ALGO", "RetrievalRunConfig", "train", "train_main"]
