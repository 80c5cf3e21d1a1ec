"""What an adapter was made alongside, and what changed since: a collection's documents recorded
by ingestion's own metadata, compared after real re-ingestion runs (edit, add, remove)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.adapters.provenance import (
    CollectionSnapshot,
    DocumentVersion,
    current_snapshot,
    staleness,
)
from ragtune.adapters.registry import AdapterManifest
from ragtune.ingest.pipeline import IngestService, document_id
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.store import ChunkRecord
from tests.support.fakes import FakeEmbedder, InMemoryCollection, InMemoryStore


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in (("refunds", "Refunds take thirty days."), ("hours", "Open at nine.")):
        (root / f"{name}.md").write_text(f"# {name.title()}\n{text}\n")
    return root


def ingest(store: InMemoryStore, embedder: FakeEmbedder, root: Path) -> InMemoryCollection:
    collection = store.collection("handbook", embedder.model_id, create=True)
    IngestService(IngestSettings(), collection, lambda: embedder).run([root], sync=True)
    assert isinstance(collection, InMemoryCollection)
    return collection


def test_a_snapshot_records_each_documents_version(docs: Path) -> None:
    store, embedder = InMemoryStore(), FakeEmbedder()
    collection = ingest(store, embedder, docs)
    snapshot = CollectionSnapshot.of(collection)
    assert snapshot.name == "handbook"
    assert snapshot.revision == collection.revision() != ""
    assert [Path(d.source).name for d in snapshot.documents] == ["hours.md", "refunds.md"]
    hours = snapshot.documents[0]
    assert hours.doc_id == document_id(str(docs / "hours.md"))
    assert len(hours.doc_hash) == 64
    assert hours.ingested_at.startswith("20")
    # Nothing changed: not stale, whatever the revision.
    assert not staleness(snapshot, CollectionSnapshot.of(collection)).stale


def test_edited_removed_and_added_documents_make_the_adapter_stale(docs: Path) -> None:
    store, embedder = InMemoryStore(), FakeEmbedder()
    recorded = CollectionSnapshot.of(ingest(store, embedder, docs))
    (docs / "refunds.md").write_text("# Refunds\nRefunds take fourteen days.\n")
    (docs / "hours.md").unlink()
    (docs / "holidays.md").write_text("# Holidays\nClosed on public holidays.\n")
    ingest(store, embedder, docs)

    found = staleness(recorded, current_snapshot(store, "handbook", embedder.model_id))
    assert found.stale
    assert [(Path(c.source).name, c.change) for c in found.changes] == [
        ("holidays.md", "added"),
        ("hours.md", "removed"),
        ("refunds.md", "changed"),
    ]
    assert found.changed_ids == {
        document_id(str(docs / name)) for name in ("holidays.md", "hours.md", "refunds.md")
    }
    since = {Path(c.source).name: c.since for c in found.changes}
    assert since["hours.md"] == ""  # removed: nothing stored since
    assert since["refunds.md"] >= recorded.documents[1].ingested_at
    assert found.describe() == (
        "1 changed, 1 removed, 1 added in 'handbook' since training (2 documents then)"
    )


def test_a_collection_that_is_gone_has_lost_every_document(docs: Path) -> None:
    store, embedder = InMemoryStore(), FakeEmbedder()
    recorded = CollectionSnapshot.of(ingest(store, embedder, docs))
    store.delete_collection("handbook")
    found = staleness(recorded, current_snapshot(store, "handbook", embedder.model_id))
    assert {c.change for c in found.changes} == {"removed"}
    assert len(found.changes) == 2


def test_a_half_ingested_document_counts_as_changed() -> None:
    recorded = CollectionSnapshot(
        name="c", documents=[DocumentVersion(doc_id="d", source="/d.md", doc_hash="a")]
    )
    collection = InMemoryCollection("c", "m")
    collection.add(  # chunks of two versions: an interrupted run
        [
            ChunkRecord(f"c{n}", "text", {"doc_id": "d", "source": "/d.md", "doc_hash": h}, [1.0])
            for n, h in enumerate(("a", "b"))
        ]
    )
    (document,) = collection.documents()
    assert (document.doc_hash, document.chunks) == ("a+b", 2)
    assert [c.change for c in staleness(recorded, CollectionSnapshot.of(collection)).changes] == [
        "changed"
    ]


def manifest_json(**fields: object) -> str:
    return json.dumps(
        {
            "name": "titler", "version": 1, "base_model": "m", "rank": 8, "alpha": 16,
            "target_modules": ["q_proj"], "task": "Titles.", "weights_sha256": "0" * 64,
            "created": "2025-01-01T00:00:00Z", **fields,
        }
    )  # fmt: skip


def test_manifests_written_before_provenance_still_read() -> None:
    old = AdapterManifest.model_validate_json(manifest_json(training_data_sha256="ab"))
    assert old.training_collection is None
    recorded = CollectionSnapshot(
        name="handbook",
        revision="r1",
        documents=[DocumentVersion(doc_id="d", source="/d.md", doc_hash="h", ingested_at="t")],
    )
    new = old.model_copy(update={"training_collection": recorded})
    assert AdapterManifest.model_validate_json(new.model_dump_json()) == new
