#!/usr/bin/env python3
"""Build the third developers' retrieval evaluation set from Debian's git-doc package.

Corpus: the Git documentation as shipped (HTML manual pages and guides, kept as HTML), with
gitfaq.html's *question headings* (and a table of contents, should the page carry one) removed,
so that a question cannot be found by matching its own heading; the answers stay. Labels: each
FAQ question -> the text of its answer. Same relevance rule as ../shared/eval/README.md.

    .venv/bin/python bench/evalsets/build_git_docs.py OUT_DIR [--subset small|full]

Writes OUT_DIR/corpus/**.html and OUT_DIR/qa.json, a list of
{"id", "question", "answer_passage", "source"}. `full` is every HTML page of the docs (the
index.html link to git.html is left out: one copy of a page); `small` is gitfaq.html, the
pages its answers link to and thirty guides and manual pages a user meets first (KEY_DOCS).
Needs `apt-get download` (run `apt-get update` once first) and beautifulsoup4; no other
network access. Deterministic. The questions and answers were written by the Git developers
(GPL-2.0).
"""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from bs4 import BeautifulSoup

# The SQLite set's builder, beside this file, reads FAQ pages by the same rules: one copy of
# them (a script's own folder is on its path; the tests load both files the same way).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_sqlite_docs import (
    MIN_ANSWER_WORDS,
    _local_link,
    _offset,
    block_text,
    word_count,
)

PACKAGE = "git-doc"
DOCS = "usr/share/doc/git-doc"
FAQ = "gitfaq.html"
# The guides and everyday commands a user meets first (giteveryday's and gittutorial's own
# list, give or take). The rest of the docs (plumbing, protocols, file formats, technical
# notes, the user manual) would quadruple the subset's text for little more than distractors
# the full set already has.
KEY_DOCS = (
    "git-bisect.html", "git-branch.html", "git-checkout.html", "git-cherry-pick.html",
    "git-clone.html", "git-commit.html", "git-config.html", "git-diff.html", "git-fetch.html",
    "git-gc.html", "git-log.html", "git-merge.html", "git-pull.html", "git-push.html",
    "git-rebase.html", "git-remote.html", "git-reset.html", "git-restore.html",
    "git-revert.html", "git-stash.html", "git-submodule.html", "git-switch.html",
    "git-tag.html", "git-worktree.html", "gitattributes.html", "gitcredentials.html",
    "giteveryday.html", "gitglossary.html", "gitignore.html", "gittutorial.html",
)  # fmt: skip
# Where asciidoc puts the questions: each section's body holds one description list whose
# terms are the questions and whose definitions are the answers.
QUESTION_LISTS = "div.sect1 > div.sectionbody > div.dlist > dl"


class FaqEntry(NamedTuple):
    number: int
    """The question's position on the page, from 1 (gitfaq does not number its questions)."""
    question: str
    answer: str
    links: tuple[str, ...]
    """Targets of the answer's links, as written (relative, fragment dropped)."""


class Faq(NamedTuple):
    entries: list[FaqEntry]
    page_without_questions: str
    """The page with every question heading (and any table of contents) cut out."""


def _element_span(html: str, start: int, name: str) -> tuple[int, int]:
    """Source span of the element whose start tag opens at `start`, through its own end tag
    (same-name elements nested in it counted), so that no enclosing element's end tag goes."""
    depth = 0
    for tag in re.finditer(rf"<(/?){name}\b[^>]*>", html[start:], re.IGNORECASE):
        depth += -1 if tag.group(1) else 1
        if depth == 0:
            return start, start + tag.end()
    raise ValueError(f"{FAQ}: a <{name}> at offset {start} is never closed")


def parse_faq(html: str) -> Faq:
    """The questions and answers of Git's gitfaq.html, and the page without its questions.

    Each section (`div.sect1`) of the page holds a description list,
    `<div class="dlist"><dl><dt class="hdlist1">question</dt><dd>answer</dd>...</dl></div>`.
    Not every question ends in "?" ("I'm on Windows and my text files are detected as
    binary."): every term of those lists is one. The cut is made on the source text, so the
    rest of the page stays byte for byte as shipped.
    """
    soup = BeautifulSoup(html, "html.parser")
    line_starts = [0] + [m.end() for m in re.finditer("\n", html)]
    cuts = [
        _element_span(html, _offset(line_starts, toc), "div")
        for toc in soup.find_all("div", id="toc")
    ]
    entries: list[FaqEntry] = []
    for questions in soup.select(QUESTION_LISTS):
        for heading in questions.find_all("dt", recursive=False):
            number = len(entries) + 1
            question = " ".join(heading.get_text().split())
            answer = heading.find_next_sibling()
            if not question:
                raise ValueError(f"{FAQ}: question {number} has no text")
            if not (answer and answer.name == "dd"):
                raise ValueError(f"{FAQ}: question {number} ({question}) has no <dd> answer")
            links = (_local_link(str(a["href"])) for a in answer.find_all("a", href=True))
            entries.append(
                FaqEntry(
                    number,
                    question,
                    block_text(answer),
                    tuple(dict.fromkeys(link for link in links if link)),
                )
            )
            cuts.append((_offset(line_starts, heading), _offset(line_starts, answer)))
    if not entries:
        raise ValueError(f"{FAQ}: no questions found (no <dt> in {QUESTION_LISTS})")
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
                "id": f"gitfaq-{entry.number:02d}",
                "question": entry.question,
                "answer_passage": entry.answer,
                "source": FAQ,
            }
        )
    return items, dropped


def small_subset(pages: list[str], faq: Faq) -> list[str]:
    """gitfaq.html, the pages its answers point to, and KEY_DOCS; `pages` are paths relative
    to the docs root, as is every link of gitfaq.html."""
    missing = sorted(set(KEY_DOCS) - set(pages))
    if missing:
        raise ValueError(f"{PACKAGE} no longer ships {', '.join(missing)}")
    wanted = {FAQ, *KEY_DOCS}
    wanted.update(posixpath.normpath(link) for entry in faq.entries for link in entry.links)
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
    pages = sorted(
        path.relative_to(docs).as_posix()
        for path in docs.rglob("*.html")
        if not path.is_symlink()  # index.html -> git.html: one copy of a page
    )
    # Bytes, not text: the pages have CRLF line ends, which the copy keeps as shipped.
    faq = parse_faq((docs / FAQ).read_bytes().decode("utf-8"))
    if subset == "small":
        pages = small_subset(pages, faq)
    corpus = out / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    for page in pages:
        target = corpus / page
        target.parent.mkdir(parents=True, exist_ok=True)
        if page == FAQ:
            target.write_bytes(faq.page_without_questions.encode("utf-8"))
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
