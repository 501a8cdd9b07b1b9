"""A synthetic catalogue: items in clusters, broad intents that each own several clusters, a train/test split.

Generated from a seed, with no download, so that coverage is exact:

* ``num_clusters`` cluster centres ``c_a``, uniform on the unit sphere of ``R^dim``;
* ``num_items`` items, item ``i`` in cluster ``a_i`` (round robin, so clusters have equal sizes), embedding
  ``x_i = normalise(c_{a_i} + item_noise · g / sqrt(dim))`` with ``g ~ N(0, I)``;
* ``num_intents`` intents; intent ``q`` owns ``clusters_per_intent`` distinct clusters ``A_q`` and has the
  embedding ``e_q = normalise(Σ_{a ∈ A_q} w_a c_a + intent_noise · g / sqrt(dim))`` with Dirichlet(1) weights
  ``w``. The unequal weights are the point: a broad query leans towards one of its aspects, so a single query
  at ``e_q`` returns mostly that aspect, and covering the others needs a fan-out of sub-queries;
* an item is relevant to an intent when its cluster is one the intent owns (its *aspect*); the intents are
  split into train and test (``test_fraction``) so that a trained fan-out is measured on unseen intents.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from rlcore.adapters.retrieval.index import IndexConfig, VectorIndex

SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class CatalogueConfig:
    """The synthetic catalogue's sizes and noise levels (see the module docstring)."""

    num_items: int = 4_800
    """Items in the catalogue."""
    num_clusters: int = 24
    """Clusters (aspects) the items fall in."""
    num_intents: int = 40
    """Broad intents, train and test together."""
    dim: int = 32
    """Embedding dimension."""
    clusters_per_intent: int = 4
    """Aspects each intent owns."""
    item_noise: float = 0.5
    """Spread of an item around its cluster centre."""
    intent_noise: float = 0.05
    """Noise of an intent's embedding around its weighted mix of centres."""
    test_fraction: float = 0.25
    """Share of the intents held out for testing."""
    seed: int = 0
    """Seed of everything above."""

    def validate(self) -> None:
        for name in ("num_items", "num_clusters", "num_intents", "dim", "clusters_per_intent"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"CatalogueConfig.{name} must be an integer >= 1, got {value!r}.")
        if self.clusters_per_intent > self.num_clusters:
            raise ValueError(f"clusters_per_intent ({self.clusters_per_intent}) cannot exceed num_clusters "
                             f"({self.num_clusters}).")
        if self.num_items < self.num_clusters:
            raise ValueError(f"num_items ({self.num_items}) must be >= num_clusters ({self.num_clusters}) so that "
                             "every cluster has an item.")
        if not 0.0 < self.test_fraction < 1.0 or self.num_intents < 2:
            raise ValueError(f"test_fraction must be in (0, 1) and num_intents >= 2 for a train/test split, got "
                             f"test_fraction={self.test_fraction}, num_intents={self.num_intents}.")
        if self.item_noise < 0 or self.intent_noise < 0:
            raise ValueError("item_noise and intent_noise must be >= 0.")


@dataclass
class Catalogue:
    """Items, intents and their ground truth, with the index over the items.

    Attributes:
        config: how it was generated.
        items: ``[num_items, dim]`` unit item embeddings.
        item_aspect: ``[num_items]`` int64 cluster of every item.
        centres: ``[num_clusters, dim]`` unit cluster centres.
        intents: ``[num_intents, dim]`` unit intent embeddings.
        intent_aspects: ``[num_intents, num_clusters]`` bool, the clusters each intent owns.
        train_intents, test_intents: int64 ids of the intents of each split.
        index: the `VectorIndex` over ``items``.
        item_texts, intent_texts: the texts of a text catalogue
            (`text_catalogue`), None for a synthetic one.
    """

    config: CatalogueConfig
    items: torch.Tensor
    item_aspect: torch.Tensor
    centres: torch.Tensor
    intents: torch.Tensor
    intent_aspects: torch.Tensor
    train_intents: torch.Tensor
    test_intents: torch.Tensor
    index: VectorIndex = field(repr=False)
    item_texts: tuple[str, ...] | None = field(default=None, repr=False)
    intent_texts: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.items.shape[1])

    def split(self, name: str) -> torch.Tensor:
        """The intent ids of split ``name`` (``"train"``, ``"test"`` or ``"all"``)."""
        if name == "train":
            return self.train_intents
        if name == "test":
            return self.test_intents
        if name == "all":
            return torch.arange(self.intents.shape[0])
        raise ValueError(f"split must be one of {SPLITS}, got {name!r}.")

    def with_index(self, config: IndexConfig) -> Catalogue:
        """The same catalogue over another index (for example an approximate one)."""
        return dataclasses.replace(self, index=VectorIndex(self.items, config))


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def make_catalogue(config: CatalogueConfig, index: IndexConfig | None = None) -> Catalogue:
    """Generate the catalogue of ``config`` (deterministic in ``config.seed``) and index its items."""
    config.validate()
    c = config
    g = torch.Generator().manual_seed(int(c.seed))
    centres = _unit(torch.randn(c.num_clusters, c.dim, generator=g))
    item_aspect = torch.arange(c.num_items) % c.num_clusters
    noise = torch.randn(c.num_items, c.dim, generator=g) / c.dim ** 0.5
    items = _unit(centres[item_aspect] + c.item_noise * noise)
    owned = torch.rand(c.num_intents, c.num_clusters, generator=g).topk(c.clusters_per_intent, dim=1).indices
    intent_aspects = torch.zeros(c.num_intents, c.num_clusters, dtype=torch.bool).scatter_(1, owned, True)
    # Dirichlet(1) weights from g (torch.distributions would draw from the global generator):
    weights = -torch.log(torch.rand(c.num_intents, c.clusters_per_intent, generator=g).clamp(min=1e-12))
    weights = weights / weights.sum(1, keepdim=True)  # normalised Exp(1) draws are Dirichlet(1)
    mix = (weights[:, :, None] * centres[owned]).sum(1)
    intents = _unit(mix + c.intent_noise * torch.randn(c.num_intents, c.dim, generator=g) / c.dim ** 0.5)
    order = torch.randperm(c.num_intents, generator=g)
    num_test = max(1, min(c.num_intents - 1, round(c.test_fraction * c.num_intents)))
    test, train = order[:num_test].sort().values, order[num_test:].sort().values
    return Catalogue(c, items, item_aspect, centres, intents, intent_aspects, train, test,
                     VectorIndex(items, index))


def synthetic_catalogue(num_items: int = 4_800, num_clusters: int = 24, num_intents: int = 40, dim: int = 32,
                        seed: int = 0, *, index: IndexConfig | None = None, **kwargs: object) -> Catalogue:
    """A synthetic :class:`Catalogue` (see the module docstring); ``kwargs`` are other
    :class:`CatalogueConfig` fields (``clusters_per_intent``, ``item_noise``, ``test_fraction``...)."""
    known = set(CatalogueConfig.__dataclass_fields__)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"synthetic_catalogue got unknown argument(s) {unknown}; accepted: {sorted(known)}.")
    config = CatalogueConfig(num_items=num_items, num_clusters=num_clusters, num_intents=num_intents, dim=dim,
                             seed=seed, **kwargs)  # type: ignore[arg-type]
    return make_catalogue(config, index)


__all__ = ["SPLITS", "Catalogue", "CatalogueConfig", "make_catalogue", "synthetic_catalogue"]
