"""Read a file into a document: its title and its sections (heading path + text), by type.

Markdown is split on its headings by CommonMark's rules, HTML by one walk over the
page in document order (inline elements stay in their sentences); PDF is read
with pypdf into paragraphs under the headings of its outline or type sizes (`ingest.pdf`), DOCX
with python-docx. reStructuredText has no structure-aware loader in
LangChain, so its section titles are found by RST's own rule (a title line with an adornment
line of one repeated punctuation character under it, and optionally over it).
"""

from __future__ import annotations

import bisect
import codecs
import io
import re
import unicodedata
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from ragtune.ingest.errors import DocumentLoadError, UnsupportedFileTypeError
from ragtune.ingest.pdf import structured_pieces

TEXT = "text"
MARKDOWN = "markdown"
RST = "rst"
HTML = "html"
PDF = "pdf"
DOCX = "docx"

SUFFIXES: dict[str, str] = {
    ".rst.txt": RST,
    ".rst": RST,
    ".txt": TEXT,
    ".text": TEXT,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".pdf": PDF,
    ".docx": DOCX,
}


LOADER_VERSIONS: dict[str, int] = {HTML: 17, PDF: 2, MARKDOWN: 8, RST: 5, TEXT: 3, DOCX: 2}
"""Bumped when a loader reads the same file differently (HTML 2: inline elements in place; 3:
self-contained blocks apart; 4: the terms of one description kept together; 5: a div whose class
names a section stands apart, permalink marks left out; 6: navigation (menus, tables of
contents, sidebars) and listings' line numbers left out, a DocBook question and answer set's
rows read as entries; 7: an empty named anchor before a block starts an entry, a term's
description shares chunks with its neighbours, in-page links hidden from assistive technology
left out; 8: a form's text read (its controls and buttons left out), pages after the first
`</html>` read, `<br>` inside `pre` a line break, a heading that runs over the text read as
text, navigation named in camel case or with digits left out; 9: a heading's scope ends with the
section, article or other self-contained block it is in; 10: an element with the `hidden`
attribute left out; 11: a `<br>` in a row of cells a space; 12: a delimiter row ("--- | ---")
under a table's header rows of `th` cells; 13: a cell's only paragraph read as its text; 14: a
table's rows keep their columns, text resuming a section after a nested one marked as such; 15:
a table of contents named `contents` left out; 16: a page's footer left out; 17: a cell's
paragraphs read as its text, a space apart, in a row of two or more filled cells; PDF 2: paragraphs
and headings, see `ingest.pdf`; Markdown 2: setext headings, front matter, paragraphs kept
apart; 3: a heading of closing #s alone is empty (CommonMark); 4: a link's or image's data URI
without its payload; 5: kept in inline code; 6: a backslash-escaped backtick opens no code; 7: a
heading of more than `MAX_HEADING_WORDS` words is text, a front matter title at most that long,
control characters left out; 8: cut before a code block's opening fence only, see
`ingest.chunking`; RST 2: markup a reader never sees left out; 3: directive names in any case;
4: as Markdown 7; 5: `.. only::` content read as markup; text 2: paragraphs grouped by topic
when chunked, see `ingest.chunking`; 3: control characters left out; DOCX 2: a delimiter row
under a table's header rows), so that the next ingest re-reads files of that type instead of
skipping them as unchanged."""


def loader_version(path: Path) -> int:
    """The version of the loader that reads `path` (1 for a type never changed)."""
    kind = file_type_of(path)
    return LOADER_VERSIONS.get(kind, 1) if kind else 1


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path (outermost heading first)."""

    path: tuple[str, ...]
    text: str
    page: int | None = None
    resumed: bool = False
    """The rest of the section `path` after a subsection of it ended, not a section its heading
    starts: in HTML, what follows a nested `section` (or section `div`) inside its own."""


@dataclass
class LoadedDocument:
    title: str
    file_type: str
    sections: list[Section] = field(default_factory=list)


def file_type_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, kind in SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    return None


def supported_suffixes() -> str:
    return ", ".join(sorted(SUFFIXES))


def load_document(path: Path, data: bytes) -> LoadedDocument:
    """Parse `data` (the bytes of `path`) by the file's type; raise `DocumentLoadError`."""
    kind = file_type_of(path)
    if kind is None:
        raise UnsupportedFileTypeError(
            f"unsupported file type {path.suffix or '(no extension)'!r}; ragtune reads "
            f"{supported_suffixes()}"
        )
    if not data.strip():
        raise DocumentLoadError("empty file: there is no text to index")
    try:
        document = _LOADERS[kind](path, data)
    except DocumentLoadError:
        raise
    except RecursionError:
        raise DocumentLoadError(
            "the document nests its elements too deeply to be read; repair or re-export it"
        ) from None
    except Exception as exc:  # a parser's own failure on a malformed file is the file's
        raise DocumentLoadError(
            f"the {kind} file could not be read ({type(exc).__name__}: {str(exc)[:200]}); "
            "check that it opens in its own application, then re-save or re-export it"
        ) from exc
    document.sections = [s for s in document.sections if s.text.strip()]
    if not document.sections:
        raise DocumentLoadError("no text found in the file: there is nothing to index")
    return document


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
"""Control characters no text shows (tab, line ends and form feed kept)."""


def decode_text(data: bytes) -> str:
    """Text of a file (`_decoded`), without control characters no reader sees: NUL bytes past
    the first 8 KB, which tell a binary file, reached chunks and prompts."""
    return _CONTROL_CHARACTERS.sub("", _decoded(data))


def _decoded(data: bytes) -> str:
    """Text of a file: UTF-8 (with or without BOM), UTF-16 or UTF-32 with a BOM, UTF-8 with a
    few stray bytes of Windows-1252 (a file edited in two editors), else the detected
    encoding."""
    for bom, codec in _UNICODE_BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec)
            except UnicodeDecodeError as exc:
                raise DocumentLoadError(
                    f"the file starts as {codec.upper()} (its byte order mark) but is not "
                    f"valid {codec.upper()} at byte {exc.start + len(bom)}; re-save it as UTF-8"
                ) from None
    if b"\x00" in data[:8192]:
        raise DocumentLoadError(
            "binary content in a text file (NUL bytes): not a text document; check the file "
            "or its extension"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    mixed = _mostly_utf8(data)
    if mixed is not None:
        return mixed
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None or best.chaos > 0.3:
        raise DocumentLoadError(
            "not text: the bytes decode as no known encoding; check the file or its extension"
        )
    text = str(best)
    if not best.coherence and not _latin_letters_only(text):
        # Too little text to tell its language by (a short note): charset_normalizer's pick
        # among the encodings that read it is then arbitrary ("café" read as cp1006's "cafﻠ").
        # Only a pick of other scripts' letters is undone: one of Latin letters may be right
        # (Windows-1250's "přeji", which Windows-1252 would read "pøeji").
        western = _accented_latin(data)
        if western is not None:
            return western
    return text


def _latin_letters_only(text: str) -> bool:
    """Whether every letter of `text` beyond ASCII is a Latin one."""
    return all(
        ch.isascii() or not ch.isalpha() or unicodedata.name(ch, "").startswith("LATIN")
        for ch in text
    )


_WORD = re.compile(r"\w+")
_SIGN_INSIDE_A_WORD = re.compile(r"[^\W\d_][^\w\s\x00-\x7f][^\W\d_]")
"""A sign beyond ASCII between two letters ("Za¿ó": Polish read as Windows-1252)."""


def _accented_latin(data: bytes) -> str | None:
    """`data` read as Windows-1252 (a superset of Latin-1), when it reads as Latin words with
    accents: each word with a letter beyond ASCII also has an ASCII letter or digit ("café",
    "Zürich"; a one-letter word, "à", stands alone), and no sign beyond ASCII stands inside a
    word ("“quoted”", "5€" and "°C" are fine). Text in another 8-bit encoding read so gives words
    of no ASCII letter (Cyrillic, Greek), or signs inside words (Polish "Za¿ó³æ"); None then."""
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    for word in _WORD.findall(text):
        if word.isascii():
            continue
        if not all(ch.isascii() or ch.isalpha() for ch in word):  # "³": a digit, not a letter
            return None
        if len(word) > 1 and not any(ch.isascii() for ch in word):
            return None
    return None if _SIGN_INSIDE_A_WORD.search(text) else text


_UNICODE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16's: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _mostly_utf8(data: bytes) -> str | None:
    """`data` read as UTF-8 with its invalid bytes read as Windows-1252, when the valid
    multi-byte characters outnumber them (a UTF-8 file with a few stray bytes); None when they
    do not (a file in another encoding)."""
    text = data.decode("utf-8-sig", errors="surrogateescape")  # a stray byte: U+DC80-U+DCFF
    stray = len(_STRAY_BYTE.findall(text))
    if sum(1 for ch in text if ord(ch) > 127) - stray <= stray:
        return None
    return _STRAY_BYTE.sub(
        lambda m: bytes([ord(m.group()) - 0xDC00]).decode("cp1252", errors="replace"), text
    )


_STRAY_BYTE = re.compile("[\udc80-\udcff]")


def _title_from_name(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _load_text(path: Path, data: bytes) -> LoadedDocument:
    text = decode_text(data)
    return LoadedDocument(_title_from_name(path), TEXT, [Section((), text)])


# One repeated punctuation character: RST's section adornment.
_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")


# Explicit markup that Sphinx never shows as text: hyperlink targets (`.. _name:`, the label
# before a section), comments (`.. ` then anything that is not a directive, target, footnote
# or substitution), directives that only set how a page is shown, who wrote it or what its
# doctests run unseen, and the file-wide fields at the top of a page. Each takes its
# indented continuation with it.
_RST_HIDDEN = re.compile(
    r"^\s*\.\.(?:\s*$|\s+_|\s+(?![\[|])(?![\w:+.-]+::)"
    r"|\s+(?:highlight|highlightlang|sectionauthor|moduleauthor|codeauthor|contents"
    r"|tabularcolumns|currentmodule|testsetup|testcleanup)::)",
    re.IGNORECASE,  # directive names are case-insensitive: `.. Contents::` is `.. contents::`
)
_RST_PAGE_FIELD = re.compile(r"^:(?:tocdepth|orphan|nocomments|nosearch):")
_RST_ONLY = re.compile(r"^\s*\.\.\s+only::", re.IGNORECASE)
"""Sphinx's `.. only:: html`: its content is the page's own markup, shown for some builders;
the line goes, the content is read as any (a `.. contents::` in it was a chunk of markup)."""
_RST_BLOCK_START = re.compile(r"^\s*\.\.\s+[\w:+.-]+::|.*::\s*$")
"""A line whose indented lines after it are its content, kept as written (a directive, or a
paragraph ending in "::" before a literal block): markup-looking lines in there are text."""


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _rst_shown_lines(lines: list[str]) -> list[str]:
    """`lines` without the markup a reader never sees (`_RST_HIDDEN`, `_RST_PAGE_FIELD`).
    Lone labels and comments otherwise became chunks of their own (most of the Python docs'
    chunks of three words or fewer), and some ranked in the first five."""
    kept: list[str] = []
    literal: int | None = None  # indentation of the line that opened a kept block
    i = 0
    while i < len(lines):
        line = lines[i]
        if literal is not None and (not line.strip() or _indent(line) > literal):
            kept.append(line)
            i += 1
            continue
        literal = None
        if _RST_ONLY.match(line):
            own = _indent(line)
            i += 1
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) > own:
                i += 1  # the expression's lines after the first ("html or\n   epub")
            if i < len(lines) and not lines[i].strip():
                i += 1  # the blank line before its content: one break, not two
            continue
        if _RST_HIDDEN.match(line) or _RST_PAGE_FIELD.match(line):
            own = _indent(line)
            i += 1
            if line.strip() == ".." and (i == len(lines) or not lines[i].strip()):
                continue  # an empty comment then a blank line ends a block and takes no text
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > own):
                if not lines[i].strip():
                    kept.append("")  # blank lines stay: they separate paragraphs and blocks
                i += 1
            continue
        if _RST_BLOCK_START.match(line):
            literal = _indent(line)
        kept.append(line)
        i += 1
    return kept


def _load_rst(path: Path, data: bytes) -> LoadedDocument:
    lines = _rst_shown_lines(decode_text(data).splitlines())
    styles: list[tuple[str, bool]] = []  # adornment styles in order of first use = levels
    stack: list[str] = []
    sections: list[Section] = []
    body: list[str] = []
    title = ""
    i = 0
    while i < len(lines):
        found = _rst_heading(lines, i)
        if found is not None and not _short_heading(found[0]):
            body.extend(lines[i : i + found[2]])  # text, as an HTML heading that long is
            i += found[2]
            continue
        if found is None:
            body.append(lines[i])
            i += 1
            continue
        heading, style, used = found
        if body:
            sections.append(Section(tuple(stack), "\n".join(body).strip("\n")))
            body.clear()
        if style not in styles:
            styles.append(style)
        del stack[styles.index(style) :]
        stack.append(heading)
        title = title or heading
        i += used
    if body:
        sections.append(Section(tuple(stack), "\n".join(body).strip("\n")))
    return LoadedDocument(title or _title_from_name(path), RST, sections)


def _rst_heading(lines: list[str], i: int) -> tuple[str, tuple[str, bool], int] | None:
    """(title, adornment style, lines used) when a section title starts at line `i`."""

    def adornment(n: int) -> str | None:
        match = _ADORNMENT.match(lines[n]) if n < len(lines) else None
        return match.group(1) if match else None

    char = adornment(i)
    if char is not None:  # an overline, the title, then the same underline
        text = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if text and adornment(i + 2) == char and len(lines[i].rstrip()) >= len(text):
            return text, (char, True), 3
        return None
    line = lines[i]
    text = line.strip()
    char = adornment(i + 1)
    if (
        text
        and char is not None
        and not line[0].isspace()
        and len(lines[i + 1].rstrip()) >= len(text) - 1
    ):
        return text, (char, False), 2
    return None


def _md_atx(line: str) -> tuple[int, str] | None:
    """An ATX heading's level and text (`## Title ##`), None for any other line. By string
    operations: a regular expression for the optional closing #s backtracks over a long run of
    spaces (a 60 KB file took 31 s)."""
    stripped = line.lstrip(" ")
    if len(line) - len(stripped) > 3:
        return None
    rest = stripped.lstrip("#")
    level = len(stripped) - len(rest)
    if not 1 <= level <= 6 or (rest and rest[0] not in " \t"):
        return None
    text = rest.strip(" \t")
    closed = text.rstrip("#")
    if not closed:
        return level, ""
    if closed != text and closed[-1] in " \t":
        text = closed
    return level, text.strip()


_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_MD_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MD_NOT_A_TITLE = re.compile(r"^(?: {4}|\t| {0,3}(?:[-*+>|]|\d+[.)])(?:\s|$))")
"""A line that cannot be a setext title: indented code, a list item, a quote, a table row."""
# A data URI as a link's or an image's target (`![logo](data:image/png;base64,iVBOR...)`, a
# reference definition's, or an HTML image's `src` written into the Markdown): its payload is
# no text, only junk chunks to embed (100 KB of base64 made 437), so only its media type is
# kept.
_MD_DATA_URI = re.compile(
    r"(\]\(\s*<?|^ {0,3}\[[^\]]+\]:[ \t]*<?|\bsrc\s*=\s*[\"']?)"
    # The media type: its own characters only, so that a run of "](data:" without a comma
    # fails at once (it scanned to the line's end from each: 70 KB took 10 s).
    r"data:([\w/+.=;%-]{0,256}),[^\s)>\"']*",
    re.IGNORECASE,
)
_MD_BACKTICKS = re.compile(r"`+")
_MD_FRONT_TITLE = re.compile(r"^title:(.*)$", re.MULTILINE)


def _load_markdown(path: Path, data: bytes) -> LoadedDocument:
    """Sections under ATX (`## Title`) and setext (a title underlined with `===` or `---`)
    headings, CommonMark's rules for what is a heading (not a line in a fenced code block, not
    a list item or quote; `---` after a blank line is a rule); each section's text as written,
    paragraphs one blank line apart (outside code, a run of blank lines means no more than one
    in Markdown, while the chunker takes two for a block it never joins). YAML front matter is not
    text: its `title` is the document's title (else the first level-1 heading)."""
    lines = decode_text(data).splitlines()  # \n, \r\n (Windows) or \r
    title = ""
    start = 0
    if lines and lines[0].strip() == "---":
        end = next((n for n in range(1, len(lines)) if lines[n].strip() in ("---", "...")), None)
        if end is not None:
            found = _MD_FRONT_TITLE.search("\n".join(lines[1:end]))
            title = found.group(1).strip(" \t").strip("'\"") if found else ""
            title = " ".join(title.split()[:MAX_HEADING_WORDS])  # metadata of every chunk
            start = end + 1
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []

    def enter(level: int, heading: str) -> None:
        nonlocal title
        text = "\n".join(body).strip("\n")
        if text.strip():
            sections.append(Section(tuple(h for _, h in stack), text))
        body.clear()
        while stack and stack[-1][0] >= level:
            stack.pop()
        if heading:
            stack.append((level, heading))
            title = title or (heading if level == 1 else "")

    fenced = [""] * start + md_fenced_lines(lines[start:])  # front matter is no Markdown
    n = start
    while n < len(lines):
        line = lines[n]
        if fenced[n]:
            body.append(line)
        elif (atx := _md_atx(line)) and _short_heading(atx[1]):
            enter(*atx)
        elif not line.strip() and (not body or not body[-1].strip()):
            pass  # blank lines in a row are one (CommonMark): no break the chunker would keep
        elif (
            n + 1 < len(lines)
            and line.strip()
            and not _MD_NOT_A_TITLE.match(line)
            and (not body or not body[-1].strip())
            and (underline := _MD_SETEXT.match(lines[n + 1]))
            and _short_heading(line)
        ):
            enter(1 if underline.group(1)[0] == "=" else 2, line.strip())
            n += 1
        else:
            body.append(_without_data_uris(line))
        n += 1
    enter(0, "")
    return LoadedDocument(title or _title_from_name(path), MARKDOWN, sections)


FENCE_OPENS = "opens"
"""`md_fenced_lines`' value for a line that opens a fenced code block."""


def md_fenced_lines(lines: Sequence[str]) -> list[str]:
    """For each Markdown line, its part in a fenced code block: `FENCE_OPENS`, "inside",
    "closes" (a run of the opening's character at least as long), or "" outside any. A fence
    left open runs to the end, as CommonMark reads it."""
    roles: list[str] = []
    fence = ""
    for line in lines:
        opened = _MD_FENCE.match(line)
        if fence:
            run = opened.group(1) if opened else ""
            closes = run[:1] == fence[0] and len(run) >= len(fence)
            roles.append("closes" if closes else "inside")
            fence = "" if closes else fence
        elif opened:
            fence = opened.group(1)
            roles.append(FENCE_OPENS)
        else:
            roles.append("")
    return roles


def _without_data_uris(line: str) -> str:
    """`line` with each data URI's payload cut (`_MD_DATA_URI`), save in inline code spans:
    code is shown as written, as in fenced blocks."""
    if "data:" not in line.lower():
        return line
    kept, start = [], 0
    for opens, closes in code_spans(line):
        kept += [_MD_DATA_URI.sub(r"\1data:\2,…", line[start:opens]), line[opens:closes]]
        start = closes
    return "".join(kept) + _MD_DATA_URI.sub(r"\1data:\2,…", line[start:])


def code_spans(line: str) -> list[tuple[int, int]]:
    """Where `line`'s inline code spans start and end, as CommonMark reads them: a run of
    backticks opens one, closed by the next run of the same length; a run that no such run
    follows is a literal. Outside code, a backslash before a run makes its first backtick a
    literal (the rest of the run may open a span); inside, a backslash is a literal itself, so
    a closer is never escaped. In O(n log n): a regular expression that looks ahead for each
    run's closer takes quadratic time on runs of many lengths (18 s for a 1 MB line)."""
    runs = [(m.start(), m.end()) for m in _MD_BACKTICKS.finditer(line)]
    of_length: dict[int, list[int]] = {}
    for n, (begin, end) in enumerate(runs):
        of_length.setdefault(end - begin, []).append(n)
    spans, n = [], 0
    while n < len(runs):
        begin, end = runs[n]
        escape = begin
        while escape and line[escape - 1] == "\\":  # each run's own: O(n) in all
            escape -= 1
        begin += (begin - escape) % 2  # an escaped backtick is text
        same = of_length.get(end - begin, [])
        after = bisect.bisect_right(same, n)
        if after == len(same):
            n += 1  # a literal run of backticks
        else:
            closer = same[after]
            spans.append((begin, runs[closer][1]))
            n = closer + 1
    return spans


_HTML_HEADING_NAMES = tuple(f"h{n}" for n in range(1, 7))
# Elements whose text is never document content.
_HTML_NOISE = (
    "script", "style", "noscript", "template", "svg", "nav", "iframe",
    "button", "input", "select", "textarea",
)  # fmt: skip
"""A `form` itself is not: ASP.NET and SharePoint wrap a whole page's text in one; its
controls are."""
_PERMALINKS = frozenset({"\u00b6", "\u00a7", "#", "\U0001f517"})
"""The text of a link to its own heading or entry (`<a href="#...">¶</a>`: Sphinx, MkDocs and
others put one in every heading and API entry): a mark to click, not text; headings and
citations read "9. Classes", not "9. Classes ¶"."""
_NAVIGATION_NAMES = frozenset(
    {
        "breadcrumb", "breadcrumbs", "docnav", "nav", "navbar", "navfooter", "navheader",
        "navigation", "pagination", "toc",
    }
)  # fmt: skip
"""A class or id that names a page's navigation outright: DocBook XSL's `navheader`,
`navfooter` and `toc`, Publican's `docnav`, a breadcrumb trail, a navigation bar."""
_NAVIGATION_WORDS = _NAVIGATION_NAMES | {
    "mainmenu", "menu", "menubar", "navpath", "navrow", "sidebar", "sphinxsidebar", "submenu",
}  # fmt: skip
"""Words that name navigation in a class or id, whole or as a part split at `-`, `_`, a
change to capitals or trailing digits (`fancy_toc`, `nav-links`, `menu mainmenu`, Javadoc's
`topNav` and `navList`, Doxygen's `navrow1`). A box so named is navigation only when most of
its text is link text: a site's menu is links, a reST sidebar (`div.sidebar`) or a layout
wrapper (`with-sidebar`) is content."""
_CONTENTS_NAMES = frozenset({"contents", "shortcontents"})
"""A class or id, whole, that names a table of contents (makeinfo's `div.contents` and
`div.shortcontents`, docutils' `div.contents`): navigation when most of its text is the text
of links into the page itself (`href="#..."`). Doxygen calls the box of a page's text
`contents`, which on an index page is mostly links to other pages; gtk-doc's
`example-contents` and `table-contents` are an example's and a table's text, so the word
alone names nothing."""
_NAVIGATION_ROLES = frozenset({"navigation", "search", "doc-toc"})
"""ARIA's navigation and search landmarks and DPUB-ARIA's table of contents."""
_FOOTER_ROLE = "contentinfo"
"""ARIA's footer landmark (Sphinx's `div.footer` says `role="contentinfo"`)."""
_FOOTER_BOXES = frozenset({"address", "div", "p"})
"""The elements a class, id or role makes a footer: boxes, not a section (`section`, a
section `div`, which docutils names after its title: a section "Footer" is `div#footer`), a
table's cell, a term, a list item or a word in a sentence (`span.footer`)."""
_ATTRIBUTED = frozenset({"blockquote", "figure"})
"""Where a `footer` element is content: a quotation's attribution, a figure's credit."""
_PAGE_ROOTS = frozenset({"html", "body", "main", "article"})
_NEVER_FURNITURE = _PAGE_ROOTS | frozenset(_HTML_HEADING_NAMES)
"""Elements that are never navigation or a footer, whatever their names or role say: the
page's own roots and its headings."""


def _is_navigation(tag: Any, role: str, written: list[str], words: set[str]) -> bool:
    """Whether an element is a page's navigation, where to go rather than what the page says
    (as `nav` is): ARIA's navigation or search landmark, a box named as navigation
    (`_NAVIGATION_NAMES`), one whose name has a navigation word (`_NAVIGATION_WORDS`) and
    whose text is mostly link text, or one that names a table of contents
    (`_CONTENTS_NAMES`) and whose text is mostly links into the page. `role` is its ARIA
    role (lowercase), `written` its classes and id (`_names`), `words` their words
    (`_name_words`)."""
    if role in _NAVIGATION_ROLES:
        return True
    if any(name.lower() in _NAVIGATION_NAMES for name in written):
        return True
    named = bool(words & _NAVIGATION_WORDS)
    if not named and not any(name.lower() in _CONTENTS_NAMES for name in written):
        return False
    links = tag.find_all("a")  # only for a box so named: every element of a page is asked
    if not named:  # a table of contents: of this page
        links = [a for a in links if str(a.get("href", "")).startswith("#")]
    text = len(tag.get_text("", strip=True))
    linked = sum(len(a.get_text("", strip=True)) for a in links)
    return 2 * linked >= text


def _names(tag: Any) -> list[str]:
    """An element's classes and id, as written."""
    written = [str(c) for c in tag.get("class") or ()]
    if tag.get("id"):
        written.append(str(tag["id"]))
    return written


def _name_words(written: list[str]) -> set[str]:
    """The words of classes and ids: each whole, and its parts split at `-`, `_`, a change to
    capitals, trailing digits dropped (`sideBar` is a sidebar, `topNav` a nav, `navrow1` a
    navrow)."""
    return {
        re.sub(r"\d+$", "", word).lower()
        for name in written
        for word in (
            *re.split(r"[-_]", name),
            *re.split(r"[-_]|(?<=[a-z])(?=[A-Z])", name),
        )
    }


def _is_footer(tag: Any, role: str, written: list[str], quoted: bool) -> bool:
    """Whether an element is a page's footer, what a site says at the foot of each of its
    pages ("Generated by GTK-Doc V1.33.1", asciidoc's "Last updated 2024-05-31", a
    copyright), unless `quoted` (inside a quotation or a figure: an attribution): the `footer`
    element, or a box (`_FOOTER_BOXES`) that is ARIA's `contentinfo` landmark or
    whose class or id is "footer", whole (gtk-doc's and Doxygen's `footer`, Sphinx's
    `div.footer`, asciidoc's `div#footer`; not `page-with-footer`, a layout wrapper). Said
    on every page, it is about none: it was a chunk on each page of the GTK set (54) and the
    Git set (32). `role` is its ARIA role (lowercase), `written` its classes and id."""
    if quoted:
        return False
    if tag.name == "footer":
        return True
    if tag.name not in _FOOTER_BOXES or _is_section_div(tag):
        return False
    return role == _FOOTER_ROLE or any(name.lower() == "footer" for name in written)


def _is_line_numbers(text: str) -> bool:
    """Whether a `pre` holds only a code listing's line numbers (1, 2, 3, ..., one a line):
    the gutter gtk-doc, Pygments (`linenos="table"`) and others set beside a listing, which
    reads "1 2 3 4 5 6 7 8 9" in the middle of the text."""
    numbers = text.split()
    if len(numbers) < 2 or numbers[0] != "1" or not all(n.isdigit() for n in numbers):
        return False
    return all(int(b) == int(a) + 1 for a, b in pairwise(numbers))


def _is_apparatus(tag: Any, quoted: bool) -> bool:
    """Whether an element is the page's apparatus rather than its text: navigation, a
    listing's line numbers, a permalink mark (an in-page link whose text is a mark, or
    that the page hides from assistive technology: makeinfo's "#" and "TOC" in every
    heading), or an element with the `hidden` attribute, which HTML defines as not relevant
    to the page as it stands, for every reader (a script's "Copied!" or "No results"
    message, a closed panel's template), or the page's footer (`_is_footer`).
    `hidden="until-found"` is collapsed text a reader finds by searching the page: text.
    (Text hidden by a style, `display: none`, is read: a page's script shows it on request,
    as SQLite's syntax diagrams.) `quoted`: the element is inside a quotation or a figure."""
    if tag.name == "pre" and _is_line_numbers(tag.get_text()):
        return True
    marked = tag.get("hidden")
    if marked is not None and str(marked).strip().lower() != "until-found":
        # A page's `html`, `body`, `main` or `article` may be hidden until its script has
        # styled it (a flash of unstyled text avoided): its text is still the page's.
        return tag.name not in _PAGE_ROOTS
    permalink = tag.name == "a" and str(tag.get("href", "")).startswith("#")
    hidden = str(tag.get("aria-hidden", "")).strip().lower() == "true"
    mark = permalink and (hidden or tag.get_text(strip=True) in _PERMALINKS)
    if mark:
        return True
    if tag.name in _NEVER_FURNITURE:
        return False
    role = str(tag.get("role", "")).strip().lower()
    written = _names(tag)
    words = _name_words(written)
    return _is_navigation(tag, role, written, words) or _is_footer(tag, role, written, quoted)


def _load_html(path: Path, data: bytes) -> LoadedDocument:
    """Sections split at h1-h6, read in document order: inline elements (links, code, bold)
    stay inside their sentences, block elements end lines, paragraphs are separated by a blank
    line, `pre` keeps its lines. (LangChain's HTMLHeaderTextSplitter moves every inline
    element's text after its paragraph: "run PRAGMA foreign_keys=ON or compile with ..." came
    out as "run or compile with . PRAGMA foreign_keys=ON", breaking the sentences retrieval
    matches.)"""
    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning
    from bs4.element import Tag

    with warnings.catch_warnings():
        # XHTML (Git's manual pages) is read as HTML on purpose: the same elements mean the
        # same there, and an XML parser would not know `br` or `p` from any other tag.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(decode_text(data), "lxml")
    page_title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for element in soup(_HTML_NOISE):
        element.decompose()
    # Found first, then removed: what is inside apparatus is not looked at. (Asking each
    # element whether it was already removed, `Tag.decomposed`, searches its subtree for a tag
    # of that name: 3,000 nested divs took 10 s.)
    apparatus: list[Tag] = []
    stack: list[tuple[Tag, bool]] = [(soup, False)]  # an element, and whether it is quoted
    while stack:
        parent, quoted = stack.pop()
        for child in parent.children:
            if not isinstance(child, Tag):
                continue
            if _is_apparatus(child, quoted):
                apparatus.append(child)
            else:
                stack.append((child, quoted or child.name in _ATTRIBUTED))
    for element in apparatus:
        element.decompose()
    for head in soup.find_all("head"):
        head.decompose()
    first_h1 = soup.find("h1")
    title = page_title or (first_h1.get_text(" ", strip=True) if first_h1 else "")
    reader = _HtmlSections()
    # lxml puts what follows </html> (pages written one after another in one file) in an
    # `html` of its own, beside the first: each is read, its body if it has one.
    roots = [child for child in soup.children if isinstance(child, Tag)] or [soup]
    for root in roots:
        reader.read(root.body if root.name == "html" and root.body else root)
    return LoadedDocument(title or _title_from_name(path), HTML, reader.finish())


_HTML_HEADINGS = {name: n for n, name in enumerate(_HTML_HEADING_NAMES, 1)}
_HTML_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "caption", "dd", "details", "dialog",
        "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "header", "hr", "li",
        "main", "menu", "ol", "p", "pre", "section", "summary", "table", "tr", "ul",
    }
)  # fmt: skip
_HTML_UNITS = frozenset({"article", "aside", "blockquote", "details", "figure", "section"})
"""Blocks that stand on their own (HTML's sectioning and self-contained content): no chunk
reaches across their edges, as none reaches across a heading. A description with no term
before it (`dd`) is one too, and an empty named anchor before a block starts one
(`_is_entry_anchor`). Without this, a chunk of the SQLite FAQ ran from the end of one answer
(a blockquote) into the next. Measured with bench/retrieval.py (same run, score fusion):
SQLite hybrid R@5 0.630 -> 0.889, MRR@10 0.459 -> 0.704; Git 0.850 -> 0.900, 0.593 -> 0.677;
the Python set (reStructuredText) is not read by this loader. Every `div` holding blocks as a
unit was worse on both (it splits layout wrappers and one-paragraph boxes: Git MRR@10 0.616)."""
_SECTION_CLASS = re.compile(
    r"(section|chapter|appendix|preface|simplesect|refentry|refsection|(?:ref)?sect[1-5]"
    r"|[a-z]+-level-extent)"
)
"""The class of a `div` that is a section, as generators that predate HTML5's `section` write
one: docutils' HTML4 writer (Sphinx before docutils 0.18) and pandoc (`section`), DocBook
XSL (`section`, `sect1`-`sect5`, `chapter`, `appendix`, `preface`, `refsect1`, ...),
AsciiDoc and Asciidoctor (`sect1`-`sect5`) and Texinfo (`section-level-extent`). Such a
div stands on its own as `section` does; a FAQ page whose question headings are gone keeps
each answer in its section's div. Other divs are layout (wrappers, boxes) and stay blocks."""


def _is_section_div(tag: Any) -> bool:
    """Whether an element is a `div` that is a section (`_SECTION_CLASS`)."""
    return tag.name == "div" and any(_SECTION_CLASS.fullmatch(c) for c in tag.get("class") or ())


_QANDA_ROWS = frozenset({"question", "answer"})
"""The classes DocBook XSL gives the rows (`tr`) of a question-and-answer set's table."""
_PARAGRAPH_BREAK = "\x00"  # a block boundary, resolved to line breaks once the text is whole
_UNIT_BREAK = "\x02"  # the edge of a self-contained block, resolved to a chunk break
_PRE_LINE = "\x01"  # a line break inside `pre`, kept with the indentation after it
_CELL = "\x03"  # the start of a table cell, resolved to " | " between cells of a line
_ROW = "\x04"  # the edge of a table row, resolved to one line break
_LINE = "\x05"  # a `<br>` outside `pre`: a line break, or a space inside a row of cells
_HEAD = "\x06"  # after `_CELL` for a header cell (`th`)
_ROW_START = "\x07"  # after the `_ROW` that opens a row: its first line is where the row starts
_SOFT_SPACE = "\x08"  # around a cell's paragraph read as its text: one space with what is beside
_TABLE_CELLS = frozenset({"td", "th"})


def _unmarked(text: str) -> str:
    """A document's text without the control characters the walk uses as marks."""
    for mark in (
        _PARAGRAPH_BREAK, _PRE_LINE, _UNIT_BREAK, _CELL, _ROW, _LINE, _HEAD, _ROW_START,
        _SOFT_SPACE,
    ):  # fmt: skip
        text = text.replace(mark, "")
    return text


def _soft_spaces(text: str) -> str:
    """`text` with each run of `_SOFT_SPACE` marks and the spaces beside them one space (by
    string operations: linear however long a run of spaces is)."""
    if _SOFT_SPACE not in text:
        return text
    first, *between, last = text.split(_SOFT_SPACE)
    pieces = [first.rstrip(" "), *(p.strip(" ") for p in between), last.lstrip(" ")]
    return " ".join(p for n, p in enumerate(pieces) if p or n in (0, len(pieces) - 1))


def _rows(text: str) -> str:
    """`text` with its table rows one line apart: the white space between them in the page's
    source, and rows of empty cells (spacers), aside."""
    if _ROW not in text:
        return text.replace(_LINE, "\n")
    pieces = (_cell_lines(piece).strip() for piece in text.split(_ROW))
    return "\n".join(piece for piece in pieces if _empty_cells(piece).strip())


def _cell_lines(row: str) -> str:
    """`row` (the text between two row edges) with its `<br>`s resolved: a space in a row of
    two or more filled cells that hold no blocks, where the row is one line ("MySQL<br>3.23.41"
    in a header is one cell of it, and a line break there shifted every cell after it to a
    line of its own); a line break anywhere else (a layout table's cells, a row of one filled
    cell beside a spacer, text between tables)."""
    if _LINE not in row:
        return row
    if _filled_cells(row) < 2 or _PARAGRAPH_BREAK in row:
        return row.replace(_LINE, "\n")
    # Each side of a break stripped of its spaces (linear: a regular expression matching the
    # spaces around a mark backtracked over every run of them).
    sides = [side.strip(" \t") for side in row.split(_LINE)]
    return " ".join(side for side in sides if side)


def _empty_cells(text: str) -> str:
    """`text` without the marks of cells and line breaks (what is left of an empty cell is
    white space)."""
    return text.replace(_CELL, "").replace(_HEAD, "").replace(_LINE, "").replace(_ROW_START, "")


def _first_cell(line: str) -> int | None:
    """Where the first filled cell of `line` is, counting the text before its first cell mark
    as place 0; None for a line that is no row, or a row of empty cells."""
    if _CELL not in line:
        return None
    cells = line.split(_CELL)
    return next((n for n, cell in enumerate(cells) if _empty_cells(cell).strip()), None)


def _row(line: str, start: int | None = None) -> str:
    """A line of the page's text, stripped, its table cells apart by " | " (a cell that
    starts the line, or holds blocks, has no mark before it): from place `start` (the first
    filled cell's by default: empty cells before it are left out unless the rows around it
    fill their place) to its last filled cell."""
    if _CELL not in line:
        return line.strip()
    cells = [cell.replace(_HEAD, "").strip() for cell in line.split(_CELL)]
    filled = [n for n, cell in enumerate(cells) if cell]
    if not filled:
        return ""
    first = filled[0] if start is None else min(start, filled[0])
    return " | ".join(cells[first : filled[-1] + 1]).strip()


def _header_columns(line: str, start: int | None = None) -> int:
    """How many columns `line` heads when it is a row of header cells (every filled cell a
    `th`), from place `start` (its first filled cell's by default), else 0."""
    before, *cells = line.split(_CELL)
    if before.strip():
        return 0
    filled = [n for n, cell in enumerate(cells, 1) if _empty_cells(cell).strip()]
    if not filled or not all(cells[n - 1].startswith(_HEAD) for n in filled):
        return 0
    first = filled[0] if start is None else min(start, filled[0])
    return filled[-1] - first + 1


def _table_lines(lines: list[str]) -> list[str]:
    """`lines` read as rows (`_row`), with a Markdown delimiter row ("--- | ---") under the
    header rows that start a table, when a row of data follows them: what tells a reader,
    and the chunker, which rows name the columns (they start every chunk of a table cut in
    several). A row of `th` cells after rows of data (a group's title, a footer) is not a
    header, nor is a row of one filled `th` (a title across the table). The rows of a table
    (lines of cells one after another) start at the same place: an empty cell before a row's
    first filled one is kept where another row fills that column (a header's empty corner
    above the rows' names: left out, every name stood a column left of its values)."""
    starts = _row_starts(lines)
    lines = [line.replace(_ROW_START, "") for line in lines]
    texts = [_row(line, at) for line, at in zip(lines, starts, strict=True)]
    heads = [_header_columns(line, at) for line, at in zip(lines, starts, strict=True)]
    rows: list[str] = []
    heading = True  # no row of data yet since the last line that is no row
    for n, (line, text, columns) in enumerate(zip(lines, texts, heads, strict=True)):
        rows.append(text)
        after = n + 1 < len(lines) and _CELL in lines[n + 1]
        data = after and not heads[n + 1] and bool(texts[n + 1])
        if columns and heading and data and _filled_cells(line) > 1:
            rows.append(_delimiter_row(columns))
        heading = _CELL not in line or (heading and bool(columns))
    return rows


def _row_starts(lines: list[str]) -> list[int | None]:
    """For each of `lines`, the place its row's cells are read from (`_row`): the earliest
    first filled cell (`_first_cell`) of the rows of its table, lines of cells one after
    another; None for a line that is no row's start (text, or the rest of a row whose cell
    held blocks: its places are not the columns')."""
    starts = [_first_cell(line) if line.startswith(_ROW_START) else None for line in lines]
    begin = 0
    for n in range(len(lines) + 1):
        if n == len(lines) or _CELL not in lines[n]:
            # Place 0 is text in a row before its first cell: no place for the other rows
            # to keep.
            first = min((at for at in starts[begin:n] if at), default=None)
            for m in range(begin, n):
                if starts[m] is not None:
                    starts[m] = first
            begin = n + 1
    return starts


def _filled_cells(line: str) -> int:
    """How many cells of `line` hold something."""
    return sum(1 for cell in line.split(_CELL)[1:] if _empty_cells(cell).strip())


def _delimiter_row(columns: int) -> str:
    """The Markdown delimiter row under a table's header rows of `columns` cells."""
    return " | ".join(["---"] * columns)


def _paragraph_of_cell(paragraph: Any, known: dict[int, bool]) -> bool:
    """Whether `paragraph` is read as its table cell's text, as a `td`'s own text is: the
    cell's only paragraph, or one of several (beside text or inline elements, a space apart)
    in a row of two or more filled cells, as a `<br>` is a space there (`_cell_lines`); a
    table of one cell a row is a box (a layout table around a page's text), whose paragraphs
    stay paragraphs. Never where the cell holds another block (a list, code, a table), nor
    in a DocBook question or answer, whose rows are entries. `known`: the answers for the
    cells and rows read before (by `id`), so that a cell of thousands of paragraphs or a row
    of thousands of cells is read in linear time."""
    from bs4.element import Comment, NavigableString, Tag

    cell = paragraph.parent
    if cell is None or cell.name not in _TABLE_CELLS:
        return False
    if id(cell) not in known:
        row = cell.parent
        paragraphs, others = 0, False  # others: text or elements beside its paragraphs
        blocks = False
        for child in cell.children:
            if isinstance(child, Tag):
                if child.name == "p":
                    paragraphs += 1
                    continue
                others = True
                blocks = blocks or child.name in _HTML_BLOCKS or child.name in _HTML_HEADINGS
            elif isinstance(child, NavigableString) and not isinstance(child, Comment):
                others = others or bool(child.strip())
        entry = isinstance(row, Tag) and bool(_QANDA_ROWS & set(row.get("class") or ()))
        lone = paragraphs == 1 and not others
        known[id(cell)] = (
            not blocks
            and not entry
            and (lone or (isinstance(row, Tag) and _row_of_cells(row, known)))
        )
    return known[id(cell)]


def _row_of_cells(row: Any, known: dict[int, bool]) -> bool:
    """Whether `row` is a row (`tr`) of two or more filled cells. `known`: as
    `_paragraph_of_cell`'s."""
    from bs4.element import Tag

    if id(row) not in known:
        filled = 0
        if row.name == "tr":
            for cell in row.children:
                if isinstance(cell, Tag) and cell.name in _TABLE_CELLS and cell.get_text().strip():
                    filled += 1
                    if filled == 2:
                        break
        known[id(row)] = filled == 2
    return known[id(row)]


def _sibling_tag(siblings: Any) -> str | None:
    """The name of the first element among `siblings` (white space between aside), None when
    text or nothing comes first."""
    from bs4.element import NavigableString, PreformattedString, Tag

    for sibling in siblings:
        if isinstance(sibling, Tag):
            return str(sibling.name)
        if isinstance(sibling, PreformattedString):
            continue
        if isinstance(sibling, NavigableString) and not sibling.strip():
            continue
        return None
    return None


def _is_entry_anchor(tag: Any) -> bool:
    """Whether an element is an empty named anchor standing before a block or a heading
    (`<a name="q5"></a><p>...`): a place the page's own table of contents or index links to,
    so the start of an entry. makeinfo (Texinfo 6) writes pages flat, every heading a sibling
    of its paragraphs after such an anchor, and FAQs written by hand put one before each
    question's bold line (SQLite's): where a question is not a heading, or was cut, the anchor
    is all that says where one answer ends. An anchor inside a sentence, one that links
    somewhere (`href`) or one with text is no such mark."""
    if tag.name != "a" or tag.get("href") is not None or not (tag.get("name") or tag.get("id")):
        return False
    if tag.get_text(strip=True):
        return False
    following = _sibling_tag(tag.next_siblings)
    return following is not None and (following in _HTML_BLOCKS or following in _HTML_HEADINGS)


def _pre_text(pre: Any) -> str:
    """The text of a `pre` as written, a `<br>` a line break (a listing may break its lines
    with one; one followed by a new line is one break, not two)."""
    from bs4.element import CData, NavigableString, PreformattedString, Tag

    out: list[str] = []
    for node in pre.descendants:
        if isinstance(node, Tag):
            after = node.next_sibling
            if node.name == "br" and not (isinstance(after, str) and after[:1] in ("\n", "\r")):
                out.append("\n")
        elif isinstance(node, NavigableString) and (
            not isinstance(node, PreformattedString) or isinstance(node, CData)
        ):
            out.append(str(node))
    return "".join(out)


MAX_HEADING_WORDS = 40
"""The most words a heading element is read as a heading with: a longer one (an `<h2>` left
open that runs over the page's text) is read as text, as one that holds blocks is (`<h3><div>
<p>...`); as a heading its text would only be in the heading path, which chunks do not embed
by default, and copied whole into every chunk's metadata."""


def _short_heading(heading: str) -> bool:
    """Whether a Markdown or reStructuredText heading's text is a heading's length
    (`MAX_HEADING_WORDS`); a longer one is read as text, as an HTML heading is."""
    return len(heading.split()) <= MAX_HEADING_WORDS


def _is_heading_sized(heading: Any) -> bool:
    """Whether a heading element reads as a heading: no blocks inside, a heading's length.
    Read up to the first block or the word too many, no further (headings left open nest)."""
    from bs4.element import NavigableString, PreformattedString, Tag

    words = 0
    for node in heading.descendants:
        if isinstance(node, Tag):
            if node.name in _HTML_BLOCKS:
                return False
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            words += len(node.split())
            if words > MAX_HEADING_WORDS:
                return False
    return True


def _follows_a_term(description: Any, known: dict[int, bool]) -> bool:
    """Whether a description (`dd`) is a term's: a `dt` comes before it in its list, with
    only other descriptions (of the same terms) between. `known`: the answers for the
    descriptions read before it (by `id`), so that a list of thousands of descriptions is
    read in linear time."""
    from bs4.element import Tag

    found = False
    for sibling in description.previous_siblings:
        if isinstance(sibling, Tag):
            if sibling.name == "dd" and id(sibling) in known:
                found = known[id(sibling)]
                break
            if sibling.name != "dd":
                found = sibling.name == "dt"
                break
    known[id(description)] = found
    return found


class _HtmlSections:
    """One walk over an HTML tree in document order, cutting a section at each heading."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.headings: list[tuple[int, str]] = []
        self.parts: list[str] = []
        self._descriptions: dict[int, bool] = {}
        self._cells: dict[int, bool] = {}  # whether a cell's paragraphs are its text, by id
        self._resumed = False  # the text read since the last flush resumes its section

    def read(self, node: Any) -> None:
        """Read `node`'s children in document order. With a stack, not recursion: legacy
        pages nest elements by the thousand (1,200 unclosed `<font>` tags)."""
        from bs4.element import NavigableString, PreformattedString, Tag

        # Each open element: its children, what its end adds, and for a self-contained block
        # the headings in force where it began (its own end their scope's end: `_HTML_UNITS`).
        stack: list[tuple[Any, str | None, list[tuple[int, str]] | None]] = [
            (iter(node.children), None, None)
        ]
        while stack:
            children, closing, outer = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                if closing is not None:
                    self.parts.append(closing)
                if outer is not None and outer != self.headings:
                    # What follows `</section>` is under the headings before it, not the last
                    # heading inside it.
                    self.flush()
                    self.headings = outer
                    self._resumed = True
                continue
            if isinstance(child, PreformattedString):
                continue  # comments, doctype, CDATA, processing instructions
            if isinstance(child, NavigableString):
                self.parts.append(re.sub(r"\s+", " ", _unmarked(str(child))))
                continue
            if not isinstance(child, Tag):
                continue
            if child.name == "pre":  # its lines and indentation as written
                code = _unmarked(_pre_text(child)).strip("\n").replace("\n", _PRE_LINE)
                self.parts += [_PARAGRAPH_BREAK, code, _PARAGRAPH_BREAK]
                continue
            level = _HTML_HEADINGS.get(child.name)
            if level is not None and _is_heading_sized(child):
                self.flush()
                self._resumed = False
                heading = child.get_text(" ", strip=True)
                while self.headings and self.headings[-1][0] >= level:
                    self.headings.pop()
                if heading:
                    self.headings.append((level, heading))
                continue
            if child.name == "br":
                self.parts.append(_LINE)
                continue
            if _is_entry_anchor(child):
                self.parts.append(_UNIT_BREAK)
                continue
            if child.name in _TABLE_CELLS:
                self.parts.append(_CELL + _HEAD if child.name == "th" else _CELL)
                stack.append((iter(child.children), None, None))
                continue
            if child.name == "tr" and not _QANDA_ROWS & set(child.get("class") or ()):
                # A row is a line, its cells apart by " | " (as .docx tables are read): read
                # cell by cell, a term's description went to a chunk of its own, away from it.
                self.parts.append(_ROW + _ROW_START)
                stack.append((iter(child.children), _ROW, None))
                continue
            if child.name == "p" and _paragraph_of_cell(child, self._cells):
                # Sphinx, docutils and gtk-doc put each cell's text in a `p`: read as
                # paragraphs, the cells of a row were paragraphs apart and the row no line
                # (a cell of two paragraphs put the row's next cells on lines of their own).
                self.parts.append(_SOFT_SPACE)
                stack.append((iter(child.children), _SOFT_SPACE, None))
                continue
            block = child.name in _HTML_BLOCKS or level is not None
            unit = child.name in _HTML_UNITS or _is_section_div(child)
            if block:
                # A description with no term before it stands on its own: descriptions side
                # by side with no term between them (an FAQ whose questions were cut, Git's
                # gitfaq) read as one block ran answers together (Git MRR@10 0.696 -> 0.550).
                # A term's entries are read as paragraphs and share chunks: as units, every
                # option of a reference came out a chunk of a few words (FFmpeg's filters:
                # 5,182 chunks for one page, a median of 22 word pieces).
                # DocBook XSL renders a question-and-answer set (`qandaset`) as a table whose
                # rows pair a `tr.question` with its `tr.answer`: an entry of its own.
                row = _QANDA_ROWS & set(child.get("class") or ()) if child.name == "tr" else set()
                alone = child.name == "dd" and not _follows_a_term(child, self._descriptions)
                opens = unit or alone or "question" in row
                self.parts.append(_UNIT_BREAK if opens else _PARAGRAPH_BREAK)
                closes = unit or alone or "answer" in row
                scope = list(self.headings) if unit else None
                closing = _UNIT_BREAK if closes else _PARAGRAPH_BREAK
                stack.append((iter(child.children), closing, scope))
            else:
                stack.append((iter(child.children), None, None))

    def flush(self) -> None:
        # Paragraphs one blank line apart; self-contained blocks two, which the chunker never
        # joins (see ingest.chunking).
        pieces = []
        for unit in _soft_spaces("".join(self.parts)).split(_UNIT_BREAK):
            lines = _table_lines(_rows(unit).replace(_PARAGRAPH_BREAK, "\n\n").split("\n"))
            piece = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip().replace(_PRE_LINE, "\n")
            if piece:
                pieces.append(piece)
        self.parts = []
        text = "\n\n\n".join(pieces)
        if text:
            path = tuple(h for _, h in self.headings)
            self.sections.append(Section(path, text, resumed=self._resumed))

    def finish(self) -> list[Section]:
        self.flush()
        return self.sections


def _load_pdf(path: Path, data: bytes) -> LoadedDocument:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentLoadError(
                "encrypted PDF: it needs a password; save a decrypted copy (for example "
                "`qpdf --decrypt --password=... in.pdf out.pdf`) and ingest that"
            )
        if len(reader.pages) == 0:
            raise DocumentLoadError("the PDF has no pages; re-export it from its source")
        pieces = structured_pieces(reader)
        if pieces:
            sections = [Section(p.path, p.text, page=p.page) for p in pieces]
        else:  # no positions to read: each page's plain text
            pages = [page.extract_text() or "" for page in reader.pages]
            sections = [Section((), text, page=n) for n, text in enumerate(pages, start=1)]
        info_title = reader.metadata.title if reader.metadata else None
    except DocumentLoadError:
        raise
    except FileNotDecryptedError as exc:
        raise DocumentLoadError(f"encrypted PDF that cannot be opened ({exc})") from exc
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise DocumentLoadError(
            f"corrupt or unreadable PDF ({type(exc).__name__}: {exc}); re-export or repair it"
        ) from exc
    if not any(s.text.strip() for s in sections):
        raise DocumentLoadError(
            "the PDF has no extractable text (scanned images?); run OCR on it first"
        )
    return LoadedDocument(str(info_title or _title_from_name(path)), PDF, sections)


MAX_DOCX_UNPACKED = 256 * 1024 * 1024
"""Most bytes a .docx may expand to. python-docx reads every part whole into memory: a small
zip of a huge part (a zip bomb) would take the reader's memory, the server's with it (uploads
are read in `ragtune serve`), before any text is read."""


def _check_unpacked_size(data: bytes) -> None:
    # The sizes a zip declares bound what reading it yields (zipfile stops at them), so the
    # sum of the declared sizes is what python-docx would hold.
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError):
        return  # not a zip: the reader says so, with its own reason
    if unpacked > MAX_DOCX_UNPACKED:
        raise DocumentLoadError(
            f"the .docx expands to {unpacked / 2**20:,.0f} MB, over the "
            f"{MAX_DOCX_UNPACKED / 2**20:.0f} MB a document may take unpacked; remove embedded "
            "media or split it"
        )


def _load_docx(path: Path, data: bytes) -> LoadedDocument:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    _check_unpacked_size(data)
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentLoadError(
            f"corrupt or not a .docx file ({type(exc).__name__}: {exc}); re-save it from "
            "a word processor"
        ) from exc
    title = (document.core_properties.title or "").strip()
    stack: list[str] = []
    sections: list[Section] = []
    body: list[str] = []

    def flush() -> None:
        if body:
            sections.append(Section(tuple(stack), "\n\n".join(body)))
            body.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in block.rows]
            heads = _docx_header_rows(block)
            if 0 < heads < len(rows):  # marked as Markdown marks a header (see `_table_lines`)
                columns = len(block.rows[heads - 1].cells)
                rows.insert(heads, _delimiter_row(columns))
            body.append("\n".join(rows))
            continue
        text = block.text.strip()
        style = block.style.name if block.style is not None else ""
        level = _docx_heading_level(style or "")
        if level is None or not text:
            if text:
                body.append(text)
            continue
        flush()
        if level == 0:
            title = title or text
            stack = []
            continue
        del stack[level - 1 :]
        stack.append(text)
    flush()
    return LoadedDocument(title or _title_from_name(path), DOCX, sections)


def _docx_header_rows(table: Any) -> int:
    """How many of a Word table's first rows are its header: those marked to repeat at the
    top of each page (`w:tblHeader`, Word's "Repeat as header row")."""
    from docx.oxml.ns import qn

    count = 0
    for row in table.rows:
        properties = row._tr.trPr
        mark = properties.find(qn("w:tblHeader")) if properties is not None else None
        if mark is None or mark.get(qn("w:val"), "true") in ("0", "false", "off"):
            break
        count += 1
    return count


def _docx_heading_level(style: str) -> int | None:
    if style == "Title":
        return 0
    match = re.fullmatch(r"Heading (\d)", style)
    return int(match.group(1)) if match else None


_LOADERS: dict[str, Callable[[Path, bytes], LoadedDocument]] = {
    TEXT: _load_text,
    RST: _load_rst,
    MARKDOWN: _load_markdown,
    HTML: _load_html,
    PDF: _load_pdf,
    DOCX: _load_docx,
}
