"""Cut a document's sections into chunks that the embedding model reads whole.

Each chunk stays inside one section, and inside one block of it: a run of two or more blank
lines is a break its author put there (reStructuredText sources put two before each section;
the HTML loader puts two around self-contained blocks such as blockquotes and definition-list
entries), so no chunk spans one. A label is the first exception: a block of a few words that
ends no sentence (a term, a signature, a line of code, "Or,") is read with the block it
introduces, the one after it. The other is a subsection of a few words with no
subsections of its own (an API function's "Parameters" and "Returns"): it is read with its
section, joining the chunk that section's text ends with when both fit, under its own title
and the section's heading path; what a section says after its subsections, when as small
(gtk-doc's "Since: 3.0" after a function's "Parameters"), ends the chunk the section's own
text ended with. The heading path ("Title > Section > Subsection") is kept
with every chunk; it is embedded in front of the text only when `embed_headings` is set,
because on the developers' evaluation set it made dense retrieval worse (all chunks of a page
share a prefix).
A table too long for one chunk is cut between its rows, and every chunk of it starts with
its header's rows (`_table_parts`: reStructuredText's grid and simple tables, Markdown's, and
the HTML loader's rows, which mark a row of `th` cells as Markdown does).
Plain text has no markup to say where one topic ends and the next begins (an FAQ whose
questions were left out runs its answers together), so a `.txt` document's paragraphs are
grouped by topic (`topic_groups`) before the splitter packs them: each group fits the budget,
and the cuts fall where neighbouring paragraphs share the fewest words.
Chunk sizes are counted in the embedding model's own word pieces, heading included when
embedded, and every chunk is checked against the model's limit: nothing is ever cut off by the
embedder. A text counts at least one piece per 12 characters other than spaces, so a run of
characters the model reads as one unknown piece (a word of 100 letters or more, a script
written without spaces that the model does not know) is cut like any text.
"""

from __future__ import annotations

import copy
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_text_splitters import RecursiveCharacterTextSplitter
from langchain_text_splitters.character import _split_text_with_regex

from ragtune.ingest.loaders import (
    FENCE_OPENS,
    MARKDOWN,
    RST,
    TEXT,
    LoadedDocument,
    Section,
    md_fenced_lines,
)

HEADING_SEPARATOR = " > "
# Where to cut, best first, per format (headings are already split off by the loaders).
# Where text may be cut, best first, as regular expressions. A sentence is cut after its stop
# and the space after it (a lookbehind: cut before ". ", the stop went to the next chunk,
# which began ". The CAST operator ..." while the chunk before ended without it). The sentence
# ends of scripts written without spaces (Chinese, Japanese) come before spaces, each cut
# after its mark: with none, a long paragraph was cut anywhere, mid-sentence.
_SENTENCE_ENDS = [r"(?<=\. )", "(?<=[。\uff01\uff1f])"]  # 。, fullwidth ! and ?
_FENCE_MARK = "\x1d"
"""Put before a Markdown line that opens a fenced code block, for the splitter to cut there
first (a loaded text holds no control characters); counted as nothing, and gone from chunks.
Cut before every fence line, a short block's closing fence went to the next chunk."""
_SEPARATORS: dict[str, list[str]] = {
    RST: [re.escape("\n\n.. "), "\n\n", "\n", *_SENTENCE_ENDS, " ", ""],
    MARKDOWN: [re.escape("\n" + _FENCE_MARK), "\n\n", "\n", *_SENTENCE_ENDS, " ", ""],
}
_DEFAULT_SEPARATORS = ["\n\n", "\n", *_SENTENCE_ENDS, " ", ""]
_BLANK_RUN = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_WORD = re.compile(r"\w+")
_SENTENCE_DONE = re.compile(
    r"[.!?\u3002\uff01\uff1f][\"'\u201d\u2019)\]\u300d\u300f\uff09\u3011\u300b*_`]*\s*\Z"
)
"""A text that ends a sentence: its last mark, then any closing quotes or brackets (CJK ones
too) and Markdown's emphasis or code marks."""
# Topic grouping: paragraphs on each side of a possible cut compared, and what a cut costs
# besides the similarity it breaks (so that a chunk is not cut where it need not be).
_TOPIC_WINDOW = 2
_CUT_COST = 0.1
# A subsection smaller than this, in word pieces, with no subsections of its own, is read with
# its section (gtk-doc's "Parameters" and "Returns" under each function: alone, "the new
# GtkLabel" is a chunk that answers nothing).
_SMALL_SECTION = 32
# English text averages 4-5 characters a word piece (spaces aside), code, URLs, hex and CJK,
# Arabic or Cyrillic text 1-5; a chunk over this many is made of words its model cannot read
# (`_CharactersCount`).
_MOST_CHARACTERS_PER_PIECE = 12
_SPACE = re.compile(r"\s+")
# Bounds the work on a text of very many short paragraphs (the largest group in the
# developers' plain-text sets has 110).
_MOST_PARAGRAPHS = 128
# Characters of the pieces whose lengths `_CharactersCount` remembers, at most (about 32 MB of
# short pieces; forgotten after each document).
_MOST_REMEMBERED = 1 << 20


class TokenCounter(Protocol):
    """What chunking needs of an embedder."""

    max_tokens: int

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def content_tokens(self, text: str) -> int: ...


class _CharactersCount:
    """A `TokenCounter` that counts a text as at least one word piece per
    `_MOST_CHARACTERS_PER_PIECE` characters other than spaces. A model's tokenizer reads a word
    it cannot split (in WordPiece, over 100 characters: a run of letters with no space or
    punctuation) as one unknown piece however long it is, so a document of such runs would
    otherwise be one chunk of any size, shown and put into prompts whole."""

    def __init__(self, counter: TokenCounter) -> None:
        self._counter = counter
        self.max_tokens = counter.max_tokens
        self.special = counter.count_tokens([""])[0]
        """Word pieces a model adds to every text (its start and end markers)."""
        self._known: dict[str, int] = {}
        self._remembered = 0
        """Characters of the texts in `_known`."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        texts = [text.replace(_FENCE_MARK, "") for text in texts]
        counted = self._counter.count_tokens(texts)
        least = (_least_pieces(text) + self.special for text in texts)
        return [max(n, fewest) for n, fewest in zip(counted, least, strict=True)]

    def forget(self) -> None:
        """Let go of the lengths remembered (a document's pieces: a chunker outlives it)."""
        self._known.clear()
        self._remembered = 0

    def content_tokens(self, text: str) -> int:
        # The splitter measures each piece it cuts two or three times (to cut, to merge, to
        # overlap), one call of the tokenizer at a time: text it cuts down to words (1 MB
        # without punctuation) took 46 s. Remembered, each distinct piece costs one call, and
        # words repeat.
        known = self._known.get(text)
        if known is None:
            if self._remembered > _MOST_REMEMBERED:
                self.forget()
            shown = text.replace(_FENCE_MARK, "")
            known = self._known[text] = max(
                self._counter.content_tokens(shown), _least_pieces(shown)
            )
            self._remembered += len(text)
        return known


def _least_pieces(text: str) -> int:
    """Spaces aside: a piece the splitter measures may be a line's indentation alone."""
    return math.ceil(len(_SPACE.sub("", text)) / _MOST_CHARACTERS_PER_PIECE)


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    """The chunk as stored and shown: the section's own text."""
    heading: str
    """Title and section path, as embedded in front of the text."""
    section: str
    """The section path below the title ("" for text before the first section)."""
    page: int | None
    embed_text: str
    """Exactly what the embedding model reads for this chunk."""


def embed_text(heading: str, text: str) -> str:
    return f"{heading}\n{text}" if heading else text


def heading_of(title: str, path: tuple[str, ...]) -> tuple[str, str]:
    """(heading line to embed, section path below the title)."""
    below = path[1:] if path and path[0] == title else path
    section = HEADING_SEPARATOR.join(below)
    heading = HEADING_SEPARATOR.join((title, *below)) if title else section
    return heading, section


class Chunker:
    """Splits documents for one embedding model."""

    def __init__(
        self,
        counter: TokenCounter,
        max_tokens: int | None = None,
        overlap_tokens: int = 24,
        embed_headings: bool = False,
        split_on_blank_lines: bool = True,
    ) -> None:
        self.counter = _CharactersCount(counter)
        self.max_tokens = min(max_tokens or counter.max_tokens, counter.max_tokens)
        self.overlap_tokens = overlap_tokens
        self.embed_headings = embed_headings
        self.split_on_blank_lines = split_on_blank_lines

    def chunk(self, document: LoadedDocument) -> list[Chunk]:
        try:
            return self._chunk(document)
        finally:
            self.counter.forget()

    def _chunk(self, document: LoadedDocument) -> list[Chunk]:
        chunks: list[Chunk] = []
        # The section path (as loaded) whose text was read last, to find a small section's
        # parent, and the last chunk of it and of each section above it still open.
        last_path: tuple[str, ...] | None = None
        ends: dict[tuple[str, ...], int] = {}
        separators = _SEPARATORS.get(document.file_type, _DEFAULT_SEPARATORS)
        sections = document.sections
        for n, section in enumerate(sections):
            heading, section_path = heading_of(document.title, section.path)
            prefix = self._fit_heading(heading) if self.embed_headings else ""
            text = section.text
            if document.file_type == MARKDOWN:
                text = _mark_fence_openings(text)
            blocks = _BLANK_RUN.split(text) if self.split_on_blank_lines else [text]
            texts: list[str] = []
            budget = self._budget(prefix)
            for label, block in self._labelled(blocks, budget):
                groups = [block]
                if document.file_type == TEXT:  # groups that leave a label room
                    room = self.counter.content_tokens(f"{label}\n\n") if label else 0
                    groups = topic_groups(block, self.counter, max(8, budget - room))
                for i, group in enumerate(groups):
                    texts += self._split(group, prefix, separators, "" if i else label)
            # The section whose last chunk a small section joins, and the title it joins under:
            # a subsection with none of its own joins its section's, titled; what a section
            # says after its subsections (gtk-doc's "Since: 3.0" after a function's
            # "Parameters"; alone, a chunk of three word pieces) joins its own, untitled, and
            # its small subsections after it join that chunk too.
            into: tuple[tuple[str, ...], str] | None = None
            if texts and last_path is not None and _is_leaf_under(sections, n, last_path):
                into = (last_path, section.path[-1])
            elif texts and section.path in ends and _resumes(sections, n):
                into = (section.path, "")
            if into is not None:
                path, title = into
                joined = self._joined(chunks[ends[path]], title, "\n\n".join(texts), section.page)
                if joined is not None:
                    chunks[ends[path]] = joined
                    last_path = path
                    continue
            for text in texts:
                chunks.append(
                    Chunk(
                        len(chunks),
                        text,
                        heading,
                        section_path,
                        section.page,
                        embed_text(prefix, text),
                    )
                )
            if texts:
                last_path = section.path
                ends = {path: at for path, at in ends.items() if path == section.path[: len(path)]}
                ends[section.path] = len(chunks) - 1
        return chunks

    def _labelled(self, blocks: list[str], budget: int) -> list[tuple[str, str]]:
        """`blocks` (empty ones left out), each with the label before it ("" for none). A
        label is a block of fewer than `_SMALL_SECTION` word pieces (a quarter of `budget` at
        most) that ends no sentence: an option's name above its description, a function's
        signature, a line of code, "Or,". It introduces what follows; alone it is a chunk that
        answers nothing (SQLite's compile-time options were each a chunk of one name, their
        descriptions another). Labels in a row are one label while they stay that small, and
        the block that makes them larger goes with them ("use this pragma:", then the
        pragma); labels that end their section are a block, and so is a short block that is a
        sentence (an answer)."""
        most = min(_SMALL_SECTION, budget // 4)
        found: list[tuple[str, str]] = []
        label = ""
        for block in blocks:
            if not block.replace(_FENCE_MARK, "").strip():
                continue
            if not _SENTENCE_DONE.search(block):
                with_label = f"{label}\n\n{block.strip()}" if label else block.strip()
                if self._pieces(with_label, most) < most:
                    label = with_label
                    continue
            found.append((label, block))
            label = ""
        return [*found, ("", label)] if label else found

    def _pieces(self, text: str, most: int) -> int:
        """`text`'s word pieces, or `most` when its characters alone count that many (the
        counter's own lower bound, `_least_pieces`: a long block is not tokenized only to
        find it is no label)."""
        if _least_pieces(text.replace(_FENCE_MARK, "")) >= most:
            return most
        return self.counter.content_tokens(text)

    def _joined(self, parent: Chunk, title: str, text: str, page: int | None) -> Chunk | None:
        """`parent` (the last chunk of a section) with a small subsection of it that follows
        it, under the subsection's own `title`, or with the section's own small text after its
        subsections (no title): None when that is not small, is on another page or the two do
        not fit one chunk."""
        if page != parent.page or self.counter.content_tokens(text) >= _SMALL_SECTION:
            return None
        prefix = parent.embed_text.removesuffix(parent.text)
        joined = f"{parent.text}\n\n{title}\n{text}" if title else f"{parent.text}\n\n{text}"
        if self.counter.count_tokens([prefix + joined])[0] > self.max_tokens:
            return None
        return Chunk(parent.index, joined, parent.heading, parent.section, page, prefix + joined)

    def _fit_heading(self, heading: str) -> str:
        # A heading may take at most a quarter of the chunk; keep its innermost part.
        limit = self.max_tokens // 4
        parts = heading.split(HEADING_SEPARATOR)
        while len(parts) > 1 and self.counter.content_tokens(heading) > limit:
            parts = parts[1:]
            heading = HEADING_SEPARATOR.join(parts)
        if self.counter.content_tokens(heading) <= limit:
            return heading
        # The innermost heading alone is too long: the longest beginning of it that fits, found
        # in a few halvings (cutting ten characters at a time tokenized an 8,000-word heading
        # thousands of times).
        fits, over = 0, len(heading)
        while over - fits > 1:
            middle = (fits + over) // 2
            if self.counter.content_tokens(heading[:middle]) <= limit:
                fits = middle
            else:
                over = middle
        return heading[:fits].rstrip()

    def _split(self, text: str, heading: str, separators: list[str], label: str = "") -> list[str]:
        """`text` cut to chunks that fit the model under `heading`, the first one starting with
        `label` (a text too long for one chunk is cut to leave the label room)."""
        if not text.replace(_FENCE_MARK, "").strip():
            return [label.replace(_FENCE_MARK, "")] if label else []
        budget = self._budget(heading)
        if label:
            label += "\n\n"
            budget = max(8, budget - self.counter.content_tokens(label))
        texts = self._split_to(text, budget, separators)
        if label:
            texts = [label + texts[0], *texts[1:]] if texts else [label]
        # Token counts of pieces do not always add up exactly once the pieces are joined:
        # check every chunk as it will be embedded and cut again what is still too long.
        while True:
            lengths = self.counter.count_tokens([embed_text(heading, t) for t in texts])
            over = [i for i, n in enumerate(lengths) if n > self.max_tokens]
            if not over:
                return [t.replace(_FENCE_MARK, "") for t in texts]
            budget = max(8, int(budget * 0.85))
            for i in reversed(over):
                texts[i : i + 1] = self._split_to(texts[i], budget, separators)

    def _budget(self, heading: str) -> int:
        """Word pieces left for a chunk's own text under `heading`."""
        heading_tokens = self.counter.content_tokens(heading + "\n") if heading else 0
        return self.max_tokens - self.counter.special - heading_tokens

    def _split_to(self, text: str, budget: int, separators: list[str]) -> list[str]:
        splitter = _Splitter(
            lead_most=min(_SMALL_SECTION, budget // 4),
            separators=separators,
            chunk_size=budget,
            chunk_overlap=min(self.overlap_tokens, budget // 4),
            length_function=self.counter.content_tokens,
            strip_whitespace=True,
            is_separator_regex=True,
        )
        return [t for t in splitter.split_text(text) if t.replace(_FENCE_MARK, "").strip()]


class _Splitter(RecursiveCharacterTextSplitter):
    """LangChain's recursive splitter (separators kept at the start of the piece after them),
    except for a piece too long for a chunk: the small pieces just before it that end no
    sentence (fewer than `lead_most` word pieces together) are cut with it, not flushed as a
    chunk of their own. They introduce it, as a label introduces its block
    (`Chunker._labelled`): reStructuredText's `.. code-block:: none` before a long listing, a
    `.. data::` signature before a long description were each a chunk of a few words. They
    start its first chunk whole (never cut again at the separators the long piece is cut
    at). Likewise a long piece's last chunk, when it is that small and introduces what comes
    next (it ends with a colon: "it should print something like:"), is read with the pieces
    after it; a listing's last lines are not moved into the next listing. Only where the text
    is cut at line breaks: a piece cut at a sentence's end is a sentence, which introduces
    nothing. (`_split_text_with_regex` is LangChain's own cut, the one its splitter uses.)"""

    def __init__(self, *, lead_most: int, **kwargs: Any) -> None:
        super().__init__(keep_separator=True, **kwargs)
        self._lead_most = lead_most

    def _split_text(self, text: str, separators: list[str]) -> list[str]:
        # A text that is a table alone (no paragraph break in it) is a piece too long for a
        # chunk that nothing above cut out.
        cut = self._cut(text, separators, [])
        table = _table_parts(text) if len(cut) > 1 and "\n" in separators else None
        if table and "\n\n" not in text.strip():
            return self._table_cut(*table, separators[separators.index("\n") :], []) or cut
        return cut

    def _cut(self, text: str, separators: list[str], lead: list[str]) -> list[str]:
        """`text` cut to chunks, the first starting with the pieces `lead` (whole)."""
        separator, deeper = separators[-1], []
        for n, candidate in enumerate(separators):
            pattern = candidate if self._is_separator_regex else re.escape(candidate)
            if not candidate or re.search(pattern, text):
                separator, deeper = candidate, separators[n + 1 :] if candidate else []
                break
        pattern = separator if self._is_separator_regex else re.escape(separator)
        # A separator made of line breaks (`re.escape` keeps a line break as it is).
        at_lines = "\n" in separator
        chunks: list[str] = []
        small = list(lead)
        for piece in _split_text_with_regex(text, pattern, keep_separator=True):
            if self._length_function(piece) < self._chunk_size:
                small.append(piece)
                continue
            carried = 0
            if deeper:
                # The lead passed in goes on whole while nothing has joined it.
                carried = len(small) if small == lead else 0
                carried = max(carried, self._lead(small) if at_lines else 0)
            lead, carry = [], small[len(small) - carried :]
            small = small[: len(small) - carried]
            if small:
                chunks += self._merge_splits(small, "")
                small = []
            if not deeper:
                chunks.append(piece)
                continue
            table = _table_parts(piece) if deeper[0] == "\n" else None
            cut = self._table_cut(*table, deeper, carry) if table else None
            if cut is None:
                cut = self._cut(piece, deeper, carry)
            if len(cut) > 1 and at_lines and self._introduces(cut[-1]):
                small.append(cut.pop())
            chunks += cut
        if small:
            chunks += self._merge_splits(small, "")
        return chunks

    def _table_cut(
        self, start: str, head: str, body: str, separators: list[str], carry: list[str]
    ) -> list[str] | None:
        """A table too long for a chunk (`_table_parts`) cut between its rows (a grid table's
        at its row borders first), its header's rows at the start of every chunk: a chunk of
        rows without them is values whose columns nobody can tell. The first chunk starts with
        `carry` and the table's top as written (a caption, the header), its rules (borders, a
        delimiter row) left out when they take a quarter of a chunk or more: the tokenizer
        reads each `-` or `=` as a word piece. A chunk of nothing but rules (a border cut off)
        is dropped. None when the header takes a quarter of a chunk or more, or the top half
        (cut as any text)."""
        size = self._length_function(head + "\n")
        if size >= self._chunk_size // 4:
            return None
        first = "".join(carry) + start
        if self._length_function(start) >= self._chunk_size // 4:
            first = "".join(carry) + "\n".join(
                line for line in start.split("\n") if not line.strip() or not _only_rules(line)
            )
        first_size = self._length_function(first + "\n")
        if first_size > self._chunk_size // 2:
            return None
        budget = self._chunk_size - max(size, first_size)
        rows = copy.copy(self)
        rows._chunk_size = budget
        rows._chunk_overlap = min(self._chunk_overlap, budget // 4)
        if _GRID_HEAD_END.fullmatch(start.rsplit("\n", 1)[-1]):
            separators = [_GRID_ROW_END, *separators]
        cut = [text for text in rows._cut(body, separators, []) if not _only_rules(text)]
        if not cut:
            return None
        return [f"{first if n == 0 else head}\n{text}".strip() for n, text in enumerate(cut)]

    def _lead(self, pieces: list[str]) -> int:
        """How many of the last `pieces` lead into what follows them: none ends a sentence,
        and together they are fewer than `lead_most` word pieces."""
        n, total = 0, 0
        for piece in reversed(pieces):
            total += self._length_function(piece)
            if total >= self._lead_most or _SENTENCE_DONE.search(piece.replace(_FENCE_MARK, "")):
                break
            n += 1
        return n

    def _introduces(self, text: str) -> bool:
        """Whether a chunk is a few words that introduce what follows ("like this:")."""
        return text.rstrip().endswith(":") and self._length_function(text) < self._lead_most


_GRID_BORDER = re.compile(r"[ \t]*\+(?:-+\+)+[ \t]*")
_GRID_HEAD_END = re.compile(r"[ \t]*\+(?:=+\+)+[ \t]*")
_SIMPLE_BORDER = re.compile(r"[ \t]*=+(?: +=+)+[ \t]*")
_DELIMITER_ROW = re.compile(r"[ \t]*\|?(?:[ \t]*:?-+:?[ \t]*\|)+(?:[ \t]*:?-+:?)?[ \t]*")
"""A Markdown table's delimiter row ("| --- | :-: |", "---|---"): the line under its header."""
_GRID_ROW_END = r"(?<=-\+)\n(?=[ \t]*\|)"
"""Where a grid table's row ends: the line break after a border, before the next row."""
_MOST_HEAD_LINES = 12
_MOST_HEAD_ROWS = 3
_NOT_RULE = re.compile(r"[^-=+|:\s]")


def _table_parts(piece: str) -> tuple[str, str, str] | None:
    """A table with a header that `piece` is (a Markdown table perhaps after a line or two
    leading into it, a caption), as (its text through the header's last line, the header's rows
    without borders, the rest from the line break before the body's first row), indented as
    its first line is not; None for anything else. Tables written as text:
    reStructuredText's grid tables (a header ends at a `+===+` line) and simple tables (a
    header between the first two `===  ===` lines, with rows after them), Markdown's (a line
    of cells over a delimiter row, as the HTML loader writes a row of `th` cells)."""
    lines = piece.rstrip().split("\n")
    top = next((n for n, line in enumerate(lines) if line.strip()), len(lines))
    if top == len(lines):
        return None
    near = range(top + 1, min(len(lines), top + _MOST_HEAD_LINES))
    end: int | None = None
    if _GRID_BORDER.fullmatch(lines[top]):
        end = next((n for n in near if _GRID_HEAD_END.fullmatch(lines[n])), None)
    elif _SIMPLE_BORDER.fullmatch(lines[top]):
        end = next((n for n in near if _SIMPLE_BORDER.fullmatch(lines[n])), None)
    else:  # after two lines at most (a caption), up to three rows of cells
        near = range(top + 1, min(len(lines), top + 3 + _MOST_HEAD_ROWS))
        end = next((n for n in near if _DELIMITER_ROW.fullmatch(lines[n])), None)
        if end is None or "|" not in lines[end - 1]:
            return None
        # Rows of cells right above it head the table too (HTML's header rows, a column's
        # name over its subcolumns'), up to three.
        first = end - 1
        while first > top and end - first < _MOST_HEAD_ROWS and "|" in lines[first - 1]:
            first -= 1
        top = first - 1
    if end is None or end + 1 == len(lines):
        return None
    indent = lines[top + 1][: len(lines[top + 1]) - len(lines[top + 1].lstrip())]
    lines = [line.removeprefix(indent) for line in lines]
    rows = [line.strip() for line in lines[top + 1 : end] if not _GRID_BORDER.fullmatch(line)]
    if not any(rows):
        return None
    body = "\n" + "\n".join(lines[end + 1 :])
    return "\n".join(lines[: end + 1]), "\n".join(row for row in rows if row), body


def _only_rules(text: str) -> bool:
    """Whether `text` is a table's rules and nothing else: borders, a delimiter row, or a
    piece of one (a border wider than a chunk is cut like any text)."""
    return not _NOT_RULE.search(text)


def _mark_fence_openings(text: str) -> str:
    """`text` with `_FENCE_MARK` before each line after the first that opens a fenced code
    block (never before one that closes it)."""
    lines = text.split("\n")
    roles = md_fenced_lines(lines)
    return "\n".join(
        _FENCE_MARK + line if n and role == FENCE_OPENS else line
        for n, (line, role) in enumerate(zip(lines, roles, strict=True))
    )


def _is_leaf_under(sections: Sequence[Section], n: int, parent: tuple[str, ...]) -> bool:
    """Whether section `n` is a subsection of `parent` with none of its own (the loaders give
    sections in document order, so its subsections would follow it)."""
    path = sections[n].path
    if not path or path[:-1] != parent:
        return False
    return n + 1 == len(sections) or sections[n + 1].path[: len(path)] != path


def _resumes(sections: Sequence[Section], n: int) -> bool:
    """Whether section `n` is the rest of a section right after its subsections (the loader
    says it resumes, and the section before it is under it): gtk-doc's "Since: 3.0" after a
    function's "Parameters". A section a heading starts is its own, the same title or not."""
    path = sections[n].path
    before = sections[n - 1].path if n else ()
    return sections[n].resumed and len(before) > len(path) and before[: len(path)] == path


def topic_groups(text: str, counter: TokenCounter, budget: int) -> list[str]:
    """`text`'s paragraphs (blank-line separated) in consecutive groups of at most `budget`
    word pieces and `_MOST_PARAGRAPHS` paragraphs each (a paragraph longer than the budget is
    a group alone, for the splitter to cut). The cuts are chosen exactly, over every way to
    group the paragraphs, for the smallest sum over the cuts of the word similarity across
    each plus a constant cost per cut. Text that fits the budget is one group. The similarity
    is TextTiling's (Hearst, 1997), over two paragraphs on each side: it needs no model, so it
    costs no embedding."""
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    if len(paragraphs) < 2:
        return [text]
    special = counter.count_tokens([""])[0]
    sizes = [n - special for n in counter.count_tokens(paragraphs)]
    if sum(sizes) <= budget:
        return [text]
    across = gap_similarities(paragraphs, _TOPIC_WINDOW)
    # best[j]: the least cost of grouping the first j paragraphs; start[j]: where the last
    # group of that grouping starts.
    best = [0.0] + [math.inf] * len(paragraphs)
    start = [0] * (len(paragraphs) + 1)
    for j in range(1, len(paragraphs) + 1):
        size = 0
        for i in range(j - 1, max(-1, j - 1 - _MOST_PARAGRAPHS), -1):
            size += sizes[i]
            if size > budget and i < j - 1:
                break
            cost = best[i] + (across[i - 1] + _CUT_COST if i else 0.0)
            if cost < best[j]:
                best[j], start[j] = cost, i
    groups: list[str] = []
    j = len(paragraphs)
    while j:
        groups.append("\n\n".join(paragraphs[start[j] : j]))
        j = start[j]
    return groups[::-1]


def gap_similarities(paragraphs: Sequence[str], window: int) -> list[float]:
    """For each gap between two paragraphs, the cosine of the tf-idf word vectors of the
    `window` paragraphs before it and the `window` after it (0 where either side has no
    word)."""
    bags = [Counter(_WORD.findall(p.lower())) for p in paragraphs]
    frequency = Counter(word for bag in bags for word in bag)
    weights = [
        {w: (1 + math.log(n)) * math.log(1 + len(bags) / frequency[w]) for w, n in bag.items()}
        for bag in bags
    ]
    similarities = []
    for gap in range(1, len(bags)):
        before: Counter[str] = Counter()
        after: Counter[str] = Counter()
        for weight in weights[max(0, gap - window) : gap]:
            before.update(weight)
        for weight in weights[gap : gap + window]:
            after.update(weight)
        dot = sum(x * after[w] for w, x in before.items() if w in after)
        norms = math.sqrt(sum(x * x for x in before.values()) * sum(x * x for x in after.values()))
        similarities.append(max(0.0, dot / norms) if norms else 0.0)
    return similarities
