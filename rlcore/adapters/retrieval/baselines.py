"""Fan-out baselines in the retriever API: a single query, naive fan-out and MMR re-ranking.

A *retriever* has ``num_subqueries`` and ``retrieve(intents [B, d], top_k) -> ids [B, num_subqueries·top_k]``
(-1 for an empty slot). Every retriever of an evaluation fills the same number of slots, ``K·top_k``, so
that set-level metrics compare strategies at an equal budget of retrieved items, not a fan-out with four
times the items against a single query with a quarter of them.

* :class:`SingleQuery`: one query at the intent embedding, its top ``K·top_k`` items;
* :class:`NaiveFanOut`: K noisy copies of the intent (what a sampler of rewrites without an objective does),
  top-k each, like LangChain's ``MultiQueryRetriever`` taking the union of its rewrites' results;
* :class:`MMR`: maximal marginal relevance (Carbonell & Goldstein, 1998) re-ranking an over-fetched list at
  the intent: greedily add ``argmax_x (1 − λ)<q, x> − λ max_{s ∈ S} <x, s>``.
"""

from __future__ import annotations

import torch

from rlcore.adapters.retrieval.catalogue import Catalogue
from rlcore.adapters.retrieval.env import unit


def _check_budget(num_subqueries: int) -> int:
    if not isinstance(num_subqueries, int) or num_subqueries < 1:
        raise ValueError(f"num_subqueries must be an integer >= 1, got {num_subqueries!r}.")
    return num_subqueries


class SingleQuery:
    """One query at the intent embedding, returning its ``num_subqueries · top_k`` best items.

    Args:
        catalogue: whose index to search.
        num_subqueries: K, the budget in sub-query slots (the set has ``K · top_k`` items).
    """

    def __init__(self, catalogue: Catalogue, num_subqueries: int = 4) -> None:
        self.catalogue, self.num_subqueries = catalogue, _check_budget(num_subqueries)

    @torch.no_grad()
    def retrieve(self, intents: torch.Tensor, top_k: int) -> torch.Tensor:
        return self.catalogue.index.search(unit(intents), self.num_subqueries * top_k)[1]


class NaiveFanOut:
    """K perturbed copies of the intent, ``unit(e + noise · g / sqrt(d))``, top-k each, concatenated.

    Args:
        catalogue: whose index to search.
        num_subqueries: K.
        noise: norm of the perturbation relative to the unit intent.
        seed: seed of the perturbations (re-seeded at every ``retrieve``, so repeated calls agree).
    """

    def __init__(self, catalogue: Catalogue, num_subqueries: int = 4, noise: float = 0.5, seed: int = 0) -> None:
        self.catalogue, self.num_subqueries = catalogue, _check_budget(num_subqueries)
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise!r}.")
        self.noise, self.seed = float(noise), int(seed)

    @torch.no_grad()
    def retrieve(self, intents: torch.Tensor, top_k: int) -> torch.Tensor:
        b, d = intents.shape
        g = torch.Generator(device=intents.device).manual_seed(self.seed)
        eps = torch.randn(b, self.num_subqueries, d, generator=g, device=intents.device) / d ** 0.5
        queries = unit(unit(intents)[:, None, :] + self.noise * eps).reshape(-1, d)
        ids = self.catalogue.index.search(queries, top_k)[1]
        return ids.reshape(b, self.num_subqueries * top_k)


class MMR:
    """Maximal marginal relevance over ``fetch · num_subqueries`` items over-fetched at the intent.

    Args:
        catalogue: whose index to search and whose item embeddings measure redundancy.
        fetch: over-fetched candidates per sub-query slot (must exceed the ``top_k`` asked for).
        num_subqueries: K; MMR selects ``K · top_k`` items.
        diversity: λ in [0, 1]: 0 is plain relevance order, 1 ignores the query after the first pick.
    """

    def __init__(self, catalogue: Catalogue, fetch: int = 40, num_subqueries: int = 4, diversity: float = 0.5) -> None:
        self.catalogue, self.num_subqueries = catalogue, _check_budget(num_subqueries)
        if not isinstance(fetch, int) or fetch < 1:
            raise ValueError(f"fetch must be an integer >= 1, got {fetch!r}.")
        if not 0.0 <= diversity <= 1.0:
            raise ValueError(f"diversity (MMR's λ) must be in [0, 1], got {diversity!r}.")
        self.fetch, self.diversity = fetch, float(diversity)

    @torch.no_grad()
    def retrieve(self, intents: torch.Tensor, top_k: int) -> torch.Tensor:
        if top_k >= self.fetch:
            raise ValueError(f"MMR(fetch={self.fetch}) over-fetches {self.fetch} candidates per slot of top_k, so it "
                             f"needs top_k < fetch; got top_k={top_k}. Use a larger fetch.")
        budget = self.num_subqueries * top_k
        size = min(self.fetch * self.num_subqueries, self.catalogue.index.num_items)
        scores, cand = self.catalogue.index.search(unit(intents), size)
        valid = cand >= 0
        x = self.catalogue.items.to(intents.device)[cand.clamp(min=0)]  # [B, L, d]
        sim = x @ x.transpose(1, 2)  # [B, L, L] redundancy between candidates
        lam = self.diversity
        chosen = torch.zeros_like(valid)
        redundancy = torch.full(valid.shape, -torch.inf, device=intents.device)
        picks = []
        for _ in range(min(budget, size)):
            # Before the first pick the redundancy term is absent (max over an empty set): relevance alone.
            gain = (1 - lam) * scores - lam * redundancy.clamp(min=-1.0).masked_fill(redundancy == -torch.inf, 0.0)
            gain = gain.masked_fill(chosen | ~valid, -torch.inf)
            best = gain.argmax(1)
            picks.append(cand.gather(1, best[:, None]))
            chosen = chosen.scatter(1, best[:, None], True)
            redundancy = torch.maximum(redundancy, sim.gather(1, best[:, None, None].expand(-1, 1, size)).squeeze(1))
        ids = torch.cat(picks, 1)
        if ids.shape[1] < budget:  # a catalogue smaller than the budget: pad with empty slots
            pad = torch.full((ids.shape[0], budget - ids.shape[1]), -1, dtype=ids.dtype, device=ids.device)
            ids = torch.cat([ids, pad], 1)
        return ids


__all__ = ["MMR", "NaiveFanOut", "SingleQuery"]
