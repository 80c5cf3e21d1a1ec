"""The GTK manual's Common Questions set (bench/evalsets/build_gtk_docs.py): questions and
answers read from a DocBook `qandaset` as gtk-doc renders it, and the corpus copy of the page
without its question rows."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from bs4 import BeautifulSoup

from tests.support.scripts import BENCH, load_script

BUILDER = BENCH / "evalsets" / "build_gtk_docs.py"

# The shape of gtk-question-index.html: a navigation table, then the qandaset as a table of
# topic rows (`tr.qandadiv`) and question / answer row pairs; one question continues its
# topic's title; one answer is under five words.
FAQ_HTML = """<html><head><title>Common Questions: GTK+ 3 Reference Manual</title></head>
<body><table class="navigation" id="top"><tr><td><a accesskey="h" href="index.html">Home</a>
</td></tr></table>
<div class="refentry"><div class="refsect1"><h2>Questions and Answers</h2>
<p>This is an "index" of the reference manual organized by common "How do I..." questions.</p>
<div class="qandaset"><table border="0"><tbody>
<tr class="qandadiv"><td colspan="2"><h5 class="title">1. General</h5></td></tr>
<tr class="question">
<td align="left" valign="top"><a name="id-1"></a><p><b>1.1.</b></p></td>
<td align="left" valign="top"><p>
How do I get started with GTK+?
</p></td>
</tr>
<tr class="answer">
<td align="left" valign="top"></td>
<td align="left" valign="top"><p>
The GTK+ <a class="ulink" href="https://www.gtk.org">website</a> offers some tutorials; see
also <a class="link" href="gtk-getting-started.html#hello">Getting Started</a>.
</p></td>
</tr>
<tr class="qandadiv"><td colspan="2">
<h5 class="title">2. Which widget should I use...</h5></td></tr>
<tr class="question">
<td align="left" valign="top"><p><b>2.1.</b></p></td>
<td align="left" valign="top"><p>...for lists and trees?</p></td>
</tr>
<tr class="answer">
<td align="left" valign="top"></td>
<td align="left" valign="top"><p>See the <a class="link" href="TreeWidget.html">tree widget
overview</a>: use a GtkTreeView.</p></td>
</tr>
<tr class="question">
<td align="left" valign="top"><p><b>2.2.</b></p></td>
<td align="left" valign="top"><p>...for text?</p></td>
</tr>
<tr class="answer">
<td align="left" valign="top"></td>
<td align="left" valign="top"><p>A GtkTextView.</p></td>
</tr>
</tbody></table></div></div></div>
</body></html>
"""


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    return load_script(BUILDER)


def test_questions_and_answers_come_from_the_qandaset(builder: ModuleType) -> None:
    faq = builder.parse_faq(FAQ_HTML)

    assert [(e.number, e.question) for e in faq.entries] == [
        (1, "How do I get started with GTK+?"),
        (2, "Which widget should I use for lists and trees?"),
        (3, "Which widget should I use for text?"),
    ]
    assert faq.entries[0].answer == (
        "The GTK+ website offers some tutorials; see\nalso Getting Started."
    )
    assert faq.entries[0].links == ("gtk-getting-started.html",)
    items, dropped = builder.EVALSET.qa_items(faq.entries)
    assert [item["id"] for item in items] == ["gtkfaq-01", "gtkfaq-02"]
    assert [entry.number for entry in dropped] == [3]  # "A GtkTextView."


def test_the_corpus_page_keeps_answers_and_topics_but_not_questions(builder: ModuleType) -> None:
    page = builder.parse_faq(FAQ_HTML).page_without_questions
    text = " ".join(BeautifulSoup(page, "html.parser").get_text().split())

    for question in ("How do I get started", "for lists and trees", "for text?", "1.1.", "2.2."):
        assert question not in text
    for kept in ("offers some tutorials", "use a GtkTreeView.", "A GtkTextView.", "1. General"):
        assert kept in text
    # Only the question rows go: the page is otherwise as shipped.
    rows = [
        FAQ_HTML[FAQ_HTML.index(f'<tr class="question">\n<td align="left" valign="top">{cell}') :]
        for cell in ('<a name="id-1">', "<p><b>2.1.", "<p><b>2.2.")
    ]
    cut = sum(row.index('<tr class="answer">') for row in rows)
    assert len(page) == len(FAQ_HTML) - cut
    assert page.count('<tr class="answer">') == 3


def test_a_page_of_another_shape_is_an_error(builder: ModuleType) -> None:
    with pytest.raises(ValueError, match="no questions found"):
        builder.parse_faq("<html><body><p>Nothing to ask.</p></body></html>")
    with pytest.raises(ValueError, match="question 1 is not followed by its answer row"):
        builder.parse_faq(
            '<table><tr class="question"><td>1.</td><td>Why?</td></tr>'
            "<tr><td></td><td>Because.</td></tr></table>"
        )


def test_the_small_subset_is_the_faq_its_links_and_the_key_pages(
    builder: ModuleType, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "gtk-question-index.html").write_text(FAQ_HTML)
    for page in (*builder.KEY_DOCS, "TreeWidget.html", "GtkLabel.html"):
        (docs / page).write_text(f"<html><body><p>{page}</p></body></html>")

    files, items, dropped = builder.EVALSET.build(docs, tmp_path / "small", "small")
    corpus = tmp_path / "small" / "corpus"
    assert (files, len(items), dropped) == (len(builder.KEY_DOCS) + 2, 2, 1)
    assert (corpus / "TreeWidget.html").is_file()  # an answer's link
    assert not (corpus / "GtkLabel.html").exists()
    assert "get started" not in (corpus / "gtk-question-index.html").read_text()
