"""How answers are graded for the learned router: against a reference when a case has one;
otherwise by their form, and by their grounding only where the documents hold evidence."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ragtune.evals.metrics import load_scorer
from ragtune.serving.outcomes import Grader, unreferenced_grade


@pytest.mark.parametrize(
    ("answer", "finish", "grounding", "evidence", "expected"),
    [
        ("", "stop", None, True, (0.0, "empty")),
        ("Hello! How can I help?", "stop", None, False, (1.0, "format")),
        ("A cat, a cat, a cat, a cat", "length", 0.0, False, (0.5, "format")),  # no evidence
        ("Refunds take thirty days.", "stop", 0.8, True, (0.8, "grounding")),
        ("Refunds take thirty days.", "length", 0.8, True, (0.4, "grounding")),
        ("Sure.", "stop", None, True, (0.5, "grounding")),  # nothing checkable
    ],
)
def test_an_answer_without_a_reference(
    answer: str, finish: str, grounding: float | None, evidence: bool, expected: tuple
) -> None:
    assert unreferenced_grade(answer, finish, grounding, evidence) == expected


def test_a_reference_decides_when_there_is_one() -> None:
    calls: list[Sequence[str]] = []

    def grounded(answer: str, passages: Sequence[str]) -> float | None:
        calls.append(passages)
        return 0.25

    grader = Grader(load_scorer("exact"), grounded)
    assert grader.grade("Paris", "Paris", ["p"]) == (1.0, "exact", 0.25)
    assert grader.grade("", "Paris", ["p"]) == (0.0, "exact", None)
    assert grader.grade("Lyon is nice.", None, ["p"], evidence=True) == (0.25, "grounding", 0.25)
    assert grader.grade("Lyon is nice.", None, [], evidence=False) == (1.0, "format", None)
    assert len(calls) == 2  # no passages, no check
