"""The fleet's staleness of adapters: the collection each was trained alongside read again only
when its revision changed, and only the adapters whose documents changed reported stale."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ragtune.adapters.provenance import CollectionSnapshot
from ragtune.retrieval.store import StoredChunk, Where
from tests.support.fakes import FakeEmbedder, InMemoryCollection, InMemoryStore
from tests.support.staleness import register_trained, routing_components, write_document


class CountingCollection(InMemoryCollection):
    def __init__(self, name: str, embedding_model: str) -> None:
        super().__init__(name, embedding_model)
        self.scans = 0

    def scan(self, where: Where | None = None, with_text: bool = False) -> Iterator[StoredChunk]:
        self.scans += 1
        return super().scan(where, with_text)


def test_an_adapter_is_stale_once_its_documents_change(tmp_path: Path) -> None:
    store, embedder = InMemoryStore(), FakeEmbedder()
    handbook = store.collections["handbook"] = CountingCollection("handbook", embedder.model_id)
    write_document(handbook, embedder, "refunds", "Refunds take thirty days.", "v1")
    write_document(handbook, embedder, "hours", "Open at nine.", "v1")
    recorded = CollectionSnapshot.of(handbook)
    register_trained(tmp_path, "titler", "Titles.", recorded)
    register_trained(tmp_path, "coder", "Code.", None)
    register_trained(tmp_path, "other", "Other.", recorded.model_copy(update={"name": "other"}))
    with routing_components(tmp_path, store, embedder) as parts:
        fleet = parts.fleet
        assert fleet.documents is not None
        fleet.documents.every_s = 0.0  # every call checks the revision
        assert fleet.stale_documents("handbook") == {}
        scans = handbook.scans

        write_document(handbook, embedder, "refunds", "Refunds take fourteen days.", "v2")
        assert fleet.stale_documents("handbook") == {"titler": frozenset({"refunds"})}
        titler = fleet.manifest("titler")
        found = fleet.staleness(titler)
        assert found is not None
        assert [(c.doc_id, c.change) for c in found.changes] == [("refunds", "changed")]
        # Read once for this revision, however many requests ask.
        for _ in range(5):
            fleet.stale_documents("handbook")
        assert handbook.scans == scans + 1
        # Each collection has its own adapters; one that is gone has lost every document.
        assert fleet.stale_documents("other") == {"other": frozenset({"refunds", "hours"})}
        assert fleet.staleness(fleet.manifest("coder")) is None  # trained alongside none

        # Between checks, the revision is not even read: a change shows at the next check.
        fleet.documents.every_s = 3600.0
        write_document(handbook, embedder, "holidays", "Closed on holidays.", "v1")
        assert fleet.stale_documents("handbook") == {"titler": frozenset({"refunds"})}
        fleet.documents.every_s = 0.0
        assert fleet.stale_documents("handbook") == {"titler": frozenset({"refunds", "holidays"})}
