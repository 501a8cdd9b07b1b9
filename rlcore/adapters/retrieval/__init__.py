"""Fan-out retrieval: return a *set* of items for a broad intent, trained on set-level rewards (after R4T).

R4T (Retrieve-for-Train) trains a fan-out generator once with RL on a composite set reward, synthesises
(intent, sub-query set) pairs from it and distils a one-pass diffusion retriever. This adapter works in
embedding space, over a real vector index. One job per module:

* :mod:`~rlcore.adapters.retrieval.index`: :class:`VectorIndex` (faiss exact / HNSW / IVF, or a torch top-k),
  :func:`recall_at_k`;
* :mod:`~rlcore.adapters.retrieval.catalogue`: :func:`synthetic_catalogue`, items in clusters and intents that
  own several, with a train/test split;
* :mod:`~rlcore.adapters.retrieval.text_catalogue`: :func:`text_catalogue`, product texts and shopping intents
  embedded by the real all-MiniLM-L6-v2 (``text`` extra);
* :mod:`~rlcore.adapters.retrieval.rewards`: the set-level reward terms (coverage, relevance, Vendi score,
  pairwise distance, duplicates) and their weighted composite;
* :mod:`~rlcore.adapters.retrieval.env`: :class:`FanOutRetrievalEnv`, the sequential batched environment;
* :mod:`~rlcore.adapters.retrieval.ppo`: :class:`FanOutPolicy` and :func:`train_fanout` (PPO, step (i));
* :mod:`~rlcore.adapters.retrieval.synthesis`: :func:`synthesise_pairs`, the (intent, sub-queries) pairs of
  step (ii);
* :mod:`~rlcore.adapters.retrieval.diffusion`: :func:`distill`, the conditional diffusion model over the K
  sub-queries and its one-pass :class:`DistilledRetriever` (step (iii));
* :mod:`~rlcore.adapters.retrieval.baselines`: :class:`SingleQuery`, :class:`NaiveFanOut`, :class:`MMR`,
  :class:`SetRewardGreedy`;
* :mod:`~rlcore.adapters.retrieval.api`: :func:`r4t` (the three steps) and :func:`evaluate` any retriever.
"""

from rlcore.adapters.retrieval.api import R4TResult, evaluate, r4t
from rlcore.adapters.retrieval.baselines import MMR, NaiveFanOut, SetRewardGreedy, SingleQuery
from rlcore.adapters.retrieval.catalogue import Catalogue, CatalogueConfig, make_catalogue, synthetic_catalogue
from rlcore.adapters.retrieval.diffusion import (
    DiffusionConfig,
    DistilledRetriever,
    DistillResult,
    SubqueryDenoiser,
    distill,
)
from rlcore.adapters.retrieval.env import FanOutEnvConfig, FanOutRetrievalEnv, fanout_observation
from rlcore.adapters.retrieval.index import IndexConfig, VectorIndex, has_faiss, recall_at_k
from rlcore.adapters.retrieval.ppo import FanOutPolicy, FanOutPPOConfig, FanOutTrainResult, train_fanout
from rlcore.adapters.retrieval.rewards import (
    TERMS,
    SetRewardConfig,
    composite_reward,
    coverage,
    distinct_mask,
    duplicate_penalty,
    mean_pairwise_distance,
    relevance,
    set_reward,
    set_reward_terms,
    vendi_score,
)
from rlcore.adapters.retrieval.synthesis import FanOutPairs, synthesise_pairs
from rlcore.adapters.retrieval.text_catalogue import text_catalogue

__all__ = [
    "MMR",
    "TERMS",
    "Catalogue",
    "CatalogueConfig",
    "DiffusionConfig",
    "DistillResult",
    "DistilledRetriever",
    "FanOutEnvConfig",
    "FanOutPPOConfig",
    "FanOutPairs",
    "FanOutPolicy",
    "FanOutRetrievalEnv",
    "FanOutTrainResult",
    "IndexConfig",
    "NaiveFanOut",
    "R4TResult",
    "SetRewardConfig",
    "SetRewardGreedy",
    "SingleQuery",
    "SubqueryDenoiser",
    "VectorIndex",
    "composite_reward",
    "coverage",
    "distill",
    "distinct_mask",
    "duplicate_penalty",
    "evaluate",
    "fanout_observation",
    "has_faiss",
    "make_catalogue",
    "mean_pairwise_distance",
    "r4t",
    "recall_at_k",
    "relevance",
    "set_reward",
    "set_reward_terms",
    "synthesise_pairs",
    "synthetic_catalogue",
    "text_catalogue",
    "train_fanout",
    "vendi_score",
]
