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

import argparse
import copy
import json
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from bs4 import BeautifulSoup, Tag

PACKAGE = "sqlite3-doc"
DOCS = "usr/share/doc/sqlite3"
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
MIN_ANSWER_WORDS = 5  # the relevance rule never counts a passage under one word 5-gram
QUESTION_ANCHOR = re.compile(r"^q(\d+)$")
NUMBERED = re.compile(r"^\((\d+)\)\s*(.+)$", re.DOTALL)
WORD = re.compile(r"[a-z0-9_]+")
BLOCKS = ["p", "pre", "blockquote", "ol", "ul", "li", "dl", "dt", "dd", "table", "tr", "div"]


class FaqEntry(NamedTuple):
    number: int
    question: str
    answer: str
    links: tuple[str, ...]
    """Targets of the answer's links, as written (relative, fragment dropped)."""


class Faq(NamedTuple):
    entries: list[FaqEntry]
    page_without_questions: str
    """The page with every question heading and the question index cut out."""


def tidy(text: str) -> str:
    """Collapse spaces within lines and runs of blank lines; HTML source indentation is noise."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def block_text(element: Tag) -> str:
    """An element's text with its paragraphs, list items and code blocks apart (the parser
    folds the whitespace between tags to one character, so the breaks are put back here)."""
    element = copy.copy(element)
    for block in element.find_all(BLOCKS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    return tidy(element.get_text())


def word_count(text: str) -> int:
    return len(WORD.findall(text.lower()))


def _offset(line_starts: list[int], tag: Tag) -> int:
    if tag.sourceline is None or tag.sourcepos is None:
        raise ValueError("the parser did not record source positions")
    return line_starts[tag.sourceline - 1] + tag.sourcepos


def _span(line_starts: list[int], tag: Tag, length: int) -> tuple[int, int]:
    """Source span of an element: from its start tag to the next tag after its content."""
    last = tag
    for node in tag.descendants:
        last = node  # type: ignore[assignment]  # any node: only its successor matters
    following = last.find_next()
    end = _offset(line_starts, following) if isinstance(following, Tag) else length
    return _offset(line_starts, tag), end


def _local_link(href: str) -> str | None:
    target = href.split("#", 1)[0]
    if not target or ":" in target or target.startswith("/"):
        return None  # a fragment on the same page, an absolute URL, javascript:, mailto:
    return target


def parse_faq(html: str) -> Faq:
    """The questions and answers of SQLite's faq.html, and the page without its questions.

    Each question is `<a name="qN"></a><p><b>(N) question</b></p><blockquote>answer</blockquote>`;
    the page opens with an index (`<ol>` of links to `#qN`) that repeats every question. The cut
    is made on the source text, so the rest of the page stays byte for byte as shipped.
    """
    soup = BeautifulSoup(html, "html.parser")
    line_starts = [0] + [m.end() for m in re.finditer("\n", html)]
    cuts: list[tuple[int, int]] = []
    for index in soup.find_all("ol"):
        if index.find("a", href=re.compile(r"^#q\d+$")):
            cuts.append(_span(line_starts, index, len(html)))
    entries = []
    for anchor in soup.find_all("a", attrs={"name": QUESTION_ANCHOR}):
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
        links = (_local_link(str(a["href"])) for a in answer.find_all("a", href=True))
        entries.append(
            FaqEntry(
                number,
                numbered.group(2),
                block_text(answer),
                tuple(dict.fromkeys(link for link in links if link)),
            )
        )
        cuts.append((_offset(line_starts, heading), _offset(line_starts, answer)))
    if not entries:
        raise ValueError(f"{FAQ}: no numbered questions found")
    page, kept = [], 0
    for start, end in sorted(cuts):
        page.append(html[kept:start])
        kept = end
    page.append(html[kept:])
    return Faq(entries, "".join(page))


def qa_items(entries: list[FaqEntry]) -> tuple[list[dict[str, str]], list[FaqEntry]]:
    """The qa.json rows, and the entries left out because their answer is under five words."""
    items, dropped = [], []
    for entry in entries:
        if word_count(entry.answer) < MIN_ANSWER_WORDS:
            dropped.append(entry)
            continue
        items.append(
            {
                "id": f"sqlitefaq-{entry.number:02d}",
                "question": entry.question,
                "answer_passage": entry.answer,
                "source": FAQ,
            }
        )
    return items, dropped


def small_subset(pages: list[str], faq: Faq) -> list[str]:
    """faq.html, the pages its answers point to, the SQL language reference (lang*.html) and
    KEY_DOCS; `pages` are paths relative to the docs root, as is every link of faq.html."""
    missing = sorted(set(KEY_DOCS) - set(pages))
    if missing:
        raise ValueError(f"{PACKAGE} no longer ships {', '.join(missing)}")
    wanted = {FAQ, *KEY_DOCS}
    wanted.update(posixpath.normpath(link) for entry in faq.entries for link in entry.links)
    wanted.update(page for page in pages if "/" not in page and page.startswith("lang"))
    return sorted(wanted & set(pages))


def fetch_package(workdir: Path) -> Path:
    subprocess.run(
        ["apt-get", "download", PACKAGE], cwd=workdir, check=True, stdout=subprocess.DEVNULL
    )
    deb = next(workdir.glob(f"{PACKAGE}_*.deb"))
    root = workdir / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root / DOCS


def build(docs: Path, out: Path, subset: str) -> tuple[int, list[dict[str, str]], int]:
    """Write OUT/corpus and OUT/qa.json from an unpacked docs tree: (files, qa rows, dropped)."""
    pages = sorted(path.relative_to(docs).as_posix() for path in docs.rglob("*.html"))
    faq = parse_faq((docs / FAQ).read_text(encoding="utf-8"))
    if subset == "small":
        pages = small_subset(pages, faq)
    corpus = out / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    for page in pages:
        target = corpus / page
        target.parent.mkdir(parents=True, exist_ok=True)
        if page == FAQ:
            target.write_text(faq.page_without_questions, encoding="utf-8")
        else:
            shutil.copyfile(docs / page, target)
    items, dropped = qa_items(faq.entries)
    (out / "qa.json").write_text(json.dumps(items, indent=1) + "\n", encoding="utf-8")
    return len(pages), items, len(dropped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    parser.add_argument("--subset", choices=["small", "full"], default="full")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        files, items, dropped = build(fetch_package(Path(work)), args.out, args.subset)
    print(
        f"{files} corpus files, {len(items)} questions, {dropped} dropped "
        f"(answer under {MIN_ANSWER_WORDS} words) -> {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
