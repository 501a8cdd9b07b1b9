"""Fan-out baselines in the retriever API: a single query, naive fan-out, MMR and set-reward greedy re-ranking.

A *retriever* has ``num_subqueries`` and ``retrieve(intents [B, d], top_k) -> ids [B, num_subqueries·top_k]``
(-1 for an empty slot). Every retriever of an evaluation fills the same number of slots, ``K·top_k``, so
that set-level metrics compare strategies at an equal budget of retrieved items, not a fan-out with four
times the items against a single query with a quarter of them.

* :class:`SingleQuery`: one query at the intent embedding, its top ``K·top_k`` items;
* :class:`NaiveFanOut`: K noisy copies of the intent (what a sampler of rewrites without an objective does),
  top-k each, like LangChain's ``MultiQueryRetriever`` taking the union of its rewrites' results;
* :class:`MMR`: maximal marginal relevance (Carbonell & Goldstein, 1998) re-ranking an over-fetched list at
  the intent: greedily add ``argmax_x (1 − λ)<q, x> − λ max_{s ∈ S} <x, s>``;
* :class:`SetRewardGreedy`: MMR's shape with the library's own objective: greedily add the over-fetched
  candidate that most raises the composite set reward (:func:`~.rewards.set_reward`) of the set so far. The
  reward needs the aspects the intent owns, which a query does not carry: ``aspects="pool"`` estimates them
  from the over-fetched list (label-free, a fair baseline), ``aspects="oracle"`` reads the catalogue's ground
  truth (an upper bound for any re-ranker of that list, not a retriever one could deploy).
"""

from __future__ import annotations

import torch

from rlcore.adapters.retrieval.catalogue import Catalogue
from rlcore.adapters.retrieval.env import unit
from rlcore.adapters.retrieval.rewards import (
    SetRewardConfig,
    composite_reward,
    coverage,
    mean_pairwise_distance,
    relevance,
    vendi_score,
)

GREEDY_ASPECTS = ("pool", "oracle")


def _check_budget(num_subqueries: int) -> int:
    if not isinstance(num_subqueries, int) or num_subqueries < 1:
        raise ValueError(f"num_subqueries must be an integer >= 1, got {num_subqueries!r}.")
    return num_subqueries


def _check_fetch(fetch: int, top_k: int, name: str) -> None:
    if top_k >= fetch:
        raise ValueError(f"{name}(fetch={fetch}) over-fetches {fetch} candidates per slot of top_k, so it needs "
                         f"top_k < fetch; got top_k={top_k}. Use a larger fetch.")


def _pad(ids: torch.Tensor, budget: int) -> torch.Tensor:
    """Pad ``ids [B, m]`` with empty slots (-1) to ``budget`` columns (a catalogue smaller than the budget)."""
    if ids.shape[1] >= budget:
        return ids
    pad = torch.full((ids.shape[0], budget - ids.shape[1]), -1, dtype=ids.dtype, device=ids.device)
    return torch.cat([ids, pad], 1)


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
        _check_fetch(self.fetch, top_k, "MMR")
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
        return _pad(torch.cat(picks, 1), budget)


class SetRewardGreedy:
    """Greedy maximisation of the composite set reward over ``fetch · num_subqueries`` items fetched at the intent.

    Step j adds the candidate c maximising ``R(S ∪ {c})`` (the :class:`~.rewards.SetRewardConfig` composite for
    a set of ``K · top_k`` slots), scored for all candidates of all intents in one batched call. With the Vendi
    score as the diversity measure, an eigenvalue problem per candidate per step dominates the cost, so the
    candidates are first ranked by the same composite with the mean pairwise distance in its place (cheap) and
    the exact composite decides among the ``shortlist`` best (``shortlist=None``: among all, exact greedy). The
    reward's coverage and relevance terms need the intent's aspects:

    * ``aspects="pool"``: estimated from the candidates: an aspect is taken as owned when at least
      ``min_share`` of the over-fetched list belongs to it (items carry their aspect, a query does not);
    * ``aspects="oracle"``: the catalogue's ground truth for intents of the catalogue (looked up by their
      embedding; others are refused). An upper bound on re-ranking that list, not a deployable retriever.

    Args:
        catalogue: whose index, item embeddings and aspects to use.
        fetch: over-fetched candidates per sub-query slot (must exceed ``top_k``).
        num_subqueries: K; the set has ``K · top_k`` items.
        reward: the composite being maximised (default :class:`~.rewards.SetRewardConfig`).
        aspects: ``"pool"`` or ``"oracle"`` (see above).
        min_share: with ``aspects="pool"``, the share of the list an aspect needs to count as owned.
        shortlist: candidates scored with the exact composite at each step (None: all of them).
    """

    def __init__(self, catalogue: Catalogue, fetch: int = 40, num_subqueries: int = 4,
                 reward: SetRewardConfig | None = None, aspects: str = "pool", min_share: float = 0.02,
                 shortlist: int | None = 8) -> None:
        self.catalogue, self.num_subqueries = catalogue, _check_budget(num_subqueries)
        if not isinstance(fetch, int) or fetch < 1:
            raise ValueError(f"fetch must be an integer >= 1, got {fetch!r}.")
        if aspects not in GREEDY_ASPECTS:
            raise ValueError(f"aspects must be one of {GREEDY_ASPECTS}, got {aspects!r} ('pool' estimates the "
                             "intent's aspects from the fetched list, 'oracle' reads the catalogue's labels).")
        if not 0.0 < min_share <= 1.0:
            raise ValueError(f"min_share must be in (0, 1], got {min_share!r}.")
        self.reward = reward or SetRewardConfig()
        self.reward.validate()
        if shortlist is not None and (not isinstance(shortlist, int) or shortlist < 1):
            raise ValueError(f"shortlist must be an integer >= 1 or None (score every candidate), got {shortlist!r}.")
        self.fetch, self.aspects, self.min_share, self.shortlist = fetch, aspects, float(min_share), shortlist

    def _owned(self, intents: torch.Tensor, cand: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``[B, A]`` bool: the aspects each intent is taken to own."""
        cat = self.catalogue
        num_aspects = cat.intent_aspects.shape[1]
        if self.aspects == "oracle":
            sim = unit(intents) @ cat.intents.to(intents.device).T
            best, which = sim.max(1)
            if bool((best < 1 - 1e-5).any()):
                raise ValueError("SetRewardGreedy(aspects='oracle') reads the ground truth of the catalogue's own "
                                 "intents, and some queried intents are not among them; use aspects='pool'.")
            return cat.intent_aspects.to(intents.device)[which]
        aspect = cat.item_aspect.to(cand.device)[cand.clamp(min=0)]
        counts = torch.zeros(cand.shape[0], num_aspects, device=cand.device).scatter_add_(1, aspect, valid.float())
        return counts >= self.min_share * valid.sum(1, keepdim=True).clamp(min=1)

    @staticmethod
    def _reward(ids: torch.Tensor, items: torch.Tensor, item_aspect: torch.Tensor, owned: torch.Tensor,
                budget: int, reward: SetRewardConfig) -> torch.Tensor:
        """The composite of sets of distinct candidates: only ``reward``'s diversity measure is computed and the
        duplicate penalty is 0 by construction."""
        terms = {"coverage": coverage(ids, item_aspect, owned), "relevance": relevance(ids, item_aspect, owned),
                 "duplicates": torch.zeros(ids.shape[0], device=ids.device)}
        if reward.diversity_measure == "vendi":
            terms["vendi"] = vendi_score(ids, items)
        else:
            terms["pairwise_distance"] = mean_pairwise_distance(ids, items)
        return composite_reward(terms, reward, budget)

    @torch.no_grad()
    def retrieve(self, intents: torch.Tensor, top_k: int) -> torch.Tensor:
        _check_fetch(self.fetch, top_k, "SetRewardGreedy")
        cat = self.catalogue
        budget = self.num_subqueries * top_k
        size = min(self.fetch * self.num_subqueries, cat.index.num_items)
        cand = cat.index.search(unit(intents), size)[1]  # [B, L]
        valid = cand >= 0
        owned = self._owned(intents, cand, valid)
        b = cand.shape[0]
        items, item_aspect = cat.items.to(cand.device), cat.item_aspect.to(cand.device)
        short = size if self.shortlist is None else min(self.shortlist, size)
        cand_x, cand_aspect = items[cand.clamp(min=0)], item_aspect[cand.clamp(min=0)]  # [B, L, d], [B, L]
        cand_owned = owned.gather(1, cand_aspect).float()
        cand_sim = cand_x @ cand_x.transpose(1, 2)  # [B, L, L]
        hit = torch.zeros_like(owned)
        relevant, pair_sum = torch.zeros(b, 1, device=cand.device), torch.zeros(b, 1, device=cand.device)
        sim_to_picks = torch.zeros(b, size, device=cand.device)
        num_owned = owned.sum(1, keepdim=True).clamp(min=1).float()
        chosen = ~valid
        picks = cand.new_empty(b, 0)
        for n in range(min(budget, size)):
            # The composite with the mean pairwise distance as its diversity, for every S ∪ {c}, incrementally:
            # exact when that is the configured measure, the shortlist's ranking when Vendi is.
            new_aspect = cand_owned * (~hit.gather(1, cand_aspect)).float()
            rough = (self.reward.coverage * (hit.sum(1, keepdim=True) + new_aspect) / num_owned
                     + self.reward.relevance * (relevant + cand_owned) / (n + 1)
                     + self.reward.diversity * (pair_sum + 2 * (n - sim_to_picks)) / max(n * (n + 1), 1) / 2.0)
            rough = rough.masked_fill(chosen, -torch.inf)
            if self.reward.diversity_measure == "pairwise" or short == 1:
                best = rough.argmax(1, keepdim=True)
            else:
                # Ties (common: every first pick of an owned aspect scores the same) go to the better-ranked
                # candidate, so results do not depend on how topk orders equal values.
                top = (torch.arange(size, device=cand.device).expand(b, -1) if short == size
                       else rough.sort(dim=1, descending=True, stable=True).indices[:, :short])  # [B, s]
                trial = torch.cat([picks[:, None, :].expand(-1, short, -1), cand.gather(1, top)[:, :, None]], 2)
                gain = self._reward(trial.reshape(b * short, -1), items, item_aspect,
                                    owned.repeat_interleave(short, 0), budget, self.reward)
                gain = gain.reshape(b, short).masked_fill(chosen.gather(1, top), -torch.inf)
                best = top.gather(1, gain.argmax(1, keepdim=True))
            best_aspect = cand_aspect.gather(1, best)
            relevant = relevant + cand_owned.gather(1, best)
            hit = hit.scatter(1, best_aspect, owned.gather(1, best_aspect) | hit.gather(1, best_aspect))
            pair_sum = pair_sum + 2 * (n - sim_to_picks.gather(1, best))
            sim_to_picks = sim_to_picks + cand_sim.gather(1, best[:, :, None].expand(-1, 1, size)).squeeze(1)
            # A row with nothing left to pick (fewer valid candidates than the budget) gets an empty slot.
            none_left = chosen.all(1, keepdim=True)
            picks = torch.cat([picks, cand.gather(1, best).masked_fill(none_left, -1)], 1)
            chosen = chosen.scatter(1, best, True)
        return _pad(picks, budget)


__all__ = ["GREEDY_ASPECTS", "MMR", "NaiveFanOut", "SetRewardGreedy", "SingleQuery"]
