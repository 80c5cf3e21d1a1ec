"""Each format is read into a title and sections that follow the document's headings."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragtune.ingest import loaders
from ragtune.ingest.errors import DocumentLoadError, UnsupportedFileTypeError
from ragtune.ingest.loaders import LoadedDocument, decode_text, file_type_of, load_document
from tests.support.makers import encrypted_pdf_bytes, pdf_bytes, write_docx


def load(path: Path) -> LoadedDocument:
    return load_document(path, path.read_bytes())


def html_sections(page: str) -> list[tuple[tuple[str, ...], str]]:
    """An HTML page's sections as the loader reads them: (heading path, text)."""
    return [(s.path, s.text) for s in load_document(Path("page.html"), page.encode()).sections]


def paths_and_texts(document: LoadedDocument) -> list[tuple[tuple[str, ...], str]]:
    return [(s.path, " ".join(s.text.split())) for s in document.sections]


def test_file_types_by_suffix() -> None:
    assert file_type_of(Path("faq/general.rst.txt")) == "rst"
    assert file_type_of(Path("notes.TXT")) == "text"
    assert file_type_of(Path("a.htm")) == "html"
    assert file_type_of(Path("a.markdown")) == "markdown"
    assert file_type_of(Path("image.png")) is None


def test_markdown_sections_follow_headings(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(
        "# Guide\nIntro text.\n\n## Install\nRun pip.\n\n```\n# not a heading\n```\n"
        "### Offline\nUse wheels.\n## Use\nCall it.\n"
    )
    document = load(path)
    assert document.title == "Guide"
    assert paths_and_texts(document) == [
        (("Guide",), "Intro text."),
        (("Guide", "Install"), "Run pip. ``` # not a heading ```"),
        (("Guide", "Install", "Offline"), "Use wheels."),
        (("Guide", "Use"), "Call it."),
    ]


def test_markdown_setext_headings_front_matter_and_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "deploy.md"
    path.write_text(
        "---\ntitle: 'Deploy guide'\ntags: [ops]\n---\n\n"
        "Overview\n========\n\nFirst paragraph.\n\n\n\nSecond paragraph,\nwrapped.\n\n"
        "Installing\n----------\n\n~~~sh\n# a comment\n\n\nInstalling\n----------\n~~~\n\n"
        "- a list item\n---\n\nAfter a rule.\n\n---\n\n## Ports\nUse 8080.\n"
    )
    document = load(path)
    assert document.title == "Deploy guide"  # the front matter's, not the first heading
    windows = tmp_path / "windows.md"
    windows.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))  # the same, saved on Windows
    assert load(windows).sections == document.sections
    assert [(s.path, s.text) for s in document.sections] == [
        (("Overview",), "First paragraph.\n\nSecond paragraph,\nwrapped."),
        (
            ("Overview", "Installing"),
            "~~~sh\n# a comment\n\n\nInstalling\n----------\n~~~\n\n"  # code as written
            "- a list item\n---\n\nAfter a rule.\n\n---",
        ),
        (("Overview", "Ports"), "Use 8080."),  # level 2, as the underlined "Installing"
    ]


def test_a_fence_in_front_matter_opens_no_code_block() -> None:
    """Front matter is YAML, not Markdown: a ``` in one of its values hid every heading after
    it, the whole file read as one code block."""
    front = "---\ntitle: Demo\nexample: |\n  ```\n  run it\n---\n"
    text = front + "# Install\n\nRun it.\n\n## Configure\n\nEdit.\n"
    document = load_document(Path("a.md"), text.encode())
    assert paths_and_texts(document) == [
        (("Install",), "Run it."),
        (("Install", "Configure"), "Edit."),
    ]


def test_markdown_data_uris_keep_their_media_type_only(tmp_path: Path) -> None:
    """An image inlined as base64 is no text: 100 KB of it made 437 chunks to embed."""
    payload = "iVBORw0KGgoAAAANSUhEUgAA+/=" * 4000
    path = tmp_path / "logo.md"
    path.write_text(
        f'# Logo\nOur logo: ![the logo](data:image/png;base64,{payload} "Logo") and '
        f"[a note](<data:text/plain,{payload}>).\n\n[icon]: data:image/svg+xml,{payload}\n\n"
        f"```\n![kept](data:image/png;base64,{payload[:40]})\n```\n"
        "A [link](https://example.com/data:1,2) is not one.\n"
        f'<img src="data:image/gif;base64,{payload}" alt="an icon">\n'
        f"Inline code: ``![kept](data:image/png;base64,{payload[:40]})`` and "
        f"![cut](data:image/png;base64,{payload}) and `[kept](data:text/plain,abc)`.\n"
        f"A lone `` opens no code: ![cut](data:image/png;base64,{payload}) ` x\n"
        f"An escaped \\` is text: ![cut](data:image/png;base64,{payload}) `\n"
        "And \\\\`[kept](data:text/plain,abc)\\` (an escaped backslash, a code span) and "
        "\\``[kept](data:text/plain,abc)`\n"
    )
    expected = (
        'Our logo: ![the logo](data:image/png;base64,… "Logo") and '
        "[a note](<data:text/plain,…>).\n\n[icon]: data:image/svg+xml,…\n\n"
        f"```\n![kept](data:image/png;base64,{payload[:40]})\n```\n"  # code as written
        "A [link](https://example.com/data:1,2) is not one.\n"
        '<img src="data:image/gif;base64,…" alt="an icon">\n'
        f"Inline code: ``![kept](data:image/png;base64,{payload[:40]})`` and "
        "![cut](data:image/png;base64,…) and `[kept](data:text/plain,abc)`.\n"
        "A lone `` opens no code: ![cut](data:image/png;base64,…) ` x\n"
        "An escaped \\` is text: ![cut](data:image/png;base64,…) `\n"
        "And \\\\`[kept](data:text/plain,abc)\\` (an escaped backslash, a code span) and "
        "\\``[kept](data:text/plain,abc)`"
    )
    [section] = load(path).sections
    assert section.text == expected


def test_rst_levels_follow_adornment_styles(tmp_path: Path) -> None:
    path = tmp_path / "doc.rst.txt"
    path.write_text(
        "=======\n Title\n=======\n\nPreamble.\n\n"
        "First\n=====\n\nOne.\n\nDeeper\n------\n\nTwo::\n\n   code\n   ----\n\n"
        "Second\n======\n\nThree.\n"
    )
    document = load(path)
    assert document.title == "Title"
    assert document.file_type == "rst"
    assert paths_and_texts(document) == [
        (("Title",), "Preamble."),
        (("Title", "First"), "One."),
        (("Title", "First", "Deeper"), "Two:: code ----"),
        (("Title", "Second"), "Three."),
    ]


def test_rst_markup_a_reader_never_sees_is_left_out(tmp_path: Path) -> None:
    """Labels, comments (with their indented lines), page fields and directives that only
    set how a page is shown are not text (alone, each became a chunk of its own); literal
    blocks and directive content are kept as written, markup-looking lines included, and an
    empty comment before a blank line takes no text; directive names are case-insensitive
    (reStructuredText's rules). Sphinx's `.. only::` is no text but its content is the
    page's own markup, read as any (the Python FAQ's `.. contents::` sits in one), a
    paragraph apart from the text before it (not a block: the chunker cuts at two blank
    lines)."""
    path = tmp_path / "doc.rst.txt"
    path.write_text(
        ":tocdepth: 2\n\n.. highlight:: python\n\n=====\nTitle\n=====\n\n"
        ".. sectionauthor:: A. Writer <a@example.org>\n.. currentmodule:: os\n\nIntro.\n\n"
        ".. Contents::\n\n.. only:: html\n\n   .. contents::\n\n.. ONLY:: html\n\n   Shown.\n\n"
        ".. testsetup::\n\n   import os\n\n"
        ".. XXX update this answer\n   before the next release.\n\nKept one.\n\n"
        ".. _next-part:\n\nPart\n====\n\nAn example::\n\n   .. _not-a-label:\n   x = 1\n\n"
        ".. note::\n\n   A note.\n\n..\n   An empty comment's lines.\n\n"
        ".. _Python site: https://www.python.org\n\nEnd.\n\n"
        "..\n\n   A quote after an empty comment.\n"
    )
    assert paths_and_texts(load(path)) == [
        (("Title",), "Intro. Shown. Kept one."),
        (
            ("Title", "Part"),
            "An example:: .. _not-a-label: x = 1 .. note:: A note. End. "
            "A quote after an empty comment.",
        ),
    ]
    path.write_text("=====\nTitle\n=====\n\nIntro.\n\n.. only:: html or\n   epub\n\n   Shown.\n")
    (section,) = load(path).sections
    assert section.text == "Intro.\n\n   Shown."


def test_real_rst_from_the_python_docs(eval_small: Path) -> None:
    document = load(eval_small / "corpus" / "tutorial" / "inputoutput.rst.txt")
    assert document.title == "Input and Output"
    paths = [s.path for s in document.sections]
    assert ("Input and Output", "Reading and Writing Files", "Methods of File Objects") in paths


def test_html_drops_scripts_and_keeps_headings(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>Handbook</title><style>p{color:red}</style></head><body>"
        "<nav>Home | About</nav><h1>Leave</h1><p>Ask your manager.</p>"
        "<script>track()</script><h2>Sick leave</h2><p>Call in before 9.</p></body></html>"
    )
    document = load(path)
    assert document.title == "Handbook"
    assert paths_and_texts(document) == [
        (("Leave",), "Ask your manager."),
        (("Leave", "Sick leave"), "Call in before 9."),
    ]


def test_an_html_headings_scope_ends_with_its_section() -> None:
    """A heading inside `section` or `article` (or a div that is a section) heads that block
    alone: what follows its end is under the headings before it. The text after an aside's
    heading was read as part of the aside, and a page's closing paragraph under the last
    section's heading."""
    page = (
        "<html><body><h1>Guide</h1><p>Intro.</p>"
        "<section><h2>Install</h2><p>Run the installer.</p>"
        "<section><h3>On Windows</h3><p>Use the MSI.</p></section>"
        "<p>Then restart.</p></section>"
        "<article><h1>News</h1><p>Version 2 is out.</p></article>"
        "<p>Questions go to the list.</p>"
        "<div class='sect1'><h2>Usage</h2><p>Call it.</p></div><p>Last words.</p>"
        "<h2>Outside</h2><p>Plain.</p></body></html>"
    )
    assert html_sections(page) == [
        (("Guide",), "Intro."),
        (("Guide", "Install"), "Run the installer."),
        (("Guide", "Install", "On Windows"), "Use the MSI."),
        (("Guide", "Install"), "Then restart."),
        (("News",), "Version 2 is out."),
        (("Guide",), "Questions go to the list."),
        (("Guide", "Usage"), "Call it."),
        (("Guide",), "Last words."),
        (("Guide", "Outside"), "Plain."),
    ]


def test_an_html_table_row_is_a_line() -> None:
    """A row is read as one line, its cells apart by " | " (as a .docx table): read cell by
    cell, a name and its value were paragraphs apart, and a chunk could cut between them. A
    row of one cell is a box, its paragraphs kept; the white space between rows in the source
    is not a blank line."""
    page = (
        "<html><body><h1>Limits</h1><table>\n<thead><tr><th>Name</th><th>Default</th><th></th>"
        "</tr></thead>\n<tbody>\n  <tr><td>SQLITE_MAX_LENGTH</td>\n <td>1000000000</td></tr>\n"
        "  <tr><td><code>SQLITE_MAX_SQL_LENGTH</code> (bytes)</td><td>1000000</td></tr>\n"
        "  <tr><td> </td><td></td></tr>\n"  # a spacer row: no blank line inside the table
        "  <tr><td><p>First.</p><p>Second.</p></td></tr></tbody></table><p>After.</p>"
        "</body></html>"
    )
    assert html_sections(page) == [
        (
            ("Limits",),
            "Name | Default\n--- | ---\nSQLITE_MAX_LENGTH | 1000000000\n"
            "SQLITE_MAX_SQL_LENGTH (bytes) | 1000000\n\nFirst.\n\nSecond.\n\nAfter.",
        )
    ]


def test_a_line_break_in_a_row_of_cells_keeps_the_row_one_line() -> None:
    """SQLite's NULL-handling chart heads its columns "MySQL<br>3.23.41", "SQL<br>Anywhere":
    read as line breaks, the header row came out as five lines with the cells shifted between
    them. In a row of two or more filled cells that hold no blocks a `<br>` is a space;
    anywhere else (a paragraph, a table of one cell a row, a cell beside a spacer, a row whose
    cell holds a list or code) it is a line break. A cell's paragraphs are its text."""
    page = (
        "<html><body><h1>Nulls</h1><p>One<br>two</p><table>"
        "<tr><th>MySQL<br>\n 3.23.41</th><th>SQL<br/>Anywhere</th></tr>"
        "<tr><td>Yes</td><td>No<br>(Note 1)</td></tr></table>"
        "<table><tr><td>Street 1<br>Town</td></tr><tr><td></td><td>Line one<br>Line two</td>"
        "</tr><tr><td><p>First.</p>Then<br>more</td><td>Side</td></tr>"
        "<tr><td><ul><li>Item</li></ul>Then<br>more</td><td>Side</td></tr></table></body></html>"
    )
    assert html_sections(page) == [
        (
            ("Nulls",),
            "One\ntwo\n\nMySQL 3.23.41 | SQL Anywhere\n--- | ---\nYes | No (Note 1)\n\n"
            "Street 1\nTown\nLine one\nLine two\nFirst. Then more | Side\n\nItem\n\n"
            "Then\nmore | Side",
        )
    ]


def test_html_permalink_marks_are_not_text() -> None:
    """Sphinx and MkDocs end every heading and API entry with a link to itself (a pilcrow):
    headings and citations read "9. Classes", not "9. Classes ¶". A link whose text is a word,
    or that leads elsewhere, stays."""
    page = (
        "<html><body><h1>9. Classes<a class='headerlink' href='#classes'>\u00b6</a></h1>"
        "<dl><dt>os.getcwd()<a href='#os.getcwd'> \u00b6 </a></dt><dd>The directory.</dd></dl>"
        "<h2>Scopes <a href='#scopes'>#</a></h2><p>See <a href='#scopes'>scopes</a> and "
        "<a href='other.html'>\u00a7</a> 4.</p></body></html>"
    )
    assert html_sections(page) == [
        (("9. Classes",), "os.getcwd()\n\nThe directory."),
        (("9. Classes", "Scopes"), "See scopes and \u00a7 4."),
    ]


def test_html_links_hidden_from_assistive_technology_are_not_text() -> None:
    """makeinfo's FFmpeg template ends every heading with two in-page links the page hides
    from screen readers, "#" and "TOC": headings read "3 Usage", not "3 Usage TOC". A hidden
    link that leads to another page, and a visible in-page link, stay."""
    page = (
        "<html><body><h1>FAQ</h1><h2>3 Usage<span class='pull-right'>"
        "<a class='anchor' href='#Usage' aria-hidden='true'>#</a> "
        "<a class='anchor' href='#toc-Usage' aria-hidden='TRUE'>TOC</a></span></h2>"
        "<p>Read <a href='#toc-Usage'>the contents</a> or "
        "<a href='other.html' aria-hidden='true'>the manual</a>.</p></body></html>"
    )
    assert html_sections(page) == [
        (("FAQ", "3 Usage"), "Read the contents or the manual."),
    ]


def test_html_elements_with_the_hidden_attribute_are_not_text() -> None:
    """HTML's `hidden` says an element is not relevant to the page as it stands, for every
    reader: a copy button's "Copied!", a search box's "No results", a closed panel's template
    were read into the page's text. Collapsed text a reader finds by searching the page
    (`hidden="until-found"`), text hidden by a style, and a `body` hidden until a script has
    styled the page are still read."""
    page = (
        "<html><body hidden><h1>Install</h1>"
        "<p>Run pip install ragtune.<span class='tip' hidden>Copied!</span></p>"
        "<div hidden=''><p>No results for this search.</p></div>"
        "<div HIDDEN='hidden'><h2>Template</h2><p>Loading the panel.</p></div>"
        "<details><summary>Offline</summary><div hidden='until-found'>Use a wheel file."
        "</div></details>"
        "<div style='display: none'>Syntax: pip install NAME</div></body></html>"
    )
    assert html_sections(page) == [
        (
            ("Install",),
            "Run pip install ragtune.\n\n\nOffline\n\nUse a wheel file.\n\n\n"
            "Syntax: pip install NAME",
        ),
    ]


def test_html_navigation_is_not_text() -> None:
    """A site's menu, a page's table of contents, DocBook's navigation bars, Javadoc's and
    Doxygen's (`topNav`, `navrow1`) and ARIA's navigation landmark are where to go, not what
    the page says: left out when most of their text is links. A box that only carries such a
    name (a layout wrapper around the content, a reST sidebar, a GUI menu named in a sentence)
    stays."""
    page = (
        "<html><body><div class='menu mainmenu'><ul><li><a href='index.html'>Home</a>"
        "<li><a href='docs.html'>Documentation</a></ul></div>"
        "<div class='navheader'><table><tr><td><a href='prev.html'>Prev</a></td>"
        "<td>Chapter 2</td><td><a href='next.html'>Next</a></td></tr></table></div>"
        "<div role='navigation'>Skip</div>"
        "<div class='topNav'><ul class='navList'><li><a href='overview.html'>Overview</a>"
        "<li><a href='tree.html'>Tree</a></ul></div>"
        "<div id='navrow1' class='tabs'><a href='index.html'>Main Page</a></div>"
        "<div id='sideBar'><a href='install.html'>Install</a> <a href='up.html'>Upgrade</a></div>"
        "<div class='with-sidebar'><h1>SELECT</h1>"
        "<div class='fancy_toc'><a>Table Of Contents</a><div id='toc_sub'>"
        "<a href='#overview'>1. Overview</a></div></div>"
        "<div class='sidebar'><p>A <a href='note.html'>note</a> beside the text.</p></div>"
        "<p>Open <span class='guimenu'>File</span> first; see the "
        "<a href='lang.html'>syntax</a> for the rest of a query's clauses.</p>"
        "</div></body></html>"
    )
    assert html_sections(page) == [
        (
            ("SELECT",),
            "A note beside the text.\n\n"
            "Open File first; see the syntax for the rest of a query's clauses.",
        ),
    ]


def test_an_html_table_of_contents_is_not_text() -> None:
    """makeinfo heads every page with its table of contents (`div.contents`): FFmpeg's
    filters page read as 24 chunks of section numbers and filter names, which matched
    questions by a filter's name. A box named "contents" that is mostly links into the page
    is left out; one of text, or of links to other pages (Doxygen's box of a page's text, on
    an index page), stays, and so do gtk-doc's `table-contents` and `example-contents`, a
    table's and an example's text, links or not."""
    page = (
        "<html><body><h1>ffmpeg-filters</h1><div class='Contents_element' id='SEC_Contents'>"
        "<h2 class='contents-heading'>Table of Contents</h2><div class='contents'>"
        "<ul><li><a href='#Description'>1 Description</a></li><li><a href='#afade'>"
        "8.20 afade</a></li></ul></div></div><div class='shortcontents'><ul><li>"
        "<a href='#Description'>1 Description</a></li></ul></div>"
        "<h2>1 Description</h2><div id='contents'><p>Filters change <a href='m.html'>"
        "media</a> as it passes through.</p></div><div class='table-contents'><table><tr>"
        "<td><a href='a.html'>afade</a></td><td><a href='f.html'>fade</a></td></tr></table>"
        "</div><div class='contents'><ul><li><a href='a.html'>Drawing with the geometry "
        "module</a></li></ul></div></body></html>"
    )
    assert html_sections(page) == [
        (
            ("ffmpeg-filters", "1 Description"),
            "Filters change media as it passes through.\n\nafade | fade\n\n"
            "Drawing with the geometry module",
        ),
    ]


def test_an_html_pages_footer_is_not_text() -> None:
    """What a site says at the foot of each page is about none of them: gtk-doc's "Generated
    by GTK-Doc" and asciidoc's "Last updated" were a chunk on every page of the GTK and Git
    sets. A footer (the element, or a box that is ARIA's `contentinfo` or whose class or id is
    "footer") is left out. A quotation's or a figure's `footer` (an attribution) stays, and so
    do a footnote, a section about footers (docutils names a section's div after its title), a
    layout wrapper, an option's term and a table's cell that a name only mentions."""
    page = (
        "<html><body><div class='page-with-footer'><h1>Storage Classes</h1>"
        "<p>Each value is stored as INTEGER or TEXT.</p>"
        "<blockquote><p>Types are advisory.</p><footer>D. Richard Hipp</footer></blockquote>"
        "<figure><img src='a.png'><div class='footer'>Photo: the authors</div></figure>"
        "<div class='footnote'><p>[1] Since version 3.0.</p></div>"
        "<div class='section' id='footer'><h2>Footer</h2><p>Set html_show_copyright.</p>"
        "<dl><dt id='cmdoption-footer'>--footer TEXT</dt><dd>The footer's text.</dd></dl>"
        "<table><tr><td>a</td><td class='footer'>b</td></tr></table></div>"
        "<div class='footer'><hr>Generated by GTK-Doc V1.33.1</div>"
        "<div id='footer'><div id='footer-text'>Last updated 2024-05-31 UTC</div></div>"
        "<address class='footer'><small>Generated by doxygen 1.9.1</small></address>"
        "<div role='contentinfo'>&copy; Copyright 2001, the authors.</div>"
        "<footer><p>Built with MkDocs.</p></footer></div></body></html>"
    )
    assert html_sections(page) == [
        (
            ("Storage Classes",),
            # A quotation and a figure stand on their own (units: three line breaks).
            "Each value is stored as INTEGER or TEXT.\n\n\nTypes are advisory.\n\n"
            "D. Richard Hipp\n\n\nPhoto: the authors\n\n\n[1] Since version 3.0.",
        ),
        (
            ("Storage Classes", "Footer"),
            "Set html_show_copyright.\n\n--footer TEXT\n\nThe footer's text.\n\na | b",
        ),
    ]


def test_html_listing_line_numbers_are_not_text() -> None:
    """gtk-doc and Pygments set a listing's line numbers in a `pre` of their own beside the
    code: "1 2 3" read as text between a sentence and its code. Numbers that do not count
    lines from 1 are content."""
    page = (
        "<html><body><h1>Basics</h1><p>Create the application:</p>"
        "<table class='listing_frame'><tr><td class='listing_lines'><pre>1\n2\n3</pre></td>"
        "<td class='listing_code'><pre class='programlisting'>int\nmain (void)\n{}</pre>"
        "</td></tr></table><pre>2023\n2024</pre><pre>7</pre></body></html>"
    )
    assert html_sections(page) == [
        (("Basics",), "Create the application:\n\nint\nmain (void)\n{}\n\n2023\n2024\n\n7")
    ]


def test_html_inline_elements_stay_in_their_sentences(tmp_path: Path) -> None:
    """Links, code and bold text are read where they stand (LangChain's header splitter moved
    them after their paragraph: "run or compile with . PRAGMA foreign_keys=ON"); blocks end
    lines, paragraphs are a blank line apart, `pre` keeps its lines and indentation."""
    path = tmp_path / "faq.html"
    path.write_text(
        "<html><body><h1>FAQ</h1><blockquote>As of <a href='v.html'>version 3.6.19</a>, "
        "run\n  <b>PRAGMA foreign_keys=ON</b> or compile with <tt>-DFK=1</tt>.</blockquote>"
        "<p>Second <i>paragraph</i>.<br>Next line.</p><pre>a = 1\n  b = 2</pre>"
        "<!-- a comment --><ul><li>one</li><li>two</li></ul></body></html>"
    )
    (section,) = load(path).sections
    assert section.path == ("FAQ",)
    assert section.text == (
        "As of version 3.6.19, run PRAGMA foreign_keys=ON or compile with -DFK=1.\n\n\n"
        "Second paragraph.\nNext line.\n\na = 1\n  b = 2\n\none\n\ntwo"
    )


def test_pdf_pages_become_sections(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf_bytes([["Quarterly report", "Sales grew."], ["Costs fell."]], "Q3"))
    document = load(path)
    assert document.title == "Q3"
    assert [(s.page, " ".join(s.text.split())) for s in document.sections] == [
        (1, "Quarterly report Sales grew."),
        (2, "Costs fell."),
    ]


def test_docx_headings_become_sections(tmp_path: Path) -> None:
    path = write_docx(
        tmp_path / "policy.docx",
        "Travel policy",
        [(1, "Booking", ["Book early.", "Use the portal."]), (2, "Trains", ["Second class."])],
    )
    document = load(path)
    assert document.title == "Travel policy"
    assert paths_and_texts(document) == [
        (("Booking",), "Book early. Use the portal."),
        (("Booking", "Trains"), "Second class."),
    ]


def test_latin1_text_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "old.txt"
    text = (
        "Le présent règlement s'applique à tous les employés. Les congés payés doivent être "
        "demandés au moins deux semaines à l'avance auprès du responsable hiérarchique. En "
        "cas de maladie, l'employé prévient son supérieur dès que possible.\n"
    )
    path.write_bytes(text.encode("latin-1"))
    assert load(path).sections[0].text == text


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("café refunds", "latin-1"),
        ("crème brûlée", "cp1252"),
        ("naïve façade", "cp1252"),
        ("Größe der Straße", "latin-1"),
        # Other 8-bit encodings are read as before: as Latin words only where they are such.
        ("Zażółć gęślą jaźń", "cp1250"),
        ("Dobrý den, přeji hezký večer.", "cp1250"),
        ("Привет мир, как дела? Это тест.", "cp1251"),
    ],
)
def test_a_short_text_in_a_western_encoding_is_read_as_written(text: str, encoding: str) -> None:
    """Too short for its language to be told, its encoding was charset_normalizer's arbitrary
    pick among those that read it ("café" came out as cp1006's "cafﻠ")."""
    assert decode_text(text.encode(encoding)) == text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty file"),
        ("blank.md", b"  \n\n ", "empty file"),
        ("binary.txt", bytes(range(256)) * 4, "binary content"),
        ("corrupt.pdf", pdf_bytes([["hello"]])[:40], "corrupt or unreadable PDF"),
        ("locked.pdf", encrypted_pdf_bytes([["secret plans"]]), "encrypted PDF"),
        ("garbage.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 8, "corrupt or unreadable PDF"),
        ("notzip.docx", b"PK\x03\x04 this is not a zip archive", "not a .docx"),
        ("scan.pdf", pdf_bytes([[]]), "no extractable text"),
    ],
)
def test_bad_files_raise_a_clear_reason(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DocumentLoadError, match=reason):
        load(path)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpeg"
    path.write_bytes(b"\xff\xd8\xff")
    with pytest.raises(UnsupportedFileTypeError, match=r"'\.jpeg'.*\.docx"):
        load(path)


def test_a_docx_that_expands_too_far_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_docx(tmp_path / "big.docx", "Big", [(1, "Part", ["text " * 200])])
    assert load(path).sections  # within the limit: read
    monkeypatch.setattr(loaders, "MAX_DOCX_UNPACKED", 2_000)
    with pytest.raises(DocumentLoadError, match=r"expands to .* remove embedded media"):
        load(path)


def test_an_html_header_row_is_marked_as_one() -> None:
    """A row of `th` cells heads the rows after it: a Markdown delimiter row under it says so
    (to a reader, and to the chunker, which starts each chunk of a long table with it). A
    column of `th` cells beside data (row headers), a table of header cells only, a row of
    one `th` (a title across the table: it may head the header) and a row of `th` cells after
    data (a group's title, a footer) get none."""
    page = (
        "<html><body><h1>Limits</h1><table><caption>Defaults</caption>"
        "<tr><th>Name</th><th>Value</th><th></th></tr><tr><td>a</td><td>1</td></tr>"
        "<tr><th>b</th><td>2</td></tr></table>"
        "<table><tr><th>Only</th><th>heads</th></tr></table>"
        "<table><tr><th>Title across</th></tr><tr><td>x</td><td>y</td></tr></table>"
        "<table><tr><th>X</th><th>Y</th></tr><tr><th>x2</th><th>y2</th></tr>"
        "<tr><td>1</td><td>2</td></tr></table>"
        # A title across the table over the header; a group's title and a footer after data.
        "<table><tr><th colspan='2'>Sizes</th></tr><tr><th>P</th><th>Q</th></tr><tr><td>3</td>"
        "<td>4</td></tr><tr><th>Group</th><th>two</th></tr><tr><td>5</td><td>6</td></tr>"
        "<tfoot><tr><th>Sum</th><th>all</th></tr></tfoot></table></body></html>"
    )
    assert html_sections(page) == [
        (
            ("Limits",),
            "Defaults\n\nName | Value\n--- | ---\na | 1\nb | 2\n\nOnly | heads\n\n"
            "Title across\nx | y\n\nX | Y\nx2 | y2\n--- | ---\n1 | 2\n\nSizes\nP | Q\n--- | ---\n"
            "3 | 4\nGroup | two\n5 | 6\nSum | all",
        )
    ]


def test_the_rows_of_an_html_table_keep_their_columns() -> None:
    """An empty cell before a row's first filled one is kept where the table's other rows
    fill that column: a header's empty corner above the rows' names (SQLite's NULL chart; left
    out, every database's name stood a column left of its answers) and a row whose first
    column is blank. A table whose every row starts with an empty cell (a spacer) loses it in
    every row, and a table's columns do not carry over to the next one."""
    page = (
        "<html><body><h1>Nulls</h1><table><tr><th></th><th>SQLite</th><th>Oracle</th></tr>"
        "<tr><td>null + 1 is null</td><td>Yes</td><td>Yes</td></tr>"
        "<tr><td></td><td>(note 1)</td><td></td></tr></table>"
        "<table><tr><td></td><td>spaced</td><td>a</td></tr><tr><td></td><td>b</td></tr></table>"
        "<p>Then</p><table><tr><td></td><td>own</td><td>c</td></tr></table>"
        # A title across the table beside the corner is no header; the rest of a row whose
        # cell held blocks (code) is no row start (its places are not the columns).
        "<table><tr><th></th><th colspan='2'>Results</th></tr><tr><td>r</td><td>1</td>"
        "<td>2</td></tr></table><table><tr><td></td><td><p>x</p><pre>y</pre></td><td>1</td></tr>"
        "<tr><td></td><td>k</td><td>2</td></tr></table></body></html>"
    )
    assert html_sections(page) == [
        (
            ("Nulls",),
            "| SQLite | Oracle\n--- | --- | ---\nnull + 1 is null | Yes | Yes\n| (note 1)\n\n"
            "spaced | a\nb\n\nThen\n\nown | c\n\n| Results\nr | 1 | 2\n\nx\n\ny\n\n1\nk | 2",
        )
    ]


def test_a_word_tables_header_rows_are_marked_as_such(tmp_path: Path) -> None:
    """Word marks a long table's header rows to repeat on every page ("Repeat as header row",
    `w:tblHeader`): a delimiter row under them says so, as under an HTML header row, and the
    chunker starts each chunk of the table with them. A table without the mark gets none."""
    import docx
    from docx.oxml import OxmlElement

    document = docx.Document()
    marked = document.add_table(rows=3, cols=2)
    unmarked = document.add_table(rows=2, cols=2)
    for table, cells in [(marked, ["Name", "Value", "a", "1", "b", "2"]), (unmarked, "wxyz")]:
        for cell, text in zip((c for row in table.rows for c in row.cells), cells, strict=True):
            cell.text = text
    marked.rows[0]._tr.get_or_add_trPr().append(OxmlElement("w:tblHeader"))
    path = tmp_path / "limits.docx"
    document.save(str(path))
    loaded = load_document(path, path.read_bytes())
    assert [s.text for s in loaded.sections] == [
        "Name | Value\n--- | ---\na | 1\nb | 2\n\nw | x\ny | z"
    ]


def test_a_cells_paragraphs_are_its_text() -> None:
    """Sphinx, docutils and gtk-doc wrap each cell's text in a `p`: read as paragraphs, a row's
    cells came out paragraphs apart (gtk-doc's parameters: "value", a blank line, "the initial
    value") and a header row was no row. A cell's only paragraph is now its text, and so are
    a cell's several paragraphs in a row of two or more filled cells, one space apart whatever
    the white space around them (Sphinx's two-paragraph cell put the row's next cells on lines
    of their own, its columns lost); a cell that holds another block (a list, code) keeps its
    blocks, and so does a table of one cell a row (a layout table around a page's text)."""
    page = (
        "<html><body><h1>Ops</h1><table><thead><tr><th><p>Operation</p></th><th><p>Result</p>"
        "</th></tr></thead><tbody><tr><td><p><code>x or y</code></p></td><td><p>if <em>x</em> "
        "is false, <em>y</em></p></td></tr><tr><td><p>a</p><p>b</p></td><td><p>c</p></td></tr>"
        "<tr><td>d<p>e</p>f</td><td>g</td></tr><tr><td><p>h</p><ul><li>i</li></ul></td>"
        "<td>j</td></tr><tr><td> k <p> l </p>\n <p>m</p>\n</td><td><p>n</p></td></tr>"
        "</tbody></table><table width='100%'><tr><td><p>Page one.</p>\n<p>Page two.</p></td>"
        "</tr></table><table><tr><th><p>Text</p></th><th><p>Bytes</p></th></tr><tr><td><p>decode"
        "</p></td><td></td></tr><tr><td></td><td><p>encode</p></td></tr></table></body></html>"
    )
    assert html_sections(page) == [
        (
            ("Ops",),
            "Operation | Result\n--- | ---\nx or y | if x is false, y\na b | c\nd e f | g\n\n"
            "h\n\ni\n\nj\nk l m | n\n\nPage one.\n\nPage two.\n\n"
            # A cell's only paragraph is its text in any row (a row of one filled cell too).
            "Text | Bytes\n--- | ---\ndecode\n| encode",
        )
    ]
