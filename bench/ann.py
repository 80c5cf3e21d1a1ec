"""The approximate vector index against exact search: how many of the true ten nearest chunks
Chroma's HNSW index returns, with ragtune's index settings and with Chroma's defaults, on the
developers' sets as ingested and grown to 100,000 chunks.

    .venv/bin/python bench/ann.py [--sets python,sqlite,git] [--size 100000] [--builds 3]

Each set (small) is ingested once by `ragtune ingest`'s pipeline and kept under
~/.cache/ragtune/ann/<set>; its chunk vectors and the embedded FAQ questions are then indexed
again, straight into Chroma, once per setting and build (an HNSW graph differs from build to
build). "Missed" counts, over all questions, the exact ten nearest (cosine, numpy) that the
index did not return in its first ten; a chunk tied with the tenth is not counted. The grown
collection repeats the three sets' vectors with small noise (seeded) up to `--size`. Times:
adding the vectors (5,000 a call) and one query of `fusion_depth` neighbours, as hybrid search
asks. Targets: fewer misses with ragtune's settings than with the defaults at every size, and
query p50 at 100,000 chunks well inside search's 30 ms. Last, the time of exact search (what
dense search does up to `exact_search_max_chunks`) at each set's size, at that limit and at
`--size`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from bench.common import CACHE, DEV_SETS
from ragtune.ingest.pipeline import IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.dense import exact_nearest
from ragtune.retrieval.embedder import load_embedder
from ragtune.retrieval.evaluation import load_qa
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import HNSW_CONFIGURATION, open_store

SETTINGS = {"ragtune": HNSW_CONFIGURATION, "chroma defaults": {"space": "cosine"}}


def vectors_of(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(chunk vectors, question vectors) of one set, ingested once and cached."""
    cached = CACHE / "ann" / f"{name}.npz"
    if cached.is_file():
        data = np.load(cached)
        return data["chunks"], data["questions"]
    corpus = DEV_SETS[name]("small")
    settings = RetrievalSettings()
    embedder = load_embedder(settings)
    with tempfile.TemporaryDirectory() as tmp:
        local = settings.model_copy(update={"data_dir": Path(tmp)})
        with open_store(local, "write") as store:
            indexes = LexicalIndexes.for_store(local.data_dir, store)
            collection = store.collection("ann", embedder.model_id, create=True)
            print(f"{name}: ingesting", file=sys.stderr)
            IngestService(IngestSettings(), collection, lambda: embedder, indexes).run(
                [corpus / "corpus"]
            )
            page = collection._raw.get(include=["embeddings"])  # type: ignore[attr-defined]
            chunks = np.asarray(page["embeddings"])
    questions = [item.question for item in load_qa(corpus / "qa.json")]
    asked = np.asarray(embedder.embed_queries(questions))
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cached, chunks=chunks, questions=asked)
    return chunks, asked


def normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def measure(
    chunks: np.ndarray, questions: np.ndarray, configuration: dict[str, object], depth: int
) -> tuple[int, float, float]:
    """(missed of the exact ten nearest, seconds to add, query p50 in ms) for one build."""
    import chromadb

    similarity = questions @ chunks.T
    tenth = np.sort(similarity, axis=1)[:, -10]
    ids = [str(n) for n in range(len(chunks))]
    with tempfile.TemporaryDirectory() as tmp:
        client = chromadb.PersistentClient(path=tmp)
        raw = client.create_collection(
            "ann-bench", embedding_function=None, configuration={"hnsw": configuration}
        )
        start = time.perf_counter()
        for n in range(0, len(ids), 5000):
            raw.add(ids=ids[n : n + 5000], embeddings=chunks[n : n + 5000].tolist())
        added = time.perf_counter() - start
        missed, timings = 0, []
        for q, vector in enumerate(questions):
            start = time.perf_counter()
            found = raw.query(query_embeddings=[vector.tolist()], n_results=depth)["ids"][0]
            timings.append((time.perf_counter() - start) * 1000)
            returned = {int(i) for i in found[:10]}
            exact = np.flatnonzero(similarity[q] > tenth[q] + 1e-6)  # strictly above the tenth
            missed += sum(1 for row in exact if row not in returned)
        del client
    return missed, added, statistics.median(timings)


def exact_p50(chunks: np.ndarray, questions: np.ndarray, depth: int) -> float:
    """Query p50 in ms of exact search over a small collection, by search's own function
    (`retrieval.dense.exact_nearest`)."""
    timings = []
    for vector in questions:
        start = time.perf_counter()
        exact_nearest(chunks, vector, depth)
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def grown(sets: list[tuple[np.ndarray, np.ndarray]], size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.concatenate([chunks for chunks, _ in sets])
    copies = [base]
    while sum(len(c) for c in copies) < size:
        copies.append(base + rng.normal(0, 0.02, base.shape))
    return normalised(np.concatenate(copies)[:size])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="python,sqlite,git")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--builds", type=int, default=3)
    args = parser.parse_args()
    depth = RetrievalSettings().fusion_depth
    names = args.sets.split(",")
    sets = [vectors_of(name) for name in names]
    rows: list[tuple[str, int, int, str, list[tuple[int, float, float]]]] = []
    for name, (chunks, questions) in zip(names, sets, strict=True):
        for label, configuration in SETTINGS.items():
            runs = [
                measure(normalised(chunks), normalised(questions), configuration, depth)
                for _ in range(args.builds)
            ]
            rows.append((name, len(chunks), len(questions), label, runs))
    if args.size:
        chunks = grown(sets, args.size)
        questions = normalised(np.concatenate([q for _, q in sets]))
        for label, configuration in SETTINGS.items():
            runs = [measure(chunks, questions, configuration, depth)]
            rows.append(("grown", len(chunks), len(questions), label, runs))
    print(f"exact ten nearest missed by the index (first ten of {depth}), per build")
    print(f"{'set':<7} {'chunks':>7} {'asked':>6} {'index':<16} {'missed':<14} "
          f"{'recall@10':>9} {'add/s':>7} {'query p50':>10}")  # fmt: skip
    for name, size, asked, label, runs in rows:
        missed = [m for m, _, _ in runs]
        recall = 1 - statistics.mean(missed) / (10 * asked)
        rate = size / statistics.mean(a for _, a, _ in runs)
        p50 = statistics.mean(q for _, _, q in runs)
        print(
            f"{name:<7} {size:>7,} {asked:>6} {label:<16} {missed!s:<14} "
            f"{recall:>9.4f} {rate:>7.0f} {p50:>8.2f} ms"
        )
    limit = RetrievalSettings().exact_search_max_chunks
    print(f"\nexact search (dense search's path up to {limit:,} chunks): nothing missed")
    everything = grown(sets, max(args.size, limit))
    questions = normalised(np.concatenate([q for _, q in sets]))
    for name, (chunks, asked) in zip(names, sets, strict=True):
        p50 = exact_p50(normalised(chunks), normalised(asked), depth)
        print(f"{name:<7} {len(chunks):>7,} query p50 {p50:.2f} ms")
    for size in sorted({limit, args.size} - {0}):
        p50 = exact_p50(everything[:size], questions, depth)
        print(f"{'grown':<7} {size:>7,} query p50 {p50:.2f} ms")


if __name__ == "__main__":
    main()
