"""Fan-out retrieval: set reward, coverage, diversity and latency of every retriever, over catalogue sizes and index
kinds.

For each catalogue size (default 10^4, 10^5 and 10^6 items; 24 clusters, 400 intents: 300 train, 100 test, 32 dims;
K = 4 sub-queries x top-10), R4T is run once on the exact faiss index (PPO fan-out policy, synthesis,
distillation), then every retriever is measured on the exact index (``IndexFlatIP``) and on an approximate one
(HNSW32, efSearch 64): single query, naive fan-out, MMR, the PPO fan-out policy and the distilled one-pass
retriever; and, in a part of their own per size (no training), the set-reward greedy re-ranker of the same
over-fetched list as MMR, with the intent's aspects estimated from that list and, as an upper bound for any re-ranker of
it, with the true aspects. Latency is ms per query at batch 1 (mean over ``--single`` test intents, one at a time)
and at batch 256, split into index time (inside ``search``) and generator time (the rest: policy calls, denoiser
passes, MMR's re-ranking). One thread everywhere.

Each size is two parts (R4T and the retrievers; the greedy re-rankers), each run in its own process (``--workers``
at a time); its result goes to ``benchmarks/results/retrieval_fanout_runs/n<size>.json`` (``n<size>_greedy.json``)
and a part whose file exists is skipped, so an interrupted benchmark continues where it stopped. ``--executor ray``
runs each part's process as a Ray task instead (one CPU, so a part's latencies are measured on one node's core;
``--ray-address`` to join a cluster, whose nodes need this repository and environment at the same paths); the part
files are written here.

    python benchmarks/retrieval_fanout.py                       # every missing part, then the report
    python benchmarks/retrieval_fanout.py --sizes 10000         # one size
    python benchmarks/retrieval_fanout.py --summarise-only

Writes ``benchmarks/results/retrieval_fanout.{json,md,png}``. Targets (issue 25): the distilled retriever at
least 95 % of the policy's test set reward at at least 5x lower latency at batch 1; both clearly above MMR.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _grid import ONE_THREAD, Command, add_executor_arguments, run_commands

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "retrieval_fanout_runs"
INDEXES = {"exact": {"kind": "exact"}, "hnsw": {"kind": "hnsw", "hnsw_ef_search": 64}}
RETRIEVERS = ("single query", "naive fan-out", "MMR (fetch 40/slot, λ 0.5)", "RL fan-out (PPO)",
              "distilled (diffusion)")
# Re-rankers that need no training, measured in a part of their own (``n<size>_greedy.json``) so that they
# could be added to sizes whose R4T part was already run.
GREEDY = ("set-reward greedy (fetch 40/slot)", "set-reward greedy, oracle aspects")


class TimedIndex:
    """A :class:`~rlcore.adapters.retrieval.VectorIndex` that adds the seconds spent in ``search`` to ``seconds``."""

    def __init__(self, index: Any) -> None:
        self.index, self.seconds = index, 0.0

    def search(self, queries, k):
        start = time.perf_counter()
        out = self.index.search(queries, k)
        self.seconds += time.perf_counter() - start
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)


def latency_ms(retriever: Any, timed: TimedIndex, intents, top_k: int, batch: int, count: int) -> tuple[float, float]:
    """``(total, index)`` ms per query: the medians over ``count`` calls of ``batch`` intents (medians, so that a call
    pre-empted by another process on a shared machine does not move them)."""
    queries = intents.repeat((batch * count + len(intents) - 1) // len(intents), 1)[:batch * count]
    retriever.retrieve(queries[:batch], top_k)  # warm-up (first-call allocations)
    totals, indexes = [], []
    for i in range(count):
        timed.seconds = 0.0
        start = time.perf_counter()
        retriever.retrieve(queries[i * batch:(i + 1) * batch], top_k)
        totals.append(time.perf_counter() - start)
        indexes.append(timed.seconds)
    return 1e3 * statistics.median(totals) / batch, 1e3 * statistics.median(indexes) / batch


def paired_latency_ratio(first: Any, second: Any, intents, top_k: int, count: int) -> float:
    """Median batch-1 time of ``first`` over ``second``'s, the two called in turn on the same ``count`` intents, so
    that each pair of calls sees the same load on a shared machine."""
    first.retrieve(intents[:1], top_k), second.retrieve(intents[:1], top_k)  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(count):
        query = intents[i % len(intents)][None]
        for retriever, spent in zip((first, second), times, strict=True):
            start = time.perf_counter()
            retriever.retrieve(query, top_k)
            spent.append(time.perf_counter() - start)
    return statistics.median(times[0]) / statistics.median(times[1])


def set_metrics(retriever: Any, cat: Any, top_k: int) -> dict[str, float]:
    """The report's set metrics of ``retriever`` on the train and the test intents (``<split>_<metric>``)."""
    from rlcore.adapters import retrieval

    row = {}
    for split in ("train", "test"):
        m = retrieval.evaluate(retriever, cat, split=split, top_k=top_k)
        for key in ("set_reward", "coverage", "relevance", "diversity", "duplicates"):
            row[f"{split}_{key}"] = round(m[key], 4)
    return row


def measure(name: str, retriever: Any, tcat: Any, timed: TimedIndex, args: argparse.Namespace, label: str) -> dict:
    """One table row: set metrics on train and test intents, latency at batch 1 and 256."""

    row = {"retriever": name, **set_metrics(retriever, tcat, args.top_k)}
    test_intents = tcat.intents[tcat.test_intents]
    for batch, count in ((1, args.single), (256, 2)):
        total, index = latency_ms(retriever, timed, test_intents, args.top_k, batch, count)
        row[f"ms_batch{batch}"], row[f"index_ms_batch{batch}"] = round(total, 4), round(index, 4)
    print(label, row, flush=True)
    return row


def catalogue_and_indexes(num_items: int, args: argparse.Namespace):
    """The part's catalogue (exact index) and ``(name, catalogue over that index, build seconds)`` per index."""
    import faiss
    import torch

    from rlcore.adapters import retrieval

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    cat = retrieval.synthetic_catalogue(num_items=num_items, num_clusters=args.num_clusters,
                                        num_intents=args.num_intents, dim=args.dim, seed=args.seed)

    def indexed():
        for index_name, options in INDEXES.items():
            build = time.perf_counter()
            icat = cat if index_name == "exact" else cat.with_index(retrieval.IndexConfig(**options))
            yield index_name, icat, time.perf_counter() - build

    return cat, indexed


def run_greedy_part(num_items: int, args: argparse.Namespace) -> dict:
    """The set-reward greedy re-rankers on both indexes (no training)."""
    from rlcore.adapters import retrieval

    _, indexed = catalogue_and_indexes(num_items, args)
    record: dict = {"num_items": num_items, "indexes": {}}
    for index_name, icat, _ in indexed():
        timed = TimedIndex(icat.index)
        tcat = dataclasses.replace(icat, index=timed)
        k = args.num_subqueries
        retrievers = {GREEDY[0]: retrieval.SetRewardGreedy(tcat, 40, k),
                      GREEDY[1]: retrieval.SetRewardGreedy(tcat, 40, k, aspects="oracle")}
        record["indexes"][index_name] = {"rows": [measure(name, r, tcat, timed, args, f"{num_items} {index_name}")
                                                  for name, r in retrievers.items()]}
    return record


def run_part(num_items: int, args: argparse.Namespace) -> dict:
    from rlcore.adapters import retrieval

    cat, indexed = catalogue_and_indexes(num_items, args)
    start = time.perf_counter()
    out = retrieval.r4t(cat, num_subqueries=args.num_subqueries, top_k=args.top_k, seed=args.seed)
    record: dict = {"num_items": num_items, "r4t_seconds": round(time.perf_counter() - start, 1),
                    "pairs": len(out.pairs.rewards), "pairs_mean_reward": round(float(out.pairs.rewards.mean()), 4),
                    "indexes": {}}
    test_intents = cat.intents[cat.test_intents]
    exact_ids = cat.index.search(test_intents, args.top_k)[1]
    for index_name, icat, build in indexed():
        timed = TimedIndex(icat.index)
        tcat = dataclasses.replace(icat, index=timed)
        k = args.num_subqueries
        retrievers = {RETRIEVERS[0]: retrieval.SingleQuery(tcat, k), RETRIEVERS[1]: retrieval.NaiveFanOut(tcat, k),
                      RETRIEVERS[2]: retrieval.MMR(tcat, 40, k), RETRIEVERS[3]: out.policy,
                      RETRIEVERS[4]: out.retriever}
        out.policy.catalogue = out.retriever.catalogue = tcat
        rows = [measure(name, r, tcat, timed, args, f"{num_items} {index_name}") for name, r in retrievers.items()]
        rl, dist = rows[3], rows[4]
        record["indexes"][index_name] = {
            "build_seconds": round(build, 2),
            "recall_at_k": round(retrieval.recall_at_k(icat.index.search(test_intents, args.top_k)[1], exact_ids), 4),
            "rows": rows,
            "distilled_over_rl_test_set_reward": round(dist["test_set_reward"] / rl["test_set_reward"], 4),
            "rl_over_distilled_latency_batch1": round(
                paired_latency_ratio(out.policy, out.retriever, test_intents, args.top_k, 4 * args.single), 3)}
    out.policy.catalogue = out.retriever.catalogue = cat
    return record


TEXT_TEMPERATURES = (0.0, 0.3, 0.7, 1.0)


def run_text_part(args: argparse.Namespace) -> dict:
    """R4T on the real-text catalogue (``text_catalogue()``'s defaults, the tutorial's), exact index: the
    retrievers' set metrics, the distilled retriever over sampling temperatures, and the ε-predicting denoiser
    with ten DDIM steps (the defaults before x0-prediction) on the same pairs."""
    import faiss
    import torch

    from rlcore.adapters import retrieval

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    cat = retrieval.text_catalogue(seed=args.seed)
    start = time.perf_counter()
    out = retrieval.r4t(cat, num_subqueries=args.num_subqueries, top_k=args.top_k, seed=args.seed)
    seconds = time.perf_counter() - start
    k = args.num_subqueries
    retrievers: dict[str, Any] = {RETRIEVERS[0]: retrieval.SingleQuery(cat, k),
                                  RETRIEVERS[1]: retrieval.NaiveFanOut(cat, k),
                                  RETRIEVERS[2]: retrieval.MMR(cat, 40, k), RETRIEVERS[3]: out.policy}
    denoisers = {"x0": out.retriever.denoiser,
                 "epsilon": retrieval.distill(out.pairs, cat, retrieval.DiffusionConfig(
                     seed=args.seed + 2, prediction="epsilon", sample_steps=10)).retriever.denoiser}
    for prediction, denoiser in denoisers.items():
        for tau in TEXT_TEMPERATURES:
            retrievers[f"distilled ({prediction}, τ = {tau})"] = retrieval.DistilledRetriever(denoiser, cat,
                                                                                          args.seed + 2, tau)
    rows = []
    for name, r in retrievers.items():
        row = {"retriever": name, **set_metrics(r, cat, args.top_k)}
        print("text", row, flush=True)
        rows.append(row)
    return {"catalogue": "text", "num_items": int(cat.items.shape[0]), "num_intents": int(cat.intents.shape[0]),
            "dim": cat.dim, "r4t_seconds": round(seconds, 1),
            "default_temperature": out.retriever.denoiser.config.temperature, "rows": rows}


def text_report(text: dict) -> list[str]:
    rows = {r["retriever"]: r for r in text["rows"]}
    rl = rows[RETRIEVERS[3]]["test_set_reward"]
    lines = [f"## Real-text catalogue ({text['num_items']:,} items, {text['num_intents']} intents, {text['dim']} "
             f"dimensions, exact index; R4T took {text['r4t_seconds']} s)", "",
             "`text_catalogue()` (MiniLM embeddings of product texts, see the retrieval tutorial). The distilled "
             f"retriever's default temperature is {text['default_temperature']}; the epsilon rows are the ε-predicting "
             "denoiser sampled with ten DDIM steps (the defaults before x0-prediction), trained on the same pairs.",
             "",
             "| retriever | test set reward | of the policy's | test coverage | test relevance | test Vendi "
             "| test duplicates | train set reward |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['test_set_reward']} | {r['test_set_reward'] / rl:.3f} | {r['test_coverage']} | "
                     f"{r['test_relevance']} | {r['test_diversity']} | {r['test_duplicates']} | "
                     f"{r['train_set_reward']} |")
    return [*lines, ""]


def write_report(parts: list[dict], meta: dict, text: dict | None = None) -> None:
    lines = ["# Fan-out retrieval over catalogue sizes and index kinds", "",
             f"Machine: {meta['machine']}. Catalogues: `synthetic_catalogue(num_items, num_clusters="
             f"{meta['num_clusters']}, num_intents={meta['num_intents']}, dim={meta['dim']}, seed={meta['seed']})` "
             f"(a quarter of the intents held out), K = {meta['num_subqueries']} sub-queries x top-{meta['top_k']}; "
             "R4T trained once per size on the exact index, every retriever then measured on the exact index and "
             "on HNSW32 (efSearch 64). Latency: ms per query at batch 1 and 256 (medians over the calls), with the "
             f"part spent inside the index's `search` in brackets. One thread. Versions: {meta['versions']}. Command: "
             "`python benchmarks/retrieval_fanout.py`.", ""]
    for part in parts:
        for index_name, entry in part["indexes"].items():
            lines += [f"## {part['num_items']:,} items, {index_name} index (recall@{meta['top_k']} "
                      f"{entry['recall_at_k']}, built in {entry['build_seconds']} s; R4T took "
                      f"{part['r4t_seconds']} s)", "",
                      "| retriever | test set reward | test coverage | test relevance | test Vendi | test duplicates "
                      "| train set reward | ms/query batch 1 (index) | ms/query batch 256 (index) |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for r in entry["rows"]:
                lines.append(f"| {r['retriever']} | {r['test_set_reward']} | {r['test_coverage']} | "
                             f"{r['test_relevance']} | {r['test_diversity']} | {r['test_duplicates']} | "
                             f"{r['train_set_reward']} | {r['ms_batch1']} ({r['index_ms_batch1']}) | "
                             f"{r['ms_batch256']} ({r['index_ms_batch256']}) |")
            quality, speed = entry["distilled_over_rl_test_set_reward"], entry["rl_over_distilled_latency_batch1"]
            lines += ["", f"Distilled / RL test set reward {quality} (target >= 0.95: "
                      f"{'met' if quality >= 0.95 else 'NOT met'}); RL / distilled latency at batch 1 {speed}x "
                      f"(median of paired calls; target >= 5x: {'met' if speed >= 5 else 'NOT met'})."]
            by_name = {r["retriever"]: r for r in entry["rows"]}
            if all(name in by_name for name in GREEDY):
                mmr, rl = by_name[RETRIEVERS[2]]["test_set_reward"], by_name[RETRIEVERS[3]]["test_set_reward"]
                greedy, oracle = (by_name[name]["test_set_reward"] for name in GREEDY)
                lines.append(f"Set-reward greedy / MMR test set reward {greedy / mmr:.3f} (oracle aspects "
                             f"{oracle / mmr:.3f}); RL fan-out / oracle greedy {rl / oracle:.3f}.")
            lines.append("")
    if text is not None:
        lines += text_report(text)
    lines += ["![set reward and latency](retrieval_fanout.png)", ""]
    (RESULTS / "retrieval_fanout.md").write_text("\n".join(lines).rstrip() + "\n")


def plot(parts: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sizes = [p["num_items"] for p in parts]
    for k, name in enumerate(RETRIEVERS + GREEDY):  # one colour per retriever; solid: exact index, dashed: HNSW
        for index_name, style in (("exact", "-o"), ("hnsw", "--s")):
            rows = [next((r for r in p["indexes"][index_name]["rows"] if r["retriever"] == name), None)
                    for p in parts]
            if None in rows:  # a part not run yet: no line rather than a partial one
                continue
            for ax, key in ((axes[0], "test_set_reward"), (axes[1], "ms_batch1")):
                ax.plot(sizes, [r[key] for r in rows], style, color=f"C{k}", label=f"{name} ({index_name})")
    for ax, label in ((axes[0], "test set reward"), (axes[1], "ms per query, batch 1")):
        ax.set_xscale("log")
        ax.set_xlabel("items in the catalogue")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(RESULTS / "retrieval_fanout.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--num-clusters", type=int, default=24)
    parser.add_argument("--num-intents", type=int, default=400)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--num-subqueries", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--single", type=int, default=50, help="test intents timed one at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="parts at a time (one process and thread each)")
    parser.add_argument("--no-text", action="store_true", help="skip the real-text catalogue's part")
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # a worker's part: "<size>" or "<size>_greedy"
    parser.add_argument("--machine", default="2-core x86_64 CPU shared with other jobs, no GPU")
    add_executor_arguments(parser)
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    if args.run is not None:  # a worker: one part, written atomically
        size, _, kind = args.run.partition("_")
        path = RUNS / f"n{args.run}.json"
        tmp = path.with_suffix(".json.tmp")
        if size == "text":
            record = run_text_part(args)
        else:
            record = (run_greedy_part if kind == "greedy" else run_part)(int(size), args)
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)
        return
    names = [f"{n}{kind}" for n in args.sizes for kind in ("", "_greedy")] + ([] if args.no_text else ["text"])
    todo = [name for name in names if not (RUNS / f"n{name}.json").exists()]
    print(f"{len(names)} parts, {len(names) - len(todo)} done already, {len(todo)} to do", flush=True)
    if not args.summarise_only:
        passed = [a for a in sys.argv[1:] if a != "--summarise-only"]
        commands = {Command([sys.executable, __file__, *passed, "--run", name], result=RUNS / f"n{name}.json"): name
                    for name in todo}

        def done(command: Command, returncode: int) -> None:
            print(f"part {commands[command]}: {'done' if returncode == 0 else f'FAILED ({returncode})'}", flush=True)

        run_commands(list(commands), workers=args.workers, executor=args.executor, ray_address=args.ray_address,
                     env=ONE_THREAD, on_done=done)
    parts = []  # the report covers every size run so far, whatever sizes this call asked for
    for n in sorted(int(path.stem[1:]) for path in RUNS.glob("n*.json") if path.stem[1:].isdigit()):
        part = json.loads((RUNS / f"n{n}.json").read_text())
        greedy = RUNS / f"n{n}_greedy.json"
        if greedy.exists():  # the re-rankers' rows join their index's table
            for index_name, entry in json.loads(greedy.read_text())["indexes"].items():
                part["indexes"][index_name]["rows"] += entry["rows"]
        parts.append(part)
    text_path = RUNS / "ntext.json"
    text = json.loads(text_path.read_text()) if text_path.exists() and not args.no_text else None
    if not parts:
        return
    import faiss
    import torch

    import rlcore

    meta = {"machine": f"{args.machine} ({platform.machine()}, {os.cpu_count()} cores)", "num_clusters":
            args.num_clusters, "num_intents": args.num_intents, "dim": args.dim, "seed": args.seed,
            "num_subqueries": args.num_subqueries, "top_k": args.top_k,
            "versions": f"rlcore {rlcore.__version__}, torch {torch.__version__}, faiss {faiss.__version__}"}
    (RESULTS / "retrieval_fanout.json").write_text(json.dumps({"meta": meta, "parts": parts, "text": text}, indent=1))
    write_report(parts, meta, text)
    plot(parts)
    print((RESULTS / "retrieval_fanout.md").read_text())


if __name__ == "__main__":
    main()
