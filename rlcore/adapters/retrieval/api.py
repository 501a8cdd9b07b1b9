"""The Python API: :func:`r4t` (the three steps) and :func:`evaluate` any retriever on a split of a catalogue.

::

    from rlcore.adapters import retrieval
    cat = retrieval.synthetic_catalogue(num_items=20_000, num_clusters=40, num_intents=400, dim=32, seed=0)
    out = retrieval.r4t(cat, num_subqueries=4, top_k=10, seed=0)      # RL fan-out, synthesis, distillation
    for name, r in {"single": retrieval.SingleQuery(cat), "naive": retrieval.NaiveFanOut(cat, 4),
                    "mmr": retrieval.MMR(cat, 40), "rl": out.policy, "distilled": out.retriever}.items():
        m = retrieval.evaluate(r, cat, split="test", top_k=10)   # coverage, diversity, set_reward, ms_per_query

A retriever is anything with ``num_subqueries`` and ``retrieve(intents [B, d], top_k) -> ids [B, K·top_k]``
(:mod:`~.baselines`, :class:`~.ppo.FanOutPolicy`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch

from rlcore.adapters.retrieval.catalogue import Catalogue
from rlcore.adapters.retrieval.diffusion import DiffusionConfig, DistilledRetriever, DistillResult, distill
from rlcore.adapters.retrieval.ppo import FanOutPolicy, FanOutPPOConfig, FanOutTrainResult, train_fanout
from rlcore.adapters.retrieval.rewards import SetRewardConfig, composite_reward, set_reward_terms
from rlcore.adapters.retrieval.synthesis import FanOutPairs, synthesise_pairs


@dataclass
class R4TResult:
    """The three steps' products."""

    policy: FanOutPolicy
    """Step (i): the PPO fan-out policy (a retriever: K policy calls and K index searches)."""
    pairs: FanOutPairs
    """Step (ii): the kept (intent, sub-queries) pairs of the train intents."""
    retriever: DistilledRetriever
    """Step (iii): the one-pass diffusion retriever."""
    training: FanOutTrainResult
    distillation: DistillResult


def r4t(catalogue: Catalogue, num_subqueries: int = 4, top_k: int = 10, seed: int = 0, *,
        reward: SetRewardConfig | None = None, ppo: FanOutPPOConfig | None = None, samples_per_intent: int = 32,
        keep: int = 4, diffusion: DiffusionConfig | None = None) -> R4TResult:
    """R4T on ``catalogue``'s train intents: (i) PPO fan-out policy, (ii) pair synthesis, (iii) distillation.

    Args:
        catalogue: the catalogue.
        num_subqueries: K.
        top_k: items per sub-query.
        seed: seed of every step (overrides the seeds of ``ppo`` and ``diffusion``).
        reward: the composite set reward (default :class:`SetRewardConfig`), used by all three steps.
        ppo: other settings of step (i) (:class:`~.ppo.FanOutPPOConfig`).
        samples_per_intent: fan-outs sampled per train intent in step (ii).
        keep: best fan-outs kept per intent.
        diffusion: settings of step (iii) (:class:`~.diffusion.DiffusionConfig`).
    """
    reward = reward or SetRewardConfig()
    ppo = dataclasses.replace(ppo or FanOutPPOConfig(), num_subqueries=num_subqueries, top_k=top_k, reward=reward,
                              seed=seed)
    training = train_fanout(catalogue, ppo)
    pairs = synthesise_pairs(training.policy, catalogue, "train", samples_per_intent, keep, top_k, reward, seed + 1)
    distillation = distill(pairs, catalogue, dataclasses.replace(diffusion or DiffusionConfig(), seed=seed + 2))
    return R4TResult(training.policy, pairs, distillation.retriever, training, distillation)


@torch.no_grad()
def evaluate(retriever: Any, catalogue: Catalogue, split: str = "test", top_k: int = 10,
             reward: SetRewardConfig | None = None, batch_size: int | None = None) -> dict[str, float]:
    """Retrieve a set for every intent of ``split`` and score it.

    Args:
        retriever: a retriever (see the module docstring).
        catalogue: the catalogue (ground truth and index).
        split: ``"train"``, ``"test"`` or ``"all"`` intents.
        top_k: items per sub-query; every set has ``retriever.num_subqueries · top_k`` slots.
        reward: weights of the composite set reward (default :class:`SetRewardConfig`).
        batch_size: intents per ``retrieve`` call (None: the whole split at once); ``ms_per_query`` is the
            wall time of all calls divided by the number of intents.

    Returns:
        Means over the intents of ``set_reward``, ``coverage``, ``relevance``, ``diversity`` (the Vendi score),
        ``pairwise_distance`` and ``duplicates``, plus ``ms_per_query`` and ``num_intents``.
    """
    if not callable(getattr(retriever, "retrieve", None)) or not hasattr(retriever, "num_subqueries"):
        raise ValueError(f"retriever must have num_subqueries and retrieve(intents, top_k) -> ids, got "
                         f"{type(retriever).__name__} (use retrieval.SingleQuery(cat), MMR(cat, 40), a trained "
                         "policy...).")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}.")
    intent_ids = catalogue.split(split)
    intents = catalogue.intents[intent_ids]
    size = len(intent_ids) if batch_size is None else int(batch_size)
    if size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size!r}.")
    start = time.perf_counter()
    ids = torch.cat([retriever.retrieve(intents[i:i + size], top_k) for i in range(0, len(intent_ids), size)])
    elapsed = time.perf_counter() - start
    slots = retriever.num_subqueries * top_k
    if ids.shape != (len(intent_ids), slots):
        raise ValueError(f"{type(retriever).__name__}.retrieve returned ids of shape {list(ids.shape)}, expected "
                         f"[{len(intent_ids)}, num_subqueries * top_k = {slots}].")
    terms = set_reward_terms(ids, catalogue.items, catalogue.item_aspect, catalogue.intent_aspects[intent_ids])
    value = composite_reward(terms, reward or SetRewardConfig(), slots)
    out = {"set_reward": float(value.mean()), "coverage": float(terms["coverage"].mean()),
           "relevance": float(terms["relevance"].mean()), "diversity": float(terms["vendi"].mean()),
           "pairwise_distance": float(terms["pairwise_distance"].mean()),
           "duplicates": float(terms["duplicates"].mean())}
    out["ms_per_query"] = 1e3 * elapsed / len(intent_ids)
    out["num_intents"] = float(len(intent_ids))
    return out


__all__ = ["R4TResult", "evaluate", "r4t"]
