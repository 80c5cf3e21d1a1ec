"""Retrieval quality benchmark: ragtune's retrieval against a naive RAG setup, same run.

    .venv/bin/python bench/retrieval.py [--subset small|full]

Both setups index the developers' eval corpus (Python docs, `../shared/eval/`) with the same
embedding model and are scored on the Python FAQ questions by the same relevance rule:
- naive: fixed 1000-character chunks with 150 overlap (LangChain's recursive splitter on the
  raw file text, no headings), MiniLM embeddings (truncating, as the model does), BM25, plain RRF;
- ragtune: `ragtune ingest` chunks and ragtune's retriever with its settings.
Targets (small): ragtune hybrid Recall@5 >= 0.82 and MRR@10 >= 0.68; hybrid beats dense and
lexical on both; on full, ragtune >= naive.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

# The repository root goes first on the path, not bench/ (whose ingest.py would otherwise
# shadow the `ingest` package when a bench runs as a script).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import eval_set
from ragtune.ingest.pipeline import IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.embedder import SentenceTransformerEmbedder
from ragtune.retrieval.evaluation import RetrievalReport, evaluate, load_qa
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.search import Retriever, SearchMode
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord, Collection, VectorStore, open_store

METRICS = ["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"]


def naive_collection(
    store: VectorStore, corpus: Path, embedder: SentenceTransformerEmbedder
) -> Collection:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=150)
    collection = store.collection("naive", embedder.model_id, create=True)
    records: list[tuple[str, str, dict[str, str | int]]] = []
    for path in sorted(corpus.rglob("*.rst.txt")):
        doc_id = hashlib.sha256(str(path).encode()).hexdigest()[:20]
        for n, text in enumerate(splitter.split_text(path.read_text(encoding="utf-8"))):
            meta: dict[str, str | int] = {
                "source": str(path),
                "doc_id": doc_id,
                "chunk_index": n,
                "section": "",
            }
            records.append((f"{doc_id}-{n}", text, meta))
    # The naive setup lets the model truncate what does not fit (as most RAG setups do).
    model = embedder._model
    vectors = model.encode([t for _, t, _ in records], batch_size=32, normalize_embeddings=True)
    collection.add(
        [ChunkRecord(i, t, m, v.tolist()) for (i, t, m), v in zip(records, vectors, strict=True)]
    )
    return collection


def run_modes(retriever: Retriever, collection: Collection, qa_path: Path) -> RetrievalReport:
    def searcher(mode: SearchMode):  # type: ignore[no-untyped-def]
        return lambda question, depth: retriever.search(question, depth, mode)

    searches: list[tuple[str, object]] = [(m.value, searcher(m)) for m in SearchMode]
    return evaluate(collection, load_qa(qa_path), searches)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subset", choices=["small", "full"], default="small")
    args = parser.parse_args()
    data = eval_set(args.subset)
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    reports: dict[str, RetrievalReport] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = RetrievalSettings(data_dir=Path(tmp))
        with open_store(settings, "write") as store:
            indexes = LexicalIndexes.for_store(settings.data_dir, store)
            print("indexing (naive)...", file=sys.stderr)
            naive = naive_collection(store, data / "corpus", embedder)
            naive_settings = settings.model_copy(
                update={"dense_weight": 1.0, "lexical_weight": 1.0, "rrf_k": 60}
            )
            reports["naive"] = run_modes(
                Retriever(naive, embedder, indexes, naive_settings), naive, data / "qa.json"
            )
            print("indexing (ragtune)...", file=sys.stderr)
            product = store.collection("ragtune", embedder.model_id, create=True)
            IngestService(IngestSettings(), product, lambda: embedder, indexes).run(
                [data / "corpus"]
            )
            reports["ragtune"] = run_modes(
                Retriever(product, embedder, indexes, settings), product, data / "qa.json"
            )
    first = reports["ragtune"]
    print(f"{args.subset}: {first.questions} questions; ceiling {first.ceiling}/{first.questions}")
    print(f"{'setup':<8} {'mode':<8} {'chunks':>6} " + " ".join(f"{m:>9}" for m in METRICS))
    for setup, report in reports.items():
        for mode in report.modes:
            values = " ".join(f"{mode.metrics[m]:9.3f}" for m in METRICS)
            print(f"{setup:<8} {mode.mode:<8} {report.chunks:>6} {values}")
    by = {(s, m.mode): m.metrics for s, r in reports.items() for m in r.modes}
    print()
    for metric in ("recall@5", "mrr@10"):
        ratio = by["ragtune", "hybrid"][metric] / by["naive", "hybrid"][metric]
        print(f"ragtune hybrid / naive hybrid {metric}: {ratio:.3f}  (target >= 1.0)")
        for other in ("dense", "lexical"):
            ratio = by["ragtune", "hybrid"][metric] / by["ragtune", other][metric]
            print(f"ragtune hybrid / ragtune {other} {metric}: {ratio:.3f}  (target > 1.0)")
    if args.subset == "small":
        h = by["ragtune", "hybrid"]
        print(f"ragtune hybrid recall@5 / 0.82: {h['recall@5'] / 0.82:.3f}  (target >= 1.0)")
        print(f"ragtune hybrid mrr@10 / 0.68:   {h['mrr@10'] / 0.68:.3f}  (target >= 1.0)")


if __name__ == "__main__":
    main()
