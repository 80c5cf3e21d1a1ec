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


def test_a_run_is_compared_with_the_run_before_question_by_question() -> None:
    """`bench/retrieval.py --ranks-out` keeps each question's first relevant rank per search;
    `--against` compares a later run with it: the figures before and after on the same
    questions, how many moved, and which left or joined the first five."""
    from bench.retrieval import compare_ranks, ranks_record
    from ragtune.retrieval.evaluation import ModeReport, RetrievalReport

    def report(ranks: dict[str, int | None]) -> RetrievalReport:
        runs = [
            {
                "id": i,
                "question": f"Question {i}?",
                "hits": [{"relevant": n + 1 == rank} for n in range(12)],
            }
            for i, rank in ranks.items()
        ]
        modes = [ModeReport(mode, {}, runs) for mode in ("hybrid", "dense", "lexical")]
        return RetrievalReport("ragtune", 10, len(runs), len(runs), modes)

    before = ranks_record("small", {"ragtune": report({"a": 1, "b": 5, "c": None, "d": 11})})
    assert before["ranks"]["ragtune hybrid"] == {"a": 1, "b": 5, "c": None, "d": None}
    now = ranks_record("small", {"ragtune": report({"a": 2, "b": 6, "c": 4, "d": 3})})
    lines = compare_ranks("python", before, now)
    assert lines[0].startswith(
        "python ragtune hybrid, before -> now on 4 questions: R@5 0.500 -> 0.750 (+0.250 "
    )
    assert "MRR@10 0.300 -> 0.312 (+0.012 " in lines[0]
    assert lines[0].endswith("first relevant hit higher for 2 questions, lower for 2")
    assert lines[1:4] == [
        "  left the first five: b (5 -> 6) 'Question b?'",
        "  joined the first five: c (- -> 4) 'Question c?'",
        "  joined the first five: d (- -> 3) 'Question d?'",
    ]
    assert lines[4].startswith("python ragtune dense, before -> now on 4 questions")
    del before["ranks"]["ragtune lexical"]
    assert (
        compare_ranks("python", before, now)[-1] == "python ragtune lexical: not in the run before"
    )
    before["subset"] = "full"
    assert compare_ranks("python", before, now) == [
        "python: the run before scored the full set, this one the small set: nothing compared"
    ]


def test_a_tuned_models_evidence_is_counted_against_the_routers_thresholds() -> None:
    from bench.retrieval import evidence_lines

    own = ([0.30, 0.50, 0.60, 0.80], [0.40, 0.36, 0.50, 0.56])
    lines = evidence_lines("sqlite", own, ([], []))
    assert len(lines) == 1  # no off-topic questions: no line for them
    assert lines[0] == (
        "sqlite router evidence, untuned -> tuned, own questions (4): "
        "p10 0.300 -> 0.360, median 0.600 -> 0.500; "
        ">= 0.37: 3 -> 3 (1 up, 1 down); >= 0.55: 2 -> 1 (0 up, 1 down)"
    )
    off = evidence_lines("python", ([0.5], [0.5]), ([0.2, 0.38], [0.37, 0.2]))[1]
    assert off.endswith(">= 0.37: 1 -> 1 (1 up, 1 down); >= 0.55: 0 -> 0 (0 up, 0 down)")
    assert "other sets' questions (2)" in off
