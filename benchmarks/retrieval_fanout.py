"""Fan-out retrieval: set reward, coverage, diversity and latency of every retriever (a reduced first version).

One synthetic catalogue (default 4,800 items in 24 clusters, 400 intents: 300 train, 100 test, 32 dims), K = 4
sub-queries x top-10, exact faiss index. Retrievers: single query, naive fan-out, MMR, the PPO fan-out policy
(R4T step i) and the diffusion retriever distilled from it (steps ii-iii). Latency is ms per query at batch 1
(mean over ``--single`` intents) and at batch 256 (the test intents, repeated), index time included.
One thread everywhere.

    python benchmarks/retrieval_fanout.py

Writes ``benchmarks/results/retrieval_fanout.{json,md}``. Not yet: catalogues of 10^5 and 10^6 items, the
approximate index, the set-reward greedy baseline, index time apart from generator time, the plot.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import torch
import tyro

from rlcore.adapters import retrieval


@dataclass
class Args:
    num_items: int = 4_800
    """Items in the catalogue."""
    num_clusters: int = 24
    """Clusters (aspects)."""
    num_intents: int = 400
    """Intents (a quarter held out for testing)."""
    dim: int = 32
    """Embedding dimension."""
    num_subqueries: int = 4
    """K."""
    top_k: int = 10
    """Items per sub-query."""
    single: int = 50
    """Intents timed one at a time."""
    seed: int = 0
    """Seed of the catalogue and of R4T."""
    out: str = "benchmarks/results/retrieval_fanout"
    """Output path without extension."""


def latency_ms(retriever, intents: torch.Tensor, top_k: int, batch: int, count: int) -> float:
    queries = intents.repeat((batch * count + len(intents) - 1) // len(intents), 1)[:batch * count]
    start = time.perf_counter()
    for i in range(count):
        retriever.retrieve(queries[i * batch:(i + 1) * batch], top_k)
    return 1e3 * (time.perf_counter() - start) / (batch * count)


def main(args: Args) -> None:
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    cat = retrieval.synthetic_catalogue(num_items=args.num_items, num_clusters=args.num_clusters,
                                        num_intents=args.num_intents, dim=args.dim, seed=args.seed)
    start = time.perf_counter()
    out = retrieval.r4t(cat, num_subqueries=args.num_subqueries, top_k=args.top_k, seed=args.seed)
    r4t_s = time.perf_counter() - start
    retrievers = {"single query": retrieval.SingleQuery(cat, args.num_subqueries),
                  "naive fan-out": retrieval.NaiveFanOut(cat, args.num_subqueries),
                  "MMR (fetch 40/slot, λ 0.5)": retrieval.MMR(cat, 40, args.num_subqueries),
                  "RL fan-out (PPO)": out.policy, "distilled (diffusion)": out.retriever}
    test_intents = cat.intents[cat.test_intents]
    rows = []
    for name, r in retrievers.items():
        row = {"retriever": name}
        for split in ("train", "test"):
            m = retrieval.evaluate(r, cat, split=split, top_k=args.top_k)
            for key in ("set_reward", "coverage", "relevance", "diversity", "duplicates"):
                row[f"{split}_{key}"] = round(m[key], 4)
        row["ms_batch1"] = round(latency_ms(r, test_intents, args.top_k, 1, args.single), 4)
        row["ms_batch256"] = round(latency_ms(r, test_intents, args.top_k, 256, 2), 4)
        rows.append(row)
        print(row, flush=True)
    rl, dist = rows[3], rows[4]
    summary = {"distilled_over_rl_test_set_reward": round(dist["test_set_reward"] / rl["test_set_reward"], 4),
               "rl_over_distilled_latency_batch1": round(rl["ms_batch1"] / dist["ms_batch1"], 3),
               "r4t_seconds": round(r4t_s, 1), "pairs": len(out.pairs.rewards),
               "pairs_mean_reward": round(float(out.pairs.rewards.mean()), 4)}
    print(summary)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"args": asdict(args), "faiss": faiss.__version__, "torch": torch.__version__, "threads": 1}
    path.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=2))
    lines = [f"# Fan-out retrieval: {args.num_items} items, {args.num_intents} intents, K = {args.num_subqueries}, "
             f"top-{args.top_k}, exact faiss index, one thread", "",
             "| retriever | test set reward | test coverage | test relevance | test Vendi | test duplicates | "
             "train set reward | ms/query batch 1 | ms/query batch 256 |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['retriever']} | {r['test_set_reward']} | {r['test_coverage']} | {r['test_relevance']} | "
              f"{r['test_diversity']} | {r['test_duplicates']} | {r['train_set_reward']} | {r['ms_batch1']} | "
              f"{r['ms_batch256']} |" for r in rows]
    lines += ["", "Summary: " + ", ".join(f"{k} = {v}" for k, v in summary.items())]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(tyro.cli(Args))
