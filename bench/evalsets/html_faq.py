"""What the evaluation sets built from a Debian package of HTML docs and its FAQ page share
(build_sqlite_docs.py, build_git_docs.py, build_gtk_docs.py, build_ffmpeg_docs.py): reading an
answer's text and links, cutting the questions out of the page's source, the qa.json rows, the
subsets and the build itself. Each builder adds only its package's names and how its FAQ page
lays out questions and answers."""

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
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bs4 import BeautifulSoup, Tag

MIN_ANSWER_WORDS = 5  # the relevance rule never counts a passage under one word 5-gram
WORD = re.compile(r"[a-z0-9_]+")
BLOCKS = ["p", "pre", "blockquote", "ol", "ul", "li", "dl", "dt", "dd", "table", "tr", "div"]


class FaqEntry(NamedTuple):
    number: int
    """The question's number on the page, or its position from 1 where the page numbers none."""
    question: str
    answer: str
    links: tuple[str, ...]
    """Targets of the answer's links, as written (relative, fragment dropped)."""


class Faq(NamedTuple):
    entries: list[FaqEntry]
    page_without_questions: str
    """The page with every question heading (and any index of the questions) cut out."""


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


def local_link(href: str) -> str | None:
    target = href.split("#", 1)[0]
    if not target or ":" in target or target.startswith("/"):
        return None  # a fragment on the same page, an absolute URL, javascript:, mailto:
    return target


def links_to_questions(
    element: Tag, questions: Set[str], read: Callable[[Tag], str]
) -> list[tuple[Tag, str]]:
    """The links in `element` whose text, read by `read` (as the builder reads its question
    headings), is one of `questions` ("See <a href="programming.html#faq-create-standalone-
    binary">How can I create a stand-alone binary from a Python script?</a>"), each with the
    label that names the question instead: the link's fragment ("faq-create-standalone-binary"),
    as the reStructuredText source of the shared set does (":ref:`faq-create-standalone-
    binary`"). Named so, a question's words are not found wherever a page or an answer links
    to it."""
    return [
        (link, str(link["href"]).rpartition("#")[2])
        for link in element.find_all("a", href=True)
        if read(link) in questions
    ]


def name_links_by_label(element: Tag, questions: Set[str], read: Callable[[Tag], str]) -> None:
    """Each of `element`'s links to one of `questions` (`links_to_questions`) shows its label."""
    for link, label in links_to_questions(element, questions, read):
        link.string = label


def faq_entry(number: int, question: str, answer: Tag) -> FaqEntry:
    """The entry for a question whose answer is the element `answer`."""
    links = (local_link(str(a["href"])) for a in answer.find_all("a", href=True))
    return FaqEntry(
        number, question, block_text(answer), tuple(dict.fromkeys(link for link in links if link))
    )


class FaqSource:
    """A FAQ page's HTML, parsed, with each element's offset in the source text: the questions
    are cut from the source, so the rest of the page stays byte for byte as shipped."""

    def __init__(self, html: str) -> None:
        self.html = html
        self.soup = BeautifulSoup(html, "html.parser")
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", html)]

    def offset(self, tag: Tag) -> int:
        """Where the element's start tag opens in the source."""
        if tag.sourceline is None or tag.sourcepos is None:
            raise ValueError("the parser did not record source positions")
        return self._line_starts[tag.sourceline - 1] + tag.sourcepos

    def span(self, tag: Tag) -> tuple[int, int]:
        """Source span of an element: from its start tag to the next tag after its content
        (the end of the page after the last)."""
        last = tag
        for node in tag.descendants:
            last = node  # type: ignore[assignment]  # any node: only its successor matters
        following = last.find_next()
        end = self.offset(following) if isinstance(following, Tag) else len(self.html)
        return self.offset(tag), end

    def element_span(self, tag: Tag) -> tuple[int, int]:
        """Source span of an inline element without another of its name inside: from its start
        tag to the end of its end tag."""
        start = self.offset(tag)
        return start, self.html.index(f"</{tag.name}>", start) + len(tag.name) + 3

    def without(self, cuts: Iterable[tuple[int, int]], put: Mapping[int, str] | None = None) -> str:
        """The source with the (start, end) spans `cuts`, which do not overlap, taken out; a
        cut whose start is in `put` is replaced by that text."""
        page, kept = [], 0
        for start, end in sorted(cuts):
            page.append(self.html[kept:start])
            page.append((put or {}).get(start, ""))
            kept = end
        page.append(self.html[kept:])
        return "".join(page)


def unpack_package(package: str, workdir: Path) -> Path:
    """Download a Debian package with `apt-get download` and unpack it into `workdir`: the
    root of its file tree."""
    subprocess.run(
        ["apt-get", "download", package], cwd=workdir, check=True, stdout=subprocess.DEVNULL
    )
    deb = next(workdir.glob(f"{package}_*.deb"))
    unpacked = workdir / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    return unpacked


def _no_page(page: str) -> bool:
    return False


@dataclass(frozen=True)
class FaqDocs:
    """An evaluation set: a Debian package's HTML docs as the corpus, its FAQ as the labels."""

    package: str
    """The Debian package, fetched with `apt-get download`."""
    root: str
    """Where the package installs the docs; pages are named by their path relative to it."""
    faq: str
    """The FAQ page."""
    id_prefix: str
    """The qa.json ids are `{id_prefix}-{number:02d}`."""
    key_docs: tuple[str, ...]
    """Pages of the small subset besides the FAQ and the pages its answers link to."""
    parse_faq: Callable[[str], Faq]
    """The FAQ page's questions and answers, and the page without its questions."""
    also_small: Callable[[str], bool] = _no_page
    """Whether a page not named otherwise belongs to the small subset all the same."""

    def qa_items(self, entries: list[FaqEntry]) -> tuple[list[dict[str, str]], list[FaqEntry]]:
        """The qa.json rows, and the entries left out because their answer is under five words."""
        items, dropped = [], []
        for entry in entries:
            if word_count(entry.answer) < MIN_ANSWER_WORDS:
                dropped.append(entry)
                continue
            items.append(
                {
                    "id": f"{self.id_prefix}-{entry.number:02d}",
                    "question": entry.question,
                    "answer_passage": entry.answer,
                    "source": self.faq,
                }
            )
        return items, dropped

    def small_subset(self, pages: list[str], faq: Faq) -> list[str]:
        """The FAQ, the pages its answers point to, key_docs and the pages also_small takes;
        `pages` are paths relative to the docs root, as is every link of the FAQ."""
        missing = sorted(set(self.key_docs) - set(pages))
        if missing:
            raise ValueError(f"{self.package} no longer ships {', '.join(missing)}")
        wanted = {self.faq, *self.key_docs}
        wanted.update(posixpath.normpath(link) for entry in faq.entries for link in entry.links)
        wanted.update(page for page in pages if self.also_small(page))
        return sorted(wanted & set(pages))

    def fetch(self, workdir: Path) -> Path:
        """Download and unpack the package into `workdir`: the docs root."""
        return unpack_package(self.package, workdir) / self.root

    def build(self, docs: Path, out: Path, subset: str) -> tuple[int, list[dict[str, str]], int]:
        """Write OUT/corpus and OUT/qa.json from the unpacked docs tree `docs`:
        (files, qa rows, dropped)."""
        pages = sorted(
            path.relative_to(docs).as_posix()
            for path in docs.rglob("*.html")
            if not path.is_symlink()  # a second name for a page (git's index.html): one copy
        )
        # Bytes, not text, so that the FAQ page keeps its line ends (git's are CRLF) as shipped.
        faq = self.parse_faq((docs / self.faq).read_bytes().decode("utf-8"))
        if subset == "small":
            pages = self.small_subset(pages, faq)
        corpus = out / "corpus"
        shutil.rmtree(corpus, ignore_errors=True)
        for page in pages:
            target = corpus / page
            target.parent.mkdir(parents=True, exist_ok=True)
            if page == self.faq:
                target.write_bytes(faq.page_without_questions.encode("utf-8"))
            else:
                shutil.copyfile(docs / page, target)
        items, dropped = self.qa_items(faq.entries)
        (out / "qa.json").write_text(json.dumps(items, indent=1) + "\n", encoding="utf-8")
        return len(pages), items, len(dropped)

    def main(self, doc: str | None) -> None:
        """The builder's command line; `doc` is its module docstring."""
        parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
        parser.add_argument("out", type=Path)
        parser.add_argument("--subset", choices=["small", "full"], default="full")
        args = parser.parse_args()
        with tempfile.TemporaryDirectory() as work:
            files, items, dropped = self.build(self.fetch(Path(work)), args.out, args.subset)
        print(
            f"{files} corpus files, {len(items)} questions, {dropped} dropped "
            f"(answer under {MIN_ANSWER_WORDS} words) -> {args.out}",
            file=sys.stderr,
        )
