"""A vector index over item embeddings: maximum inner product search, exact or approximate.

==========  ===========================================  =====================================================
``kind``    faiss index                                  without faiss
==========  ===========================================  =====================================================
``exact``   ``IndexFlatIP`` (brute force, on the CPU)    a torch matmul + ``topk`` on the embeddings' device
``hnsw``    ``IndexHNSWFlat`` (inner-product metric)     refused: approximate search needs ``faiss-cpu``
``ivf``     ``IndexIVFFlat`` over an ``IndexFlatIP``     refused
==========  ===========================================  =====================================================

Both exact back ends score ``s(q, x) = <q, x>`` and return the ``k`` best items in decreasing score, so on the
same data they give the same ids (up to exact ties) and the same scores up to float32 rounding; the tests
check it. The approximate kinds trade recall for speed: :func:`recall_at_k` measures the share of the exact
top-k they return, which is how the docs and benchmarks state their quality (never assume it).

faiss is an optional extra (``pip install rlcore[retrieval]``); thread counts are the caller's business
(``faiss.omp_set_num_threads``), so that the library sets no global state.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

INDEX_KINDS = ("exact", "hnsw", "ivf")
BACKENDS = ("auto", "faiss", "torch")


def has_faiss() -> bool:
    """Whether ``faiss`` (the ``faiss-cpu`` package) can be imported."""
    try:
        importlib.import_module("faiss")
    except ImportError:
        return False
    return True


def _faiss() -> Any:
    if not has_faiss():
        raise ValueError("this index needs faiss, which is not installed; install it with "
                         "`pip install rlcore[retrieval]` (or `pip install faiss-cpu`), or use "
                         "IndexConfig(kind='exact', backend='torch').")
    import faiss

    return faiss


@dataclass(frozen=True)
class IndexConfig:
    """How to index the items."""

    kind: str = "exact"
    """``"exact"`` (brute force), ``"hnsw"`` or ``"ivf"`` (approximate, faiss only)."""
    backend: str = "auto"
    """``"faiss"``, ``"torch"`` (exact only) or ``"auto"`` (faiss when installed, else torch)."""
    hnsw_m: int = 32
    """HNSW graph degree (faiss's ``M``)."""
    hnsw_ef_construction: int = 64
    """HNSW candidate-list size while building."""
    hnsw_ef_search: int = 64
    """HNSW candidate-list size while searching: higher is slower and closer to exact."""
    ivf_nlist: int = 0
    """IVF cells; 0 means ``round(4 sqrt(num_items))``, faiss's usual rule of thumb."""
    ivf_nprobe: int = 8
    """IVF cells visited per query."""
    seed: int = 0
    """Seed of the IVF k-means (HNSW's level draws use faiss's fixed seed)."""

    def validate(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"IndexConfig.kind must be one of {INDEX_KINDS}, got {self.kind!r}.")
        if self.backend not in BACKENDS:
            raise ValueError(f"IndexConfig.backend must be one of {BACKENDS}, got {self.backend!r}.")
        if self.backend == "torch" and self.kind != "exact":
            raise ValueError(f"IndexConfig(kind={self.kind!r}) is approximate and needs backend='faiss' (or 'auto' "
                             "with faiss installed); the torch back end is exact only.")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe"):
            if getattr(self, name) < 1:
                raise ValueError(f"IndexConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.ivf_nlist < 0:
            raise ValueError(f"IndexConfig.ivf_nlist must be >= 0 (0: automatic), got {self.ivf_nlist}.")


class VectorIndex:
    """Maximum inner product search over ``embeddings`` (``[num_items, dim]``), built once.

    Args:
        embeddings: item embeddings, a float tensor ``[num_items, dim]`` (normalise them first for cosine).
        config: which index (see :class:`IndexConfig`).

    ``search`` returns tensors on the queries' device, whatever the back end.
    """

    def __init__(self, embeddings: torch.Tensor, config: IndexConfig | None = None) -> None:
        self.config = config = config or IndexConfig()
        config.validate()
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[0] < 1:
            got = list(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must be a [num_items, dim] tensor with num_items >= 1, got {got}.")
        if not torch.isfinite(embeddings).all():
            raise ValueError("embeddings contain NaN or infinite values.")
        self.embeddings = embeddings.detach().float().contiguous()
        self.num_items, self.dim = (int(s) for s in self.embeddings.shape)
        auto_faiss = config.backend == "auto" and (has_faiss() or config.kind != "exact")
        wants_faiss = config.backend == "faiss" or auto_faiss
        self.backend = "faiss" if wants_faiss else "torch"
        self._index = self._build_faiss() if wants_faiss else None
        self.texts: tuple[str, ...] | None = None
        """The item texts of an index built by :meth:`from_texts`."""

    @classmethod
    def from_texts(cls, texts: list[str] | tuple[str, ...], config: IndexConfig | None = None) -> VectorIndex:
        """An index over the all-MiniLM-L6-v2 embeddings of ``texts`` (384 dimensions, unit norm; the ``text``
        extra). Query it with :meth:`encode` of the query texts, or with any unit 384-dimensional vectors."""
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a non-empty list of strings (one per item).")
        from rlcore.adapters.text import embed_texts

        index = cls(embed_texts(tuple(texts), "VectorIndex.from_texts"), config)
        index.texts = tuple(texts)
        return index

    @staticmethod
    def encode(texts: list[str] | tuple[str, ...]) -> torch.Tensor:
        """MiniLM query embeddings ``[len(texts), 384]`` for an index built by :meth:`from_texts`."""
        from rlcore.adapters.text import embed_texts

        return embed_texts(tuple(texts), "VectorIndex.encode")

    def _build_faiss(self) -> Any:
        faiss, c = _faiss(), self.config
        data = np.ascontiguousarray(self.embeddings.cpu().numpy(), dtype=np.float32)
        if c.kind == "exact":
            index = faiss.IndexFlatIP(self.dim)
        elif c.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, c.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = c.hnsw_ef_construction
            index.hnsw.efSearch = c.hnsw_ef_search
        else:
            nlist = c.ivf_nlist or max(1, round(4 * math.sqrt(self.num_items)))
            nlist = min(nlist, self.num_items)  # k-means needs at least one point per centroid
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = c.seed
            index.train(data)
            index.nprobe = min(c.ivf_nprobe, nlist)
            self._quantizer = quantizer  # faiss does not own it from Python: keep it alive with the index
        index.add(data)
        return index

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` items of largest inner product with each query, best first.

        Args:
            queries: ``[B, dim]`` float tensor.
            k: items per query, ``1 <= k <= num_items``.

        Returns:
            ``(scores [B, k] float32, ids [B, k] int64)`` on ``queries.device``. An approximate index that finds
            fewer than ``k`` items pads with id -1 and score -inf.
        """
        if not isinstance(queries, torch.Tensor) or queries.dim() != 2 or queries.shape[1] != self.dim:
            got = list(queries.shape) if isinstance(queries, torch.Tensor) else type(queries).__name__
            raise ValueError(f"queries must be a [batch, {self.dim}] tensor, got {got}.")
        if not isinstance(k, int) or not 1 <= k <= self.num_items:
            raise ValueError(f"k must be an integer in [1, num_items] = [1, {self.num_items}], got {k!r}.")
        if not torch.isfinite(queries).all():
            raise ValueError("queries contain NaN or infinite values.")
        if self._index is None:
            scores = queries.detach().float().to(self.embeddings.device) @ self.embeddings.T
            top = scores.topk(k, dim=1)
            return top.values.to(queries.device), top.indices.to(queries.device)
        q = np.ascontiguousarray(queries.detach().float().cpu().numpy(), dtype=np.float32)
        scores, ids = self._index.search(q, k)
        scores_t = torch.from_numpy(scores).to(queries.device)
        ids_t = torch.from_numpy(ids).long().to(queries.device)
        return scores_t.masked_fill(ids_t < 0, -torch.inf), ids_t

    def __repr__(self) -> str:
        return (f"VectorIndex(num_items={self.num_items}, dim={self.dim}, kind={self.config.kind!r}, "
                f"backend={self.backend!r})")


def recall_at_k(approx_ids: torch.Tensor, exact_ids: torch.Tensor) -> float:
    """Mean over queries of ``|approx ∩ exact| / k``: the share of the exact top-k an approximate index returns.

    Args:
        approx_ids: ``[B, k]`` ids from the approximate index (-1 padding counts as a miss).
        exact_ids: ``[B, k]`` ids from an exact index on the same queries.
    """
    if approx_ids.shape != exact_ids.shape or approx_ids.dim() != 2:
        raise ValueError(f"approx_ids and exact_ids must both be [B, k], got {list(approx_ids.shape)} and "
                         f"{list(exact_ids.shape)}.")
    hits = (approx_ids[:, :, None] == exact_ids[:, None, :]).any(2) & (approx_ids >= 0)
    return float(hits.float().mean())


__all__ = ["BACKENDS", "INDEX_KINDS", "IndexConfig", "VectorIndex", "has_faiss", "recall_at_k"]
