#!/usr/bin/env python3
"""Convert an HTML developers' set to plain text: the same questions, answers and relevance rule
over the same documents, as .txt files laid out the way a text browser's dump or a hand-written
text manual is (what `lynx -dump` or an old README holds).

    .venv/bin/python bench/evalsets/to_text.py HTML_SET_DIR OUT_DIR

Each HTML page of HTML_SET_DIR/corpus becomes a .txt file: headings on a line of their own,
paragraphs hard-wrapped at 72 columns and separated by a blank line, list items as "* " with
their continuation lines indented, definition terms on a line with their description indented
below, preformatted blocks indented by four spaces as they are, a table row on one line with
its cells apart (what ragtune's HTML loader never reads dropped first: scripts, styles,
navigation, forms, inline SVG pictures, comments); qa.json is copied as it is. The
relevance rule compares words, so answer passages stay findable whatever the layout.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

# The shared build, beside this file (a script's own folder is on its path).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from print_pdf import build_converted, command_line

from ragtune.ingest.loaders import _HTML_NOISE as HTML_NOISE

WIDTH = 72
BLOCKS = {
    "p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote",
    "table", "thead", "tbody", "tfoot", "figure", "figcaption", "center", "body", "html",
}  # fmt: skip
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6", "title"}
SPACE = re.compile(r"\s+")


def convert(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    # What ragtune's HTML loader leaves out too, and the head.
    for noise in soup([*HTML_NOISE, "head"]):
        noise.decompose()
    out: list[str] = []
    _render(soup, out, indent="", bullet="")
    text = "\n\n".join(block for block in out if block.strip())
    return text.rstrip() + "\n"


def _render(node: Any, out: list[str], indent: str, bullet: str) -> None:
    """Append `node`'s blocks to `out`: consecutive inline content becomes one wrapped
    paragraph; block elements start a new one."""
    from bs4.element import PreformattedString

    inline: list[str] = []

    def flush() -> None:
        nonlocal bullet
        words = SPACE.sub(" ", "".join(inline)).strip()
        inline.clear()
        if words:
            first = indent + bullet
            rest = indent + " " * len(bullet)
            out.append(textwrap.fill(words, WIDTH, initial_indent=first, subsequent_indent=rest))
            bullet = ""

    for child in node.children:
        name = getattr(child, "name", None)
        if name is None:
            if not isinstance(child, PreformattedString):  # comments, doctype
                inline.append(str(child))
        elif name == "br":
            inline.append(" ")
        elif name in HEADINGS:
            flush()
            title = SPACE.sub(" ", child.get_text()).strip()
            if title:
                out.append(indent + title)
        elif name == "pre":
            flush()
            code = child.get_text().strip("\n")
            out.append("\n".join(indent + "    " + line for line in code.splitlines()))
        elif name in ("ul", "ol"):
            flush()
            for n, item in enumerate(child.find_all("li", recursive=False), 1):
                mark = f"{n}. " if name == "ol" else "* "
                _render(item, out, indent, mark)
        elif name == "dl":
            flush()
            for part in child.find_all(["dt", "dd"], recursive=False):
                _render(part, out, indent + ("    " if part.name == "dd" else ""), "")
        elif name == "tr":
            # A table row is one line of its cells, as a text table has it.
            flush()
            cells = [SPACE.sub(" ", c.get_text()).strip() for c in child.find_all(["td", "th"])]
            inline.append(" | ".join(c for c in cells if c))
            flush()
        elif name in BLOCKS or name in ("li", "dt", "dd", "td", "th"):
            flush()
            _render(child, out, indent, bullet)
            bullet = ""
        else:
            inline.append(child.get_text())
    flush()


def write_text(page: Path, target: Path) -> None:
    target.write_text(convert(page.read_text(encoding="utf-8", errors="replace")))


def build(html_set: Path, out: Path) -> Path:
    """OUT_DIR/corpus/*.txt (one per page, same relative paths) and OUT_DIR/qa.json."""
    return build_converted(html_set, out, ".txt", write_text)


def main() -> None:
    command_line(build, __doc__)


if __name__ == "__main__":
    main()
