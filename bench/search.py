"""Search latency benchmark: dense, lexical and hybrid at 10,000 and 100,000 chunks.

    .venv/bin/python bench/search.py [--sizes 10000,100000] [--queries 174]

The chunks are the full Python documentation as ingested by `ragtune ingest` (real texts and
real embeddings; the ingest is cached under ~/.cache/ragtune/bench). To reach 100,000 the
corpus is repeated with varied text (each copy's words are lightly reordered and a copy tag is
added, and its vectors get small noise), so that BM25 and HNSW see distinct chunks. Queries are
the 174 Python FAQ questions; each latency includes embedding the query. Memory is the process's
RSS after the collection and its lexical index are loaded.
Targets: hybrid p50 <= 30 ms at 100,000 chunks; hybrid p50 <= 1.5x dense p50 in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The repository root goes first on the path, not bench/ (whose ingest.py would otherwise
# shadow the `ingest` package when a bench runs as a script).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import CACHE, MODEL_ID, eval_set
from ragtune.retrieval.embedder import SentenceTransformerEmbedder
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.search import Retriever, SearchMode
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord, Collection, open_store

SOURCE_DIR = CACHE / "bench" / "full-ingest"


def source_collection() -> Path:
    """The full corpus ingested once by the real pipeline (cached)."""
    corpus = eval_set("full") / "corpus"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
    env.update(RAGTUNE_DATA_DIR=str(SOURCE_DIR), RAGTUNE_CONFIG="/nonexistent.toml")
    print("ingesting the full corpus (cached after the first run)...", file=sys.stderr)
    subprocess.run(
        [str(Path(sys.executable).parent / "ragtune"), "ingest", str(corpus), "--json"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return SOURCE_DIR


def load_source() -> list[tuple[str, str, dict, list[float]]]:  # type: ignore[type-arg]
    settings = RetrievalSettings(data_dir=source_collection())
    with open_store(settings, "read") as store:
        collection = store.collection("default", MODEL_ID)
        raw = collection._raw  # type: ignore[attr-defined]  # the bench reads vectors back
        rows = []
        offset = 0
        while True:
            page = raw.get(
                include=["documents", "metadatas", "embeddings"], limit=5000, offset=offset
            )
            for i, t, m, e in zip(
                page["ids"], page["documents"], page["metadatas"], page["embeddings"], strict=True
            ):
                rows.append((i, t, dict(m), [float(x) for x in e]))
            if len(page["ids"]) < 5000:
                return rows
            offset += 5000


def varied(text: str, copy: int, rng: random.Random) -> str:
    words = text.split()
    for _ in range(max(1, len(words) // 20)):  # swap a few neighbouring words
        i = rng.randrange(max(1, len(words) - 1))
        words[i : i + 2] = words[i : i + 2][::-1]
    return f"[variant {copy}] " + " ".join(words)


def fill(collection: Collection, rows: list, size: int) -> None:  # type: ignore[type-arg]
    rng = random.Random(size)
    batch: list[ChunkRecord] = []
    for n in range(size):
        chunk_id, text, meta, vector = rows[n % len(rows)]
        copy = n // len(rows)
        if copy:
            text = varied(text, copy, rng)
            noisy = [x + rng.gauss(0, 0.01) for x in vector]
            norm = sum(x * x for x in noisy) ** 0.5
            vector = [x / norm for x in noisy]
            meta = {**meta, "doc_id": f"{meta['doc_id']}-{copy}"}
        batch.append(ChunkRecord(f"{chunk_id}-{copy}", text, meta, vector))
        if len(batch) == 5000:
            collection.add(batch)
            batch = []
    collection.add(batch)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=174)
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    questions = [q["question"] for q in json.loads((eval_set("full") / "qa.json").read_text())]
    questions = questions[: args.queries]
    rows = load_source()
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    results: dict[int, dict[str, list[float]]] = {}
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
                for mode in SearchMode:  # warm-up
                    for q in questions[:10]:
                        retriever.search(q, args.k, mode)
                memory[size] = rss_mib()
                results[size] = {}
                for mode in SearchMode:
                    timings = []
                    for q in questions:
                        start = time.perf_counter()
                        retriever.search(q, args.k, mode)
                        timings.append((time.perf_counter() - start) * 1000)
                    results[size][mode.value] = timings
                store.delete_collection(collection.name)
    print(f"{len(questions)} queries, k={args.k}, query embedding included; times in ms")
    print(f"{'chunks':>8} {'mode':<8} {'p50':>7} {'p95':>7}  RSS after load")
    for size in sizes:
        for mode in SearchMode:
            t = results[size][mode.value]
            print(
                f"{size:>8,} {mode.value:<8} {statistics.median(t):7.2f} "
                f"{percentile(t, 95):7.2f}  {memory[size]:.0f} MiB"
            )
    print()
    for size in sizes:
        hybrid = statistics.median(results[size]["hybrid"])
        dense = statistics.median(results[size]["dense"])
        print(f"{size:>8,} chunks: hybrid p50 / dense p50 = {hybrid / dense:.2f}  (target <= 1.5)")
        if size >= 100_000:
            print(f"{size:>8,} chunks: hybrid p50 / 30 ms   = {hybrid / 30:.2f}  (target <= 1.0)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole run: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
