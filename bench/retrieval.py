"""Retrieval quality benchmark: ragtune's retrieval against a naive RAG setup, same run, on
both developers' sets.

    .venv/bin/python bench/retrieval.py [--subset small|full] [--sets python,sqlite[,git]]
        [--calibrate] [--tune-embedder [--tuned-weights 0.2,0.4]]
        [--ranks-out FILE] [--against FILE]

The sets are of two kinds: the Python FAQ over the Python docs (reStructuredText,
`../shared/eval/`) and the SQLite FAQ over the SQLite docs (HTML,
`bench/evalsets/build_sqlite_docs.py`); a third, the Git FAQ over the Git docs (HTML from
AsciiDoc, `bench/evalsets/build_git_docs.py`, 20 questions), checks HTML changes on another
generator's markup; `python-html` and `python-div` are the Python set over the HTML pages
Sphinx wrote, with sections as `<section>` and as `<div class="section">` (the older writers'
and DocBook's markup; `bench/evalsets/build_python_html.py`); `gtk` (DocBook, gtk-doc) and
`ffmpeg` (Texinfo, makeinfo: pages written flat) are the FAQs of two more HTML generators'
manuals (`bench/evalsets/build_gtk_docs.py`, `build_ffmpeg_docs.py`). On each, both setups index
the corpus with the same embedding model and are scored on the FAQ questions by the same
relevance rule:
- naive: fixed 1000-character chunks with 150 overlap (LangChain's recursive splitter on the
  file's text: raw for text files, BeautifulSoup's text for HTML; no headings), MiniLM
  embeddings (truncating, as the model does), BM25, plain RRF (k=60, equal weights); its
  chunks are also scored fused by score with equal weights ("naive-score"), a stronger
  reference;
- ragtune: `ragtune ingest` chunks and ragtune's retriever with its settings.
Each set also prints ragtune hybrid against naive hybrid and against ragtune's dense and
lexical search question by question: the differences of R@5 and MRR@10 with paired bootstrap
95% intervals, and how many questions rank their first relevant hit higher or lower (a margin on
20 or 27 questions is a handful of them). A retrieval change is taken only if it does not hurt
either set: `--ranks-out before.json` on the tree before it, then `--against before.json` on
the tree with it prints, per set, ragtune's figures before and after on the same questions
(paired bootstrap), how many questions moved up and down, and which left or joined the
first five, by id and question. Targets (python small):
ragtune hybrid Recall@5 >= 0.82 and MRR@10 >= 0.68; on every set, ragtune hybrid >= naive
hybrid and hybrid beats dense and lexical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The repository root goes first on the path, not bench/ (whose ingest.py would otherwise
# shadow the `ingest` package when a bench runs as a script).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import DEV_SETS, add_set_options, asked_in_corpus, chosen_sets
from ragtune.evals.decision import paired_bootstrap
from ragtune.ingest.pipeline import IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.adaptation import TuneOptions, settle, try_tuned
from ragtune.retrieval.calibration import calibrate, store_calibration
from ragtune.retrieval.embedder import SentenceTransformerEmbedder, collection_embedder
from ragtune.retrieval.evaluation import (
    CUTOFF,
    RetrievalReport,
    evaluate,
    load_qa,
    recall_at,
    reciprocal_rank,
)
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.search import Retriever, SearchMode
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord, Collection, VectorStore, open_store
from ragtune.serving.router import Evidence
from ragtune.serving.settings import RouterSettings

METRICS = ["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"]
NAIVE_FUSIONS: dict[str, dict[str, object]] = {
    "naive": {"fusion": "rrf", "dense_weight": 1.0, "lexical_weight": 1.0, "rrf_k": 60},
    "naive-score": {"fusion": "score", "dense_weight": 1.0, "lexical_weight": 1.0},
}
"""How the naive chunks are searched: "naive", the baseline, with plain reciprocal rank
fusion (k=60, equal weights), named in full so that it does not follow ragtune's defaults;
"naive-score", the same chunks fused by score with equal weights, a stronger reference (it is
what "naive" ran from ragtune's switch to fusion by score until the fusion was named here)."""


def naive_collection(
    store: VectorStore, corpus: Path, embedder: SentenceTransformerEmbedder
) -> Collection:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=150)
    collection = store.collection("naive", embedder.model_id, create=True)
    records: list[tuple[str, str, dict[str, str | int]]] = []
    kinds = (".txt", ".html", ".pdf", ".md")
    paths = sorted(p for p in corpus.rglob("*") if p.name.endswith(kinds))
    for path in paths:
        doc_id = hashlib.sha256(str(path).encode()).hexdigest()[:20]
        pieces = [piece for text in naive_texts(path) for piece in splitter.split_text(text)]
        for n, text in enumerate(pieces):
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


def naive_texts(path: Path) -> list[str]:
    """A file's text as a naive setup loads it, each piece split on its own: as is; HTML's
    text (LangChain's BSHTMLLoader does the same: BeautifulSoup's get_text); a PDF's pages
    (LangChain's PyPDFLoader: one document per page, pypdf's text)."""
    if path.suffix == ".pdf":
        from pypdf import PdfReader

        return [page.extract_text() or "" for page in PdfReader(path).pages]
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".html":
        return [raw]
    from bs4 import BeautifulSoup

    return [BeautifulSoup(raw, "html.parser").get_text("\n")]


def run_modes(
    retriever: Retriever,
    collection: Collection,
    qa_path: Path,
    modes: Sequence[SearchMode] = tuple(SearchMode),
) -> RetrievalReport:
    def searcher(mode: SearchMode):  # type: ignore[no-untyped-def]
        return lambda question, depth: retriever.search(question, depth, mode)

    searches: list[tuple[str, object]] = [(m.value, searcher(m)) for m in modes]
    return evaluate(collection, load_qa(qa_path), searches)  # type: ignore[arg-type]


def chunk_shape(collection: Collection, embedder: SentenceTransformerEmbedder) -> str:
    """Chunks per document and chunk sizes (the embedding model's tokens): p10/p50/p90/max."""
    per_doc: dict[str, int] = {}
    texts = []
    for chunk in collection.scan(with_text=True):
        doc = str(chunk.metadata.get("doc_id", ""))
        per_doc[doc] = per_doc.get(doc, 0) + 1
        texts.append(chunk.text or "")
    sizes = embedder.count_tokens(texts)

    def spread(values: list[int]) -> str:
        ordered = sorted(values)
        at = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.1, 0.5, 0.9)]
        return f"{at[0]}/{at[1]}/{at[2]}/{ordered[-1]}"

    return (
        f"{len(per_doc)} docs, {len(texts)} chunks; chunks/doc p10/p50/p90/max "
        f"{spread(list(per_doc.values()))}; tokens/chunk {spread(sizes)}"
    )


def evidence_tops(retriever: Retriever, questions: Sequence[str]) -> list[float]:
    """What the router reads as each question's evidence: the best dense similarity among the
    hits the RAG route retrieves (hybrid search, `rag_top_k` of them)."""
    k = RouterSettings().rag_top_k
    return [Evidence.of(retriever.search(q, k, SearchMode.HYBRID)).top for q in questions]


def evidence_lines(
    name: str,
    own: tuple[list[float], list[float]],
    off_topic: tuple[list[float], list[float]],
) -> list[str]:
    """How a tuned embedder moves the router's evidence (`evidence_tops`, untuned -> tuned) for
    the set's own questions and for other sets' (off topic) against the router's thresholds,
    which were chosen with the configured model: how many reach each, and how many cross it
    either way."""
    router = RouterSettings()
    lines = []
    for label, (was, now) in (("own questions", own), ("other sets' questions", off_topic)):
        if not was:
            continue
        ordered = sorted(was), sorted(now)
        p10 = [values[len(values) // 10] for values in ordered]
        p50 = [values[len(values) // 2] for values in ordered]
        parts = [f"p10 {p10[0]:.3f} -> {p10[1]:.3f}, median {p50[0]:.3f} -> {p50[1]:.3f}"]
        for threshold in (router.evidence_threshold, router.strong_evidence_threshold):
            up = sum(a < threshold <= b for a, b in zip(was, now, strict=True))
            down = sum(b < threshold <= a for a, b in zip(was, now, strict=True))
            parts.append(
                f">= {threshold:g}: {sum(a >= threshold for a in was)} -> "
                f"{sum(b >= threshold for b in now)} ({up} up, {down} down)"
            )
        lines.append(
            f"{name} router evidence, untuned -> tuned, {label} ({len(was)}): {'; '.join(parts)}"
        )
    return lines


def score_set(
    name: str,
    data: Path,
    embedder: SentenceTransformerEmbedder,
    calibrated: bool = False,
    tuned: bool = False,
    tuned_weights: Sequence[float] = (),
    off_topic: Sequence[str] = (),
) -> dict[str, RetrievalReport]:
    """Both setups indexed and scored on one set: {setup: RetrievalReport}; with `calibrated`,
    ragtune's collection also calibrated by `ragtune tune retrieval`'s procedure and scored
    with its own fusion ("ragtune-cal"); with `tuned`, re-embedded with a model tuned on its
    chunks by `ragtune tune embedder`'s procedure (default options, adopted whatever it
    measures) and scored as searches of it run, BM25 weighed by `tuned_lexical_weight`
    ("ragtune-emb"), and its hybrid search with each BM25 weight of `tuned_weights`
    ("ragtune-emb@W"), and what the router reads as evidence before and after for the set's
    questions and the `off_topic` ones (`evidence_lines`)."""
    reports: dict[str, RetrievalReport] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = RetrievalSettings(data_dir=Path(tmp))
        with open_store(settings, "write") as store:
            indexes = LexicalIndexes.for_store(settings.data_dir, store)
            print(f"{name}: indexing (naive)...", file=sys.stderr)
            naive = naive_collection(store, data / "corpus", embedder)
            for setup, fusion in NAIVE_FUSIONS.items():
                reports[setup] = run_modes(
                    Retriever(naive, embedder, indexes, settings.model_copy(update=fusion)),
                    naive,
                    data / "qa.json",
                )
            print(f"{name} naive chunks: {chunk_shape(naive, embedder)}")
            print(f"{name}: indexing (ragtune)...", file=sys.stderr)
            product = store.collection("ragtune", embedder.model_id, create=True)
            IngestService(IngestSettings(), product, lambda: embedder, indexes).run(
                [data / "corpus"]
            )
            reports["ragtune"] = run_modes(
                Retriever(product, embedder, indexes, settings), product, data / "qa.json"
            )
            print(f"{name} ragtune chunks: {chunk_shape(product, embedder)}")
            leaked = asked_in_corpus(data / "qa.json", naive, product)
            for question in leaked:
                print(f"{name}: WARNING: the corpus holds the question {question!r} word for word")
            if calibrated:
                lexical = indexes.current(product)
                result = calibrate(product, lexical, embedder, settings)
                store_calibration(product, result)
                print(
                    f"{name} calibration: {result.describe()} "
                    f"(pseudo-query MRR@10 {result.mrr:.3f}, defaults "
                    f"{result.default_mrr:.3f}, {result.seconds:.1f} s)"
                )
                reports["ragtune-cal"] = run_modes(
                    Retriever(product, embedder, indexes, settings), product, data / "qa.json"
                )
            if tuned:
                own = [item.question for item in load_qa(data / "qa.json")]
                untuned = Retriever(product, embedder, indexes, settings)
                evidence = (evidence_tops(untuned, own), evidence_tops(untuned, off_topic))
                print(f"{name}: tuning the embedder...", file=sys.stderr)
                trial = try_tuned(store, product, embedder, settings, indexes, TuneOptions())
                settle(store, product, trial, True, indexes, settings)
                print(
                    f"{name} tuned embedder: {trial.training.pairs} pairs, "
                    f"{trial.training.seconds:.0f} s; held-out pseudo-queries dense MRR@10 "
                    f"{trial.before.mrr:.3f} -> {trial.after.mrr:.3f}"
                )
                adopted = store.collection("ragtune", embedder.model_id)
                tuned_embedder = collection_embedder(adopted, settings)
                retuned = Retriever(adopted, tuned_embedder, indexes, settings)
                reports["ragtune-emb"] = run_modes(retuned, adopted, data / "qa.json")
                lines = evidence_lines(
                    name,
                    (evidence[0], evidence_tops(retuned, own)),
                    (evidence[1], evidence_tops(retuned, off_topic)),
                )
                print("\n".join(lines))
                for weight in tuned_weights:
                    weighted = settings.model_copy(update={"lexical_weight": weight})
                    reports[f"ragtune-emb@{weight:g}"] = run_modes(
                        Retriever(adopted, tuned_embedder, indexes, weighted),
                        adopted,
                        data / "qa.json",
                        (SearchMode.HYBRID,),  # dense and lexical do not depend on the weight
                    )
    return reports


def print_set(name: str, subset: str, reports: dict[str, RetrievalReport]) -> None:
    first = reports["ragtune"]
    asked = first.questions
    print(f"{name} {subset}: {asked} questions; ceiling {first.ceiling}/{asked}")
    width = max(11, *(len(setup) for setup in reports))
    print(f"{'setup':<{width}} {'mode':<8} {'chunks':>6} " + " ".join(f"{m:>9}" for m in METRICS))
    for setup, report in reports.items():
        for mode in report.modes:
            values = " ".join(f"{mode.metrics[m]:9.3f}" for m in METRICS)
            print(f"{setup:<{width}} {mode.mode:<8} {report.chunks:>6} {values}")
    by = {(s, m.mode): m.metrics for s, r in reports.items() for m in r.modes}
    variants = [("ragtune-cal", "calibrated"), ("ragtune-emb", "tuned embedder")]
    variants += [
        (setup, f"tuned embedder, BM25 {setup.removeprefix('ragtune-emb@')}")
        for setup in reports
        if setup.startswith("ragtune-emb@")
    ]
    for setup, label in variants:
        for metric in ("recall@5", "mrr@10") if setup in reports else ():
            change = by[setup, "hybrid"][metric] - by["ragtune", "hybrid"][metric]
            print(f"{label} - default hybrid {metric}: {change:+.3f}")
    for against in (
        ("naive", "hybrid"),
        ("naive-score", "hybrid"),
        ("ragtune", "dense"),
        ("ragtune", "lexical"),
    ):
        print(paired_line(reports, ("ragtune", "hybrid"), against))
    for metric in ("recall@5", "mrr@10"):
        ratio = by["ragtune", "hybrid"][metric] / by["naive", "hybrid"][metric]
        print(f"ragtune hybrid / naive hybrid {metric}: {ratio:.3f}  (target >= 1.0)")
        for other in ("dense", "lexical"):
            ratio = by["ragtune", "hybrid"][metric] / by["ragtune", other][metric]
            print(f"ragtune hybrid / ragtune {other} {metric}: {ratio:.3f}  (target > 1.0)")
    if name == "python" and subset == "small":
        h = by["ragtune", "hybrid"]
        print(f"ragtune hybrid recall@5 / 0.82: {h['recall@5'] / 0.82:.3f}  (target >= 1.0)")
        print(f"ragtune hybrid mrr@10 / 0.68:   {h['mrr@10'] / 0.68:.3f}  (target >= 1.0)")
    print()


def first_ranks(report: RetrievalReport, mode: str) -> dict[str, int | None]:
    """Each question's rank of its first relevant hit in one mode (None: none in the first
    ten), by id."""
    runs = next(m.runs for m in report.modes if m.mode == mode)
    ranks: dict[str, int | None] = {}
    for run in runs:
        flags = [bool(hit["relevant"]) for hit in run["hits"]][:CUTOFF]
        ranks[str(run["id"])] = flags.index(True) + 1 if True in flags else None
    return ranks


def _scores(rank: int | None) -> tuple[float, float]:
    """A question's Recall@5 and reciprocal rank (MRR@10's term) from its first relevant
    rank (`first_ranks`)."""
    flags = [n == rank for n in range(1, CUTOFF + 1)]
    return recall_at(flags, 5), reciprocal_rank(flags, CUTOFF)


def per_question(report: RetrievalReport, mode: str) -> dict[str, tuple[float, float]]:
    """Each question's Recall@5 and reciprocal rank (MRR@10's term) in one mode, by id."""
    return {i: _scores(rank) for i, rank in first_ranks(report, mode).items()}


def paired_line(
    reports: dict[str, RetrievalReport], ours: tuple[str, str], other: tuple[str, str]
) -> str:
    """ours - other on the same questions: the mean difference of R@5 and MRR@10 with a paired
    bootstrap 95% interval, and for how many questions each one puts the first relevant hit
    higher within the first ten (a small set's margin is a handful of questions: this says how
    many)."""
    a = per_question(reports[ours[0]], ours[1])
    b = per_question(reports[other[0]], other[1])
    ids = sorted(a.keys() & b.keys())
    parts = []
    for n, metric in enumerate(("R@5", "MRR@10")):
        gain = paired_bootstrap([b[i][n] for i in ids], [a[i][n] for i in ids])
        parts.append(f"{metric} {gain.mean:+.3f} [{gain.low:+.3f}, {gain.high:+.3f}]")
    better = sum(1 for i in ids if a[i][1] > b[i][1])
    worse = sum(1 for i in ids if a[i][1] < b[i][1])
    return (
        f"{' '.join(ours)} - {' '.join(other)}: {'; '.join(parts)} (95% paired bootstrap); "
        f"first relevant hit higher for {better} questions, lower for {worse}"
    )


COMPARED = (("ragtune", "hybrid"), ("ragtune", "dense"), ("ragtune", "lexical"))
"""The searches `--against` compares with the run it was given."""


def ranks_record(subset: str, reports: dict[str, RetrievalReport]) -> dict[str, Any]:
    """What `--ranks-out` keeps of one set's run: its questions and, for each search
    `--against` compares, each question's first relevant rank."""
    runs = next(m.runs for m in reports["ragtune"].modes)
    return {
        "subset": subset,
        "questions": {str(run["id"]): str(run["question"]) for run in runs},
        "ranks": {
            f"{setup} {mode}": first_ranks(reports[setup], mode)
            for setup, mode in COMPARED
            if setup in reports
        },
    }


def compare_ranks(name: str, before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """One set's searches now against a run before (`ranks_record`s), on the questions both
    asked: R@5 and MRR@10 before -> now with the paired bootstrap's 95% interval of the
    difference, questions up and down, and the hybrid questions that left or joined the first
    five."""
    if before.get("subset") != now["subset"]:
        return [
            f"{name}: the run before scored the {before.get('subset')} set, this one the "
            f"{now['subset']} set: nothing compared"
        ]
    lines = []
    for search, ranks in now["ranks"].items():
        old = before.get("ranks", {}).get(search)
        if old is None:
            lines.append(f"{name} {search}: not in the run before")
            continue
        ids = sorted(old.keys() & ranks.keys())
        was = [_scores(old[i]) for i in ids]
        is_ = [_scores(ranks[i]) for i in ids]
        parts = []
        for n, metric in enumerate(("R@5", "MRR@10")):
            gain = paired_bootstrap([v[n] for v in was], [v[n] for v in is_])
            mean_was = sum(v[n] for v in was) / max(1, len(ids))
            mean_is = sum(v[n] for v in is_) / max(1, len(ids))
            parts.append(
                f"{metric} {mean_was:.3f} -> {mean_is:.3f} ({gain.mean:+.3f} "
                f"[{gain.low:+.3f}, {gain.high:+.3f}])"
            )
        up = sum(1 for a, b in zip(was, is_, strict=True) if b[1] > a[1])
        down = sum(1 for a, b in zip(was, is_, strict=True) if b[1] < a[1])
        lines.append(
            f"{name} {search}, before -> now on {len(ids)} questions: {'; '.join(parts)}; "
            f"first relevant hit higher for {up} questions, lower for {down}"
        )
        if search != "ragtune hybrid":
            continue
        for i, a, b in zip(ids, was, is_, strict=True):
            if a[0] != b[0]:
                moved = "joined" if b[0] else "left"
                question = str(now["questions"].get(i, ""))[:80]
                lines.append(
                    f"  {moved} the first five: {i} ({old[i] or '-'} -> {ranks[i] or '-'}) "
                    f"{question!r}"
                )
    return lines


def bm25_weights(text: str) -> list[float]:
    """`--tuned-weights`: comma-separated BM25 weights, each a number >= 0."""
    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        weights = []
    if not weights or any(not 0 <= w < float("inf") for w in weights):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give BM25 weights as numbers >= 0, comma-separated (e.g. 0.2,0.4)"
        )
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_set_options(parser)
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="also score ragtune with the collection's own calibration (ragtune tune retrieval)",
    )
    parser.add_argument(
        "--tune-embedder",
        action="store_true",
        help="also score ragtune re-embedded with a model tuned on it (ragtune tune embedder)",
    )
    parser.add_argument(
        "--tuned-weights",
        type=bm25_weights,
        default=[],
        help="with --tune-embedder, also score the tuned collection at these BM25 weights "
        "(comma-separated; the shipped fusion's otherwise)",
    )
    parser.add_argument(
        "--ranks-out",
        type=Path,
        help="write each question's first relevant rank per set and search to this JSON file "
        "(for a later run's --against)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="a --ranks-out file of a run before: compare ragtune's searches with it, "
        "question by question",
    )
    args = parser.parse_args()
    if args.tuned_weights and not args.tune_embedder:
        parser.error("--tuned-weights needs --tune-embedder")
    names = chosen_sets(parser, args)
    before: dict[str, dict[str, Any]] = {}
    if args.against is not None:
        try:
            before = json.loads(args.against.read_text())["sets"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"--against {args.against}: not a --ranks-out file ({exc})")
    if args.ranks_out is not None:
        try:  # before any work (a --against file of the same name is already read)
            args.ranks_out.write_text(json.dumps({"sets": {}}))
        except OSError as exc:
            parser.error(f"--ranks-out {args.ranks_out}: cannot be written ({exc})")
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    records: dict[str, dict[str, Any]] = {}
    built = {name: DEV_SETS[name](args.subset) for name in names}
    for name in names:
        data = built[name]
        # The other sets' questions are off topic here: where a tuned model's evidence for
        # them goes says whether the router's thresholds still tell them apart.
        off_topic = [
            item.question
            for other in names
            if other != name and args.tune_embedder
            for item in load_qa(built[other] / "qa.json")
        ]
        reports = score_set(
            name,
            data,
            embedder,
            args.calibrate,
            args.tune_embedder,
            args.tuned_weights,
            off_topic,
        )
        print_set(name, args.subset, reports)
        records[name] = ranks_record(args.subset, reports)
        if args.ranks_out is not None:  # after each set: an interrupted run keeps its sets
            args.ranks_out.write_text(json.dumps({"sets": records}, indent=1))
        if args.against is not None:
            if name in before:
                print("\n".join(compare_ranks(name, before[name], records[name])), end="\n\n")
            else:
                print(f"{name}: not in {args.against}\n")


if __name__ == "__main__":
    main()
