"""How `ragtune search` shows hits in a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.cli.search import reflow
from tests.support.cli import ragtune


def test_search_output_reflows_paragraphs_but_not_code() -> None:
    text = "A paragraph that was\nhard wrapped here.\n\n    code line one\n    code line two\nEnd."
    assert reflow(text) == (
        "A paragraph that was hard wrapped here.\n\n    code line one\n    code line two\nEnd."
    )


def test_search_json_is_strict_json_even_when_a_score_overflows(faq_docs: Path) -> None:
    """Weights this large sum to infinity: such a score is null, never `Infinity` (which strict
    JSON readers refuse)."""

    def refuse(constant: str) -> None:
        pytest.fail(f"search --json printed {constant}")

    found = ragtune(
        "search",
        "Why is Python slow?",
        "-c",
        "faq-docs",
        "-k",
        "5",
        "--json",
        data_dir=faq_docs,
        RAGTUNE_DENSE_WEIGHT="1.7e308",
        RAGTUNE_LEXICAL_WEIGHT="1.7e308",
    )
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout, parse_constant=refuse)
    assert any(hit["score"] is None for hit in hits)


@pytest.mark.parametrize("question", ["", "   "])
def test_an_empty_question_is_a_usage_error(question: str, tmp_path: Path) -> None:
    result = ragtune("search", question, "-k", "1", data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "the question is empty" in result.stderr
    assert "Traceback" not in result.stderr
