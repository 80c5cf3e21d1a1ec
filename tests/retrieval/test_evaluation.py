"""The relevance rule and the metrics, on cases worked out by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.evaluation import (
    QAItem,
    RelevanceJudge,
    evaluate,
    evaluate_conversations,
    is_relevant,
    load_qa,
    ndcg,
    ngrams,
    recall_at,
    reciprocal_rank,
    too_short,
    words,
)
from ragtune.retrieval.search import SearchHit
from ragtune.retrieval.store import ChunkRecord
from tests.support.fakes import InMemoryStore

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
    # Hits judged with their neighbours' text can be relevant where no chunk alone is: the
    # ideal holds at least what the ranking found, so nDCG stays at most 1.
    assert ndcg([True, True, True], relevant_total=1) == 1.0
    assert ndcg([True], relevant_total=0) == 1.0
    assert ndcg([False, True], relevant_total=0) == pytest.approx(1 / math.log2(3))


def test_load_qa_explains_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "qa.json"
    bad.write_text('[{"id": 1, "question": "q"}]')
    with pytest.raises(RetrievalError, match="answer_passage"):
        load_qa(bad)
    with pytest.raises(RetrievalError, match="no such QA file"):
        load_qa(tmp_path / "missing.json")


SQLITE_ANSWER = "SQLite is a small and fast SQL database engine."
OTHER_ANSWER = "Declare the column without the AUTOINCREMENT keyword."


@pytest.mark.parametrize("answer", ["", "  ", "\n"])
def test_load_qa_refuses_an_empty_answer(tmp_path: Path, answer: str) -> None:
    path = tmp_path / "qa.json"
    items = [
        {"id": "ok", "question": "q", "answer_passage": SQLITE_ANSWER},
        {"id": "empty", "question": "q", "answer_passage": answer},
    ]
    path.write_text(json.dumps(items))
    with pytest.raises(RetrievalError) as refused:
        load_qa(path)
    message = str(refused.value)
    assert "item 1 (id 'empty'): answer_passage is empty" in message
    assert "at least 5 words" in message


def test_answers_too_short_to_ever_match_are_named(tmp_path: Path) -> None:
    """Under five words no chunk can share a word 5-gram with the answer: such an item always
    scores 0 (read, and named, not refused: a set may hold a few)."""
    path = tmp_path / "qa.json"
    answers = {"ok": SQLITE_ANSWER, "one": "Yes.", "three": "Yes, by default.", "five": "a b c d e"}
    items = [{"id": n, "question": "q", "answer_passage": a} for n, a in answers.items()]
    path.write_text(json.dumps(items))
    assert too_short(load_qa(path)) == ["one", "three"]
    assert is_relevant("a b c d e", "a b c d e")  # five words: the shortest the rule can match
    assert not is_relevant("Yes, by default.", "Yes, by default.")


def test_load_qa_reads_a_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    # As Windows editors save UTF-8; ingest reads such files too.
    path = tmp_path / "qa.json"
    items = [{"id": "1", "question": "What is SQLite?", "answer_passage": SQLITE_ANSWER}]
    path.write_text(json.dumps(items), encoding="utf-8-sig")
    assert [item.question for item in load_qa(path)] == ["What is SQLite?"]


def test_load_qa_reads_conversations(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How do I create an AUTOINCREMENT field?"},
        {"role": "assistant", "content": "Declare an INTEGER PRIMARY KEY."},
        {"role": "user", "content": [{"type": "text", "text": "And how do I turn that off?"}]},
        # A text part with no text, or a null one, is empty, as the chat API reads it.
        {"role": "user", "content": [{"type": "text"}, {"type": "text", "text": None}]},
    ]
    items = [
        {
            "id": 1,
            "question": "What is SQLite?",
            "answer_passage": SQLITE_ANSWER,
            "source": "faq.html",
        },
        {"id": "2", "messages": messages, "answer_passage": OTHER_ANSWER},
    ]
    path.write_text(json.dumps(items))
    question, conversation = load_qa(path)
    assert question == QAItem("1", "What is SQLite?", SQLITE_ANSWER, "faq.html")
    assert question.turns == ("What is SQLite?",)
    assert conversation == QAItem(
        "2",
        "And how do I turn that off?",
        OTHER_ANSWER,
        "",
        ("How do I create an AUTOINCREMENT field?",),
    )
    assert conversation.turns == (
        "How do I create an AUTOINCREMENT field?",
        "And how do I turn that off?",
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"question": "q", "messages": [{"role": "user", "content": "q"}]}, "not both or neither"),
        ({}, "not both or neither"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "no user message with text"),
        ({"messages": [{"role": "user", "content": "  "}]}, "no user message with text"),
        ({"messages": "q"}, "messages is not a list"),
        ({"messages": ["q"]}, r"messages\[0\] is not a message"),
        ({"messages": [{"role": "user", "content": 3}]}, r"messages\[0\].content is neither"),
        ({"question": ""}, "question is not a text"),
        # What the chat API refuses is not quietly measured as another conversation.
        ({"messages": [{"role": "human", "content": "q"}]}, r"messages\[0\].role is 'human'"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}]},
            r"messages\[0\].content\[0\].text is not a text",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            r"messages\[0\].content\[0\] is an 'image_url' part: retrieval reads text only",
        ),
        ({"messages": [{"role": "user", "content": ["q"]}]}, r"content\[0\] is not a part"),
        # No tokenizer encodes an unpaired surrogate (JSON's escapes can write one).
        ({"question": "\ud800 lone"}, "question holds an unpaired UTF-16 surrogate"),
        (
            {"messages": [{"role": "user", "content": "q \udfff"}]},
            r"messages\[0\].content holds an unpaired UTF-16 surrogate",
        ),
        ({"question": "q", "answer_passage": "\ud800"}, "answer_passage holds an unpaired"),
    ],
)
def test_load_qa_names_a_bad_item(tmp_path: Path, item: dict[str, Any], message: str) -> None:
    path = tmp_path / "qa.json"
    good = {"id": "ok", "question": "q", "answer_passage": SQLITE_ANSWER}
    path.write_text(json.dumps([good, {"id": "bad", "answer_passage": "a", **item}]))
    with pytest.raises(RetrievalError, match=f"item 1 \\(id 'bad'\\): .*{message}"):
        load_qa(path)


def test_a_conversation_search_gets_the_user_turns_and_a_question_search_the_last() -> None:
    collection = InMemoryStore().collection("qa-set", "fake", create=True)
    collection.add([ChunkRecord("c1", ANSWER, {"source": "a.md"}, [1.0, 0.0])])
    hit = SearchHit(1, "c1", ANSWER, "a.md", "", 1.0, {})
    qa = [QAItem("a", "And why?", ANSWER, "a.md", ("How do I read a file line by line?",))]
    seen: list[object] = []

    def conversation(turns: Sequence[str], depth: int) -> list[SearchHit]:
        seen.append(tuple(turns))
        return [hit]

    def question(text: str, depth: int) -> list[SearchHit]:
        seen.append(text)
        return []

    by_turns = evaluate_conversations(collection, qa, [("hybrid", conversation)], [1])
    by_question = evaluate(collection, qa, [("hybrid", question)], [1])
    assert seen == [("How do I read a file line by line?", "And why?"), "And why?"]
    assert by_turns.modes[0].metrics["recall@1"] == 1.0
    assert by_question.modes[0].metrics["recall@1"] == 0.0
    assert by_turns.to_dict(with_runs=True)["modes"]["hybrid"]["runs"][0]["history"] == [
        "How do I read a file line by line?"
    ]
