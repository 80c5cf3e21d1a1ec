"""Per-collection self-calibration of fusion: chosen from the collection's own pseudo-queries,
stored with it, used by its searches, refused when it came from another embedding model."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from ragtune.ingest.pipeline import IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.adaptation import held_out_queries, score_pseudo
from ragtune.retrieval.calibration import (
    CALIBRATION_KEY,
    Calibration,
    calibrate,
    choose_fusion,
    default_fusion,
    fused_mrr,
    pseudo_queries,
    read_calibration,
    store_calibration,
    stored_calibration,
)
from ragtune.retrieval.embedder import TUNED_PREFIX
from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.fusion import fuse
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.search import Retriever
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import Collection, VectorStore
from tests.support.fakes import FakeEmbedder, InMemoryCollection, spy_on_index

TOPICS = ["river", "forest", "engine", "garden", "harbour", "library", "kitchen", "orchard"]
WORDS = [
    "stone",
    "water",
    "light",
    "copper",
    "yellow",
    "silent",
    "ancient",
    "narrow",
    "bright",
    "quiet",
    "heavy",
    "gentle",
    "rapid",
    "hollow",
    "frozen",
    "golden",
    "marble",
    "velvet",
    "crimson",
    "distant",
]


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder(max_tokens=48)


@pytest.fixture
def indexes(settings: RetrievalSettings, store: VectorStore) -> LexicalIndexes:
    return LexicalIndexes.for_store(settings.data_dir, store)


@pytest.fixture
def ingested(
    tmp_path: Path, collection: Collection, embedder: FakeEmbedder, indexes: LexicalIndexes
) -> Collection:
    """Eight documents, each a section long enough for several chunks of many sentences."""
    rng = random.Random(7)
    root = tmp_path / "corpus"
    root.mkdir()
    for topic in TOPICS:
        sentences = [f"The {topic} {' '.join(rng.sample(WORDS, 6))} {topic}." for _ in range(30)]
        (root / f"{topic}.md").write_text(f"# {topic.title()}\n## About\n{' '.join(sentences)}\n")
    IngestService(
        IngestSettings(chunk_overlap_tokens=0), collection, lambda: embedder, indexes
    ).run([root])
    return collection


def test_choose_fusion_follows_the_retriever_that_ranks_the_answers() -> None:
    defaults = RetrievalSettings()
    default = (defaults.fusion, defaults.lexical_weight, defaults.rrf_k)
    # BM25 puts the answer first and dense a decoy first: lexical weight must outvote dense.
    lexical_knows = [({"decoy": (1, 0.9), "a": (8, 0.2)}, {"a": (1, 5.0)}, frozenset({"a"}))] * 10
    choice, mrr, default_mrr = choose_fusion(lexical_knows, defaults)
    assert mrr == 1.0
    assert default_mrr < 1.0
    assert choice != default
    # BM25 puts a decoy first and misses the answer: a weight that lets it win is not chosen.
    lexical_misleads = [
        ({"a": (1, 0.6), "decoy": (2, 0.59)}, {"decoy": (1, 5.0)}, frozenset({"a"}))
    ] * 10
    choice, mrr, _ = choose_fusion(lexical_misleads, defaults)
    assert mrr == 1.0
    assert fused_mrr(lexical_misleads, choice) == 1.0
    assert fused_mrr(lexical_misleads, ("rrf", 1.0, 10)) < 1.0  # equal weights lose it
    assert fused_mrr(lexical_misleads, ("score", 1.5, 10)) < 1.0


def test_defaults_weighing_dense_almost_nothing_give_a_storable_choice() -> None:
    """Weights within the bounds whose ratio is past them (1 / 0.0005): the defaults' setting,
    read as a dense weight of 1, was a BM25 weight of 2000, which every search then refused."""
    settings = RetrievalSettings(dense_weight=0.0005, lexical_weight=1.0, fusion="score")
    runs = [({"a": (1, 0.9)}, {"a": (1, 5.0)}, frozenset({"a"}))] * 5
    choice, _, _ = choose_fusion(runs, settings)
    assert choice[1] <= 1000
    stored = Calibration(lexical_weight=2000.0, rrf_k=10, embedding_model="m")
    with pytest.raises(RetrievalError, match="cannot be stored: lexical_weight is 2000"):
        store_calibration(InMemoryCollection("docs", "m"), stored)


def test_score_fusion_scales_each_retriever_to_its_best() -> None:
    dense = {"a": (1, 0.8), "b": (2, 0.6), "c": (3, 0.4)}
    lexical = {"c": (1, 10.0), "d": (2, 5.0)}
    fused = fuse(dense, lexical, "score", 1.0, 0.5, 10)
    assert fused == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.5, "d": 0.25})
    rrf = fuse(dense, lexical, "rrf", 1.0, 0.5, 10)
    assert rrf["c"] == pytest.approx(1 / 13 + 0.5 / 11)
    assert fuse({"a": (1, 0.3)}, {}, "score", 1.0, 0.5, 10) == {"a": 1.0}  # one: the best
    assert fuse({}, {"x": (1, 0.0)}, "score", 1.0, 0.5, 10) == {"x": 0.0}  # no BM25 match


def test_pseudo_queries_are_thinned_sentences_whose_answers_are_neighbours(
    ingested: Collection, indexes: LexicalIndexes
) -> None:
    lexical = indexes.current(ingested)
    drawn = pseudo_queries(ingested, lexical, 30, seed=1)
    assert len(drawn) == 30
    texts = {c.id: c.text or "" for c in ingested.scan(with_text=True)}
    for query in drawn:
        assert query.targets
        assert query.chunk_id not in query.targets
        assert all(w in texts[query.chunk_id] for w in query.text.split())
        assert len(query.text.split()) < 12  # thinned from a sentence of 10 words
    assert pseudo_queries(ingested, lexical, 30, seed=1) == drawn  # a seed repeats the draw


def test_calibration_is_stored_used_and_nothing_else_changes(
    ingested: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    settings: RetrievalSettings,
) -> None:
    revision, count = ingested.revision(), ingested.count()
    retriever = Retriever(ingested, embedder, indexes, settings)
    assert retriever.fusion_summary()["from"] == "defaults"
    result = calibrate(ingested, indexes.current(ingested), embedder, settings, queries=60)
    assert result.pseudo_queries >= 20
    assert result.embedding_model == embedder.model_id
    assert result.mrr >= result.default_mrr
    # Choose something the defaults are not, so that its use is visible.
    chosen = Calibration(
        lexical_weight=0.7 if settings.lexical_weight != 0.7 else 0.5,
        rrf_k=40,
        embedding_model=embedder.model_id,
    )
    store_calibration(ingested, chosen)
    assert (ingested.revision(), ingested.count()) == (revision, count)
    assert stored_calibration(ingested) == chosen

    fresh = Retriever(ingested, embedder, indexes, settings)
    summary = fresh.fusion_summary()
    assert summary["from"] == "calibration"
    assert (summary["lexical_weight"], summary["rrf_k"]) == (chosen.lexical_weight, 40)
    hit = fresh.search("river stone water", 1)[0]
    expected = 1.0 / (40 + hit.dense_rank) if hit.dense_rank else 0.0
    expected += chosen.lexical_weight / (40 + hit.lexical_rank) if hit.lexical_rank else 0.0
    assert hit.score == pytest.approx(expected)

    # A fusion setting given explicitly wins over the collection's calibration.
    explicit = Retriever(ingested, embedder, indexes, settings.model_copy(update={"rrf_k": 10}))
    assert explicit.fusion_summary()["from"] == "settings"
    assert explicit.fusion().rrf_k == 10

    store_calibration(ingested, None)
    assert stored_calibration(ingested) is None
    assert Retriever(ingested, embedder, indexes, settings).fusion_summary()["from"] == "defaults"


def test_a_collection_read_with_a_tuned_embedder_weighs_bm25_less(
    tmp_path: Path, store: VectorStore, indexes: LexicalIndexes, settings: RetrievalSettings
) -> None:
    """`ragtune tune embedder`'s collections search with `tuned_lexical_weight` for BM25 (the
    tuned dense ranking is the stronger one), under a calibration and explicit settings."""
    tuned = FakeEmbedder(max_tokens=48)
    tuned.model_id = TUNED_PREFIX + "docs-1"
    collection = store.collection("tuned-docs", tuned.model_id, create=True)
    root = tmp_path / "tuned-corpus"
    root.mkdir()
    for topic in TOPICS[:3]:
        (root / f"{topic}.md").write_text(f"# {topic}\nThe {topic} is {' '.join(WORDS[:8])}.\n")
    IngestService(IngestSettings(), collection, lambda: tuned, indexes).run([root])
    assert settings.tuned_lexical_weight != settings.lexical_weight

    retriever = Retriever(collection, tuned, indexes, settings)
    summary = retriever.fusion_summary()
    assert summary["from"] == "tuned defaults"
    assert summary["lexical_weight"] == settings.tuned_lexical_weight
    assert summary["method"] == settings.fusion
    weighted = settings.model_copy(update={"lexical_weight": settings.tuned_lexical_weight})
    same = Retriever(collection, tuned, indexes, weighted)
    assert same.fusion_summary()["from"] == "settings"
    question = "river stone water light"
    assert [(h.chunk_id, h.score) for h in retriever.search(question, 3)] == [
        (h.chunk_id, h.score) for h in same.search(question, 3)
    ]

    # A calibration of it is measured against these defaults, the ones it replaces.
    assert default_fusion(collection, settings).lexical_weight == settings.tuned_lexical_weight
    untuned = store.collection("untuned-docs", "fake-bow-64", create=True)
    assert default_fusion(untuned, settings) is settings
    explicit = settings.model_copy(update={"rrf_k": 20})  # a fusion setting given: it wins
    assert default_fusion(collection, explicit).lexical_weight == settings.lexical_weight

    # A BM25 weight given explicitly wins, and so does a calibration of the tuned collection.
    explicit = settings.model_copy(update={"lexical_weight": 0.9})
    assert Retriever(collection, tuned, indexes, explicit).fusion().lexical_weight == 0.9
    calibration = Calibration(lexical_weight=0.7, rrf_k=40, embedding_model=tuned.model_id)
    store_calibration(collection, calibration)
    summary = Retriever(collection, tuned, indexes, settings).fusion_summary()
    assert (summary["from"], summary["lexical_weight"]) == ("calibration", 0.7)


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), 1e308, 1000.5])
def test_fusion_weights_refuse_what_is_not_a_weight(value: float) -> None:
    """1e308 is finite, but two of them sum to infinity: every fused score would tie."""
    for name in ("dense_weight", "lexical_weight", "tuned_lexical_weight"):
        with pytest.raises(ValidationError, match="must be a number from 0 to 1000"):
            RetrievalSettings(**{name: value})


def test_a_calibration_from_another_embedding_model_is_refused(
    ingested: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    settings: RetrievalSettings,
) -> None:
    other = Calibration(lexical_weight=1.0, rrf_k=5, embedding_model="another-model")
    with pytest.raises(RetrievalError, match="another-model"):
        store_calibration(ingested, other)
    assert stored_calibration(ingested) is None  # nothing stored
    # One written by something else is refused when read, with what to do.
    ingested.set_metadata_value(CALIBRATION_KEY, other.to_json())
    with pytest.raises(RetrievalError, match="ragtune tune retrieval --collection docs --store"):
        Retriever(ingested, embedder, indexes, settings).search("river", 3)
    ingested.set_metadata_value(CALIBRATION_KEY, "{not json")
    with pytest.raises(RetrievalError, match="unreadable calibration"):
        stored_calibration(ingested)


def test_collections_too_small_to_calibrate_say_so(
    store: VectorStore, embedder: FakeEmbedder, indexes: LexicalIndexes, settings: RetrievalSettings
) -> None:
    empty = store.collection("empty", embedder.model_id, create=True)
    with pytest.raises(RetrievalError, match="empty: ingest documents"):
        calibrate(empty, indexes.current(empty), embedder, settings)


def test_chunks_without_a_neighbour_in_their_section_are_said_to_give_no_pseudo_queries(
    tmp_path: Path,
    collection: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    settings: RetrievalSettings,
) -> None:
    # Long sentences, but each document one chunk: no chunk has an answer beside it.
    root = tmp_path / "notes"
    root.mkdir()
    for topic in TOPICS * 3:
        (root / f"{topic}-{len(list(root.iterdir()))}.md").write_text(
            f"# {topic.title()}\nThe {topic} by the {' '.join(WORDS[:8])} stays.\n"
        )
    IngestService(IngestSettings(), collection, lambda: embedder, indexes).run([root])
    with pytest.raises(RetrievalError) as refused:
        calibrate(collection, indexes.current(collection), embedder, settings)
    message = str(refused.value)
    assert "gives only 0 pseudo-queries from its 24 chunks" in message
    assert "the chunk before or after it in its document is in the same section" in message


@pytest.mark.parametrize("exact_max", [20_000, 0])
def test_calibration_and_tuning_rank_pseudo_queries_as_search_does(
    exact_max: int,
    ingested: Collection,
    embedder: FakeEmbedder,
    indexes: LexicalIndexes,
    settings: RetrievalSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Up to `exact_search_max_chunks` chunks search compares the question with every stored
    vector; calibration and the tuned embedder's measurement do the same (the HNSW index is
    not asked), and ask the index above it (0 here), as search does."""
    asked = spy_on_index(monkeypatch, ingested)
    chosen = settings.model_copy(update={"exact_search_max_chunks": exact_max})
    lexical = indexes.current(ingested)
    result = calibrate(ingested, lexical, embedder, chosen, queries=40)
    assert result.pseudo_queries >= 20
    assert bool(asked) == (exact_max == 0)

    asked.clear()
    held = held_out_queries(ingested, lexical, 30, seed=0)
    score = score_pseudo(ingested, embedder, held, lexical, exact_max)
    assert score.queries == len(held) > 0
    assert 0.0 < score.mrr <= 1.0
    assert bool(asked) == (exact_max == 0)


def test_the_draw_follows_the_seed_not_the_order_the_store_returns(
    ingested: Collection, indexes: LexicalIndexes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chroma returns the chunks asked for in the order they were stored in: the pseudo-queries
    must come in the seed's shuffled order all the same, not from the earliest-stored chunks."""
    lexical = indexes.current(ingested)
    stored = [c.id for c in ingested.scan()]
    drawn = pseudo_queries(ingested, lexical, 10, seed=2)
    positions = [stored.index(q.chunk_id) for q in drawn]
    assert positions != sorted(positions)  # the seed's order, not the store's
    asked_for = ingested.get
    monkeypatch.setattr(
        ingested, "get", lambda ids, with_text=True: asked_for(list(reversed(ids)), with_text)
    )
    assert pseudo_queries(ingested, lexical, 10, seed=2) == drawn  # whatever order it returns


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("[1, 2]", "not an object"),
        ("5", "not an object"),
        ('{"lexical_weight": 0.5, "rrf_k": -1}', "rrf_k is -1"),
        ('{"lexical_weight": 0.5, "rrf_k": 2.5}', "rrf_k is 2.5, not an integer"),
        ('{"lexical_weight": "0.5", "rrf_k": 10}', "lexical_weight is '0.5', not a"),
        ('{"lexical_weight": true, "rrf_k": 10}', "lexical_weight is True"),
        ('{"lexical_weight": NaN, "rrf_k": 10}', "lexical_weight is nan"),
        ('{"lexical_weight": 0.5, "dense_weight": -1e308, "rrf_k": 10}', "dense_weight is"),
        ('{"lexical_weight": 0.5, "dense_weight": Infinity, "rrf_k": 10}', "dense_weight is"),
        ('{"lexical_weight": 1e308, "dense_weight": 1e308, "rrf_k": 10}', "from 0 to 1000"),
        ('{"lexical_weight": 0.5, "rrf_k": 1000000000000000000000000000000}', "rrf_k is 1"),
        ('{"lexical_weight": 0, "dense_weight": 0, "rrf_k": 10}', "both 0"),
        ('{"lexical_weight": 0.5, "rrf_k": 10, "mrr": "high"}', "mrr is 'high'"),
        ('{"lexical_weight": 0.5, "rrf_k": 10, "fusion": "max"}', "unknown fusion method"),
        ('{"rrf_k": 10}', "lexical_weight"),
    ],
)
def test_a_stored_calibration_search_cannot_fuse_with_is_refused(
    raw: str, why: str, collection: Collection, embedder: FakeEmbedder
) -> None:
    """Written by something else: refused as unreadable (saying what to do), never a
    ZeroDivisionError, a TypeError or NaN scores in the middle of a search."""
    text = raw
    if raw.startswith("{"):  # measured with the collection's model: only the values are wrong
        text = json.dumps({**json.loads(raw), "embedding_model": embedder.model_id})
    collection.set_metadata_value(CALIBRATION_KEY, text)
    with pytest.raises(RetrievalError, match="unreadable calibration") as refused:
        stored_calibration(collection)
    message = str(refused.value)
    assert why in message
    assert "ragtune tune retrieval --collection docs --store" in message
    assert "--reset" in message
    calibration, problem = read_calibration(collection)
    assert calibration is None
    assert problem is not None
    assert why in problem


def test_a_refused_calibration_says_reset_is_the_other_way_out(collection: Collection) -> None:
    other = Calibration(lexical_weight=1.0, rrf_k=0, embedding_model="another-model")
    collection.set_metadata_value(CALIBRATION_KEY, other.to_json())
    with pytest.raises(RetrievalError, match="another-model") as refused:
        stored_calibration(collection)
    assert "ragtune tune retrieval --collection docs --reset" in str(refused.value)
    # rrf_k 0 is a fusion like any other (ranks start at 1): read back as it was stored.
    collection.set_metadata_value(
        CALIBRATION_KEY, replace(other, embedding_model="fake-bow-64").to_json()
    )
    assert read_calibration(collection) == (replace(other, embedding_model="fake-bow-64"), None)


def test_fusion_settings_that_would_divide_by_zero_are_refused() -> None:
    with pytest.raises(ValidationError, match="rrf_k"):
        RetrievalSettings(fusion="rrf", rrf_k=-1)
    assert RetrievalSettings(fusion="rrf", rrf_k=0).rrf_k == 0
    with pytest.raises(ValidationError, match="rrf_k"):
        RetrievalSettings(fusion="rrf", rrf_k=10**30)  # every score 1e-30: fusion by nothing
    with pytest.raises(ValidationError, match="dense_weight"):
        RetrievalSettings(dense_weight=0, lexical_weight=0)
    assert RetrievalSettings(dense_weight=0).dense_weight == 0  # BM25 alone
    # No fusion can take fewer than one candidate from each retriever.
    for depth in (0, -5):
        with pytest.raises(ValidationError, match="fusion_depth"):
            RetrievalSettings(fusion_depth=depth)


def test_calibration_measures_against_bm25_alone_when_dense_weighs_nothing(
    ingested: Collection, embedder: FakeEmbedder, indexes: LexicalIndexes
) -> None:
    lexical_only = RetrievalSettings(dense_weight=0.0, lexical_weight=0.6)
    runs = [({"decoy": (1, 0.9), "a": (8, 0.2)}, {"a": (1, 5.0)}, frozenset({"a"}))] * 5
    _, mrr, default_mrr = choose_fusion(runs, lexical_only)
    assert default_mrr == 1.0  # BM25 ranks the answer first, and only BM25 counts
    assert mrr == 1.0
    result = calibrate(ingested, indexes.current(ingested), embedder, lexical_only, queries=40)
    assert result.pseudo_queries >= 20
    assert 0.0 <= result.default_mrr <= 1.0


def test_a_calibration_in_words_names_a_dense_weight_other_than_one() -> None:
    """What `docs list` and `tune retrieval` print: a stored dense weight was left out."""
    weighted = Calibration(lexical_weight=0.5, rrf_k=40, dense_weight=2.0, embedding_model="m")
    assert weighted.describe() == "RRF, dense weight 2.0, lexical weight 0.5, rrf_k 40"
    assert "dense" not in replace(weighted, dense_weight=1.0).describe()
