"""The API's retrievers: merging several collections' hits (`merge_ranked`, interleaved by rank,
evidence first), and collections that another process rebuilds or deletes under them."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from ragtune.retrieval.adaptation import adopt, reembed
from ragtune.retrieval.conversation import conversation_query
from ragtune.retrieval.embedder import (
    TUNED_PREFIX,
    Embedder,
    is_tuned,
    load_tuned_embedder,
    resolve_model_path,
    tuned_model_dir,
)
from ragtune.retrieval.errors import CollectionNotFoundError
from ragtune.retrieval.search import SearchHit
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import EMBEDDING_BASE_KEY, ChunkRecord, open_store
from ragtune.serving.retrievers import RetrieverCache, evidence_first, merge_ranked
from tests.support.fakes import FakeEmbedder, InMemoryStore


def hits(collection: str, *dense: float) -> list[SearchHit]:
    return [
        SearchHit(
            rank=n,
            chunk_id=f"{collection}-{n}",
            text="",
            source="",
            section="",
            score=1.0 / n,
            metadata={},
            dense_score=similarity,
            collection=collection,
        )
        for n, similarity in enumerate(dense, start=1)
    ]


def ids(merged: list[SearchHit]) -> list[str]:
    return [hit.chunk_id for hit in merged]


def test_one_collection_is_kept_as_it_is() -> None:
    one = hits("a", 0.2, 0.9, 0.5)
    assert merge_ranked([one], 2) == one[:2]


def test_a_deep_reranked_list_puts_its_evidence_first_in_its_own_order() -> None:
    """A reranker's order, passages below the evidence threshold first: they take no place
    from the evidence."""
    reranked = hits("a", 0.1, 0.6, 0.2, 0.5)
    kept = evidence_first(reranked, 3, threshold=0.37)
    assert ids(kept) == ["a-2", "a-4", "a-1"]
    assert [hit.rank for hit in kept] == [1, 2, 3]


def test_lists_interleave_by_rank_the_closer_hit_first_within_a_rank() -> None:
    merged = merge_ranked([hits("a", 0.5, 0.45, 0.44), hits("b", 0.6, 0.4, 0.39)], 5)
    assert ids(merged) == ["b-1", "a-1", "a-2", "b-2", "a-3"]
    assert [hit.rank for hit in merged] == [1, 2, 3, 4, 5]


def test_a_collection_without_evidence_does_not_push_out_another_s() -> None:
    relevant, unrelated = hits("a", 0.6, 0.5, 0.45, 0.4), hits("b", 0.3, 0.2, 0.1, 0.1)
    merged = merge_ranked([unrelated, relevant], 5, threshold=0.37)
    assert ids(merged) == ["a-1", "a-2", "a-3", "a-4", "b-1"]
    # Without a threshold, ranks alone decide.
    assert ids(merge_ranked([unrelated, relevant], 4)) == ["a-1", "b-1", "a-2", "b-2"]


def chunk(n: int, text: str, embedder: Embedder) -> ChunkRecord:
    return ChunkRecord(
        f"c{n}", text, {"doc_id": f"d{n}", "source": f"d{n}.md"}, embedder.embed_query(text)
    )


def test_a_vector_of_the_model_a_collection_had_is_not_searched_with_its_new_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The question was embedded for a collection just before another process re-embedded it
    with a tuned model (of another dimension here): the search embeds the question again with
    the model the collection now has, instead of failing or searching with a foreign vector."""
    base, tuned = FakeEmbedder(64), FakeEmbedder(32)
    tuned.model_id = TUNED_PREFIX + "wool-1"
    monkeypatch.setattr(
        "ragtune.serving.retrievers.collection_embedder",
        lambda target, settings, configured: (
            tuned if is_tuned(target.embedding_model) else configured
        ),
    )
    texts = ["llamas spin wool into yarn", "yaks keep warm under long hair"]
    store = InMemoryStore()
    store.collection("wool", base.model_id, create=True).add(
        [chunk(n, text, base) for n, text in enumerate(texts)]
    )
    settings = RetrievalSettings(data_dir=tmp_path, lexical_check_seconds=0)
    retrievers = RetrieverCache(store, base, settings)
    question = "how do yaks keep warm"
    vector = base.embed_query(question)
    found = retrievers.search(question, vector, k=1, collection="wool", model=base.model_id)
    assert found[0].text == texts[1]
    assert tuned.calls == []

    staging = store.create_staging("wool-next", tuned.model_id, {EMBEDDING_BASE_KEY: base.model_id})
    staging.add([chunk(n, text, tuned) for n, text in enumerate(texts)])
    store.replace_collection("wool", staging)
    tuned.calls.clear()
    found = retrievers.search(question, vector, k=1, collection="wool", model=base.model_id)
    assert found[0].text == texts[1]
    assert tuned.calls == [1]  # the question, embedded by the collection's model
    assert (found[0].dense_score or 0.0) > 0.3
    # A conversation's query is embedded again turn by turn (`ConversationQuery.vector_of`),
    # not as its joined text.
    turns = ["how do yaks keep warm", "and llamas?"]
    query = conversation_query(turns, base, lambda _: 0.0)
    tuned.calls.clear()
    found = retrievers.search(
        query.text, query.vector, k=2, collection="wool", model=base.model_id,
        embed=query.vector_of,
    )  # fmt: skip
    assert tuned.calls == [2]
    again = query.vector_of(tuned)
    for hit in found:
        stored = tuned.embed([hit.text])[0]
        assert hit.dense_score == pytest.approx(
            sum(a * b for a, b in zip(again, stored, strict=True))
        )
    # Without saying which model made the vector, the 64 numbers meet 32: that search fails.
    with pytest.raises(ValueError, match="zip"):
        retrievers.search(question, vector, k=1, collection="wool")


@pytest.mark.chroma_server
def test_a_collection_another_process_rebuilds_or_deletes_is_followed_without_a_restart(
    chroma_server: str, tmp_path: Path, real_embedder: Embedder
) -> None:
    """An API replica and `ragtune tune embedder` sharing a Chroma server: the rebuilt
    collection (re-embedded with a tuned model) is searched, with that model, at the next
    check; a deleted one is no evidence, or not found when documents are required."""
    settings = RetrievalSettings(
        chroma_url=chroma_server, data_dir=tmp_path, lexical_check_seconds=0
    )
    name = f"rebuilt-{uuid.uuid4().hex[:8]}"
    base = real_embedder
    with open_store(settings, "read") as api, open_store(settings, "write") as tuner:
        old = tuner.collection(name, base.model_id, create=True)
        old.add([chunk(0, "Llamas grow wool that is spun into yarn.", base)])
        retrievers = RetrieverCache(api, base, settings)
        assert retrievers.embedder_for(name) is base
        found = retrievers.search(
            "llama wool", base.embed_query("llama wool"), k=1, collection=name
        )
        assert found[0].text.startswith("Llamas")

        tuned_id = TUNED_PREFIX + f"{name}-1"
        folder = tuned_model_dir(tmp_path, tuned_id)
        shutil.copytree(resolve_model_path("all-MiniLM-L6-v2"), folder)
        tuned = load_tuned_embedder(folder, tuned_id, "cpu", 8)
        copied_at = old.revision()
        staging = reembed(tuner, old, tuned, base.model_id)
        staging.add([chunk(1, "Yaks keep warm under long hair.", tuned)])
        adopt(tuner, old, staging, tuned, copied_at)

        follows = retrievers.embedder_for(name)
        assert follows.model_id == tuned_id
        found = retrievers.search("yak hair", follows.embed_query("yak hair"), k=1, collection=name)
        assert found[0].text.startswith("Yaks")
        assert found[0].collection == name

        tuner.delete_collection(name)
        assert retrievers.search("yak hair", follows.embed_query("yak"), k=1, collection=name) == []
        with pytest.raises(CollectionNotFoundError):
            retrievers.search("yak", base.embed_query("yak"), k=1, collection=name, required=True)
        assert retrievers.embedder_for(name) is base


@pytest.mark.chroma_server
def test_a_search_the_replacement_overtakes_reads_the_new_collection(
    chroma_server: str, tmp_path: Path
) -> None:
    """Between two checks (an hour apart here) a search that finds its collection replaced
    under it searches the new one instead of failing the request."""
    settings = RetrievalSettings(
        chroma_url=chroma_server, data_dir=tmp_path, lexical_check_seconds=3600
    )
    name = f"overtaken-{uuid.uuid4().hex[:8]}"
    embedder = FakeEmbedder()
    with open_store(settings, "read") as api, open_store(settings, "write") as writer:
        writer.collection(name, embedder.model_id, create=True).add(
            [chunk(0, "llamas spin wool", embedder), chunk(1, "alpacas spin wool", embedder)]
        )
        retrievers = RetrieverCache(api, embedder, settings)
        vector = embedder.embed_query("spin wool")
        assert len(retrievers.search("spin wool", vector, k=2, collection=name)) == 2
        staging = writer.create_staging(name + "-next", embedder.model_id, {})
        staging.add([chunk(0, "yaks spin wool", embedder), chunk(1, "goats spin wool", embedder)])
        writer.replace_collection(name, staging)
        found = retrievers.search("spin wool", vector, k=2, collection=name)
        assert {hit.text for hit in found} == {"yaks spin wool", "goats spin wool"}
