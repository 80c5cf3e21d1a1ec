#!/usr/bin/env python3
"""Build a developers' retrieval evaluation set from Debian's libgtk-3-doc package: the GTK 3
reference manual, written in DocBook and turned into HTML by gtk-doc (DocBook XSL).

Corpus: the manual's pages as shipped (gtk3/), with the *question rows* of its "Common
Questions" page (gtk-question-index.html, a DocBook `qandaset`: a table whose rows alternate
`tr.question` and `tr.answer`) removed, so that a question cannot be found by matching its
own text; the answers stay, as do the topic rows between them ("5. GtkTreeView"). Labels:
each question -> the text of its answer. Same relevance rule as ../shared/eval/README.md.
A question that continues its topic ("...for lists and trees?" under "Which widget should I
use...") is asked whole: "Which widget should I use for lists and trees?".

    .venv/bin/python bench/evalsets/build_gtk_docs.py OUT_DIR [--subset small|full]

Writes OUT_DIR/corpus/**.html and OUT_DIR/qa.json, a list of
{"id", "question", "answer_passage", "source"}. `full` is every HTML page of the manual
(494); `small` is the questions page, the manual's pages its answers link to and the guides
and widgets a newcomer reads first (KEY_DOCS). Needs `apt-get download` (run `apt-get
update` once first) and beautifulsoup4; no other network access. Deterministic. The
questions and answers were written by the GTK developers (LGPL-2.1+).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from html_faq import Faq, FaqDocs, FaqEntry, FaqSource, faq_entry

FAQ = "gtk-question-index.html"
# The getting-started guides, platform notes and the widgets every program uses.
KEY_DOCS = (
    "chap-css-overview.html", "chap-drawing-model.html", "chap-input-handling.html",
    "gtk-building.html", "gtk-compiling.html", "gtk-getting-started.html", "gtk-running.html",
    "gtk-windows.html", "gtk-x11.html", "gtk-wayland.html", "gtk-osx.html", "gtk3-General.html",
    "gtk3-Drag-and-Drop.html", "GtkAdjustment.html", "GtkApplication.html", "GtkBox.html",
    "GtkBuilder.html", "GtkButton.html", "GtkContainer.html", "GtkDialog.html",
    "GtkFileChooser.html", "GtkGrid.html", "GtkMenu.html", "GtkMessageDialog.html",
    "GtkNotebook.html", "GtkScrolledWindow.html", "GtkSettings.html", "GtkWindow.html",
)  # fmt: skip


def _question(row_text: str, topic: str) -> str:
    """A question as asked: one that continues its topic's title ("...for lists and trees?"
    under "2. Which widget should I use...") is joined to it."""
    question = " ".join(row_text.split())
    if not question.startswith("..."):
        return question
    title = topic.split(maxsplit=1)[-1] if topic[:1].isdigit() else topic
    return f"{title.rstrip('. ')} {question.lstrip('. ')}"


def parse_faq(html: str) -> Faq:
    """The questions and answers of gtk-question-index.html, and the page without its
    questions.

    The page is one DocBook `qandaset`, rendered as a table: a `tr.qandadiv` row titles each
    topic, then each entry is a `tr.question` row (its number, then its text) followed by a
    `tr.answer` row (an empty cell, then the answer). A question's row is cut from the
    source up to its answer's row, so the rest of the page stays as shipped.
    """
    source = FaqSource(html)
    entries: list[FaqEntry] = []
    cuts = []
    for row in source.soup.find_all("tr", class_="question"):
        number = len(entries) + 1
        cells = row.find_all("td", recursive=False)
        answer = row.find_next_sibling("tr")
        if len(cells) != 2:
            raise ValueError(f"{FAQ}: question {number} is not a row of two cells")
        if answer is None or "answer" not in (answer.get("class") or ()):
            raise ValueError(f"{FAQ}: question {number} is not followed by its answer row")
        topic_row = row.find_previous("tr", class_="qandadiv")
        topic = " ".join(topic_row.get_text().split()) if topic_row else ""
        question = _question(cells[1].get_text(), topic)
        answer_cells = answer.find_all("td", recursive=False)
        entries.append(faq_entry(number, question, answer_cells[-1]))
        cuts.append((source.offset(row), source.offset(answer)))
    if not entries:
        raise ValueError(f"{FAQ}: no questions found (no tr.question rows)")
    return Faq(entries, source.without(cuts))


EVALSET = FaqDocs(
    package="libgtk-3-doc",
    root="usr/share/gtk-doc/html/gtk3",
    faq=FAQ,
    id_prefix="gtkfaq",
    key_docs=KEY_DOCS,
    parse_faq=parse_faq,
)


if __name__ == "__main__":
    EVALSET.main(__doc__)
