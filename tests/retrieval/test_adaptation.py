"""The parts of `ragtune tune embedder` below the command: training pairs, and a collection
rebuilt beside itself and put in its place (interrupted: the old one stays or comes back)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragtune.retrieval.adaptation import (
    STORE_MARK,
    TuneOptions,
    adopt,
    excluded_chunks,
    reembed,
    remove_orphaned_models,
    training_pairs,
    try_tuned,
    tuned_name,
)
from ragtune.retrieval.calibration import PseudoQuery
from ragtune.retrieval.embedder import tuned_model_dir
from ragtune.retrieval.errors import RetrievalError, StagingDroppedError
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import (
    EMBEDDING_BASE_KEY,
    REPLACED_SUFFIX,
    STAGING_SUFFIX,
    ChunkRecord,
    Collection,
    VectorStore,
    open_store,
)
from tests.support.fakes import FakeEmbedder, InMemoryCollection, InMemoryStore

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
    """Another model: its vectors are not the base model's."""

    def __init__(self) -> None:
        super().__init__(max_tokens=64)
        self.model_id = "ragtune-tuned/test-1"

    def _vector(self, text: str) -> list[float]:
        return super()._vector(text)[::-1]


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

    chroma.replace_collection(name, staging)
    now = chroma.collection(name, BASE.model_id)  # configured: the base model
    assert now.embedding_model == tuned.model_id  # read with the model tuned from it
    assert now.count() == 12
    assert "calibration" not in now.metadata()
    assert now.metadata()[EMBEDDING_BASE_KEY] == BASE.model_id
    assert {c.metadata["embedding_model"] for c in now.scan()} == {tuned.model_id}
    assert [c.name for c in chroma.list_collections() if c.name.startswith(name)] == [name]


def test_writes_made_while_the_copy_was_made_are_carried_over(chroma: VectorStore) -> None:
    """Another process (sharing a Chroma server) writes to the collection after its copy
    began: the swap carries every write over, embedded with the copy's model, and loses none."""
    name = f"rebuild-{uuid.uuid4().hex[:8]}"
    old = chroma.collection(name, BASE.model_id, create=True)
    old.add(records(12, BASE))
    tuned = TunedEmbedder()
    copied_at = old.revision()
    staging = reembed(chroma, old, tuned, BASE.model_id)
    added_text, rewritten_text = "Yaks keep warm under long hair.", "Chunk 3 now speaks of goats."
    added = ChunkRecord("c99", added_text, {"doc_id": "e"}, BASE.embed_query(added_text))
    rewritten = ChunkRecord("c3", rewritten_text, {"doc_id": "d"}, BASE.embed_query(rewritten_text))
    old.add([added, rewritten])
    old.update_metadata(["c1"], [{"heading": "H1", "doc_id": "d", "reviewed": "yes"}])
    old.delete(["c2"])

    assert adopt(chroma, old, staging, tuned, copied_at) == 4
    now = chroma.collection(name, BASE.model_id)
    assert now.embedding_model == tuned.model_id
    chunks = {c.id: c for c in now.scan(with_text=True)}
    assert set(chunks) == {f"c{i}" for i in range(12) if i != 2} | {"c99"}
    assert chunks["c99"].text == added.text
    assert chunks["c3"].text == rewritten.text
    assert chunks["c1"].metadata["reviewed"] == "yes"
    assert {c.metadata["embedding_model"] for c in chunks.values()} == {tuned.model_id}
    vectors = now.vectors()
    assert vectors is not None
    stored = dict(zip(vectors[0], vectors[1].tolist(), strict=True))
    for chunk_id, text in (("c99", added_text), ("c3", rewritten_text)):
        assert stored[chunk_id] == pytest.approx(tuned.embed_query(text), abs=1e-5)
        assert stored[chunk_id] != pytest.approx(BASE.embed_query(text), abs=1e-5)


def test_a_collection_written_to_without_pause_is_not_replaced() -> None:
    store = InMemoryStore()
    old = store.collection("busy-docs", BASE.model_id, create=True)
    old.add(records(4, BASE))
    tuned = TunedEmbedder()
    staging = reembed(store, old, tuned, BASE.model_id)
    original = store.snapshot()["busy-docs"]

    def write_again() -> str:  # a writer that never pauses: every look finds a new revision
        old.add([ChunkRecord(f"n{uuid.uuid4().hex[:6]}", "new text here", {"doc_id": "n"}, [1.0])])
        return old._revision

    old.revision = write_again  # type: ignore[method-assign]
    with pytest.raises(RetrievalError, match="nothing was changed"):
        adopt(store, old, staging, tuned, "", lambda: store.delete_collection(staging.name))
    assert store.collections["busy-docs"] is old  # not replaced
    assert staging.name not in store.collections  # the copy abandoned
    assert set(original) <= set(store.snapshot()["busy-docs"])


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


def test_a_replacement_under_way_elsewhere_is_waited_for_not_undone(chroma: VectorStore) -> None:
    """Another process opening the collection in the moment between a replacement's two renames
    neither takes it for deleted nor puts the old one back."""
    name = f"rebuild-{uuid.uuid4().hex[:8]}"
    old = chroma.collection(name, BASE.model_id, create=True)
    old.add(records(3, BASE))
    tuned = TunedEmbedder()
    staging = reembed(chroma, old, tuned, BASE.model_id)
    client = chroma._client  # type: ignore[attr-defined]
    client.get_collection(name).modify(name=name + REPLACED_SUFFIX)  # the first rename
    assert not old.replaced()  # set aside for a moment, not gone

    def second_rename() -> None:
        time.sleep(0.3)
        client.get_collection(staging.name).modify(name=name)
        client.delete_collection(name + REPLACED_SUFFIX)

    renaming = threading.Thread(target=second_rename)
    renaming.start()
    opened = chroma.collection(name, BASE.model_id)
    renaming.join()
    assert opened.embedding_model == tuned.model_id  # the new one, not the old put back
    assert old.replaced()
    assert [c.name for c in chroma.list_collections() if c.name.startswith(name)] == [name]


def test_a_write_landing_while_the_copy_catches_up_is_carried_over() -> None:
    """Another process's write has changed the revision but not yet landed when the copy is
    compared with the collection; it lands during the catch-up's scan. The revision it stamps
    once landed sends the copy round once more: the chunk is not lost to the swap."""
    store = InMemoryStore()
    old = store.collection("docs", BASE.model_id, create=True)
    old.add(records(4, BASE))
    tuned = TunedEmbedder()
    copied_at = old.revision()
    staging = reembed(store, old, tuned, BASE.model_id)
    late = ChunkRecord("late", "Yaks keep warm under long hair.", {"doc_id": "y"}, [1.0])
    stamped, scanned = threading.Event(), threading.Event()
    upsert = old._upsert

    def slow_upsert(batch: list[ChunkRecord]) -> None:  # the writer's upsert, held back
        stamped.set()
        assert scanned.wait(10)
        upsert(batch)

    old._upsert = slow_upsert  # type: ignore[method-assign]
    writer = threading.Thread(target=old.add, args=([late],))
    writer.start()
    assert stamped.wait(10)  # the writer has stamped its first revision
    scan = old.scan

    def scan_then_let_the_write_land(*args: object, **kwargs: object) -> Iterator[object]:
        found = list(scan(*args, **kwargs))  # type: ignore[arg-type]
        if not scanned.is_set():
            scanned.set()
            writer.join(10)
        return iter(found)

    old.scan = scan_then_let_the_write_land  # type: ignore[assignment,method-assign]
    adopt(store, old, staging, tuned, copied_at)
    now = store.collections["docs"]
    assert now is staging
    assert "late" in now.rows
    assert now.count() == 5


def test_two_rebuilds_of_one_collection_at_once_lose_nothing(chroma: VectorStore) -> None:
    """A second `tune embedder` run drops the first run's copy and starts its own under the
    same name: the first run's swap is refused, not made with the second's half-made copy;
    the second run's copy, once whole, is adopted."""
    name = f"twice-{uuid.uuid4().hex[:8]}"
    old = chroma.collection(name, BASE.model_id, create=True)
    old.add(records(6, BASE))
    tuned = TunedEmbedder()
    first = reembed(chroma, old, tuned, BASE.model_id)
    second = chroma.create_staging(first.name, tuned.model_id, {EMBEDDING_BASE_KEY: BASE.model_id})
    second.add(records(2, tuned))  # the second run, part-way through its copy
    abandoned: list[str] = []
    with pytest.raises(RetrievalError, match="another rebuild"):
        adopt(chroma, old, first, tuned, old.revision(), lambda: abandoned.append("first"))
    assert abandoned == ["first"]
    kept = chroma.collection(name, BASE.model_id)
    assert (kept.embedding_model, kept.count()) == (BASE.model_id, 6)
    chroma.delete_staging(first)  # what the first run's clean-up does: the second's stays
    second.add(records(6, tuned)[2:])
    adopt(chroma, kept, second, tuned, kept.revision())
    now = chroma.collection(name, BASE.model_id)
    assert (now.embedding_model, now.count()) == (tuned.model_id, 6)


def test_a_collection_deleted_or_rebuilt_meanwhile_is_not_swapped(chroma: VectorStore) -> None:
    name = f"gone-{uuid.uuid4().hex[:8]}"
    old = chroma.collection(name, BASE.model_id, create=True)
    old.add(records(3, BASE))
    tuned = TunedEmbedder()
    staging = reembed(chroma, old, tuned, BASE.model_id)
    chroma.delete_collection(name)
    chroma.collection(name, BASE.model_id, create=True).add(records(1, BASE))  # made anew
    with pytest.raises(RetrievalError, match="deleted or rebuilt by another process"):
        adopt(chroma, old, staging, tuned, old.revision(), lambda: chroma.delete_staging(staging))
    again = chroma.collection(name, BASE.model_id)
    assert (again.embedding_model, again.count()) == (BASE.model_id, 1)
    assert [c.name for c in chroma.list_collections() if c.name.startswith(name)] == [name]


def test_a_deleted_collection_does_not_come_back_from_a_copy_a_swap_left(
    chroma: VectorStore,
) -> None:
    """A swap interrupted after its second rename leaves the old copy set aside; a collection
    deleted on purpose afterwards is not put back from it when a new one of the name is made."""
    name = f"deleted-{uuid.uuid4().hex[:8]}"
    chroma.collection(name, BASE.model_id, create=True).add(records(1, BASE))
    aside = chroma.create_staging(name + REPLACED_SUFFIX, BASE.model_id, {})
    aside.add(records(5, BASE))
    chroma.delete_collection(name)
    assert chroma.collection(name, BASE.model_id, create=True).count() == 0


def test_a_copy_that_fails_or_is_interrupted_leaves_nothing_behind(
    chroma: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"partial-{uuid.uuid4().hex[:8]}"
    old = chroma.collection(name, BASE.model_id, create=True)
    old.add(records(3, BASE))
    tuned = TunedEmbedder()

    def interrupted(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reembed(chroma, old, tuned, BASE.model_id, interrupted)
    staging_name = name + STAGING_SUFFIX
    client = chroma._client  # type: ignore[attr-defined]
    assert staging_name not in [c.name for c in client.list_collections()]

    get = old.get

    def deleted_meanwhile(ids: list[str], with_text: bool = True) -> object:
        chroma.delete_collection(name)  # another process
        return get(ids, with_text)

    monkeypatch.setattr(old, "get", deleted_meanwhile)
    with pytest.raises(RetrievalError, match="deleted or rebuilt by another process"):
        reembed(chroma, old, tuned, BASE.model_id)
    assert staging_name not in [c.name for c in client.list_collections()]


def test_a_copy_another_run_drops_midway_says_so(chroma: VectorStore) -> None:
    """A second run starts while the first is still copying: the first run's error says what
    happened, and the second run's copy is left to it."""
    name = f"midway-{uuid.uuid4().hex[:8]}"
    old = chroma.collection(name, BASE.model_id, create=True)
    old.add(records(3, BASE))
    others: list[Collection] = []

    def second_run_starts(done: int, total: int) -> None:
        others.append(chroma.create_staging(name + STAGING_SUFFIX, BASE.model_id, {}))
        others[0].add(records(1, BASE))

    tuned = TunedEmbedder()
    first = reembed(chroma, old, tuned, BASE.model_id)  # the first run, copied
    second_run_starts(3, 3)
    with pytest.raises(StagingDroppedError, match="Let the other run finish"):
        adopt(chroma, old, first, tuned, "", lambda: chroma.delete_staging(first))
    assert not others[0].replaced()  # the second run's copy is still there
    assert others[0].count() == 1


def test_training_pairs_follow_the_seeds_draw_not_the_stores_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store returns the chunks asked for in its own order (Chroma: the order they were
    stored in); the pairs drawn must not depend on it, or the earliest-stored are favoured."""
    collection = InMemoryCollection("docs", BASE.model_id)
    collection.add(records(60, BASE))
    drawn = training_pairs(collection, 8, seed=3)
    stored = list(collection.rows)
    asked_for = collection.get

    def in_storage_order(ids: list[str], with_text: bool = True) -> object:
        return sorted(asked_for(ids, with_text), key=lambda c: stored.index(c.id))

    monkeypatch.setattr(collection, "get", in_storage_order)
    assert training_pairs(collection, 8, seed=3) == drawn
    first = [pair.query.split()[1] for pair in drawn]  # "Chunk N says ...": N
    assert sorted(first, key=int) != first  # not storage order


def test_models_left_by_killed_runs_go_when_the_collection_is_tuned_again(
    store: VectorStore, settings: RetrievalSettings
) -> None:
    """A run killed (kill -9) while it trained or measured left its model folder (about 90 MB)
    under embedders/ for good; the next run on the collection removes it, and nothing in use."""
    docs = store.collection("docs", "ragtune-tuned/docs-20250101-000000", create=True)
    docs.set_metadata_value(EMBEDDING_BASE_KEY, BASE.model_id)
    store.collection("docs-2", "ragtune-tuned/docs-2-20250101-000000", create=True)
    embedders = settings.data_dir / "embedders"
    names = [
        "docs-20250101-000000",  # the model "docs" is embedded with
        "docs-20250102-000000",  # orphans of "docs"
        "docs-20250103-000000",
        "docs-2-20250101-000000",  # "docs-2"'s model, and an orphan of that collection
        "docs-2-20250104-000000",
        "docs-notes",  # not a tuned model's name
    ]
    for name in names:
        (embedders / name).mkdir(parents=True)
        (embedders / name / STORE_MARK).write_text(store.location)
    (embedders / "docs-20250103-000000" / "model.safetensors").write_bytes(b"half written")
    # A name `tuned_name` writes now is one this reads back.
    fresh = tuned_model_dir(settings.data_dir, tuned_name("docs"))
    fresh.mkdir()
    (fresh / STORE_MARK).write_text(store.location)
    names.append(fresh.name)
    # Of the same data directory's other store (a Chroma server's "docs"), or from before
    # marks: never removed.
    (embedders / "docs-20250105-000000").mkdir()
    (embedders / "docs-20250105-000000" / STORE_MARK).write_text("http://chroma:8000")
    (embedders / "docs-20250106-000000").mkdir()
    names += ["docs-20250105-000000", "docs-20250106-000000"]
    # With a Chroma server another run may be tuning the collection now: nothing goes.
    served = settings.model_copy(update={"chroma_url": "http://localhost:8000"})
    assert remove_orphaned_models(store, docs, served) == []
    assert sorted(p.name for p in embedders.iterdir()) == sorted(names)
    removed = remove_orphaned_models(store, docs, settings)
    assert removed == ["docs-20250102-000000", "docs-20250103-000000", fresh.name]
    assert sorted(p.name for p in embedders.iterdir()) == sorted(set(names) - set(removed))
    assert remove_orphaned_models(store, docs, settings) == []


def test_held_out_queries_taking_every_chunk_say_to_lower_held_out(tmp_path: Path) -> None:
    """It said "only 0 training pairs (chunks with a sentence of 6 words or more)" of a
    collection full of such chunks: the held-out queries and their answers had taken them all."""
    store = InMemoryStore()
    collection = store.collection("docs", BASE.model_id, create=True)
    topics = ["llamas", "copper", "valves", "rivers", "tea", "maps"]
    texts = [
        f"Chunk {i} says that {topics[i % 6]} number {i} grow in the hills. It is spun by hand."
        for i in range(36)
    ]
    collection.add(
        [
            ChunkRecord(f"c{i}", text, {"doc_id": f"d{i % 6}", "chunk_index": i // 6}, vector)
            for i, (text, vector) in enumerate(zip(texts, BASE.embed(texts), strict=True))
        ]
    )
    settings = RetrievalSettings(data_dir=tmp_path)
    indexes = LexicalIndexes.for_store(tmp_path, store)
    options = TuneOptions(steps=1, batch_size=2, held_out=5000)
    with pytest.raises(RetrievalError) as refused:
        try_tuned(store, collection, BASE, settings, indexes, options)
    message = str(refused.value)
    assert "the 36 held-out pseudo-queries and their answers take 36 of the 36 chunks" in message
    assert "leaving 0 training pairs; at least one batch (2) is needed" in message
    assert "Lower --held-out (now 5000; 20 at least)" in message
    assert not (tmp_path / "embedders").exists()  # refused before any training
