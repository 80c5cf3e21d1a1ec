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

import re
import sys
from pathlib import Path

# The shared rules, beside this file (a script's own folder is on its path; the tests, which
# load the builders by their path, get it from here).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from html_faq import Faq, FaqDocs, FaqEntry, FaqSource, faq_entry

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
    binary."): every term of those lists is one. gitfaq does not number its questions: an
    entry's number is its position on the page, from 1. A table of contents, should the page
    carry one, goes too.
    """
    source = FaqSource(html)
    cuts = [
        _element_span(html, source.offset(toc), "div")
        for toc in source.soup.find_all("div", id="toc")
    ]
    entries: list[FaqEntry] = []
    for questions in source.soup.select(QUESTION_LISTS):
        for heading in questions.find_all("dt", recursive=False):
            number = len(entries) + 1
            question = " ".join(heading.get_text().split())
            answer = heading.find_next_sibling()
            if not question:
                raise ValueError(f"{FAQ}: question {number} has no text")
            if not (answer and answer.name == "dd"):
                raise ValueError(f"{FAQ}: question {number} ({question}) has no <dd> answer")
            entries.append(faq_entry(number, question, answer))
            cuts.append((source.offset(heading), source.offset(answer)))
    if not entries:
        raise ValueError(f"{FAQ}: no questions found (no <dt> in {QUESTION_LISTS})")
    return Faq(entries, source.without(cuts))


EVALSET = FaqDocs(
    package="git-doc",
    root="usr/share/doc/git-doc",
    faq=FAQ,
    id_prefix="gitfaq",
    key_docs=KEY_DOCS,
    parse_faq=parse_faq,
)


if __name__ == "__main__":
    EVALSET.main(__doc__)
