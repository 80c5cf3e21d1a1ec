#!/usr/bin/env python3
"""Build the second developers' retrieval evaluation set from Debian's sqlite3-doc package.

Corpus: the SQLite documentation as shipped (HTML pages, kept as HTML), with the FAQ's
*question headings* and its question index removed from faq.html, so that a question cannot
be found by matching its own heading; the answers stay. Labels: each FAQ question -> the text
of its answer. Same relevance rule as ../shared/eval/README.md.

    .venv/bin/python bench/evalsets/build_sqlite_docs.py OUT_DIR [--subset small|full]

Writes OUT_DIR/corpus/**.html and OUT_DIR/qa.json, a list of
{"id", "question", "answer_passage", "source"}. `full` is every HTML page of the docs;
`small` is faq.html, the pages its answers link to, the SQL language reference (lang*.html)
and thirty overviews and how-tos (KEY_DOCS). Needs `apt-get download` (run
`apt-get update` once first) and beautifulsoup4; no other network access. Deterministic.
The questions and answers were written by the SQLite developers (public domain).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# The shared rules, beside this file (a script's own folder is on its path; the tests, which
# load the builders by their path, get it from here).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from html_faq import Faq, FaqDocs, FaqSource, faq_entry, tidy

FAQ = "faq.html"
# Overviews and how-tos from the documentation index (docs.html) that a user meets first. The
# index's other pages (change history, site maps, file-format and VDBE internals, FTS) would
# triple the subset's text for little more than distractors the full set already has.
KEY_DOCS = (
    "about.html", "arch.html", "backup.html", "capi3.html", "cintro.html", "cli.html",
    "datatypes.html", "different.html", "expridx.html", "fasterthanfs.html", "features.html",
    "gencol.html", "howtocompile.html", "inmemorydb.html", "isolation.html", "json1.html",
    "loadext.html", "lockingv3.html", "mmap.html", "nulls.html", "partialindex.html",
    "quickstart.html", "quirks.html", "sharedcache.html", "tempfiles.html", "uri.html",
    "wal.html", "whentouse.html", "windowfunctions.html", "withoutrowid.html",
)  # fmt: skip
QUESTION_ANCHOR = re.compile(r"^q(\d+)$")
NUMBERED = re.compile(r"^\((\d+)\)\s*(.+)$", re.DOTALL)


def parse_faq(html: str) -> Faq:
    """The questions and answers of SQLite's faq.html, and the page without its questions.

    Each question is `<a name="qN"></a><p><b>(N) question</b></p><blockquote>answer</blockquote>`;
    the page opens with an index (`<ol>` of links to `#qN`) that repeats every question.
    """
    source = FaqSource(html)
    cuts = [
        source.span(index)
        for index in source.soup.find_all("ol")
        if index.find("a", href=re.compile(r"^#q\d+$"))
    ]
    entries = []
    for anchor in source.soup.find_all("a", attrs={"name": QUESTION_ANCHOR}):
        number = int(QUESTION_ANCHOR.match(str(anchor["name"])).group(1))  # type: ignore[union-attr]
        heading = anchor.find_next_sibling()
        answer = heading.find_next_sibling() if heading else None
        numbered = NUMBERED.match(tidy(heading.get_text()).replace("\n", " ")) if heading else None
        if not (heading and heading.name == "p" and heading.b and numbered):
            raise ValueError(f"{FAQ}: question {number} is not a numbered <p><b> heading")
        if int(numbered.group(1)) != number:
            raise ValueError(f"{FAQ}: anchor q{number} heads question {numbered.group(1)}")
        if not (answer and answer.name == "blockquote"):
            raise ValueError(f"{FAQ}: question {number} is not followed by a <blockquote>")
        entries.append(faq_entry(number, numbered.group(2), answer))
        cuts.append((source.offset(heading), source.offset(answer)))
    if not entries:
        raise ValueError(f"{FAQ}: no numbered questions found")
    return Faq(entries, source.without(cuts))


def is_language_reference(page: str) -> bool:
    """The SQL language reference (lang*.html, top level), which the FAQ's answers assume."""
    return "/" not in page and page.startswith("lang")


EVALSET = FaqDocs(
    package="sqlite3-doc",
    root="usr/share/doc/sqlite3",
    faq=FAQ,
    id_prefix="sqlitefaq",
    key_docs=KEY_DOCS,
    parse_faq=parse_faq,
    also_small=is_language_reference,
)


if __name__ == "__main__":
    EVALSET.main(__doc__)
