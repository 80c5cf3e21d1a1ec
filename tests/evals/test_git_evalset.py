"""The Git FAQ evaluation set's builder (bench/evalsets/build_git_docs.py): questions and
answers read from gitfaq.html, and the corpus copy of the page without its questions."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from bs4 import BeautifulSoup

from tests.support.scripts import BENCH, load_script

BUILDER = BENCH / "evalsets" / "build_git_docs.py"

# The shape of Git's gitfaq.html (asciidoc, CRLF line ends): sections whose body is a
# description list, a question per <dt class="hdlist1"> and its answer in the next <dd>; one
# question is no question sentence. A table of contents, were the page built with one, lists
# the headings before the content.
FAQ_HTML = """<html><head><title>gitfaq(7)</title></head><body class="manpage">
<div id="header"><h1>gitfaq(7) Manual Page</h1>
<div id="toc"><div id="toctitle">Table of Contents</div>
<div class="toclevel1"><a href="#_configuration">Configuration</a></div></div></div>
<div id="content">
<div class="sect1">
<h2 id="_description">DESCRIPTION</h2>
<div class="sectionbody">
<div class="paragraph"><p>The examples in this FAQ assume a standard POSIX shell.</p></div>
</div>
</div>
<div class="sect1">
<h2 id="_configuration">Configuration</h2>
<div class="sectionbody">
<div class="dlist" id="user-name"><dl>
<dt class="hdlist1">
What should I put in <code>user.name</code>?
</dt>
<dd>
<p>
        You should put your personal name, generally a form using a given name
        and family name.
</p>
<div class="paragraph"><p>For that, see <code>credential.username</code> in
<a href="git-config.html#_variables">git-config(1)</a> and
<a href="https://git-scm.com/">the site</a>.</p></div>
</dd>
<dt class="hdlist1">
Can I?
</dt>
<dd>
<p>
        Yes, <a href="git-var.html">mostly</a>.
</p>
</dd>
</dl></div>
</div>
</div>
<div class="sect1">
<h2 id="_cross_platform_issues">Cross-Platform Issues</h2>
<div class="sectionbody">
<div class="dlist" id="windows-text-binary"><dl>
<dt class="hdlist1">
I&#8217;m on Windows and my text files are detected as binary.
</dt>
<dd>
<p>
        Git works best when you store text files as UTF-8.
</p>
<div class="listingblock">
<div class="content">
<pre><code>*.c     working-tree-encoding=UTF-16LE-BOM</code></pre>
</div></div>
</dd>
</dl></div>
</div>
</div>
</div>
<div id="footer"><div id="footer-text">Last updated 2024-05-31</div></div>
</body></html>
""".replace("\n", "\r\n")


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    return load_script(BUILDER)


def test_questions_and_answers_come_from_the_faq(builder: ModuleType) -> None:
    faq = builder.parse_faq(FAQ_HTML)

    assert [(e.number, e.question) for e in faq.entries] == [
        (1, "What should I put in user.name?"),
        (2, "Can I?"),
        (3, "I\u2019m on Windows and my text files are detected as binary."),
    ]
    # The answer's text as a reader sees it: paragraphs apart, source indentation gone.
    assert faq.entries[0].answer.split("\n\n") == [
        "You should put your personal name, generally a form using a given name\nand family name.",
        "For that, see credential.username in\ngit-config(1) and\nthe site.",
    ]
    assert faq.entries[2].answer.split("\n\n") == [
        "Git works best when you store text files as UTF-8.",
        "*.c working-tree-encoding=UTF-16LE-BOM",
    ]
    assert all("  " not in e.answer and "\r" not in e.answer for e in faq.entries)
    # Local pages only, fragment dropped: they pick the small subset.
    assert faq.entries[0].links == ("git-config.html",)


def test_the_corpus_page_keeps_answers_but_not_questions(builder: ModuleType) -> None:
    page = builder.parse_faq(FAQ_HTML).page_without_questions
    text = " ".join(BeautifulSoup(page, "html.parser").get_text().split())

    for question in ("What should I put in", "Can I?", "detected as binary", "Table of Contents"):
        assert question not in text
    assert "You should put your personal name, generally a form" in text
    assert "Yes, mostly." in text
    assert "Git works best when you store text files as UTF-8." in text
    # Everything else stays as shipped, line ends included: the cut removes the headings and
    # the table of contents only.
    assert page.startswith(FAQ_HTML[: FAQ_HTML.index('<div id="toc">')] + "</div>\r\n")
    removed = (
        FAQ_HTML[
            FAQ_HTML.index('<div id="toc">') : FAQ_HTML.index("</div></div></div>")
            + len("</div></div>")
        ]
        + '<dt class="hdlist1">\r\nWhat should I put in <code>user.name</code>?\r\n</dt>\r\n'
        + '<dt class="hdlist1">\r\nCan I?\r\n</dt>\r\n'
        + '<dt class="hdlist1">\r\nI&#8217;m on Windows and my text files are detected as '
        "binary.\r\n</dt>\r\n"
    )
    assert len(page) == len(FAQ_HTML) - len(removed)
    assert page.endswith(FAQ_HTML[FAQ_HTML.index("<dd>\r\n<p>\r\n        Git works") :])


def test_answers_under_five_words_are_left_out(builder: ModuleType) -> None:
    entries = builder.parse_faq(FAQ_HTML).entries
    items, dropped = builder.EVALSET.qa_items(entries)

    assert [entry.number for entry in dropped] == [2]  # "Yes, mostly."
    assert items == [
        {
            "id": "gitfaq-01",
            "question": "What should I put in user.name?",
            "answer_passage": entries[0].answer,
            "source": "gitfaq.html",
        },
        {
            "id": "gitfaq-03",
            "question": "I\u2019m on Windows and my text files are detected as binary.",
            "answer_passage": entries[2].answer,
            "source": "gitfaq.html",
        },
    ]


def test_a_page_of_another_shape_is_an_error(builder: ModuleType) -> None:
    with pytest.raises(ValueError, match="no questions found"):
        builder.parse_faq("<html><body><p>Nothing to ask.</p></body></html>")
    with pytest.raises(ValueError, match=r"question 1 \(Why\?\) has no <dd> answer"):
        builder.parse_faq(
            '<div class="sect1"><div class="sectionbody"><div class="dlist"><dl>'
            "<dt>Why?</dt><p>Because.</p></dl></div></div></div>"
        )


def test_the_small_subset_is_the_faq_its_links_and_the_key_pages(
    builder: ModuleType, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    (docs / "technical").mkdir(parents=True)
    (docs / "gitfaq.html").write_bytes(FAQ_HTML.encode())
    for page in (*builder.KEY_DOCS, "git-var.html", "git.html", "technical/racy-git.html"):
        (docs / page).write_text(f"<html><body><p>{page}</p></body></html>")
    (docs / "index.html").symlink_to("git.html")

    files, items, dropped = builder.EVALSET.build(docs, tmp_path / "small", "small")
    corpus = tmp_path / "small" / "corpus"
    assert (files, len(items), dropped) == (len(builder.KEY_DOCS) + 2, 2, 1)
    assert (corpus / "git-var.html").is_file()  # linked from a dropped answer: still a page
    assert not (corpus / "git.html").exists()
    assert b"What should I put in" not in (corpus / "gitfaq.html").read_bytes()
    assert b"\r\n" in (corpus / "gitfaq.html").read_bytes()

    files, _, _ = builder.EVALSET.build(docs, tmp_path / "full", "full")
    assert files == len(builder.KEY_DOCS) + 4  # no second copy of git.html as index.html
    assert (tmp_path / "full" / "corpus" / "technical" / "racy-git.html").is_file()
