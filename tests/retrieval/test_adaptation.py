"""The parts of `ragtune tune embedder` below the command: training pairs, and a collection
rebuilt beside itself and put in its place (interrupted: the old one stays or comes back)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragtune.retrieval.adaptation import excluded_chunks, reembed, training_pairs
from ragtune.retrieval.calibration import PseudoQuery
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import (
    EMBEDDING_BASE_KEY,
    REPLACED_SUFFIX,
    STAGING_SUFFIX,
    ChunkRecord,
    VectorStore,
    open_store,
)
from tests.support.fakes import FakeEmbedder, InMemoryCollection

BASE = FakeEmbedder(max_tokens=64)


@pytest.fixture(params=["embedded", "server"])
def chroma(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "embedded":
        settings = RetrievalSettings(data_dir=tmp_path)
    else:
        settings = RetrievalSettings(chroma_url=request.getfixturevalue("chroma_server"))
    with open_store(settings, "write") as opened:
        yield opened


class TunedEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__(max_tokens=64)
        self.model_id = "ragtune-tuned/test-1"


def records(n: int, embedder: FakeEmbedder) -> list[ChunkRecord]:
    texts = [f"Chunk {i} says that llamas number {i} grow wool. It is spun." for i in range(n)]
    return [
        ChunkRecord(f"c{i}", t, {"heading": f"H{i}", "doc_id": "d"}, v)
        for i, (t, v) in enumerate(zip(texts, embedder.embed(texts), strict=True))
    ]


def test_training_pairs_leave_out_held_out_chunks_and_copy_no_query() -> None:
    collection = InMemoryCollection("docs", BASE.model_id)
    collection.add(records(30, BASE))
    held = [PseudoQuery("q", "c1", frozenset({"c2"})), PseudoQuery("q", "c5", frozenset())]
    pairs = training_pairs(collection, 100, seed=3, exclude=excluded_chunks(held))
    assert len(pairs) == 27
    for pair in pairs:
        assert pair.passage.startswith("H")  # under its heading
        assert not any(f"number {i} " in pair.query for i in (1, 2, 5))
        if pair.query in pair.passage:  # kept whole one time in ten
            continue
        assert pair.query not in pair.passage
    assert training_pairs(collection, 5, seed=3) == training_pairs(collection, 5, seed=3)
    assert len(training_pairs(collection, 5, seed=3)) == 5


def test_a_rebuilt_collection_takes_the_place_of_the_old_one(chroma: VectorStore) -> None:
    name = f"rebuild-{uuid.uuid4().hex[:8]}"
    old = chroma.collection(name, BASE.model_id, create=True)
    old.add(records(12, BASE))
    old.set_metadata_value("calibration", '{"rrf_k": 5}')
    tuned = TunedEmbedder()
    seen: list[tuple[int, int]] = []
    staging = reembed(chroma, old, tuned, BASE.model_id, lambda d, t: seen.append((d, t)))
    assert staging.name == name + STAGING_SUFFIX
    assert seen[-1] == (12, 12)
    assert [c.name for c in chroma.list_collections() if c.name.startswith(name)] == [
        name
    ]  # the copy is not listed
    assert chroma.collection(name, BASE.model_id).embedding_model == BASE.model_id  # untouched

    chroma.replace_collection(name, staging.name)
    now = chroma.collection(name, BASE.model_id)  # configured: the base model
    assert now.embedding_model == tuned.model_id  # read with the model tuned from it
    assert now.count() == 12
    assert "calibration" not in now.metadata()
    assert now.metadata()[EMBEDDING_BASE_KEY] == BASE.model_id
    assert {c.metadata["embedding_model"] for c in now.scan()} == {tuned.model_id}
    assert [c.name for c in chroma.list_collections() if c.name.startswith(name)] == [name]


def test_a_replacement_interrupted_between_its_renames_is_undone(chroma: VectorStore) -> None:
    name = f"rebuild-{uuid.uuid4().hex[:8]}"
    old = chroma.collection(name, BASE.model_id, create=True)
    old.add(records(3, BASE))
    # What a process killed after its first rename leaves: the old collection aside, none named.
    raw = chroma._client.get_collection(name)  # type: ignore[attr-defined]
    raw.modify(name=name + REPLACED_SUFFIX)
    back = chroma.collection(name, BASE.model_id)
    assert back.count() == 3
    assert [c.name for c in chroma.list_collections() if c.name.startswith(name)] == [name]
