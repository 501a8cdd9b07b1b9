"""Set-level reward terms on retrieved sets, and their weighted composite.

A batch of retrieved sets is an int64 tensor ``ids [B, M]`` of item indices, ``-1`` marking an empty slot (a
fan-out of K sub-queries with top-k each fills ``M = K·k`` slots, possibly with repeats). Items carry an
*aspect* label (in the synthetic catalogue: their cluster) and each intent owns a set of aspects
(``intent_aspects [B, A]`` bool); an item is *relevant* to an intent when its aspect is one the intent owns.
Every term is a ``[B]`` float tensor; repeats are counted once, except by the duplicate penalty:

=====================  ====================================================================  ==========
term                   definition (over the distinct items S of a set)                        range
=====================  ====================================================================  ==========
``coverage``           |{aspects of S} ∩ owned| / |owned|                                      [0, 1]
``relevance``          |{x ∈ S : x relevant}| / |S| (groundedness: share of the set on-intent)  [0, 1]
``vendi``              exp(−Σ λ log λ), λ the eigenvalues of K/|S|, K_ij = <x_i, x_j>          [1, |S|]
``pairwise_distance``  mean over pairs of 1 − <x_i, x_j> (unit embeddings: cosine distance)    [0, 2]
``duplicates``         share of the filled slots that repeat an earlier one                   [0, 1)
=====================  ====================================================================  ==========

The Vendi score (Friedman & Dieng, 2023) is the exponential of the entropy of the similarity kernel's
spectrum: the effective number of distinct items (1 for copies of one item, |S| for orthogonal ones). The
composite (:class:`SetRewardConfig`) divides it by ``M`` so that it lies in [0, 1] and grows as a fan-out
fills its slots with distinct items; R4T's reward is 0.6 groundedness + 0.2 Vendi + 0.2 alignment, here the
defaults weigh coverage most because coverage is exact in the synthetic catalogue. An empty set scores 0 on
every term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TERMS = ("coverage", "relevance", "vendi", "pairwise_distance", "duplicates")


def _check_ids(ids: torch.Tensor) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
        got = f"{list(ids.shape)} {ids.dtype}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"ids must be an integer [B, M] tensor of item indices (-1 for an empty slot), got {got}.")


def distinct_mask(ids: torch.Tensor) -> torch.Tensor:
    """``[B, M]`` bool: slots that hold an item (id >= 0) not already held by an earlier slot of the row."""
    _check_ids(ids)
    filled = ids >= 0
    same = (ids[:, :, None] == ids[:, None, :]) & filled[:, :, None]
    earlier = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool, device=ids.device).tril(-1)
    return filled & ~(same & earlier).any(2)


def coverage(ids: torch.Tensor, item_aspect: torch.Tensor, intent_aspects: torch.Tensor) -> torch.Tensor:
    """Share of each intent's aspects that the set holds at least one item of (see the module docstring).

    Args:
        ids: ``[B, M]`` retrieved item ids, -1 for empty slots.
        item_aspect: ``[num_items]`` int64 aspect of every item.
        intent_aspects: ``[B, A]`` bool, the aspects each row's intent owns (at least one per row).
    """
    _check_ids(ids)
    filled = ids >= 0
    aspect = item_aspect[ids.clamp(min=0)]
    # Count the filled slots of each aspect (empty slots add 0), then an aspect is hit when its count is > 0.
    counts = torch.zeros(intent_aspects.shape, dtype=torch.float32, device=ids.device)
    hit = counts.scatter_add_(1, aspect, filled.float()) > 0
    owned = intent_aspects.sum(1).clamp(min=1)
    return (hit & intent_aspects).sum(1).float() / owned.float()


def relevance(ids: torch.Tensor, item_aspect: torch.Tensor, intent_aspects: torch.Tensor) -> torch.Tensor:
    """Share of the set's distinct items that are relevant to the intent (groundedness); 0 for an empty set."""
    keep = distinct_mask(ids)
    relevant = intent_aspects.gather(1, item_aspect[ids.clamp(min=0)]) & keep
    return relevant.sum(1).float() / keep.sum(1).clamp(min=1).float()


def _distinct_embeddings(ids: torch.Tensor, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = distinct_mask(ids)
    x = embeddings[ids.clamp(min=0)] * keep[..., None]
    return x, keep


def vendi_score(ids: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Vendi score of the set's distinct items under the kernel ``K_ij = <x_i, x_j>`` (unit embeddings).

    ``exp(H(λ))`` with λ the eigenvalues of ``K / n``: 1 for one item (or identical ones), n for n orthogonal
    items; 0 for an empty set. Zeroed slots add zero eigenvalues, which do not change the entropy.
    """
    x, keep = _distinct_embeddings(ids, embeddings)
    n = keep.sum(1).clamp(min=1).to(x.dtype)
    kernel = (x @ x.transpose(1, 2)) / n[:, None, None]
    lam = torch.linalg.eigvalsh(kernel.double()).clamp(min=0.0)  # float64: tiny negative round-off is clamped
    entropy = -(lam * torch.log(lam.clamp(min=1e-300))).sum(1)
    return torch.where(keep.any(1), entropy.exp().to(x.dtype), torch.zeros_like(n))


def mean_pairwise_distance(ids: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 − <x_i, x_j>`` over pairs of distinct items (cosine distance for unit embeddings); 0 below two
    items."""
    x, keep = _distinct_embeddings(ids, embeddings)
    n = keep.sum(1).to(x.dtype)
    sim = x @ x.transpose(1, 2)
    pair = keep[:, :, None] & keep[:, None, :]
    pair = pair & ~torch.eye(ids.shape[1], dtype=torch.bool, device=ids.device)
    total = ((1.0 - sim) * pair).sum((1, 2))
    return torch.where(n >= 2, total / (n * (n - 1)).clamp(min=1), torch.zeros_like(n))


def duplicate_penalty(ids: torch.Tensor) -> torch.Tensor:
    """Share of the filled slots whose item an earlier slot of the set already holds; 0 for an empty set."""
    filled = (ids >= 0).sum(1)
    repeats = filled - distinct_mask(ids).sum(1)
    return repeats.float() / filled.clamp(min=1).float()


@dataclass(frozen=True)
class SetRewardConfig:
    """Weights of the composite set reward ``Σ_t w_t · term_t − w_dup · duplicates``."""

    coverage: float = 1.0
    """Weight of `coverage`."""
    relevance: float = 0.5
    """Weight of `relevance` (groundedness)."""
    diversity: float = 0.25
    """Weight of the diversity term (see ``diversity_measure``)."""
    duplicates: float = 0.25
    """Weight of `duplicate_penalty` (subtracted)."""
    diversity_measure: str = "vendi"
    """``"vendi"`` (Vendi score / M, the slots of the set) or ``"pairwise"`` (`mean_pairwise_distance` / 2)."""

    def validate(self) -> None:
        if self.diversity_measure not in ("vendi", "pairwise"):
            raise ValueError(f"SetRewardConfig.diversity_measure must be 'vendi' or 'pairwise', got "
                             f"{self.diversity_measure!r}.")
        for name in ("coverage", "relevance", "diversity", "duplicates"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
                raise ValueError(f"SetRewardConfig.{name} must be a finite number, got {value!r}.")


def set_reward_terms(ids: torch.Tensor, embeddings: torch.Tensor, item_aspect: torch.Tensor,
                     intent_aspects: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every term of the module docstring, each ``[B]``, as a dict keyed by :data:`TERMS`."""
    return {"coverage": coverage(ids, item_aspect, intent_aspects),
            "relevance": relevance(ids, item_aspect, intent_aspects),
            "vendi": vendi_score(ids, embeddings),
            "pairwise_distance": mean_pairwise_distance(ids, embeddings),
            "duplicates": duplicate_penalty(ids)}


def composite_reward(terms: dict[str, torch.Tensor], config: SetRewardConfig, num_slots: int) -> torch.Tensor:
    """The weighted composite of ``terms`` (from :func:`set_reward_terms`) for sets of ``num_slots`` slots."""
    config.validate()
    if config.diversity_measure == "vendi":
        diversity = terms["vendi"] / float(num_slots)
    else:
        diversity = terms["pairwise_distance"] / 2.0
    return (config.coverage * terms["coverage"] + config.relevance * terms["relevance"]
            + config.diversity * diversity - config.duplicates * terms["duplicates"])


def set_reward(ids: torch.Tensor, embeddings: torch.Tensor, item_aspect: torch.Tensor, intent_aspects: torch.Tensor,
               config: SetRewardConfig | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(composite [B], terms)`` of the retrieved sets ``ids [B, M]`` (see :class:`SetRewardConfig`)."""
    terms = set_reward_terms(ids, embeddings, item_aspect, intent_aspects)
    return composite_reward(terms, config or SetRewardConfig(), ids.shape[1]), terms


__all__ = ["TERMS", "SetRewardConfig", "composite_reward", "coverage", "distinct_mask", "duplicate_penalty",
           "mean_pairwise_distance", "relevance", "set_reward", "set_reward_terms", "vendi_score"]
