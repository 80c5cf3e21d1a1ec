"""Retrieval evaluation over a corpus: ingested into a temporary collection, scored, and the
collection removed whatever happens (the real embedding model and an embedded Chroma)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from ragtune.evals.retrieval import evaluate_retrieval
from ragtune.ingest.pipeline import IngestProgress, IngestService, IngestSummary
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.adaptation import dev_metrics
from ragtune.retrieval.conversation import unknown_words_in
from ragtune.retrieval.embedder import load_embedder
from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.evaluation import QAItem, load_qa
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.search import SearchMode
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import open_store

pytestmark = pytest.mark.slow

OWLS = (
    "Owls hunt at night. The soft fringes of their feathers break up the air so that their "
    "flight makes almost no sound."
)
TEA = (
    "Green tea leaves are steamed or pan-fired soon after picking, which stops the enzymes that "
    "would oxidise them."
)
QA = [
    QAItem("owls", "How do owls fly without a sound?", OWLS.split(". ")[1], "owls.md"),
    QAItem("tea", "Why does green tea not oxidise?", TEA, "tea.md"),
]


class Recorder:
    """Remembers what the evaluation told its reporter, in order."""

    def __init__(self, fail_scoring: bool = False) -> None:
        self.events: list[str] = []
        self.fail_scoring = fail_scoring

    @contextmanager
    def ingesting(self) -> Iterator[IngestProgress | None]:
        self.events.append("ingesting")
        yield None

    def ingested(self, summary: IngestSummary) -> None:
        self.events.append(f"ingested {len(summary.files)} files into {summary.collection}")

    @contextmanager
    def scoring(self, questions: int) -> Iterator[None]:
        self.events.append(f"scoring {questions}")
        if self.fail_scoring:
            raise RuntimeError("scoring failed")
        yield


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "owls.md").write_text(f"# Owls\n\n{OWLS}\n")
    (folder / "tea.md").write_text(f"# Tea\n\n{TEA}\n")
    return folder


def assert_store_is_as_it_was(settings: RetrievalSettings) -> None:
    with open_store(settings, "read") as store:
        assert store.list_collections() == []
    assert not [p for p in (settings.data_dir / "lexical").rglob("*") if "eval-" in p.name]


def test_a_corpus_is_scored_in_a_temporary_collection(corpus: Path, tmp_path: Path) -> None:
    settings = RetrievalSettings(data_dir=tmp_path / "data")
    reporter = Recorder()
    report = evaluate_retrieval(
        settings, IngestSettings(), QA, list(SearchMode), [1, 3], corpus=corpus, reporter=reporter
    )
    assert report.collection.startswith("eval-")
    assert report.questions == report.ceiling == 2
    hybrid = next(m for m in report.modes if m.mode == "hybrid")
    assert hybrid.metrics["recall@3"] == 1.0
    assert set(hybrid.metrics) == {"recall@1", "recall@3", "mrr@10", "ndcg@10"}
    assert reporter.events == [
        "ingesting",
        f"ingested 2 files into {report.collection}",
        "scoring 2",
    ]
    assert_store_is_as_it_was(settings)


def test_the_temporary_collection_goes_when_the_evaluation_fails(
    corpus: Path, tmp_path: Path
) -> None:
    settings = RetrievalSettings(data_dir=tmp_path / "data")
    with pytest.raises(RuntimeError, match="scoring failed"):
        evaluate_retrieval(
            settings, IngestSettings(), QA, [SearchMode.DENSE], [1], corpus=corpus,
            reporter=Recorder(fail_scoring=True),
        )  # fmt: skip
    assert_store_is_as_it_was(settings)


def test_a_corpus_that_is_not_a_folder_is_refused_before_anything_opens(tmp_path: Path) -> None:
    settings = RetrievalSettings(data_dir=tmp_path / "data")
    with pytest.raises(RetrievalError, match="is not a folder"):
        evaluate_retrieval(
            settings, IngestSettings(), QA, [SearchMode.DENSE], [1], corpus=tmp_path / "qa.json"
        )
    assert not settings.data_dir.exists()


def test_a_corpus_that_gives_no_chunks_is_refused_rather_than_scored(tmp_path: Path) -> None:
    settings = RetrievalSettings(data_dir=tmp_path / "data")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RetrievalError, match="gave no chunks to evaluate: it is empty"):
        evaluate_retrieval(settings, IngestSettings(), QA, [SearchMode.DENSE], [1], corpus=empty)
    assert_store_is_as_it_was(settings)


BREAD = (
    "Sourdough rises slowly because wild yeast works that way: it takes a whole night, and the "
    "long rise is what gives the bread its sour taste."
)


FOLLOW_UP = "Why does it work that way?"
"""Read alone it finds the bread ("works that way"); with the question before it, the owls."""


def owls_then_follow_up(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The corpus with the bread too, and a conversation about owls ending in `FOLLOW_UP`."""
    # Three passages use too few words to tell small talk by: here the rule counts from one.
    monkeypatch.setattr(
        "ragtune.retrieval.conversation.unknown_words_in", partial(unknown_words_in, vocabulary=0)
    )
    (corpus / "bread.md").write_text(f"# Bread\n\n{BREAD}\n")
    return [
        {"role": "user", "content": QA[0].question},
        {"role": "assistant", "content": "Their feathers are soft."},
        {"role": "user", "content": FOLLOW_UP},
    ]


def test_a_conversation_is_searched_with_the_question_it_follows(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = owls_then_follow_up(corpus, monkeypatch)
    follow_up = FOLLOW_UP
    bakery = "Which bakery in Paris sells the best croissants?"
    small_talk = [*conversation[:2], {"role": "user", "content": bakery}]
    qa_file = tmp_path / "qa.json"
    items = [
        {"id": "follow-up", "messages": conversation, "answer_passage": QA[0].answer_passage},
        {"id": "alone", "question": follow_up, "answer_passage": QA[0].answer_passage},
        # Words the documents lack give it a topic of its own: not read with the owls.
        {"id": "own topic", "messages": small_talk, "answer_passage": QA[0].answer_passage},
    ]
    qa_file.write_text(json.dumps(items))
    report = evaluate_retrieval(
        RetrievalSettings(data_dir=tmp_path / "data"), IngestSettings(), load_qa(qa_file),
        list(SearchMode), [1], corpus=corpus,
    )  # fmt: skip
    for mode in report.modes:
        found = {run["id"]: run["hits"][0]["relevant"] for run in mode.runs}
        # The follow-up alone finds the bread; with the question before it, the owls.
        assert found == {"follow-up": True, "alone": False, "own topic": False}, mode.mode
    (run, _, _) = report.modes[0].runs
    assert run["history"] == [QA[0].question]


def test_tune_embedders_dev_set_reads_a_conversation_as_eval_retrieval_does(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `tune embedder --dev-set` decides on these metrics: a follow-up was searched alone there
    # (every conversation scored 0 before and after, and "no worse" adopted the model).
    conversation = owls_then_follow_up(corpus, monkeypatch)
    follow_up = FOLLOW_UP
    qa_file = tmp_path / "qa.json"
    qa_file.write_text(
        json.dumps(
            [
                {"id": "follow-up", "messages": conversation, "answer_passage": OWLS},
                {"id": "alone", "question": follow_up, "answer_passage": OWLS},
            ]
        )
    )
    followed, alone = load_qa(qa_file)
    settings = RetrievalSettings(data_dir=tmp_path / "data")
    embedder = load_embedder(settings)
    with open_store(settings, "write") as store:
        indexes = LexicalIndexes.for_store(settings.data_dir, store)
        docs = store.collection("docs", embedder.model_id, create=True)
        IngestService(IngestSettings(), docs, lambda: embedder, indexes).run([corpus])
        for mode, metrics in dev_metrics(docs, embedder, indexes, settings, [followed]).items():
            assert metrics["recall@1"] == 1.0, mode
        for mode, metrics in dev_metrics(docs, embedder, indexes, settings, [alone]).items():
            assert metrics["recall@1"] == 0.0, mode  # the follow-up alone finds the bread
