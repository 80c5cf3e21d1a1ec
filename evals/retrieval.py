"""Retrieval evaluation (`ragtune eval retrieval`): score search modes on a QA set, over a
collection as it is or over a corpus ingested for the purpose into a temporary collection.

It lives here rather than beside `retrieval.evaluation` (the metrics) because it ingests, and
`retrieval` imports nothing above it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Protocol

from ragtune.ingest.loaders import supported_suffixes
from ragtune.ingest.pipeline import FileStatus, IngestProgress, IngestService, IngestSummary
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.conversation import (
    DEFAULT_WEIGHTING,
    TurnWeighting,
    conversation_searches,
)
from ragtune.retrieval.embedder import collection_embedder, load_embedder, model_id_for
from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.evaluation import (
    QAItem,
    RetrievalReport,
    evaluate_conversations,
)
from ragtune.retrieval.filters import SearchFilter
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.rerank import load_reranker
from ragtune.retrieval.search import Retriever, SearchMode
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import Collection, open_store

TEMPORARY_PREFIX = "eval-"
"""Names of the temporary collections a corpus is ingested into."""


class EvaluationReporter(Protocol):
    """Told how an evaluation advances (the CLI draws progress from it)."""

    def ingesting(self) -> AbstractContextManager[IngestProgress | None]:
        """Held while the corpus is ingested."""
        ...

    def ingested(self, summary: IngestSummary) -> None: ...

    def scoring(self, questions: int) -> AbstractContextManager[object]:
        """Held while the questions are searched and scored."""
        ...


class _Quiet:
    def ingesting(self) -> AbstractContextManager[IngestProgress | None]:
        return nullcontext()

    def ingested(self, summary: IngestSummary) -> None:
        pass

    def scoring(self, questions: int) -> AbstractContextManager[object]:
        return nullcontext()


def evaluate_retrieval(
    settings: RetrievalSettings,
    ingest_settings: IngestSettings,
    qa: Sequence[QAItem],
    modes: Sequence[SearchMode],
    ks: Sequence[int],
    *,
    search_filter: SearchFilter | None = None,
    neighbours: int = 0,
    corpus: Path | None = None,
    reporter: EvaluationReporter | None = None,
    weighting: TurnWeighting = DEFAULT_WEIGHTING,
) -> RetrievalReport:
    """Recall@k, MRR@10, nDCG@10 and the ceiling of each search mode on `qa`. An item given as
    a conversation is searched as the chat path searches it (its user turns, as `weighting`
    says); a question, as it is.

    Without `corpus`, over `settings.collection` (read only). With it, the corpus folder is
    ingested (as `ingest_settings` say) into a new collection `eval-<random>`, which is removed
    afterwards, whatever happens: an evaluation leaves the store as it found it.
    """
    reporter = reporter or _Quiet()
    search_filter = search_filter or SearchFilter.parse([])
    if corpus is not None:
        if not corpus.is_dir():
            raise RetrievalError(f"--corpus {corpus} is not a folder")
        name = f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:10]}"
        settings = settings.model_copy(update={"collection": name})
    model_id = model_id_for(settings.embedding_model)
    # Before any work: a bad reranker is refused before a corpus is ingested. Hybrid search
    # alone reranks.
    reranker = load_reranker(settings) if SearchMode.HYBRID in modes else None
    with open_store(settings, "write" if corpus is not None else "read") as store:
        indexes = LexicalIndexes.for_store(settings.data_dir, store)
        embedder = load_embedder(settings)
        target: Collection | None = None
        try:
            if corpus is None:
                target = store.collection(settings.collection, model_id)
                embedder = collection_embedder(target, settings, embedder)
            else:
                target = store.collection(settings.collection, model_id, create=True)
                service = IngestService(ingest_settings, target, lambda: embedder, indexes)
                with reporter.ingesting() as progress:
                    summary = service.run([corpus], progress=progress)
                reporter.ingested(summary)
                if target.count() == 0:
                    # Every question would score 0: a measurement of nothing, not of search.
                    raise RetrievalError(_no_chunks(corpus, summary))
            retriever = Retriever(target, embedder, indexes, settings, reranker=reranker)
            searches = conversation_searches(
                retriever, embedder, modes, weighting, search_filter, neighbours
            )
            with reporter.scoring(len(qa)):
                return evaluate_conversations(target, qa, searches, ks)
        finally:
            if corpus is not None and target is not None:
                store.delete_collection(settings.collection)
                indexes.drop(settings.collection)


def _no_chunks(corpus: Path, summary: IngestSummary) -> str:
    failed, skipped = summary.count(FileStatus.FAILED), summary.count(FileStatus.SKIPPED)
    empty = summary.read  # read, yet no chunk came of them
    parts = [f"{failed} failed"] if failed else []
    if skipped:
        parts.append(f"{skipped} skipped (ragtune reads {supported_suffixes()})")
    if empty:
        parts.append(f"{empty} hold no text")
    files = f"{len(summary.files)} file{'' if len(summary.files) == 1 else 's'}"
    found = f"of its {files}, {', '.join(parts)}" if parts else "it is empty"
    return (
        f"--corpus {corpus} gave no chunks to evaluate: {found}; give a folder of documents "
        "that `ragtune ingest` reads"
    )
