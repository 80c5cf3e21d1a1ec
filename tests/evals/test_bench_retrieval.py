"""The benches' check that a set's corpus does not hold its own questions (bench/common.py,
printed by bench/retrieval.py)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import asked_in_corpus
from ragtune.retrieval.store import ChunkRecord
from tests.support.fakes import InMemoryStore


def test_a_question_left_in_the_corpus_is_found_whatever_its_case_and_spacing(
    tmp_path: Path,
) -> None:
    qa = tmp_path / "qa.json"
    questions = [
        "How do I run ffmpeg as a background task?",
        "Is it free?",
        "Why is it slow?",
        "Why can't I use an assignment in an expression?",
        "What is the best way to convert a whole folder of videos at once?",
    ]
    qa.write_text(json.dumps([{"id": str(i), "question": q} for i, q in enumerate(questions)]))
    store = InMemoryStore()
    first, second = (store.collection(name, "m", create=True) for name in ("one", "two"))
    first.add(
        [ChunkRecord("1", "See How do I run\nFFmpeg as a  background task? first.", {}, [1.0])]
    )
    second.add([ChunkRecord("2", "Is it free? Yes.", {}, [1.0])])
    second.add([ChunkRecord("3", "Why is it slow", {}, [1.0])])  # not the question: no "?"
    # A reST label spelled from a question, in a link to it: a run of eight of its words.
    label = "See the :ref:`walrus <why-can-t-i-use-an-assignment-in-an-expression>`."
    second.add([ChunkRecord("4", label, {}, [1.0])])
    # Seven of a long question's words in a row are not the question.
    second.add([ChunkRecord("5", "A good way to convert a folder of videos is", {}, [1.0])])

    assert asked_in_corpus(qa, first, second) == sorted([*questions[:2], questions[3]])
    assert asked_in_corpus(qa, second) == sorted(["Is it free?", questions[3]])
    assert asked_in_corpus(qa) == []
