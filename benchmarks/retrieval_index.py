"""Recall and latency of the retrieval adapter's vector indexes against the exact one.

On a synthetic catalogue (clustered unit vectors, rlcore.adapters.retrieval.synthetic_catalogue), queries are
noisy intents; for each index: build time, recall@k against ``IndexFlatIP``, and ms per query at batch 1
(mean over ``--single`` queries) and batched (all queries in one call). One thread everywhere.

    python benchmarks/retrieval_index.py --num-items 100000 --dim 32

Writes ``benchmarks/results/retrieval_index.{json,md}``. ``--executor ray`` runs the measurement as one Ray task
(one CPU; ``--ray-address`` to join a cluster): its indexes are compared with each other, so they are timed
together on one node; the results are written here.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import faiss
import torch
import tyro
from _grid import check_executor, run_grid

from rlcore.adapters import retrieval


@dataclass
class Args:
    num_items: int = 100_000
    """Items in the catalogue."""
    dim: int = 32
    """Embedding dimension."""
    num_queries: int = 1_000
    """Queries of the batched measurement and of the recall."""
    single: int = 100
    """Queries timed one at a time."""
    k: int = 10
    """Neighbours per query."""
    seed: int = 0
    """Seed of the catalogue and the queries."""
    out: str = "benchmarks/results/retrieval_index"
    """Output path without extension."""
    executor: Literal["process", "ray"] = "process"
    """Measure in this process, or as one Ray task (pip install 'rlcore[distributed]')."""
    ray_address: str | None = None
    """With --executor ray: the cluster to join ('auto', 'ray://host:10001'); default: start Ray here."""


def timed_search(index: retrieval.VectorIndex, queries: torch.Tensor, k: int, single: int) -> tuple:
    start = time.perf_counter()
    _, ids = index.search(queries, k)
    batched = 1e3 * (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    for i in range(single):
        index.search(queries[i:i + 1], k)
    return ids, batched, 1e3 * (time.perf_counter() - start) / single


def main(args: Args) -> None:
    try:
        check_executor(args.executor)
    except ModuleNotFoundError as error:
        raise SystemExit(str(error)) from None
    (rows,) = run_grid(measure, [args], workers=0, executor=args.executor, ray_address=args.ray_address)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in asdict(args).items() if k not in ("executor", "ray_address")}
    meta = {"args": settings, "faiss": faiss.__version__, "torch": torch.__version__, "threads": 1}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    header = f"| index | build s | recall@{args.k} | ms/query (batch {args.num_queries}) | ms/query (batch 1) |"
    lines = [f"# Retrieval index: {args.num_items} items x {args.dim} dims, k = {args.k}, one thread", "",
             f"faiss {faiss.__version__}, torch {torch.__version__}; recall against IndexFlatIP; a build time of 0 is "
             "the row above's index searched with another ef / nprobe.", "", header,
             "|---|---|---|---|---|"]
    lines += [f"| {r['index']} | {r['build_s']} | {r[f'recall@{args.k}']} | {r['ms_per_query_batched']} | "
              f"{r['ms_per_query_batch1']} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def measure(args: Args) -> list[dict]:
    """Build and time every index, one after another in this process; one row per index."""
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    cat = retrieval.synthetic_catalogue(num_items=args.num_items, num_clusters=max(24, args.num_items // 200),
                                        num_intents=max(40, args.num_queries), dim=args.dim, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    queries = cat.intents[torch.randint(0, len(cat.intents), (args.num_queries,), generator=g)]
    queries = retrieval.env.unit(queries + 0.3 * torch.randn(queries.shape, generator=g) / args.dim ** 0.5)
    configs = {
        "exact (faiss IndexFlatIP)": retrieval.IndexConfig(backend="faiss"),
        "exact (torch matmul top-k)": retrieval.IndexConfig(backend="torch"),
        "hnsw32 ef=32": retrieval.IndexConfig(kind="hnsw", hnsw_ef_search=32),
        "hnsw32 ef=64": retrieval.IndexConfig(kind="hnsw", hnsw_ef_search=64),
        "hnsw32 ef=128": retrieval.IndexConfig(kind="hnsw", hnsw_ef_search=128),
        "ivf nprobe=4": retrieval.IndexConfig(kind="ivf", ivf_nprobe=4),
        "ivf nprobe=16": retrieval.IndexConfig(kind="ivf", ivf_nprobe=16),
    }
    rows, exact_ids, built = [], None, {}
    for name, config in configs.items():
        key = (config.kind, config.backend)
        start = time.perf_counter()
        if key in built:  # only the search parameter differs: reuse the built graph / cells
            index = built[key]
            if config.kind == "hnsw":
                index._index.hnsw.efSearch = config.hnsw_ef_search
            else:
                index._index.nprobe = config.ivf_nprobe
            build_s = 0.0
        else:
            index = retrieval.VectorIndex(cat.items, config)
            build_s = time.perf_counter() - start
            if config.kind != "exact":
                built[key] = index
        ids, batched, one = timed_search(index, queries, args.k, args.single)
        if exact_ids is None:
            exact_ids = ids
        rows.append({"index": name, "build_s": round(build_s, 3),
                     f"recall@{args.k}": round(retrieval.recall_at_k(ids, exact_ids), 4),
                     "ms_per_query_batched": round(batched, 4), "ms_per_query_batch1": round(one, 4)})
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
