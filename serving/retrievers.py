"""The API's retrievers: one per collection a request names, made on first use and kept."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from pydantic import ValidationError

from ragtune.retrieval.conversation import Closest, UnknownWords, closest_in, unknown_words_in
from ragtune.retrieval.embedder import Embedder, Vector, collection_embedder
from ragtune.retrieval.errors import CollectionNotFoundError, StoreUnavailableError
from ragtune.retrieval.filters import SearchFilter
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.rerank import Reranker
from ragtune.retrieval.search import Retriever, SearchHit, SearchMode
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import VectorStore
from ragtune.serving.errors import InvalidRequestError

logger = logging.getLogger("ragtune.chat")


class RetrieverCache:
    """A `Retriever` per collection, each made once: the collection name is validated and the
    collection opened (its embedding model checked) on the first request that names it.

    Usage:
        retrievers = RetrieverCache(store, embedder, settings.retrieval)
        embedder = retrievers.embedder_for("handbook")
        vector = embedder.embed_query(question)
        hits = retrievers.search(question, vector, k=5, collection="handbook",
                                 model=embedder.model_id)
    The API only reads: a collection's lexical index is rebuilt in memory when the collection
    changes, and written by ingestion. A collection another process deleted or put a rebuilt
    copy in the place of (`ragtune tune embedder`, its `--revert`, over a Chroma server) is
    noticed within `lexical_check_seconds` and opened again, with the model it is now
    embedded with: no restart."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        settings: RetrievalSettings,
        lexical: LexicalIndexes | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.lexical = lexical or LexicalIndexes.for_store(settings.data_dir, store)
        self.reranker = reranker
        """One reranking model shared by every collection's retriever (None: no stage)."""
        self._retrievers: dict[str, Retriever] = {}
        self._checked: dict[str, float] = {}
        """When each retriever's collection was last checked for a replacement (monotonic)."""
        self._lock = threading.Lock()

    @property
    def default_collection(self) -> str:
        return self.settings.collection

    def depth(self, k: int) -> int:
        """How deep to search for `k` hits that will be cut afterwards (`evidence_first`): as
        deep as the reranking stage reorders when there is one, since it may put any of its
        candidates first; `k` otherwise."""
        return max(k, self.settings.rerank_depth) if self.reranker is not None else k

    def _name(self, collection: str | None) -> str:
        # None is the default collection; an empty name is no collection's (refused by `get`).
        return collection if collection is not None else self.settings.collection

    def get(self, collection: str | None = None) -> Retriever:
        """The retriever of `collection` (default: the configured one). InvalidRequestError for
        a name no collection may have, CollectionNotFoundError for one that does not exist."""
        name = self._name(collection)
        self._drop_if_replaced(name)
        retriever = self._retrievers.get(name)
        if retriever is None:
            try:
                settings = self.settings.for_collection(name)
            except ValidationError as exc:
                message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise InvalidRequestError(message, param="ragtune.collection") from exc
            target = self.store.collection(name, self.embedder.model_id)
            retriever = Retriever(
                target,
                collection_embedder(target, self.settings, self.embedder),
                self.lexical,
                settings,
                save_lexical=False,
                reranker=self.reranker,
            )
            self._retrievers[name] = retriever
            self._checked[name] = time.monotonic()
        return retriever

    def _drop_if_replaced(self, name: str, at_once: bool = False) -> bool:
        """Drop the retriever of `name` if its collection is no longer the one called so (see
        `Collection.replaced`); the store is asked at most once per `lexical_check_seconds`, as
        for the lexical index's revision, unless `at_once`. Whether it was dropped."""
        with self._lock:
            retriever = self._retrievers.get(name)
            since = time.monotonic() - self._checked.get(name, 0.0)
            if retriever is None or (not at_once and since < self.settings.lexical_check_seconds):
                return False
            self._checked[name] = time.monotonic()
            if not retriever.collection.replaced():
                return False
            logger.info("collection %r was rebuilt or deleted elsewhere: opened again", name)
            self.forget(name)
            return True

    def refresh(self, collection: str | None = None) -> bool:
        """Drop the retriever of `collection` now if its collection was deleted or replaced
        since it was opened (not waiting for `lexical_check_seconds`): what a request that
        failed on it does before it tries once more. Whether it was dropped."""
        return self._drop_if_replaced(self._name(collection), at_once=True)

    def forget(self, collection: str) -> None:
        """Drop the retriever of a collection this process changed or deleted: the next request
        makes one that reads it afresh (its lexical index at the new revision at once)."""
        self._retrievers.pop(collection, None)
        self._checked.pop(collection, None)

    def embedder_for(self, collection: str | None = None) -> Embedder:
        """The embedder whose vectors `collection` is searched with: the shared one, or the
        model tuned for that collection (`ragtune tune embedder`)."""
        try:
            return self.get(collection).embedder
        except CollectionNotFoundError:
            return self.embedder

    def closest(
        self,
        collection: str | None = None,
        filters: Mapping[str, str] | None = None,
        model: str | None = None,
    ) -> Closest | None:
        """How close a vector (of the embedding model `model`) comes to the collection's chunks
        (among those `filters` let through): what tells a follow-up from a question that stands
        alone (`retrieval.conversation`). None when the collection does not exist (yet), or is
        now embedded with another model than `model` (re-embedded since the caller asked)."""
        try:
            retriever = self.get(collection)
        except CollectionNotFoundError:
            return None
        if model is not None and model != retriever.embedder.model_id:
            return None
        return closest_in(retriever, SearchFilter.from_mapping(filters) if filters else None)

    def unknown_words(self, collections: Sequence[str]) -> UnknownWords | None:
        """The words of a text that none of the collections uses: what tells a follow-up from a
        message with a topic of its own (`retrieval.conversation.unknown_words_in`). Those that
        do not exist (yet) are left out; None when none is left that uses enough words to tell
        by."""
        found = []
        for name in collections:
            try:
                found.append(self.get(name))
            except CollectionNotFoundError:
                continue
        return unknown_words_in(found)

    def search(
        self,
        question: str,
        vector: Vector,
        *,
        k: int,
        collection: str | None = None,
        filters: Mapping[str, str] | None = None,
        required: bool = False,
        timings: dict[str, float] | None = None,
        model: str | None = None,
        embed: Callable[[Embedder], Vector] | None = None,
    ) -> list[SearchHit]:
        """The `k` best passages for the query text (its vector already computed, by the
        embedding model `model`: `Embedder.model_id`). A collection that does not exist is
        CollectionNotFoundError when `required` (the router says when:
        `RouteRequest.requires_documents`), else no evidence. `timings`: each stage's seconds
        are added to it (`Retriever.search`).

        A collection re-embedded with another model since `vector` was computed (`ragtune tune
        embedder` or its `--revert`, in another process) is searched with the question embedded
        again by its own model: a vector of one model is meaningless among another's (`embed`
        makes that vector from the collection's embedder: a conversation's turns one by one,
        `ConversationQuery.vector_of`; default: the question's text)."""
        name = self._name(collection)
        try:
            try:
                hits = self._search(name, question, vector, model, k, filters, timings, embed)
            except (CollectionNotFoundError, StoreUnavailableError):
                raise
            except Exception:
                # The collection was replaced while this request searched it (between two
                # checks): search the one now in its place, once, rather than fail the request.
                if not self.refresh(name):
                    raise
                hits = self._search(name, question, vector, model, k, filters, timings, embed)
            return [replace(hit, collection=name) for hit in hits]
        except CollectionNotFoundError:
            if required:
                raise
            # Nothing ingested yet: no evidence (adapters and the base model still serve).
            logger.info("the default collection does not exist yet: no documents")
            return []

    def _search(
        self,
        name: str,
        question: str,
        vector: Vector,
        model: str | None,
        k: int,
        filters: Mapping[str, str] | None,
        timings: dict[str, float] | None,
        embed: Callable[[Embedder], Vector] | None,
    ) -> list[SearchHit]:
        retriever = self.get(name)
        stale = model is not None and model != retriever.embedder.model_id
        if stale:
            logger.info(
                "collection %r is now embedded with %s, not %s: the question is embedded again",
                name,
                retriever.embedder.model_id,
                model,
            )
        return retriever.search(
            question,
            k,
            SearchMode(self.settings.search_mode),
            SearchFilter.from_mapping(filters) if filters else None,
            vector=(embed(retriever.embedder) if embed else None) if stale else vector,
            timings=timings,
        )


def evidence_first(hits: Sequence[SearchHit], k: int, threshold: float) -> list[SearchHit]:
    """The first `k` of one collection's `hits`, those at the evidence `threshold` before those
    below it, each in their order, ranks renumbered from 1: a search deeper than `k` reranked
    (a reranker may put passages below the threshold first, which would otherwise take every
    place from the evidence)."""
    kept = sorted(hits, key=lambda hit: hit.similarity < threshold)[:k]
    return [replace(hit, rank=n) for n, hit in enumerate(kept, start=1)]


def merge_ranked(
    ranked: Sequence[Sequence[SearchHit]], k: int, threshold: float = 0.0
) -> list[SearchHit]:
    """The `k` best of several collections' hits, each list in its own collection's order.

    Fused scores of different collections are not comparable (each collection has its own
    fusion weights and score scale), so the lists are interleaved by rank: every collection's
    first hit, then every second, ...; within one rank the hit more similar to the query
    (dense similarity: one embedding model) comes first. Hits at the router's evidence
    `threshold` come before those below it, so that a collection that holds nothing on the
    question does not push another's evidence out of the `k`. One list is returned as it is
    (its first `k`); ranks are renumbered from 1."""
    if len(ranked) == 1:
        return list(ranked[0][:k])
    merged = sorted(
        (hit for hits in ranked for hit in hits),
        key=lambda hit: (
            hit.similarity < threshold,
            hit.rank,
            -hit.similarity,
        ),
    )
    return [replace(hit, rank=n) for n, hit in enumerate(merged[:k], start=1)]
