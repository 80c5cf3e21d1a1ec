#!/usr/bin/env python3
"""Build a developers' retrieval evaluation set from Debian's ffmpeg-doc package: the FFmpeg
manual, written in Texinfo and turned into HTML by makeinfo (Texinfo 6.8, FFmpeg's own
template).

makeinfo writes a page flat: no element holds a section, each heading is a sibling of the
paragraphs under it, after an empty `<a name>` anchor. So once the FAQ's question headings are
cut, nothing but a neighbouring question's anchor marks where one answer ends and the next
begins: the same fault the SQLite blockquotes and the DocBook divs showed, in a third markup.

Corpus: the manual's pages as shipped (manual/*.html), with the *question headings* of
faq.html (`h3.section`) and its table of contents removed, so that a question cannot be found
by matching its own text; the answers stay, as do the chapter headings ("3 Usage") and an
answer's own subsection headings ("3.14.1 Concatenating using the concat filter"). Labels:
each question -> the text of its answer (everything up to the next question or chapter).
Same relevance rule as ../shared/eval/README.md.

    .venv/bin/python bench/evalsets/build_ffmpeg_docs.py OUT_DIR [--subset small|full]

Writes OUT_DIR/corpus/**.html and OUT_DIR/qa.json, a list of
{"id", "question", "answer_passage", "source"}. `full` is every page of the manual (the
`*-all.html` pages repeat the others, as shipped); `small` is faq.html, the pages its answers
link to (the filters, formats and protocols references among them) and the tools' manuals and
guides a user meets first (KEY_DOCS). Needs `apt-get download` (run `apt-get update` once
first) and beautifulsoup4; no other network access. Deterministic. The questions and answers
were written by the FFmpeg developers (LGPL-2.1+).
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Set
from html import escape
from pathlib import Path

from bs4 import Tag

# The shared rules, beside this file (a script's own folder is on its path; the tests, which
# load the builders by their path, get it from here).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from html_faq import (
    Faq,
    FaqDocs,
    FaqEntry,
    FaqSource,
    faq_entry,
    links_to_questions,
    name_links_by_label,
    tidy,
)

FAQ = "faq.html"
# The three tools' manuals, the library overviews and the guides (index.html's own list); the
# codecs, devices and bitstream-filter references, and the -all pages that repeat everything,
# are left to the full set.
KEY_DOCS = (
    "developer.html", "fate.html", "ffmpeg-utils.html", "ffmpeg.html", "ffplay.html",
    "ffprobe.html", "general.html", "git-howto.html", "index.html", "libavcodec.html",
    "libavformat.html", "libavutil.html", "mailing-list-faq.html", "platform.html",
)  # fmt: skip
NUMBERED = re.compile(r"^(\d+)\.(\d+)\s+(.+)$", re.DOTALL)
ENDS_AN_ANSWER = ("h1", "h2", "h3")


def _without_anchors(element: Tag) -> Tag:
    """A copy of the element without makeinfo's heading links (`span.pull-right`: two "#"
    links to the heading and to its table-of-contents line)."""
    element = copy.copy(element)
    for marks in element.find_all("span", class_="pull-right"):
        marks.decompose()
    return element


def _is_footer(node: Tag) -> bool:
    return node.name == "p" and "generated using" in node.get_text()


def _answer(heading: Tag, questions: Set[str]) -> Tag:
    """The question's answer: what follows its heading up to the next question, chapter or
    the page's footer, gathered into one element; its links to `questions` by their label."""
    answer = Tag(name="div")
    for node in heading.next_siblings:
        if isinstance(node, Tag) and (node.name in ENDS_AN_ANSWER or _is_footer(node)):
            break
        answer.append(_without_anchors(node) if isinstance(node, Tag) else copy.copy(node))
    name_links_by_label(answer, questions, _read)
    return answer


def _read(element: Tag) -> str:
    """An element's text on one line, as a question heading is read."""
    return tidy(element.get_text()).replace("\n", " ")


def _question(heading: Tag, index: int) -> tuple[str, str]:
    """(number, question) of the `index`th question heading."""
    text = _read(_without_anchors(heading))
    numbered = NUMBERED.match(text)
    if not numbered:
        raise ValueError(f"{FAQ}: question {index} is not numbered: {text!r}")
    return f"{numbered.group(1)}.{numbered.group(2)}", numbered.group(3)


def parse_faq(html: str) -> Faq:
    """The questions and answers of FFmpeg's faq.html, and the page without its questions.

    Each question is `<a name="..."></a><h3 class="section">N.M question<span
    class="pull-right">(links)</span></h3>`, then its answer's paragraphs, lists and
    subsections (`h4`) as siblings; chapters are `h2.chapter`. The page opens with a table of
    contents (`div.Contents_element`) that repeats every question.
    """
    source = FaqSource(html)
    contents = source.soup.find_all("div", class_="Contents_element")
    cuts = [source.span(toc) for toc in contents]
    headings = source.soup.find_all("h3", class_="section")
    questions = {_question(heading, index)[1] for index, heading in enumerate(headings, 1)}
    entries: list[FaqEntry] = []
    for index, heading in enumerate(headings, 1):
        number, question = _question(heading, index)
        answer = _answer(heading, questions)
        if not answer.get_text().strip():
            raise ValueError(f"{FAQ}: question {number} has no answer")
        entries.append(faq_entry(len(entries) + 1, question, answer))
        cuts.append(source.span(heading))
    if not entries:
        raise ValueError(f"{FAQ}: no questions found (no h3.section headings)")
    put = {}
    cut_whole = (*contents, *headings)
    for link, label in links_to_questions(source.soup, questions, _read):
        if not any(parent is whole for parent in link.parents for whole in cut_whole):
            start, end = source.element_span(link)
            cuts.append((start, end))
            put[start] = f'<a href="{escape(str(link["href"]))}">{escape(label)}</a>'
    return Faq(entries, source.without(cuts, put))


EVALSET = FaqDocs(
    package="ffmpeg-doc",
    root="usr/share/doc/ffmpeg/manual",
    faq=FAQ,
    id_prefix="ffmpegfaq",
    key_docs=KEY_DOCS,
    parse_faq=parse_faq,
)


if __name__ == "__main__":
    EVALSET.main(__doc__)
