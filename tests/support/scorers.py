"""Scorers a user might write, for `ragtune advise --metric package.module:function`."""

from __future__ import annotations


def same_length(answer: str, reference: str) -> float:
    """1.0 when the answer has as many words as the reference."""
    return float(len(answer.split()) == len(reference.split()))


def not_a_number(answer: str, reference: str) -> str:
    return "high"
