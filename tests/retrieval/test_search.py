"""Dense, lexical and fused search over a real embedded Chroma, with the lexical index kept in
step with every kind of write."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragtune.ingest.documents import remove_documents
from ragtune.ingest.pipeline import IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.dense import DenseSearch
from ragtune.retrieval.embedder import Embedder, LazyEmbedder
from ragtune.retrieval.errors import EmbeddingModelError
from ragtune.retrieval.filters import SearchFilter
from ragtune.retrieval.lexical import LexicalIndex, LexicalIndexes
from ragtune.retrieval.search import STAGES, Retriever, SearchMode, join_overlapping
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord, Collection, VectorStore
from tests.support.fakes import FakeEmbedder, spy_on_index


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder(max_tokens=40)


@pytest.fixture
def indexes(settings: RetrievalSettings, store: VectorStore) -> LexicalIndexes:
    return LexicalIndexes.for_store(settings.data_dir, store)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "pets").mkdir(parents=True)
    (root / "work").mkdir()
    (root / "pets" / "cats.md").write_text(
        "# Cats\n## Food\nCats eat fish and chicken every day.\n"
        "## Sleep\nCats sleep sixteen hours a day in warm places.\n"
    )
    (root / "pets" / "dogs.md").write_text(
        "# Dogs\n## Walks\nDogs need long walks in the park twice a day.\n"
    )
    (root / "work" / "leave.md").write_text(
        "# Leave\n## Holidays\nEmployees get 25 days of paid holidays per year.\n"
        "## Sick days\nCall your manager before nine when you are sick.\n"
    )
    long_section = " ".join(f"Step {n}: turn the zorblax valve clockwise." for n in range(12))
    (root / "work" / "manual.md").write_text(f"# Manual\n## Valves\n{long_section}\n")
    return root


def ingest(
    collection: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    *paths: Path,
    sync: bool = False,
) -> None:
    service = IngestService(
        IngestSettings(chunk_overlap_tokens=4), collection, lambda: embedder, indexes
    )
    service.run(list(paths), sync=sync)


@pytest.fixture
def retriever(
    collection: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    corpus: Path,
    settings: RetrievalSettings,
) -> Retriever:
    """A retriever over the whole corpus, ingested."""
    ingest(collection, embedder, indexes, corpus)
    return Retriever(collection, embedder, indexes, settings)


def saved_ids(indexes: LexicalIndexes, collection: Collection) -> set[str]:
    index = LexicalIndex.load(indexes.directory(collection.name))
    assert index is not None
    assert index.revision == collection.revision()
    return set(index.ids)


def stored_ids(collection: Collection) -> set[str]:
    return {c.id for c in collection.scan()}


def test_lexical_index_follows_ingest_change_rm_and_sync(
    collection: Collection, embedder: FakeEmbedder, indexes: LexicalIndexes, corpus: Path
) -> None:
    ingest(collection, embedder, indexes, corpus)
    assert saved_ids(indexes, collection) == stored_ids(collection) != set()

    (corpus / "pets" / "dogs.md").write_text("# Dogs\n## Walks\nDogs love the beach.\n")
    ingest(collection, embedder, indexes, corpus)
    assert saved_ids(indexes, collection) == stored_ids(collection)

    remove_documents(collection, [str(corpus / "pets" / "cats.md")])
    indexes.current(collection)  # what `ragtune docs rm` does after removing
    assert saved_ids(indexes, collection) == stored_ids(collection)

    (corpus / "work" / "leave.md").unlink()
    ingest(collection, embedder, indexes, corpus, sync=True)
    assert saved_ids(indexes, collection) == stored_ids(collection)
    texts = " ".join(c.text or "" for c in collection.scan(with_text=True))
    assert "holidays" not in texts
    assert "beach" in texts


@pytest.mark.parametrize("length", [300, 512])
def test_a_collection_of_a_long_name_keeps_its_lexical_index(
    store: VectorStore, embedder: FakeEmbedder, indexes: LexicalIndexes, corpus: Path, length: int
) -> None:
    """Names may have 512 characters, file names 255 bytes: a long name's index folder is
    shortened, and two long names sharing their beginning keep two folders (before, the
    ingest failed with a traceback after storing its chunks, and every search after it)."""
    first, second = ("x" * (length - 1) + end for end in "12")
    for name in (first, second):
        collection = store.collection(name, embedder.model_id, create=True)
        ingest(collection, embedder, indexes, corpus / "pets")
        assert saved_ids(indexes, collection) == stored_ids(collection) != set()
    assert indexes.directory(first) != indexes.directory(second)
    assert len(indexes.directory(first).name) < 128


def test_a_long_names_folder_from_before_names_were_shortened_goes(
    store: VectorStore, embedder: FakeEmbedder, indexes: LexicalIndexes, corpus: Path
) -> None:
    """A name of 129-255 characters had its index under its whole name; rebuilt under the
    short name, the old folder (a copy of every chunk's text) stayed on disk for good."""
    name = "y" * 200
    collection = store.collection(name, embedder.model_id, create=True)
    old = indexes.root / name
    (old / "bm25").mkdir(parents=True)
    (old / "rows.json").write_text("{}")
    ingest(collection, embedder, indexes, corpus / "pets")
    assert saved_ids(indexes, collection) == stored_ids(collection) != set()
    assert not old.exists()
    old.mkdir()
    indexes.drop(name)
    assert not old.exists()
    assert not indexes.directory(name).exists()


def test_saves_of_one_lexical_index_at_once_never_fail(
    collection: Collection, embedder: FakeEmbedder, indexes: LexicalIndexes, corpus: Path
) -> None:
    """Two ingest jobs of one collection save its index at once: with one `.old` folder for
    every save, one moved the index there while the other still had its own in it, and the
    job failed with "Directory not empty" (a restarted server's two resumed jobs). Each save
    now moves what it finds to a folder of its own; the last one in stays, whole."""
    import threading

    ingest(collection, embedder, indexes, corpus)
    index = indexes.current(collection, save=False)
    directory = indexes.directory(collection.name)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def save() -> None:
        start.wait()
        try:
            for _ in range(25):
                index.save(directory)
        except BaseException as exc:  # any failure is what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert saved_ids(indexes, collection) == stored_ids(collection)
    assert sorted(p.name for p in directory.parent.iterdir()) == [directory.name]


def test_an_index_read_across_two_saves_is_not_used(
    collection: Collection, embedder: FakeEmbedder, indexes: LexicalIndexes, corpus: Path
) -> None:
    """A reader reads the index's files one by one through the folder's name, which a save
    moves: rows of one save beside the revision of another made a search fail (a row past
    the ids) or search stale rows. Every save is stamped; files of two saves are no index."""
    ingest(collection, embedder, indexes, corpus)
    directory = indexes.directory(collection.name)
    assert LexicalIndex.load(directory) is not None
    rows = json.loads((directory / "rows.json").read_text())
    rows["save"] = "another"
    (directory / "rows.json").write_text(json.dumps(rows))
    assert LexicalIndex.load(directory) is None
    assert set(indexes.current(collection).ids) == stored_ids(collection)  # built again
    assert saved_ids(indexes, collection) == stored_ids(collection)


def test_a_stale_lexical_index_is_never_searched(
    collection: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    corpus: Path,
    settings: RetrievalSettings,
) -> None:
    ingest(collection, embedder, indexes, corpus)
    retriever = Retriever(
        collection, embedder, indexes, settings.model_copy(update={"lexical_check_seconds": 0})
    )
    assert retriever.search("quokka", 3, SearchMode.LEXICAL) == []
    # another writer (an interrupted run, another process) changes the collection behind
    # the saved index's back
    text = "The quokka is a small marsupial."
    collection.add(
        [ChunkRecord("x-1", text, {"source": "/x.md", "doc_id": "x"}, embedder.embed([text])[0])]
    )
    hits = retriever.search("quokka", 3, SearchMode.LEXICAL)
    assert [h.chunk_id for h in hits] == ["x-1"]


def test_hits_carry_both_retrievers_scores_and_ranks(
    retriever: Retriever, settings: RetrievalSettings
) -> None:
    hits = retriever.search("how many days of paid holidays", 3)
    top = hits[0]
    assert "25 days of paid holidays" in top.text
    assert top.source.endswith("work/leave.md")
    assert top.section == "Holidays"
    assert top.dense_rank == 1
    assert top.lexical_rank == 1
    # Score fusion: the best of each retriever scales to 1.
    assert settings.fusion == "score"
    assert top.score == pytest.approx(settings.dense_weight + settings.lexical_weight)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    for hit in hits:
        assert 0.0 <= hit.score <= settings.dense_weight + settings.lexical_weight
    dense = retriever.search("how many days of paid holidays", 3, SearchMode.DENSE)
    assert dense[0].lexical_rank is None
    assert dense[0].score == pytest.approx(dense[0].dense_score or 0)


def test_a_search_reports_the_time_of_each_stage_it_ran(
    retriever: Retriever, embedder: FakeEmbedder
) -> None:
    question = "how many days of paid holidays"
    ran = {
        SearchMode.HYBRID: {"index", "embed", "dense", "lexical", "fusion", "texts"},
        SearchMode.DENSE: {"index", "embed", "dense", "fusion", "texts"},
        SearchMode.LEXICAL: {"index", "lexical", "fusion", "texts"},
    }
    for mode, stages in ran.items():
        timings: dict[str, float] = {}
        start = time.perf_counter()
        hits = retriever.search(question, 3, mode, timings=timings)
        whole = time.perf_counter() - start
        assert set(timings) == stages, mode
        assert set(timings) <= set(STAGES)
        assert all(seconds >= 0 for seconds in timings.values())
        assert sum(timings.values()) <= whole  # parts of the one search, none counted twice
        assert hits == retriever.search(question, 3, mode)  # measuring changes nothing found
    # A vector passed in is not embedded again; neighbours are a stage of their own.
    timings = {}
    vector = embedder.embed_query(question)
    retriever.search(question, 2, vector=vector, neighbours=1, timings=timings)
    assert "embed" not in timings
    assert "neighbours" in timings
    # A caller's dict adds up over several searches (a question over several collections).
    before = dict(timings)
    retriever.search(question, 2, vector=vector, timings=timings)
    assert all(timings[stage] >= seconds for stage, seconds in before.items())
    assert timings["dense"] > before["dense"]


def test_a_process_that_searches_runs_blas_on_one_thread(
    retriever: Retriever, collection: Collection, settings: RetrievalSettings
) -> None:
    """numpy's BLAS threads spun after the exact search's product and held the cores that
    torch needed for the next query's encoding (`retrieval.dense.one_blas_thread`)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    assert threads()  # numpy's OpenBLAS at least is loaded
    threadpool_limits(limits=2, user_api="blas")  # as a library loaded later starts
    assert retriever.search("paid holidays", 1)
    DenseSearch(collection, settings.exact_search_max_chunks)
    assert set(threads()) == {1}


def test_lexical_finds_a_rare_word(retriever: Retriever) -> None:
    hits = retriever.search("zorblax", 2, SearchMode.LEXICAL)
    assert hits
    assert all("zorblax" in h.text for h in hits)


@pytest.mark.parametrize("mode", list(SearchMode))
def test_filters_apply_to_both_retrievers(
    mode: SearchMode,
    collection: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    corpus: Path,
    settings: RetrievalSettings,
) -> None:
    ingest(collection, embedder, indexes, corpus / "pets")
    service = IngestService(IngestSettings(), collection, lambda: embedder, indexes)
    service.run([corpus / "work"], meta={"team": "hr"})
    retriever = Retriever(collection, embedder, indexes, settings)
    question = "how many days per day"
    for pairs, allowed in (
        (["source=pets"], {"cats.md", "dogs.md"}),
        (["source=*/leave.md"], {"leave.md"}),
        (["team=hr"], {"leave.md", "manual.md"}),
        (["team=hr", "section=sick*"], {"leave.md"}),
    ):
        hits = retriever.search(question, 10, mode, SearchFilter.parse(pairs))
        assert hits, pairs
        assert {Path(h.source).name for h in hits} <= allowed, pairs
    assert retriever.search(question, 5, mode, SearchFilter.parse(["source=nowhere"])) == []


def test_neighbours_expand_within_the_section_without_duplicates(retriever: Retriever) -> None:
    plain = retriever.search("Step 5 zorblax valve", 2, SearchMode.LEXICAL)
    hits = retriever.search("Step 5 zorblax valve", 2, SearchMode.LEXICAL, neighbours=1)
    assert [h.chunk_id for h in hits] == [h.chunk_id for h in plain]
    shown = [i for h in hits for i in (h.chunk_id, *h.neighbours)]
    assert len(shown) == len(set(shown))
    assert any(h.neighbours for h in hits)
    for hit in hits:
        assert hit.context is not None
        assert hit.text in hit.context
        assert "Holidays" not in hit.context  # never crosses into another section


def test_join_overlapping() -> None:
    assert join_overlapping("alpha beta gamma delta epsilon", "gamma delta epsilon zeta") == (
        "alpha beta gamma delta epsilon zeta"
    )
    assert join_overlapping("abc", "def") == "abc\ndef"


def test_rrf_fusion_scores_by_rank(retriever: Retriever, settings: RetrievalSettings) -> None:
    rrf = settings.model_copy(update={"fusion": "rrf"})
    ranked = Retriever(retriever.collection, retriever.embedder, retriever.indexes, rrf)
    top = ranked.search("how many days of paid holidays", 3)[0]
    assert (top.dense_rank, top.lexical_rank) == (1, 1)
    assert top.score == pytest.approx((rrf.dense_weight + rrf.lexical_weight) / (rrf.rrf_k + 1))
    assert ranked.fusion_summary()["method"] == "rrf"


SQUASH = "The --squash option combines every commit into a single commit."


def repeat_option(corpus: Path, pages: tuple[str, ...]) -> str:
    """The same option text in several manual pages (as Git's merge, pull and rebase pages
    have); returns the text."""
    for page in pages:
        (corpus / f"git-{page}.md").write_text(f"# git {page}\n## Options\n{SQUASH}\n")
    return SQUASH


def test_a_passage_repeated_in_several_documents_takes_one_place(
    collection: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    corpus: Path,
    settings: RetrievalSettings,
) -> None:
    # The same option text in three manual pages (as Git's merge, pull and rebase pages have).
    option = repeat_option(corpus, ("merge", "pull", "rebase"))
    ingest(collection, embedder, indexes, corpus)
    retriever = Retriever(collection, embedder, indexes, settings)
    hits = retriever.search("squash option single commit", k=4)
    texts = [" ".join(hit.text.split()) for hit in hits]
    assert texts.count(option) == 1
    assert texts[0] == option  # the best-ranked copy stays
    assert len(hits) == 4  # the places the copies left go to other passages
    # Each retriever alone too (what hybrid search is compared with): one place, k hits.
    for mode in (SearchMode.DENSE, SearchMode.LEXICAL):
        for k in (1, 4):
            alone = retriever.search("squash option single commit", k=k, mode=mode)
            texts = [" ".join(h.text.split()) for h in alone]
            assert len(texts) == len(set(texts))
            assert texts[0] == option
            # BM25 finds the three copies only: one passage; dense search ranks every chunk.
            assert len(texts) == (k if mode == SearchMode.DENSE else 1)


def test_a_search_alone_looks_deeper_when_repeats_fill_its_first_look(
    collection: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    corpus: Path,
    settings: RetrievalSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dense search alone first looks at twice `k` candidates: six copies fill that look for
    k=2, so it looks again, deeper, once, and still embeds the question once."""
    option = repeat_option(corpus, tuple(f"copy-{n}" for n in range(6)))
    ingest(collection, embedder, indexes, corpus)
    retriever = Retriever(collection, embedder, indexes, settings)
    depths: list[int | None] = []
    search = retriever.search

    def spy(*args: Any, **kwargs: Any) -> Any:
        depths.append(kwargs.get("depth", args[7] if len(args) > 7 else None))
        return search(*args, **kwargs)

    monkeypatch.setattr(retriever, "search", spy)
    embedder.calls.clear()
    hits = retriever.search("squash option single commit", k=2, mode=SearchMode.DENSE)
    texts = [" ".join(hit.text.split()) for hit in hits]
    assert texts[0] == option
    assert len(texts) == len(set(texts)) == 2
    assert depths == [None, 16]
    assert embedder.calls == [1]


class ShortestFirst:
    """A reranker that prefers short passages (any order unlike the fusion's will do)."""

    def score(self, question: str, passages: Sequence[str]) -> list[float]:
        self.read = list(passages)
        return [-float(len(p)) for p in passages]


@pytest.mark.parametrize("depth", [2, 4, 20])
def test_the_reranker_returns_k_distinct_passages_when_there_are_k(
    collection: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    corpus: Path,
    settings: RetrievalSettings,
    depth: int,
) -> None:
    """Copies of a passage are set aside before reranking: the reranker reads distinct
    passages, and `k` come back (before, copies in its depth left the answer short)."""
    repeat_option(corpus, ("merge", "pull", "rebase"))
    ingest(collection, embedder, indexes, corpus)
    reranker = ShortestFirst()
    retriever = Retriever(
        collection, embedder, indexes, settings.model_copy(update={"rerank_depth": depth}),
        reranker=reranker,
    )  # fmt: skip
    hits = retriever.search("squash option single commit", k=4)
    assert len(hits) == 4
    texts = [" ".join(hit.text.split()) for hit in hits]
    assert len(set(texts)) == 4
    read = [" ".join(text.split()) for text in reranker.read]
    # The best `depth` distinct candidates, however many hits are asked for; past them, the
    # fused order.
    assert len(read) == len(set(read)) == min(depth, collection.count() - 2)
    reranked = texts[:depth]
    assert [len(t) for t in reranked] == sorted(len(t) for t in reranked)  # the reranker's order


@pytest.mark.parametrize("exact_max", [20_000, 0])
def test_a_small_collection_is_searched_exactly(
    exact_max: int,
    collection: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    corpus: Path,
    settings: RetrievalSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Up to `exact_search_max_chunks` chunks, dense search compares the question with every
    stored vector and does not ask the HNSW index (which can miss a chunk for good); the order
    is exact cosine's, a filter applies, and a chunk ingested later is found. Above it (0
    here), the index answers."""
    ingest(collection, embedder, indexes, corpus / "pets")
    settings = settings.model_copy(
        update={"exact_search_max_chunks": exact_max, "lexical_check_seconds": 0.0}
    )
    asked = spy_on_index(monkeypatch, collection)
    retriever = Retriever(collection, embedder, indexes, settings)

    def exact(question: str) -> list[tuple[str, float]]:
        stored = collection.vectors()
        assert stored is not None
        ids, vectors = stored
        q = np.asarray(embedder.embed_query(question))
        cosine = vectors @ q / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
        return sorted(zip(ids, cosine.tolist(), strict=True), key=lambda p: -p[1])

    question = "where do cats sleep all day"
    hits = retriever.search(question, 3, SearchMode.DENSE)
    expected = exact(question)[:3]
    assert [round(h.score, 5) for h in hits] == [round(s, 5) for _, s in expected]
    assert hits[0].chunk_id == expected[0][0]
    assert [h.dense_score for h in retriever.search(question, 3, SearchMode.HYBRID)]
    only_dogs = retriever.search(
        question, 5, SearchMode.DENSE, SearchFilter.parse(["source=*/dogs.md"])
    )
    assert only_dogs
    assert {Path(h.source).name for h in only_dogs} == {"dogs.md"}
    assert bool(asked) == (exact_max == 0)

    ingest(collection, embedder, indexes, corpus / "work")
    later = retriever.search("paid holidays per year", 1, SearchMode.DENSE)
    assert Path(later[0].source).name == "leave.md"
    assert bool(asked) == (exact_max == 0)


def lazy_copy(retriever: Retriever, load: Callable[[], Embedder]) -> Retriever:
    """The same search over the same ingested collection, with an embedder loaded on demand."""
    return Retriever(
        retriever.collection, LazyEmbedder(load), retriever.indexes, retriever.settings
    )


def test_a_lazy_embedder_loads_only_when_a_search_embeds(retriever: Retriever) -> None:
    loads: list[int] = []

    def load() -> Embedder:
        loads.append(1)
        return retriever.embedder

    lazy = lazy_copy(retriever, load)
    lexical = lazy.search("zorblax valve", 3, SearchMode.LEXICAL)
    assert lexical
    assert "zorblax" in lexical[0].text
    assert loads == []  # a lexical search never needed the model
    hybrid = lazy.search("zorblax valve", 3, SearchMode.HYBRID)
    assert any(h.dense_rank is not None for h in hybrid)
    assert loads == [1]
    lazy.search("cats", 3, SearchMode.DENSE)
    assert loads == [1]  # loaded once, by the first search that embeds


def test_a_lazy_embedders_load_error_surfaces_when_it_is_first_needed(
    retriever: Retriever,
) -> None:
    def load() -> Embedder:
        raise EmbeddingModelError("cannot load embedding model 'gone'")

    lazy = lazy_copy(retriever, load)
    assert lazy.search("zorblax", 1, SearchMode.LEXICAL)
    with pytest.raises(EmbeddingModelError, match="gone"):
        lazy.search("zorblax", 1, SearchMode.HYBRID)
