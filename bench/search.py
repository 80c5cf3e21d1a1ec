"""Search latency benchmark: dense, lexical and hybrid at 10,000 and 100,000 chunks.

    .venv/bin/python bench/search.py [--sizes 10000,100000] [--queries 174] [--reranker PATH]

The chunks are the full Python documentation as ingested by `ragtune ingest` (real texts and
real embeddings; the ingest is cached under ~/.cache/ragtune/bench). To reach 100,000 the
corpus is repeated with varied text (each copy's words are lightly reordered and a copy tag is
added, and its vectors get small noise), so that BM25 and HNSW see distinct chunks. Queries are
the 174 Python FAQ questions; each latency includes embedding the query. Memory is the process's
RSS after the collection and its lexical index are loaded.
With `--reranker` (a local CrossEncoder folder) a row `reranked` times hybrid search with the
reranking stage over `rerank_depth` candidates. Each mode's time is also printed per stage
(query embedding, dense, BM25, fusion, reranking, fetching texts: `retrieval.search.STAGES`),
as search itself measures them.
Targets: hybrid p50 <= 30 ms at 100,000 chunks; hybrid p50 <= 1.5x dense p50 in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The repository root goes first on the path, not bench/ (whose ingest.py would otherwise
# shadow the `ingest` package when a bench runs as a script).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import MODEL_ID, eval_set, fill, load_source, percentile, rss_mib
from ragtune.retrieval.embedder import SentenceTransformerEmbedder
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.rerank import CrossEncoderReranker
from ragtune.retrieval.search import STAGES, Retriever, SearchMode
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=174)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--reranker", help="a local CrossEncoder folder to time as a stage")
    args = parser.parse_args()
    reranker = CrossEncoderReranker(args.reranker) if args.reranker else None
    modes = [m.value for m in SearchMode] + (["reranked"] if reranker else [])
    sizes = [int(s) for s in args.sizes.split(",")]
    questions = [q["question"] for q in json.loads((eval_set("full") / "qa.json").read_text())]
    questions = questions[: args.queries]
    rows = load_source()
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    results: dict[int, dict[str, list[float]]] = {}
    stages: dict[int, dict[str, dict[str, list[float]]]] = {}
    memory: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = RetrievalSettings(data_dir=Path(tmp))
        with open_store(settings, "write") as store:
            indexes = LexicalIndexes.for_store(settings.data_dir, store)
            for size in sizes:
                print(f"building {size:,} chunks...", file=sys.stderr)
                collection = store.collection(f"bench-{size}", MODEL_ID, create=True)
                fill(collection, rows, size)
                indexes.current(collection)
                retriever = Retriever(collection, embedder, indexes, settings)
                staged = Retriever(collection, embedder, indexes, settings, reranker=reranker)
                for mode in SearchMode:  # warm-up
                    for q in questions[:10]:
                        retriever.search(q, args.k, mode)
                memory[size] = rss_mib()
                results[size], stages[size] = {}, {}
                for name in modes:
                    searcher = staged if name == "reranked" else retriever
                    mode = SearchMode.HYBRID if name == "reranked" else SearchMode(name)
                    timings = []
                    by_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
                    for q in questions:
                        split: dict[str, float] = {}
                        start = time.perf_counter()
                        searcher.search(q, args.k, mode, timings=split)
                        timings.append((time.perf_counter() - start) * 1000)
                        for stage in STAGES:
                            by_stage[stage].append(split.get(stage, 0.0) * 1000)
                    results[size][name] = timings
                    stages[size][name] = {s: t for s, t in by_stage.items() if any(t)}
                store.delete_collection(collection.name)
    print(f"{len(questions)} queries, k={args.k}, query embedding included; times in ms")
    print(f"{'chunks':>8} {'mode':<8} {'p50':>7} {'p95':>7}  RSS after load")
    for size in sizes:
        for name in modes:
            t = results[size][name]
            print(
                f"{size:>8,} {name:<8} {statistics.median(t):7.2f} "
                f"{percentile(t, 95):7.2f}  {memory[size]:.0f} MiB"
            )
    print()
    print("per stage, p50 / p95 in ms (`retrieval.search.STAGES`; a stage a mode never runs is")
    print("left out; the stages' p50s need not add up to the whole's)")
    for size in sizes:
        for name in modes:
            split = "  ".join(
                f"{stage} {statistics.median(t):.2f} / {percentile(t, 95):.2f}"
                for stage, t in stages[size][name].items()
            )
            print(f"{size:>8,} {name:<8} {split}")
    print()
    for size in sizes:
        hybrid = statistics.median(results[size]["hybrid"])
        dense = statistics.median(results[size]["dense"])
        print(f"{size:>8,} chunks: hybrid p50 / dense p50 = {hybrid / dense:.2f}  (target <= 1.5)")
        if size >= 100_000:
            print(f"{size:>8,} chunks: hybrid p50 / 30 ms   = {hybrid / 30:.2f}  (target <= 1.0)")
        if reranker:
            staged_p50 = statistics.median(results[size]["reranked"])
            print(
                f"{size:>8,} chunks: reranking stage p50 "
                f"{statistics.median(stages[size]['reranked']['rerank']):.2f} ms "
                f"({settings.rerank_depth} candidates); reranked / dense = "
                f"{staged_p50 / dense:.2f}  (target <= 2.0), reranked / 30 ms = "
                f"{staged_p50 / 30:.2f}"
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole run: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
