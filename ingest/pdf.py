"""A PDF's text with its structure: paragraphs from the lines' spacing, headings from the
document outline (bookmarks), or from the type size when there is none.

pypdf's plain text of a page is one line per printed line: a paragraph's wrapped lines, its
neighbours and the headings between them all look alike, so chunks would be cut at any line
and carry no heading. Here each text run's position and size are read as pypdf draws the page
(`visitor_text`), runs on one baseline make a line, and

- a gap between lines larger than the page's usual line spacing ends a paragraph (a blank line
  in the text); the wrapped lines of a paragraph are joined with spaces (after a line that ends
  in a hyphen, without: "working-tree-" + "encoding" is one word again);
- headings come from the outline, as word processors, LaTeX (hyperref) and browsers write it:
  each entry's title is looked for among the lines of its page, in order; the line(s) found
  become the heading (not text), and the text after it, up to the next entry, lies under the
  entry's path. An entry whose title is not on its page starts at its page's next line. With no
  outline, short lines set clearly larger than the body text are headings, ranked by size.

What cannot be read this way (no positions, a damaged outline) falls back to the plain text of
each page, as before: never less than pypdf's own text.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PARAGRAPH_GAP = 1.3
"""A gap between two lines over this many times the page's usual line spacing ends a
paragraph."""
HEADING_SIZE = 1.15
"""Without an outline: a line set at least this many times the body text's size is a heading
(when short: at most `HEADING_WORDS` words, not ending a sentence)."""
HEADING_WORDS = 16
MAX_OUTLINE = 5000
"""Outline entries read at most (a malformed outline can be huge or cyclic)."""
_WORD = re.compile(r"\w+")


@dataclass
class Line:
    y: float
    size: float
    text: str


@dataclass(frozen=True)
class Mark:
    """A heading: from the outline (`line` None when its title was not found on the page)."""

    page: int
    level: int
    title: str


@dataclass
class Piece:
    """A run of text under one heading path, on one page."""

    path: tuple[str, ...]
    text: str
    page: int


def read_lines(page: Any) -> list[Line]:
    """The page's printed lines in drawing order, each with its baseline and type size."""
    lines: list[Line] = []

    def visit(text: str, cm: Sequence[float], tm: Sequence[float], _font: Any, size: float) -> None:
        if not text or not text.strip("\n"):
            return
        # The run's origin and vertical scale on the page: text matrix times current matrix.
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
        scale = math.hypot(tm[2] * cm[0] + tm[3] * cm[2], tm[2] * cm[1] + tm[3] * cm[3])
        height = abs(size * scale) or abs(size) or 1.0
        for n, part in enumerate(text.split("\n")):
            if n > 0 or not lines or abs(lines[-1].y - y) > 0.5 * max(height, lines[-1].size):
                if not part.strip() and n > 0:
                    continue
                lines.append(Line(y, height, part))
            else:
                lines[-1].text += part
                lines[-1].size = max(lines[-1].size, height)

    page.extract_text(visitor_text=visit)
    return [
        Line(line.y, line.size, " ".join(line.text.split())) for line in lines if line.text.strip()
    ]


def outline_marks(reader: Any) -> list[Mark]:
    """The outline's entries in reading order (page, then as listed); [] when there is none
    or it cannot be read."""
    marks: list[Mark] = []

    def walk(items: Sequence[Any], level: int) -> None:
        for item in items:
            if len(marks) >= MAX_OUTLINE:
                return
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            title = " ".join(str(getattr(item, "title", "") or "").split())
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # a broken destination: skip the entry
                continue
            if title and page is not None and page >= 0:
                marks.append(Mark(page, level, title))

    try:
        walk(reader.outline, 1)
    except Exception:  # a damaged outline: read the pages without it
        return []
    return sorted(marks, key=lambda m: m.page)  # stable: the outline's order within a page


def structured_pieces(reader: Any) -> list[Piece] | None:
    """The document as pieces under heading paths, or None when its lines cannot be read."""
    try:
        pages = [read_lines(page) for page in reader.pages]
    except Exception:  # positions unreadable: the caller uses the plain text
        return None
    if not any(pages):
        return None
    marks = outline_marks(reader)
    by_page: dict[int, list[Mark]] = {}
    for mark in marks:
        by_page.setdefault(mark.page, []).append(mark)
    body = _body_size(pages)
    spacing = _line_spacing(pages)
    pieces: list[Piece] = []
    path: list[tuple[float, str]] = []  # (level, title); a size-found heading's level is -size
    for number, lines in enumerate(pages, start=1):
        if marks:
            headings = _outline_lines(lines, by_page.get(number - 1, []))
        else:
            headings = _sized_lines(lines, body)
        pieces += _page_pieces(number, lines, headings, spacing, path)
    return pieces


def _page_pieces(
    number: int,
    lines: list[Line],
    headings: dict[int, list[tuple[float, str]]],
    spacing: dict[int, float],
    path: list[tuple[float, str]],
) -> list[Piece]:
    """One page's pieces: its lines as paragraphs, cut where a heading starts (`path`, the
    headings in force, is carried from page to page)."""
    pieces: list[Piece] = []
    paragraphs: list[list[str]] = []
    previous: Line | None = None
    for index, line in enumerate([*lines, None]):
        if index in headings or line is None:
            text = "\n\n".join(_joined(p) for p in paragraphs)
            if text.strip():
                pieces.append(Piece(tuple(t for _, t in path), text, number))
            paragraphs, previous = [], None
            for level, title in headings.get(index, []):
                while path and path[-1][0] >= level:
                    path.pop()
                path.append((level, title))
        if line is None or line.text == "":  # the end, or a heading's own line(s)
            continue
        usual = spacing.get(round(line.size), 1.2 * line.size)
        if (
            previous is None
            or previous.y - line.y > PARAGRAPH_GAP * usual
            or line.y > previous.y + 0.5 * line.size  # up the page: another column or block
            or abs(line.size - previous.size) > 0.15 * previous.size
        ):
            paragraphs.append([])
        paragraphs[-1].append(line.text)
        previous = line
    return pieces


def _outline_lines(lines: list[Line], marks: list[Mark]) -> dict[int, list[tuple[float, str]]]:
    """{line index: the headings that start there}; a title found on the page is its line(s)
    (their text emptied: a heading, not text), one not found starts at the line after the last
    one found. Each line's words are read once, and a title is looked for only at the lines
    that begin it (`_find_title`): linear in the page's lines and outline entries."""
    found: dict[int, list[tuple[float, str]]] = {}
    words = [tuple(_words(line.text)) for line in lines]
    starting: dict[tuple[str, ...], list[int]] = {}
    for index, got in enumerate(words):
        if got:
            starting.setdefault(got, []).append(index)
    sizes = sorted({len(begun) for begun in starting})
    cursor = 0
    for mark in marks:
        at = _find_title(words, starting, sizes, mark.title, cursor)
        if at is None:
            found.setdefault(min(cursor, len(lines)), []).append((mark.level, mark.title))
            continue
        start, end = at
        found.setdefault(start, []).append((mark.level, mark.title))
        for index in range(start, end):
            lines[index].text = ""
        cursor = end
    return found  # a heading at len(lines), after the page's last line, opens the next page


_TITLE_TRIES = 64
"""Lines that begin a title, past the last one found, looked at before it is taken as not on
the page: an outline of thousands of titles over a page of lines that begin them all is read
in bounded time (2,000 such titles took 10 s)."""


def _find_title(
    words: Sequence[tuple[str, ...]],
    starting: dict[tuple[str, ...], list[int]],
    sizes: Sequence[int],
    title: str,
    start: int,
) -> tuple[int, int] | None:
    """(first, past last) line of `title` at or after line `start`: the title's words, on one
    line or wrapped over up to three. `words`: each line's; `starting`: the lines of each
    run of words (a title begins at a line whose words begin it); `sizes`: their lengths."""
    want = tuple(_words(title))
    if not want:
        return None
    firsts = sorted(
        index
        for size in sizes
        if size <= len(want)
        for index in _from(starting.get(want[:size], ()), start)
    )
    for first in firsts[:_TITLE_TRIES]:
        got: tuple[str, ...] = ()
        for last in range(first, min(first + 3, len(words))):
            got += words[last]
            if got == want:
                return first, last + 1
            if got != want[: len(got)]:
                break
    return None


def _from(indices: Sequence[int], start: int) -> Sequence[int]:
    """The first `_TITLE_TRIES` of sorted `indices` at or after `start`."""
    at = bisect.bisect_left(indices, start)
    return indices[at : at + _TITLE_TRIES]


def _sized_lines(lines: list[Line], body: float) -> dict[int, list[tuple[float, str]]]:
    """Without an outline: {line index: heading} for short lines clearly larger than the body
    text (consecutive ones of one size are one wrapped heading); larger type, higher level."""
    found: dict[int, list[tuple[float, str]]] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        if not _looks_like_heading(line, body):
            index += 1
            continue
        end = index + 1
        while (
            end < len(lines)
            and _looks_like_heading(lines[end], body)
            and abs(lines[end].size - line.size) < 0.05 * line.size
        ):
            end += 1
        title = " ".join(lines[i].text for i in range(index, end))
        found[index] = [(-round(line.size, 1), title)]
        for i in range(index, end):
            lines[i].text = ""
        index = end
    return found


def _looks_like_heading(line: Line, body: float) -> bool:
    words = line.text.split()
    return (
        line.size >= HEADING_SIZE * body
        and 0 < len(words) <= HEADING_WORDS
        and not line.text.endswith((".", ",", ";", ":"))
    )


def _body_size(pages: list[list[Line]]) -> float:
    """The type size most of the document's characters are set in."""
    weight: dict[float, int] = {}
    for lines in pages:
        for line in lines:
            size = round(line.size, 1)
            weight[size] = weight.get(size, 0) + len(line.text)
    return max(weight, key=lambda s: weight[s]) if weight else 0.0


def _line_spacing(pages: list[list[Line]]) -> dict[int, float]:
    """{type size: the usual distance between consecutive lines of one paragraph}: the most
    common gap between consecutive lines of that size (to half a point), over the document."""
    counts: dict[int, Counter[float]] = {}
    for lines in pages:
        for a, b in itertools.pairwise(lines):
            gap = a.y - b.y
            if abs(a.size - b.size) < 0.05 * a.size and 0 < gap < 3 * a.size:
                counts.setdefault(round(a.size), Counter())[round(gap * 2) / 2] += 1
    return {size: gaps.most_common(1)[0][0] for size, gaps in counts.items()}


def _joined(lines: list[str]) -> str:
    """A paragraph's wrapped lines as one line. A line ending in a hyphen after a letter runs
    on into the next one, hyphen kept: browsers break compound words there ("working-tree-" +
    "encoding"); a word a typesetter hyphenated stays split as pypdf's own text has it."""
    text = ""
    for line in lines:
        if text.endswith("-") and len(text) > 1 and text[-2].isalpha() and line[:1].isalpha():
            text += line
        else:
            text = f"{text} {line}" if text else line
    return text


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())
