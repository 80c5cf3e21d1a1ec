#!/usr/bin/env python3
"""Convert an HTML developers' set to Markdown: the same questions, answers and relevance rule
over the same documents, as Markdown files (what a docs site or a wiki export holds).

    .venv/bin/python bench/evalsets/to_markdown.py HTML_SET_DIR OUT_DIR

Each HTML page of HTML_SET_DIR/corpus becomes a .md file by `markdownify` (ATX headings, `-`
bullets; scripts and styles dropped first); qa.json is copied as it is. The relevance rule
compares words, so answer passages stay findable whatever the markup.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def convert(html: str) -> str:
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(html, "html.parser")
    for noise in soup(["script", "style", "noscript", "template"]):
        noise.decompose()
    return MarkdownConverter(heading_style="ATX", bullets="-").convert_soup(soup)


def build(html_set: Path, out: Path) -> Path:
    """OUT_DIR/corpus/*.md and OUT_DIR/qa.json, written to a staging folder first."""
    if (out / "qa.json").is_file():
        return out
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for page in sorted((html_set / "corpus").rglob("*.htm*")):
        target = staging / "corpus" / page.relative_to(html_set / "corpus").with_suffix(".md")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(convert(page.read_text(encoding="utf-8", errors="replace")))
    shutil.copyfile(html_set / "qa.json", staging / "qa.json")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("html_set", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    build(args.html_set, args.out)


if __name__ == "__main__":
    main()
