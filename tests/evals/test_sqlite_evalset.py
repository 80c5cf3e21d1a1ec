"""The SQLite FAQ evaluation set's builder (bench/evalsets/build_sqlite_docs.py): questions and
answers read from faq.html, and the corpus copy of the page without its questions."""

from __future__ import annotations

from types import ModuleType

import pytest
from bs4 import BeautifulSoup

from tests.support.scripts import BENCH, load_script

BUILDER = BENCH / "evalsets" / "build_sqlite_docs.py"

# The shape of SQLite's faq.html: an index of the questions, then per question an anchor, a
# numbered bold heading and a blockquote answer (with the page's stray </li> closers).
FAQ_HTML = """<html><head><title>SQLite Frequently Asked Questions</title></head><body>
<h2>Frequently Asked Questions</h2><ol class=nounderline><li value='1'><a href="#q1">How do I
  create an AUTOINCREMENT field?</a></li><li value='3'><a href="#q3">Is SQLite
  threadsafe?</a></li><li value='4'><a href="#q4">Does SQLite support a BLOB
  type?</a></li></ol><a name="q1"></a>
<p><b>(1) How do I create an AUTOINCREMENT field?</b></p>
<blockquote><p>Short answer: A column declared <a href="lang_createtable.html#rowid">INTEGER
  PRIMARY KEY</a> will autoincrement.</p>

  <p>See also <a href="autoinc.html">AUTOINCREMENT</a> and
  <a href="https://sqlite.org/forum">the forum</a>.</p></blockquote></li>
<a name="q3"></a>
<p><b>(3) Is SQLite
  threadsafe?</b></p>
<blockquote>Yes, <a href="threadsafe.html">by default</a>.</blockquote></li>
<a name="q4"></a>
<p><b>(4) Does SQLite support a BLOB type?</b></p>
<blockquote>SQLite allows you to store BLOB data in any column.</blockquote></li>
</ol>
<p align="center"><small>This page last modified on 2021-07-27</small></p>
</body></html>
"""


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    return load_script(BUILDER)


def test_questions_and_answers_come_from_the_faq(builder: ModuleType) -> None:
    faq = builder.parse_faq(FAQ_HTML)

    assert [(e.number, e.question) for e in faq.entries] == [
        (1, "How do I create an AUTOINCREMENT field?"),
        (3, "Is SQLite threadsafe?"),
        (4, "Does SQLite support a BLOB type?"),
    ]
    # The answer's text as a reader sees it: paragraphs apart, source indentation gone.
    paragraphs = [" ".join(p.split()) for p in faq.entries[0].answer.split("\n\n")]
    assert paragraphs == [
        "Short answer: A column declared INTEGER PRIMARY KEY will autoincrement.",
        "See also AUTOINCREMENT and the forum.",
    ]
    assert "  " not in faq.entries[0].answer
    # Local pages only, fragment dropped: they pick the small subset.
    assert faq.entries[0].links == ("lang_createtable.html", "autoinc.html")


def test_the_corpus_page_keeps_answers_but_not_questions(builder: ModuleType) -> None:
    page = builder.parse_faq(FAQ_HTML).page_without_questions
    text = " ".join(BeautifulSoup(page, "html.parser").get_text().split())

    for question in ("create an AUTOINCREMENT field", "Is SQLite threadsafe", "a BLOB type?"):
        assert question not in text
    assert "Short answer: A column declared INTEGER PRIMARY KEY will autoincrement." in text
    assert "SQLite allows you to store BLOB data in any column." in text
    # Everything else stays as shipped: the cut removes the index and the headings only.
    assert page.startswith(FAQ_HTML[: FAQ_HTML.index("<ol class=nounderline>")])
    assert page.endswith(
        FAQ_HTML[FAQ_HTML.index('<a name="q4"></a>') :].replace(
            "<p><b>(4) Does SQLite support a BLOB type?</b></p>\n", ""
        )
    )


def test_answers_under_five_words_are_left_out(builder: ModuleType) -> None:
    items, dropped = builder.EVALSET.qa_items(builder.parse_faq(FAQ_HTML).entries)

    assert [entry.number for entry in dropped] == [3]  # "Yes, by default."
    assert items == [
        {
            "id": "sqlitefaq-01",
            "question": "How do I create an AUTOINCREMENT field?",
            "answer_passage": builder.parse_faq(FAQ_HTML).entries[0].answer,
            "source": "faq.html",
        },
        {
            "id": "sqlitefaq-04",
            "question": "Does SQLite support a BLOB type?",
            "answer_passage": "SQLite allows you to store BLOB data in any column.",
            "source": "faq.html",
        },
    ]


def test_a_page_of_another_shape_is_an_error(builder: ModuleType) -> None:
    with pytest.raises(ValueError, match="no numbered questions"):
        builder.parse_faq("<html><body><p>Nothing to ask.</p></body></html>")
    with pytest.raises(ValueError, match="question 2 is not a numbered"):
        builder.parse_faq('<a name="q2"></a><h3>Why?</h3><blockquote>Because.</blockquote>')
