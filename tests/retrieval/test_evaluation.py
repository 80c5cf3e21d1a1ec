"""The relevance rule and the metrics, on cases worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.evaluation import (
    QAItem,
    RelevanceJudge,
    is_relevant,
    load_qa,
    ndcg,
    ngrams,
    recall_at,
    reciprocal_rank,
    words,
)

ANSWER = "Use the open function and iterate over the file object line by line."
# 13 words -> 9 distinct 5-grams


def test_words_are_lowercase_alphanumeric_runs() -> None:
    assert words("Don't use `os.system()`, use subprocess_run!") == [
        "don", "t", "use", "os", "system", "use", "subprocess_run",
    ]  # fmt: skip
    assert len(ngrams(words(ANSWER))) == 9


def test_chunk_inside_the_answer_is_relevant() -> None:
    # 6 words -> 2 grams, both in the answer: 2/2 >= half of the chunk's grams
    assert is_relevant("iterate over the file object line", ANSWER)


def test_chunk_containing_half_the_answer_is_relevant() -> None:
    # shares "use the open function and", ..., "and iterate over the file": 5 of the
    # answer's 9 grams (>= half), though most of the long chunk is about something else
    chunk = "Use the open function and iterate over the file. " + "unrelated words " * 40
    assert is_relevant(chunk, ANSWER)


def test_chunk_sharing_less_than_half_either_way_is_not_relevant() -> None:
    # shares 3 of the answer's 9 grams, and 3 of its own 9 grams
    chunk = "Use the open function and iterate over now something else entirely here yes"
    shared = len(ngrams(words(chunk)) & ngrams(words(ANSWER)))
    assert shared == 3
    assert len(ngrams(words(chunk))) == 9
    assert not is_relevant(chunk, ANSWER)


def test_fragment_under_five_words_is_never_relevant() -> None:
    assert not is_relevant("line by line.", ANSWER)
    assert not is_relevant("the file object line", ANSWER)  # 4 words, all in the answer


def test_judge_agrees_with_the_rule() -> None:
    qa = [
        QAItem("a", "q1", ANSWER),
        QAItem("b", "q2", "Python uses indentation to group statements into blocks of code."),
    ]
    judge = RelevanceJudge(qa)
    chunks = [
        "iterate over the file object line",
        "Python uses indentation to group statements",
        "nothing to see here at all today",
        "line by line",
    ]
    for chunk in chunks:
        expected = {n for n, item in enumerate(qa) if is_relevant(chunk, item.answer_passage)}
        assert judge.relevant_to(chunk) == expected
    assert judge.relevant_to(chunks[0]) == {0}
    assert judge.relevant_to(chunks[1]) == {1}


def test_metrics_by_hand() -> None:
    flags = [False, False, True, False, True]
    assert recall_at(flags, 1) == 0.0
    assert recall_at(flags, 3) == 1.0
    assert reciprocal_rank(flags) == pytest.approx(1 / 3)
    assert reciprocal_rank([False] * 10 + [True]) == 0.0  # beyond @10
    # DCG = 1/log2(4) + 1/log2(6); ideal with 2 relevant = 1 + 1/log2(3)
    expected = (0.5 + 1 / math.log2(6)) / (1 + 1 / math.log2(3))
    assert ndcg(flags, relevant_total=2) == pytest.approx(expected)
    # a third relevant chunk exists in the collection but was not retrieved
    ideal3 = 1 + 1 / math.log2(3) + 0.5
    assert ndcg(flags, relevant_total=3) == pytest.approx((0.5 + 1 / math.log2(6)) / ideal3)
    assert ndcg([True], relevant_total=1) == 1.0
    assert ndcg([False, False], relevant_total=0) == 0.0


def test_load_qa_explains_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "qa.json"
    bad.write_text('[{"id": 1, "question": "q"}]')
    with pytest.raises(RetrievalError, match="answer_passage"):
        load_qa(bad)
    with pytest.raises(RetrievalError, match="no such QA file"):
        load_qa(tmp_path / "missing.json")
