"""One contract for every vector store: the in-memory fake, embedded Chroma, a Chroma server."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragtune.retrieval.errors import CollectionNotFoundError, EmbeddingModelMismatchError
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import HNSW_CONFIGURATION, ChunkRecord, VectorStore, open_store
from tests.support.fakes import InMemoryStore

MODEL = "test-model"


@pytest.fixture(params=["memory", "embedded", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "memory":
        yield InMemoryStore()
        return
    if request.param == "embedded":
        settings = RetrievalSettings(data_dir=tmp_path)
    else:
        settings = RetrievalSettings(chroma_url=request.getfixturevalue("chroma_server"))
    with open_store(settings, "write") as opened:
        yield opened


@pytest.fixture
def name() -> str:
    return f"contract-{uuid.uuid4().hex[:12]}"


def unit(*xs: float) -> list[float]:
    norm = math.sqrt(sum(x * x for x in xs))
    return [x / norm for x in xs]


def record(i: int, vector: list[float], **meta: str | int) -> ChunkRecord:
    return ChunkRecord(f"c{i}", f"text {i}", {"doc_id": f"d{i % 2}", "n": i, **meta}, vector)


def test_add_scan_get_count(store: VectorStore, name: str) -> None:
    col = store.collection(name, MODEL, create=True)
    records = [record(i, unit(1, i + 1, 0)) for i in range(23)]  # several write batches
    col.add(records)
    assert col.count() == 23
    scanned = {c.id: c for c in col.scan(with_text=True)}
    assert set(scanned) == {r.id for r in records}
    assert scanned["c5"].text == "text 5"
    assert scanned["c5"].metadata["n"] == 5
    assert [c.id for c in col.get(["c3", "c4"])] == ["c3", "c4"]
    assert {c.id for c in col.scan(where={"doc_id": "d1"})} == {f"c{i}" for i in range(1, 23, 2)}


def test_stored_vectors_come_back_with_their_ids(store: VectorStore, name: str) -> None:
    """What exact search over a small collection reads (`retrieval.dense.DenseSearch`): every
    chunk's vector, row by row with its id, after replacements and deletions."""
    col = store.collection(name, MODEL, create=True)
    if col.vectors() is None:
        assert isinstance(store, InMemoryStore)  # gives none out: search asks `nearest`
        return
    col.add([record(i, unit(1, i + 1, 0)) for i in range(23)])
    col.add([record(5, unit(0, 0, 1))])
    col.delete(["c0", "c1"])
    stored = col.vectors()
    assert stored is not None
    ids, vectors = stored
    assert sorted(ids) == sorted(f"c{i}" for i in range(2, 23))
    assert vectors.shape == (len(ids), 3)
    assert vectors[ids.index("c5")].tolist() == pytest.approx([0, 0, 1], abs=1e-6)
    assert vectors[ids.index("c4")].tolist() == pytest.approx(unit(1, 5, 0), abs=1e-6)


def test_upsert_replaces_by_id(store: VectorStore, name: str) -> None:
    col = store.collection(name, MODEL, create=True)
    col.add([record(1, unit(1, 0, 0))])
    col.add([ChunkRecord("c1", "new text", {"doc_id": "d1", "n": 9}, unit(0, 1, 0))])
    assert col.count() == 1
    (chunk,) = col.get(["c1"])
    assert chunk.text == "new text"
    assert chunk.metadata["n"] == 9


def test_update_metadata_keeps_text_and_vector(store: VectorStore, name: str) -> None:
    col = store.collection(name, MODEL, create=True)
    col.add([record(1, unit(1, 0, 0)), record(2, unit(0, 1, 0))])
    col.update_metadata(["c1"], [{"doc_id": "d1", "n": 100}])
    (chunk,) = col.get(["c1"])
    assert chunk.metadata == {"doc_id": "d1", "n": 100}
    assert chunk.text == "text 1"
    assert col.query(unit(1, 0, 0), 1)[0].id == "c1"


def test_delete(store: VectorStore, name: str) -> None:
    col = store.collection(name, MODEL, create=True)
    col.add([record(i, unit(1, i, 1)) for i in range(10)])
    col.delete([f"c{i}" for i in range(0, 10, 2)])
    assert {c.id for c in col.scan()} == {"c1", "c3", "c5", "c7", "c9"}
    col.delete([])
    assert col.count() == 5


def test_query_orders_by_cosine_and_filters(store: VectorStore, name: str) -> None:
    col = store.collection(name, MODEL, create=True)
    col.add(
        [
            record(1, unit(1, 0, 0)),
            record(2, unit(1, 1, 0)),
            record(3, unit(0, 0, 1)),
            record(4, unit(1, 0.1, 0)),
        ]
    )
    hits = col.query(unit(1, 0, 0), 3)
    assert [h.id for h in hits] == ["c1", "c4", "c2"]
    assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
    assert hits[2].distance == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-5)
    assert [h.id for h in col.query(unit(1, 0, 0), 3, where={"doc_id": "d1"})] == ["c1", "c3"]


def test_collection_records_its_embedding_model(store: VectorStore, name: str) -> None:
    store.collection(name, MODEL, create=True)
    with pytest.raises(EmbeddingModelMismatchError, match="RAGTUNE_EMBEDDING_MODEL"):
        store.collection(name, "another-model")
    assert name in {c.name for c in store.list_collections()}
    info = next(c for c in store.list_collections() if c.name == name)
    assert info.embedding_model == MODEL


def test_a_folders_identity_recorded_before_fingerprints_still_opens(
    store: VectorStore, name: str
) -> None:
    """A collection recorded a model folder by its name alone before identities carried a
    fingerprint (`model_id_for`): it opens with that folder configured, under the identity it
    recorded; two fingerprints of one folder name are two models."""
    store.collection(name, "model", create=True)
    assert store.collection(name, "model@0123456789ab").embedding_model == "model"
    with pytest.raises(EmbeddingModelMismatchError):
        store.collection(name, "other@0123456789ab")
    fingerprinted = name + "-2"
    store.collection(fingerprinted, "model@aaaaaaaaaaaa", create=True)
    with pytest.raises(EmbeddingModelMismatchError, match="model@aaaaaaaaaaaa"):
        store.collection(fingerprinted, "model@bbbbbbbbbbbb")
    with pytest.raises(EmbeddingModelMismatchError):
        store.collection(fingerprinted, "model")  # the folder's name alone is not its identity
    at_sign = name + "-3"  # a folder whose own name holds the separator
    store.collection(at_sign, "model@v2", create=True)
    assert store.collection(at_sign, "model@v2@0123456789ab").embedding_model == "model@v2"
    with pytest.raises(EmbeddingModelMismatchError):
        store.collection(at_sign, "model@v3@0123456789ab")


def test_missing_collection_is_a_clear_error(store: VectorStore, name: str) -> None:
    with pytest.raises(CollectionNotFoundError, match="ragtune ingest"):
        store.collection(name, MODEL)


def test_every_write_changes_the_revision(store: VectorStore, name: str) -> None:
    col = store.collection(name, MODEL, create=True)
    seen = {col.revision()}
    col.add([record(1, unit(1, 0, 0)), record(2, unit(0, 1, 0))])
    seen.add(col.revision())
    col.update_metadata(["c1"], [{"doc_id": "d1", "n": 3}])
    seen.add(col.revision())
    col.delete(["c2"])
    seen.add(col.revision())
    assert len(seen) == 4
    col.delete([])  # nothing written, nothing changed
    assert col.revision() in seen
    again = store.collection(name, MODEL)  # another handle sees the same revision
    assert again.revision() == col.revision()
    info = next(c for c in store.list_collections() if c.name == name)
    assert info.embedding_model == MODEL


def test_a_handle_knows_when_its_collection_was_replaced_or_deleted(
    store: VectorStore, name: str
) -> None:
    first = store.collection(name, MODEL, create=True)
    first.add([record(1, unit(1, 0, 0))])
    assert not first.replaced()
    assert not store.collection(name, MODEL).replaced()  # another handle of the same one
    staging = store.create_staging(name + "-staging", MODEL, {})
    staging.add([record(2, unit(0, 1, 0))])
    store.replace_collection(name, staging)
    assert first.replaced()
    second = store.collection(name, MODEL)
    assert not second.replaced()
    assert [c.id for c in second.scan()] == ["c2"]
    store.delete_collection(name)
    assert second.replaced()


def test_nearest_gives_the_query_ranking_without_payload(store: VectorStore, name: str) -> None:
    col = store.collection(name, MODEL, create=True)
    col.add([record(i, unit(1, i, 0.5)) for i in range(6)])
    full = col.query(unit(1, 2, 0.5), 4, where={"doc_id": "d0"})
    ids = col.nearest(unit(1, 2, 0.5), 4, where={"doc_id": "d0"})
    assert [i for i, _ in ids] == [h.id for h in full] == ["c2", "c4", "c0"]
    assert [d for _, d in ids] == pytest.approx([h.distance for h in full], abs=1e-6)


def test_documents_are_told_by_their_chunks_metadata(store: VectorStore, name: str) -> None:
    col = store.collection(name, MODEL, create=True)
    meta = [
        {"doc_id": "b", "source": "/docs/b.md", "doc_hash": "hb", "ingested_at": "2025-01-02"},
        {"doc_id": "b", "source": "/docs/b.md", "doc_hash": "hb", "ingested_at": "2025-01-03"},
        {"doc_id": "a", "source": "/docs/a.md", "doc_hash": "ha", "ingested_at": "2025-01-01"},
    ]
    col.add([ChunkRecord(f"c{i}", "t", m, unit(1, i + 1, 0)) for i, m in enumerate(meta)])
    assert [(d.doc_id, d.source, d.doc_hash, d.ingested_at, d.chunks) for d in col.documents()] == [
        ("a", "/docs/a.md", "ha", "2025-01-01", 1),
        ("b", "/docs/b.md", "hb", "2025-01-03", 2),
    ]


def test_new_chroma_collections_get_ragtunes_index_settings(store: VectorStore, name: str) -> None:
    """Chroma's HNSW defaults missed a question's best chunk in one of two builds of the same
    collection (bench/ann.py): a collection ragtune creates, and the copy a rebuild fills,
    are indexed with the settings that do not."""
    if isinstance(store, InMemoryStore):
        pytest.skip("the in-memory store searches exactly")
    created = store.collection(name, MODEL, create=True)
    staging = store.create_staging(f"{name}-staging", MODEL, {})
    for collection in (created, staging):
        hnsw = collection._raw.configuration_json["hnsw"]  # type: ignore[attr-defined]
        assert {k: hnsw[k] for k in HNSW_CONFIGURATION} == HNSW_CONFIGURATION
