"""The operator's view of adapters (`/admin/adapters` bodies) over the server's real parts with
fakes at the edges: whether the documents each was trained alongside changed since."""

from __future__ import annotations

from pathlib import Path

from ragtune.adapters.provenance import CollectionSnapshot
from tests.support.fakes import FakeEmbedder, InMemoryStore
from tests.support.staleness import register_trained, routing_components, write_document


def test_the_adapter_list_and_detail_say_which_documents_changed(tmp_path: Path) -> None:
    store, embedder = InMemoryStore(), FakeEmbedder()
    handbook = store.collection("handbook", embedder.model_id, create=True)
    write_document(handbook, embedder, "refunds", "Refunds take thirty days.", "v1")
    write_document(handbook, embedder, "hours", "Open at nine.", "v1")
    register_trained(tmp_path, "titler", "Titles.", CollectionSnapshot.of(handbook))
    register_trained(tmp_path, "coder", "Code.", None)
    later = "2025-03-01T12:00:00+00:00"
    write_document(handbook, embedder, "refunds", "Refunds take 14 days.", "v2", later)
    with routing_components(tmp_path, store, embedder) as parts:
        listed = {s.name: s.model_dump(mode="json") for s in parts.admin.listed()}
        detail = parts.admin.detail("titler").model_dump(mode="json")
        untrained = parts.admin.detail("coder").model_dump(mode="json")
    assert {
        k: listed["titler"][k] for k in ("training_collection", "stale", "changed_documents")
    } == {
        "training_collection": "handbook",
        "stale": True,
        "changed_documents": 1,
    }
    assert (listed["coder"]["stale"], listed["coder"]["training_collection"]) == (False, None)
    assert detail["stale"] is True
    assert detail["changes"] == [
        {"doc_id": "refunds", "source": "/srv/docs/refunds.md", "change": "changed", "since": later}
    ]
    assert detail["manifest"]["training_collection"]["name"] == "handbook"
    assert (untrained["stale"], untrained["changes"]) == (False, [])


def test_an_adapter_whose_collection_cannot_be_read_is_of_unknown_staleness(
    tmp_path: Path,
) -> None:
    store, embedder = InMemoryStore(), FakeEmbedder()
    handbook = store.collection("handbook", "another-model", create=True)
    write_document(handbook, embedder, "refunds", "Refunds take thirty days.", "v1")
    register_trained(tmp_path, "titler", "Titles.", CollectionSnapshot.of(handbook))
    with routing_components(tmp_path, store, embedder) as parts:
        (status,) = parts.admin.listed()
    assert (status.stale, status.changed_documents) == (None, 0)
