#!/usr/bin/env python3
"""Build the Python FAQ set over the Python docs as HTML: the pages Debian's python3.11-doc
ships (Sphinx), the same questions as the shared builder's set, read from HTML.

    .venv/bin/python bench/evalsets/build_python_html.py OUT_DIR [--subset small|full]
        [--sections html5|div] [--page body|whole]

The shared set (../shared/eval/build_python_docs.py) reads the reStructuredText sources; this
one reads what a site serves, for checking the HTML loader on a third generator. Each page
keeps its title and its main content (`div.body`: the navigation bars, sidebar and footer
are left out, as the other HTML sets' builders leave their pages' tables of contents out).
In the FAQ pages every *question heading* (a section heading that ends in "?") and the local
table of contents that lists them are cut; the answers stay; a link on any page whose text is
a cut question names it by its label instead (as the reStructuredText source does). Labels:
each question -> the text of its answer (the section's own text, its subsections' excluded,
as the shared builder takes the lines up to the next heading); answers under five words are
left out, as there.

`--sections` says how sections are marked up: `html5` as shipped (`<section>`, docutils'
HTML5 writer), `div` as docutils' HTML4 writer (Sphinx before docutils 0.18), DocBook XSL and
AsciiDoc write them (`<div class="section">`): the same pages, the same questions, sections
that a reader must recognise by their class. `--page whole` keeps each page whole, as a site
serves it (the navigation bars, the sidebar with its table of contents and previous/next
links, the footer), with the question headings cut everywhere they appear: how a crawl of
the site reads, and what a loader must tell apart from the content. Needs `apt-get download`
(run `apt-get update` once first) and beautifulsoup4; no other network access.
Deterministic. The questions and answers were written by the Python documentation team (PSF
licence).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Set
from pathlib import Path

from bs4 import BeautifulSoup, Tag

sys.path.insert(0, str(Path(__file__).resolve().parent))
from html_faq import (
    MIN_ANSWER_WORDS,
    block_text,
    name_links_by_label,
    unpack_package,
    word_count,
)

PACKAGE = "python3.11-doc"
ROOT = "usr/share/doc/python3.11/html"
SMALL = ("faq/", "tutorial/", "howto/")  # the shared builder's small subset
HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]


def heading_text(heading: Tag) -> str:
    """The heading as a reader sees it, without its pilcrow permalink; the page's own heading
    is left as shipped."""
    heading = copy.copy(heading)
    for link in heading.find_all("a", class_="headerlink"):
        link.decompose()
    return " ".join(heading.get_text(" ").split())


def main_content(html: str) -> BeautifulSoup:
    """The page with only its title and its main content (Sphinx's `div.body`)."""
    soup = BeautifulSoup(html, "html.parser")
    body = soup.find("div", class_="body")
    if body is None:
        raise ValueError("no div.body: not a Sphinx page")
    page = BeautifulSoup("<html><head><title></title></head><body></body></html>", "html.parser")
    page.title.string = soup.title.get_text() if soup.title else ""  # type: ignore[union-attr]
    page.body.append(body.extract())  # type: ignore[union-attr]
    return page


def whole_page(html: str) -> BeautifulSoup:
    """The page as shipped (`--page whole`)."""
    return BeautifulSoup(html, "html.parser")


def question_sections(page: BeautifulSoup) -> Iterator[tuple[Tag, Tag, str]]:
    """(section, heading, question) for each section of a FAQ page whose heading is a question
    (ends in "?")."""
    for section in page.find_all("section"):
        heading = section.find(HEADINGS, recursive=False)
        if heading is not None and (question := heading_text(heading)).endswith("?"):
            yield section, heading, question


def questions_of(page: BeautifulSoup) -> set[str]:
    """The question headings of a FAQ page."""
    return {question for _, _, question in question_sections(page)}


def cut_questions(
    page: BeautifulSoup, source: str, first_id: int, elsewhere: Set[str] = frozenset()
) -> list[dict[str, str]]:
    """Cut the question headings and the local table of contents out of a FAQ page (and
    any other table of contents entry that names a question: a whole page's sidebar); the
    qa.json rows of its questions. An answer's links to a question of `elsewhere` (every FAQ
    page's) read as `unname_references` leaves them in the corpus."""
    for contents in page.find_all(["nav", "div"], class_="contents"):
        contents.decompose()
    rows = []
    asked: set[str] = set()
    for section, heading, question in question_sections(page):
        heading.decompose()
        asked.add(question)
        answer = BeautifulSoup(str(section), "html.parser").section
        for sub in answer.find_all("section"):  # type: ignore[union-attr]
            sub.decompose()
        unname_references(answer, elsewhere)  # type: ignore[arg-type]
        text = block_text(answer)  # type: ignore[arg-type]
        if word_count(text) < MIN_ANSWER_WORDS:
            continue  # "See the next question." is no answer to score against
        rows.append({"id": f"pyfaq-html-{first_id + len(rows):03d}", "question": question,
                     "answer_passage": text, "source": source})  # fmt: skip
    for link in page.find_all("a", href=True):  # a table of contents entry naming a question
        entry = link.find_parent("li")
        if link.decomposed or not entry or not str(link["href"]).startswith("#"):
            continue
        if heading_text(link) in asked:
            entry.decompose()
    return rows


def unname_references(page: BeautifulSoup | Tag, asked: Set[str]) -> None:
    """A cross-reference that names a cut question by its title names it by its label instead
    (`html_faq.links_to_questions`), the link read as a question heading is: the question's
    words stay out of the corpus wherever a page links to it."""
    name_links_by_label(page, asked, heading_text)


def as_divs(page: BeautifulSoup) -> None:
    """Sections as docutils' HTML4 writer and DocBook XSL mark them: `<div class="section">`."""
    for section in page.find_all("section"):
        section.name = "div"
        section["class"] = ["section", *section.get("class", [])]


def build(
    docs: Path, out: Path, subset: str, sections: str, whole: bool = False
) -> tuple[int, int]:
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.html"))
    pages = [p for p in pages if not p.startswith(("_", "genindex", "search", "py-modindex"))]
    if subset == "small":
        pages = [p for p in pages if p.startswith(SMALL)]
    corpus = out / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    qa: list[dict[str, str]] = []
    read: dict[str, BeautifulSoup] = {}
    for name in pages:
        html = (docs / name).read_text(encoding="utf-8")
        read[name] = whole_page(html) if whole else main_content(html)
    faq = [name for name in pages if name.startswith("faq/")]
    asked = set().union(*(questions_of(read[name]) for name in faq))
    for name, page in read.items():
        if name in faq:
            qa += cut_questions(page, name, len(qa), asked)
        unname_references(page, asked)
        if sections == "div":
            as_divs(page)
        target = corpus / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(str(page), encoding="utf-8")
    (out / "qa.json").write_text(json.dumps(qa, indent=1) + "\n", encoding="utf-8")
    return len(pages), len(qa)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--subset", choices=["small", "full"], default="full")
    parser.add_argument("--sections", choices=["html5", "div"], default="html5")
    parser.add_argument("--page", choices=["body", "whole"], default="body")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        files, questions = build(
            unpack_package(PACKAGE, Path(work)) / ROOT,
            args.out,
            args.subset,
            args.sections,
            args.page == "whole",
        )
    print(f"{files} corpus files, {questions} questions -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
