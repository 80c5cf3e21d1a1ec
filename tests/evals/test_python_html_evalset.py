"""The Python FAQ set over the Python docs as HTML (bench/evalsets/build_python_html.py):
questions and answers read from Sphinx's FAQ pages, the corpus pages without their questions,
and the same pages with sections as divs."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from bs4 import BeautifulSoup

from tests.support.scripts import BENCH, load_script

BUILDER = BENCH / "evalsets" / "build_python_html.py"

# The shape of a Sphinx 5 page as python3.11-doc ships it: navigation around `div.body`, the
# FAQ's sections nested under its topics, a local table of contents listing the questions,
# a pilcrow permalink in every heading; one question answered in under five words.
FAQ_PAGE = """<!DOCTYPE html><html><head><title>Library FAQ &#8212; Python 3.11 docs</title>
</head><body>
<div class="related"><ul><li><a href="../index.html">Python</a></li></ul></div>
<div class="document"><div class="documentwrapper"><div class="bodywrapper">
<div class="body" role="main">
<section id="library-faq">
<h1>Library FAQ<a class="headerlink" href="#library-faq">¶</a></h1>
<nav class="contents" id="contents"><ul>
<li><a href="#how-do-i-find-a-module">How do I find a module?</a></li></ul></nav>
<section id="general">
<h2>General Library Questions<a class="headerlink" href="#general">¶</a></h2>
<section id="how-do-i-find-a-module">
<h3>How do I find a module or application to perform task X?<a class="headerlink"
href="#how-do-i-find-a-module">¶</a></h3>
<p>Check <a href="../library/index.html">the Library Reference</a> to see if there's a
relevant standard library module.</p>
<pre>import sys
print(sys.path)</pre>
<section id="details"><h4>Details<a class="headerlink" href="#details">¶</a></h4>
<p>A subsection is not part of the answer above it.</p></section>
</section>
<section id="is-it-free">
<h3>Is it free?<a class="headerlink" href="#is-it-free">¶</a></h3>
<p>Yes.</p>
</section>
</section>
</section>
</div></div></div></div>
<div class="sphinxsidebar" role="navigation"><h3>Table of Contents</h3><ul>
<li><a href="#general">General Library Questions</a><ul><li><a href="#how-do-i-find-a-module">How do
I find a module or application to perform task X?</a></li></ul></li></ul></div>
<div class="footer">&copy; Copyright 2001-2023, Python Software Foundation.</div>
</body></html>
"""


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    return load_script(BUILDER)


def _docs(tmp_path: Path) -> Path:
    docs = tmp_path / "html"
    for page in ("faq/library.html", "tutorial/index.html", "library/os.html"):
        (docs / page).parent.mkdir(parents=True, exist_ok=True)
    (docs / "faq" / "library.html").write_text(FAQ_PAGE, encoding="utf-8")
    plain = FAQ_PAGE.replace("Library FAQ", "Tutorial").replace("?<a", "<a")
    (docs / "tutorial" / "index.html").write_text(plain, encoding="utf-8")
    (docs / "library" / "os.html").write_text(plain, encoding="utf-8")
    return docs


def test_questions_and_answers_come_from_the_faq_pages(builder: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "small"
    files, questions = builder.build(_docs(tmp_path), out, "small", "html5")

    assert (files, questions) == (2, 1)  # library/ is not in the small subset; "Yes." too short
    [item] = json.loads((out / "qa.json").read_text())
    assert item["question"] == "How do I find a module or application to perform task X?"
    assert item["source"] == "faq/library.html"
    assert item["answer_passage"].split("\n\n") == [
        "Check the Library Reference to see if there's a\nrelevant standard library module.",
        "import sys\nprint(sys.path)",
    ]


def test_the_corpus_page_keeps_answers_and_content_only(
    builder: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "small"
    builder.build(_docs(tmp_path), out, "small", "html5")
    page = BeautifulSoup((out / "corpus" / "faq" / "library.html").read_text(), "html.parser")
    text = " ".join(page.get_text(" ").split())

    for gone in ("How do I find", "Is it free", "Copyright", "Table of Contents"):
        assert gone not in text  # the questions (headings, contents, sidebar), the page's chrome
    for kept in ("relevant standard library module", "Yes.", "Details", "General Library"):
        assert kept in text  # the answers and the headings that are no question
    assert page.title is not None
    assert page.title.get_text() == "Library FAQ — Python 3.11 docs"
    assert len(page.find_all("section")) == 5
    # Pages that are not FAQ pages keep their headings, questions or not.
    tutorial = (out / "corpus" / "tutorial" / "index.html").read_text()
    assert "How do I find a module or application to perform task X" in tutorial


def test_a_link_naming_a_question_names_its_label_instead(
    builder: ModuleType, tmp_path: Path
) -> None:
    docs = _docs(tmp_path)
    reference = (
        '<p>See <a class="reference internal" href="../faq/library.html#how-do-i-find-a-module">'
        '<span class="std std-ref">How do I find a module or application to perform task X?'
        '</span></a> first, and <a href="../faq/library.html#general">General Library '
        "Questions</a>.</p>"
    )
    tutorial = docs / "tutorial" / "index.html"
    tutorial.write_text(
        tutorial.read_text().replace("<pre>import sys", reference + "<pre>import sys"),
        encoding="utf-8",
    )
    out = tmp_path / "small"
    builder.build(docs, out, "small", "html5")
    page = BeautifulSoup((out / "corpus" / "tutorial" / "index.html").read_text(), "html.parser")
    text = " ".join(page.get_text(" ").split())

    # As the reStructuredText source reads (":ref:`how-do-i-find-a-module`"); a link that
    # names no question keeps its text.
    assert "See how-do-i-find-a-module first, and General Library Questions ." in text
    assert "perform task X?" not in text


def test_an_answer_reads_its_links_to_questions_as_the_corpus_does(
    builder: ModuleType, tmp_path: Path
) -> None:
    docs = _docs(tmp_path)
    general = (
        FAQ_PAGE.replace("Library FAQ", "General FAQ")
        .replace(
            "<p>Check <a",
            '<p>Read <a href="library.html#how-do-i-find-a-module">How do I find a '
            "module or application to perform task X?</a> before you ask. Check <a",
        )
        .replace("task X?<a", "task Y?<a")
    )
    (docs / "faq" / "general.html").write_text(general, encoding="utf-8")
    out = tmp_path / "small"
    builder.build(docs, out, "small", "html5")
    rows = {row["source"]: row for row in json.loads((out / "qa.json").read_text())}

    answer = rows["faq/general.html"]["answer_passage"]
    assert rows["faq/general.html"]["question"].endswith("task Y?")
    assert answer.startswith("Read how-do-i-find-a-module before you ask. Check")
    page = BeautifulSoup((out / "corpus" / "faq" / "general.html").read_text(), "html.parser")
    assert "Read how-do-i-find-a-module before you ask" in " ".join(page.get_text().split())


def test_sections_as_divs_are_the_same_pages_otherwise(builder: ModuleType, tmp_path: Path) -> None:
    docs = _docs(tmp_path)
    builder.build(docs, tmp_path / "html5", "small", "html5")
    builder.build(docs, tmp_path / "div", "small", "div")
    html5 = (tmp_path / "html5" / "corpus" / "faq" / "library.html").read_text()
    div = (tmp_path / "div" / "corpus" / "faq" / "library.html").read_text()

    assert "<section" not in div
    assert div.count('<div class="section" id=') == html5.count("<section id=") == 5
    as_text = [" ".join(BeautifulSoup(p, "html.parser").get_text().split()) for p in (html5, div)]
    assert as_text[0] == as_text[1]
    qa = [(tmp_path / name / "qa.json").read_text() for name in ("html5", "div")]
    assert qa[0] == qa[1]


def test_whole_pages_keep_their_navigation_but_no_question(
    builder: ModuleType, tmp_path: Path
) -> None:
    docs = _docs(tmp_path)
    builder.build(docs, tmp_path / "body", "small", "html5")
    builder.build(docs, tmp_path / "whole", "small", "html5", whole=True)
    page = BeautifulSoup(
        (tmp_path / "whole" / "corpus" / "faq" / "library.html").read_text(), "html.parser"
    )
    text = " ".join(page.get_text(" ").split())

    for kept in ("Table of Contents", "General Library Questions", "Copyright", "Python"):
        assert kept in text  # the sidebar (its entries that are no question), footer, nav bar
    for gone in ("How do I find", "Is it free"):
        assert gone not in text  # a question is nowhere on the page: headings, contents, sidebar
    sidebar = page.find("div", class_="sphinxsidebar")
    assert sidebar is not None
    assert "General Library Questions" in sidebar.get_text()  # an entry that is no question
    assert page.find("div", class_="related")
    qa = [(tmp_path / name / "qa.json").read_text() for name in ("body", "whole")]
    assert qa[0] == qa[1]


def test_a_page_that_is_not_sphinx_is_an_error(builder: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"no div\.body"):
        builder.main_content("<html><body><p>Hand-written.</p></body></html>")
