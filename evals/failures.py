"""Failure modes of a prompting variant's answers, against the format the reference answers share:
empty, too long, several lines, invalid JSON, a missing field, a copy of the input. The share
that breaks the format is what says whether prompting fails systematically.

Usage:
    modes = failure_modes(spec, examples, answers)    # FailureModes(share, counts, examples)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ragtune.adapters.examples import Example
from ragtune.evals.metrics import parse_json, words
from ragtune.evals.variants import FormatSpec

SYSTEMATIC = 0.2
"""A variant whose answers break the format this often fails systematically (not by chance)."""
TOO_LONG = 1.5
"""An answer longer than this times the longest reference answer is too long."""
COPY = 0.8
"""An answer whose word trigrams come from the input this much is a copy of it..."""
COPY_REFERENCE = 0.5
"""...unless the reference answers copy their input too (an extraction task)."""
SHOWN = 3


@dataclass
class FailureModes:
    answers: int
    share: float
    """Answers with at least one failure, over all answers."""
    counts: dict[str, int]
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    """Up to three per mode: the input (shortened), the answer, the reference."""

    @property
    def systematic(self) -> bool:
        return self.share >= SYSTEMATIC


def _trigrams(tokens: Sequence[str]) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)}


def copied_share(answer: str, source: str) -> float:
    """How much of the answer's word trigrams occur in the source (0 for under 5 words)."""
    answer_words = words(answer)
    if len(answer_words) < 5:
        return 0.0
    grams = _trigrams(answer_words)
    return len(grams & _trigrams(words(source))) / len(grams)


def failures_of(spec: FormatSpec, example: Example, answer: str, copying_task: bool) -> list[str]:
    found = []
    if not words(answer) and not answer.strip():
        return ["empty"]
    if len(words(answer)) > math.ceil(spec.max_words * TOO_LONG):
        found.append("too long")
    if spec.one_line and "\n" in answer.strip():
        found.append("several lines")
    if spec.json is not None:
        try:
            value = parse_json(answer)
        except ValueError:
            found.append("invalid JSON")
        else:
            if spec.fields and (
                not isinstance(value, dict) or any(f not in value for f in spec.fields)
            ):
                found.append("missing field")
    if not copying_task and copied_share(answer, example.prompt()) >= COPY:
        found.append("copies the input")
    return found


def failure_modes(
    spec: FormatSpec, examples: Sequence[Example], answers: Sequence[str]
) -> FailureModes:
    copying_task = (
        sum(copied_share(e.answer, e.prompt()) for e in examples) / max(1, len(examples))
        >= COPY_REFERENCE
    )
    counts: dict[str, int] = {}
    shown: dict[str, list[dict[str, str]]] = {}
    failed = 0
    for example, answer in zip(examples, answers, strict=True):
        modes = failures_of(spec, example, answer, copying_task)
        failed += bool(modes)
        for mode in modes:
            counts[mode] = counts.get(mode, 0) + 1
            if len(shown.setdefault(mode, [])) < SHOWN:
                shown[mode].append(
                    {
                        "input": _shorten(example.prompt()),
                        "answer": _shorten(answer),
                        "reference": _shorten(example.answer),
                    }
                )
    total = len(answers)
    return FailureModes(total, round(failed / total, 4) if total else 0.0, counts, shown)


def _shorten(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
