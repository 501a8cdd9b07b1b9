"""R4T step (ii): synthesise (intent, sub-query set) training pairs from a trained fan-out policy.

For every intent of a split, ``samples_per_intent`` fan-outs are sampled from the policy (stochastic
sub-queries, K index searches each), scored by the composite set reward, and the ``keep`` best are kept:
objective-consistent targets for a one-pass retriever (step (iii), not yet in the library), which then
needs to model ``p(sub-queries | intent)`` only where the set reward is high. Each pair stores the
normalised sub-queries as applied, so re-running them through the index reproduces the set and its reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlcore.adapters.retrieval.catalogue import Catalogue
from rlcore.adapters.retrieval.ppo import FanOutPolicy
from rlcore.adapters.retrieval.rewards import SetRewardConfig, set_reward


@dataclass
class FanOutPairs:
    """Synthesised pairs: ``P`` kept fan-outs."""

    intent_ids: torch.Tensor
    """``[P]`` int64 intents of the catalogue."""
    intents: torch.Tensor
    """``[P, d]`` intent embeddings (the condition)."""
    subqueries: torch.Tensor
    """``[P, K, d]`` unit sub-query embeddings (the target)."""
    rewards: torch.Tensor
    """``[P]`` composite set reward of each kept fan-out."""
    sampled_mean_reward: float
    """Mean set reward over every sample before selection (what the selection improves on)."""


@torch.no_grad()
def synthesise_pairs(policy: FanOutPolicy, catalogue: Catalogue, split: str = "train", samples_per_intent: int = 8,
                     keep: int = 1, top_k: int = 10, reward: SetRewardConfig | None = None,
                     seed: int = 0) -> FanOutPairs:
    """Sample fan-outs from ``policy`` for every intent of ``split`` and keep the ``keep`` best of each.

    Args:
        policy: a trained :class:`~.ppo.FanOutPolicy`.
        catalogue: the catalogue (ground truth for the reward, index for the searches).
        split: the intents to synthesise for (``"train"``: the test intents stay unseen).
        samples_per_intent: fan-outs sampled per intent.
        keep: best fan-outs kept per intent, ``1 <= keep <= samples_per_intent``.
        top_k: items per sub-query.
        reward: the composite set reward (default :class:`SetRewardConfig`).
        seed: seed of the sub-query samples.
    """
    if not isinstance(samples_per_intent, int) or samples_per_intent < 1:
        raise ValueError(f"samples_per_intent must be an integer >= 1, got {samples_per_intent!r}.")
    if not isinstance(keep, int) or not 1 <= keep <= samples_per_intent:
        raise ValueError(f"keep must be an integer in [1, samples_per_intent] = [1, {samples_per_intent}], "
                         f"got {keep!r}.")
    ids_of_split = catalogue.split(split)
    n, s = len(ids_of_split), samples_per_intent
    intent_ids = ids_of_split.repeat_interleave(s)
    generator = torch.Generator().manual_seed(int(seed))
    ids, queries = policy.rollout(catalogue.intents[intent_ids], top_k, generator)
    value, _ = set_reward(ids, catalogue.items, catalogue.item_aspect, catalogue.intent_aspects[intent_ids], reward)
    best = value.reshape(n, s).topk(keep, dim=1).indices + torch.arange(n)[:, None] * s  # flat row of each kept
    rows = best.reshape(-1)
    return FanOutPairs(intent_ids[rows], catalogue.intents[intent_ids[rows]], queries[rows], value[rows],
                       float(value.mean()))


__all__ = ["FanOutPairs", "synthesise_pairs"]
