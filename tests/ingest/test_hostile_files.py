"""Files as they come from the world: legacy and malformed HTML, stray encodings, parsers that
fail in their own ways. Each one is read whole, or fails alone with a reason; never the run."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from ragtune.ingest import loaders
from ragtune.ingest.errors import DocumentLoadError
from ragtune.ingest.loaders import decode_text, load_document
from ragtune.ingest.pipeline import FileStatus, IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.store import Collection
from tests.support.fakes import FakeEmbedder


def html(markup: str, name: str = "page.html") -> loaders.LoadedDocument:
    return load_document(Path(name), markup.encode())


def text_of(document: loaders.LoadedDocument) -> str:
    return "\n".join(section.text for section in document.sections)


def test_a_legacy_page_nesting_thousands_of_unclosed_tags_is_read_whole() -> None:
    lines = "".join(f'<font size="2">line {n} of the notes<br>\n' for n in range(1200))
    document = html(f"<html><body><h1>Notes</h1>{lines}</body></html>")
    text = text_of(document)
    assert "line 0 of the notes" in text
    assert "line 1199 of the notes" in text
    deep = "<div>" * 3000 + "deep text" + "</div>" * 3000
    assert "deep text" in text_of(html(f"<html><body><p>top</p>{deep}</body></html>"))


def test_a_page_inside_a_form_is_read_without_its_controls() -> None:
    """ASP.NET WebForms and SharePoint wrap the whole page in one `form`."""
    document = html(
        '<html><body><form id="aspnetForm" action="page.aspx"><h1>Leave policy</h1>'
        "<p>Staff take leave by asking their manager two weeks ahead.</p>"
        '<input type="text" value="search"><button>Search</button>'
        "<select><option>All sites</option></select><textarea>draft</textarea>"
        "</form></body></html>"
    )
    text = text_of(document)
    assert "Staff take leave by asking their manager two weeks ahead." in text
    for control in ("Search", "All sites", "draft"):
        assert control not in text


def test_pages_written_one_after_another_in_one_file_are_all_read() -> None:
    document = html(
        "<html><body><h1>Part A</h1><p>alpha text</p></body></html>\n"
        "<html><body><h1>Part B</h1><p>beta text</p></body></html>\n"
        "<p>a closing note</p>"
    )
    text = text_of(document)
    for expected in ("alpha text", "beta text", "a closing note"):
        assert expected in text
    assert ("Part B",) in [section.path for section in document.sections]


def test_a_listing_that_breaks_its_lines_with_br_keeps_them() -> None:
    document = html(
        "<html><body><p>Run:</p><pre>first_line<br>second_line<br>third</pre>"
        "<pre>one<br>\ntwo<br>\nthree</pre></body></html>"
    )
    text = text_of(document)
    assert "first_line\nsecond_line\nthird" in text
    assert "one\ntwo\nthree" in text  # a <br> and a new line are one break, not two


def test_descriptions_are_told_from_terms_in_a_list_of_thousands() -> None:
    """A description after a term (and its sibling descriptions) shares chunks with them; one
    with no term before it stands alone. Read in one pass (20,000 descriptions took 30 s)."""
    termed = "<dl><dt>option</dt>" + "".join(f"<dd>use {n}</dd>" for n in range(3000)) + "</dl>"
    untermed = "<dl>" + "".join(f"<dd>answer {n}</dd>" for n in range(3)) + "</dl>"
    document = html(f"<html><body><h1>Ref</h1>{termed}<h2>FAQ</h2>{untermed}</body></html>")
    reference, faq = document.sections
    assert "\n\n\n" not in reference.text  # one entry: paragraphs a blank line apart
    assert reference.text.endswith("use 2999")
    assert faq.text == "answer 0\n\n\nanswer 1\n\n\nanswer 2"  # each its own unit


@pytest.mark.parametrize(
    ("line", "heading"),
    [
        ("# Title", (1, "Title")),
        ("###   Spaced   ", (3, "Spaced")),
        ("## Closed ##", (2, "Closed")),
        ("## Kept# ", (2, "Kept#")),
        ("### ###", (3, "")),
        ("#", (1, "")),
        ("   #### Indented", (4, "Indented")),
        ("    # code", None),
        ("#hashtag", None),
        ("####### seven", None),
        ("#" + " " * 20000 + "x" + " " * 20000 + "y", (1, "x" + " " * 20000 + "y")),
    ],
)
def test_atx_headings_follow_commonmark(line: str, heading: tuple[int, str] | None) -> None:
    assert loaders._md_atx(line) == heading


def test_unicode_with_a_byte_order_mark_and_utf8_with_a_stray_byte_are_read() -> None:
    text = "Café menus: naïve crème brûlée."
    assert decode_text(codecs.BOM_UTF16_LE + text.encode("utf-16-le")) == text
    assert decode_text(codecs.BOM_UTF16_BE + text.encode("utf-16-be")) == text
    mixed = text.encode() + b" Price: 5\x80 only."  # one Windows-1252 euro sign
    assert decode_text(mixed) == text + " Price: 5€ only."
    # A file in another encoding throughout is still detected as such.
    assert decode_text(("Grüße aus Köln. " * 20).encode("cp1252")).startswith("Grüße")
    with pytest.raises(DocumentLoadError, match="re-save it as UTF-8"):
        decode_text(codecs.BOM_UTF16_LE + b"\x00\xd8")  # a lone surrogate


def test_a_file_its_parser_fails_on_fails_alone(
    collection: Collection,
    embedder: FakeEmbedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A parser's own exception (lxml, zlib, pypdf's assertions) on one file marks that file
    failed with its reason; the run's other files are stored."""
    (tmp_path / "good.txt").write_text("good text that is stored.\n")
    (tmp_path / "broken.md").write_text("# Broken\nbody\n")

    def parser_fails(path: Path, data: bytes) -> loaders.LoadedDocument:
        raise AssertionError("mypy")  # what pypdf raises on a corrupt content stream

    monkeypatch.setitem(loaders._LOADERS, loaders.MARKDOWN, parser_fails)
    summary = IngestService(IngestSettings(), collection, lambda: embedder).run([tmp_path])
    results = {Path(f.source).name: f for f in summary.files}
    assert results["good.txt"].status == FileStatus.NEW
    assert results["broken.md"].status == FileStatus.FAILED
    assert "could not be read (AssertionError: mypy)" in (results["broken.md"].reason or "")
    assert {Path(str(c.metadata["source"])).name for c in collection.scan()} == {"good.txt"}


def test_a_heading_that_runs_over_the_text_is_read_as_text() -> None:
    """`<h2>...</h1>` (SQLite's own keyword index) leaves the heading open over the whole page,
    and a heading may hold blocks: read as a heading, that text would be only in the heading
    path, which chunks do not embed, and copied into every chunk's metadata."""
    words = " ".join(f"keyword{n}" for n in range(500))
    document = html(
        f"<html><body><h1>Index</h1><h2>Keyword Index</h1> {words}"
        "<h3><div><p>First boxed paragraph.</p><p>Second boxed paragraph.</p></div></h3>"
        "</body></html>"
    )
    assert all(len(" ".join(section.path)) < 100 for section in document.sections)
    text = text_of(document)
    assert "keyword0" in text
    assert "keyword499" in text
    assert "First boxed paragraph.\n\nSecond boxed paragraph." in text
    short = html("<html><body><h2>Setup <code>tool</code></h2><p>text</p></body></html>")
    assert short.sections[0].path == ("Setup tool",)


def test_markdown_that_only_looks_like_data_uris_is_read_in_one_pass() -> None:
    """A media type has its own characters: 400 KB of "](data:" with no comma is text (70 KB
    took 10 s, each one scanned to the line's end); a real data URI still loses its payload."""
    decoy = "](data:" * 60_000
    real = "![logo](data:image/svg+xml;charset=utf-8,PHN2Zz4=)"
    document = load_document(Path("notes.md"), f"# Notes\n{decoy}\n\n{real}\n".encode())
    text = text_of(document)
    assert decoy in text
    assert "![logo](data:image/svg+xml;charset=utf-8,…)" in text
    assert "PHN2Zz4" not in text


def test_markdown_and_rst_headings_longer_than_a_heading_are_text() -> None:
    """As in HTML (`MAX_HEADING_WORDS`): 50,000 words of `#` line went into the heading path
    of every chunk after it (19 MB of metadata from a 265 KB file)."""
    long = " ".join(f"word{n}" for n in range(loaders.MAX_HEADING_WORDS + 1))
    fitting = " ".join(f"word{n}" for n in range(loaders.MAX_HEADING_WORDS))
    for markup in (f"# {long}\n\nBody.\n", f"{long}\n{'=' * len(long)}\n\nBody.\n"):
        document = load_document(Path("long.md"), markup.encode())
        assert [s.path for s in document.sections] == [()]
        assert long in text_of(document)
    assert load_document(Path("fit.md"), f"# {fitting}\n\nBody.\n".encode()).title == fitting
    rst = f"Intro.\n\n{long}\n{'=' * len(long)}\n\nBody.\n"
    document = load_document(Path("long.rst"), rst.encode())
    assert [s.path for s in document.sections] == [()]
    assert long in text_of(document)
    # A front matter title is the document's title, at most a heading's length.
    spaced = "---\ntitle: a" + " " * 40_000 + "b\n---\n\nBody.\n"
    assert load_document(Path("spaced.md"), spaced.encode()).title == "a b"
    front = f"---\ntitle: {long}\n---\n\nBody.\n"
    assert load_document(Path("front.md"), front.encode()).title == fitting


@pytest.mark.parametrize("name", ["notes.txt", "notes.md", "notes.rst"])
def test_control_characters_past_the_first_8_kb_are_left_out(name: str) -> None:
    """NUL bytes in the first 8 KB tell a binary file; past them they reached chunks."""
    data = ("Plain words. " * 800 + "\x00tail\x01\x02 text\x7f\tend\x0c").encode()
    text = text_of(load_document(Path(name), data))
    assert "tail text" in text
    assert not any(c in text for c in "\x00\x01\x02\x7f")
