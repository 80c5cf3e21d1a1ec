"""How `ragtune search` shows hits in a terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragtune.cli.search import reflow
from tests.support.cli import ragtune


def test_search_output_reflows_paragraphs_but_not_code() -> None:
    text = "A paragraph that was\nhard wrapped here.\n\n    code line one\n    code line two\nEnd."
    assert reflow(text) == (
        "A paragraph that was hard wrapped here.\n\n    code line one\n    code line two\nEnd."
    )


def test_fusion_weights_that_would_overflow_are_refused(faq_docs: Path) -> None:
    """Weights this large summed to infinity, and every score tied (`search --json` printed
    null scores in an arbitrary order): a weight is at most 1000, said before any search."""
    found = ragtune(
        "search",
        "Why is Python slow?",
        "-c",
        "faq-docs",
        "--json",
        data_dir=faq_docs,
        RAGTUNE_DENSE_WEIGHT="1.7e308",
        RAGTUNE_LEXICAL_WEIGHT="1.7e308",
    )
    assert found.returncode == 2
    assert "dense_weight: must be a number from 0 to 1000" in found.stderr
    assert "Traceback" not in found.stderr
    assert found.stdout == ""


@pytest.mark.parametrize("question", ["", "   "])
def test_an_empty_question_is_a_usage_error(question: str, tmp_path: Path) -> None:
    result = ragtune("search", question, "-k", "1", data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "the question is empty" in result.stderr
    assert "Traceback" not in result.stderr
