#!/usr/bin/env python3
"""Convert an HTML developers' set to Markdown: the same questions, answers and relevance rule
over the same documents, as Markdown files (what a docs site or a wiki export holds).

    .venv/bin/python bench/evalsets/to_markdown.py HTML_SET_DIR OUT_DIR

Each HTML page of HTML_SET_DIR/corpus becomes a .md file by `markdownify` (ATX headings, `-`
bullets; scripts and styles dropped first); qa.json is copied as it is. The relevance rule
compares words, so answer passages stay findable whatever the markup.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The shared build, beside this file (a script's own folder is on its path).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from print_pdf import build_converted, command_line


def convert(html: str) -> str:
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(html, "html.parser")
    for noise in soup(["script", "style", "noscript", "template"]):
        noise.decompose()
    return MarkdownConverter(heading_style="ATX", bullets="-").convert_soup(soup)


def write_markdown(page: Path, target: Path) -> None:
    target.write_text(convert(page.read_text(encoding="utf-8", errors="replace")))


def build(html_set: Path, out: Path) -> Path:
    """OUT_DIR/corpus/*.md (one per page, same relative paths) and OUT_DIR/qa.json."""
    return build_converted(html_set, out, ".md", write_markdown)


def main() -> None:
    command_line(build, __doc__)


if __name__ == "__main__":
    main()
