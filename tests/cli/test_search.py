"""How `ragtune search` shows hits in a terminal."""

from __future__ import annotations

from ragtune.cli.search import reflow


def test_search_output_reflows_paragraphs_but_not_code() -> None:
    text = "A paragraph that was\nhard wrapped here.\n\n    code line one\n    code line two\nEnd."
    assert reflow(text) == (
        "A paragraph that was hard wrapped here.\n\n    code line one\n    code line two\nEnd."
    )
