"""The FFmpeg FAQ set (bench/evalsets/build_ffmpeg_docs.py): questions and answers read from a
page makeinfo wrote flat (headings beside their paragraphs), and the corpus copy of the page
without its question headings and table of contents."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from bs4 import BeautifulSoup

from tests.support.scripts import BENCH, load_script

BUILDER = BENCH / "evalsets" / "build_ffmpeg_docs.py"


def _heading(level: int, name: str, text: str) -> str:
    """A heading as makeinfo writes it for FFmpeg: an anchor before it, two "#" links in it."""
    tag = {2: 'h2 class="chapter"', 3: 'h3 class="section"', 4: 'h4 class="subsection"'}[level]
    return (
        f'<a name="{name}"></a>\n<{tag}>{text}<span class="pull-right"><a class="anchor '
        f'hidden-xs" href="#{name}" aria-hidden="true">#</a> <a class="anchor hidden-xs" '
        f'href="#toc-{name}" aria-hidden="true">TOC</a></span></{tag[:2]}>\n'
    )


# The shape of faq.html: a table of contents repeating every question, chapters, questions
# with their answers as siblings (one with subsections and a link to another page, one under
# five words), and makeinfo's footer.
FAQ_HTML = f"""<!DOCTYPE html><html><head><title>FFmpeg FAQ</title></head><body>
<div class="container"><h1>FFmpeg FAQ</h1>
<div class="Contents_element" id="SEC_Contents">
<h2 class="contents-heading">Table of Contents</h2>
<div class="contents"><ul class="no-bullet">
<li><a href="#Usage">1 Usage</a><ul class="no-bullet">
<li><a href="#Join">1.1 How can I join video files?</a></li>
<li><a href="#Stdin">1.2 How can I read from the standard input?</a></li></ul></li>
<li><a href="#Development">2 Development</a></li></ul></div></div>
{_heading(2, "Usage", "1 Usage")}
{_heading(3, "Join", "1.1 How can I <em>join</em> video files?")}
<p>There are several solutions, depending on the exact circumstances.</p>
{_heading(4, "Filter", "1.1.1 Concatenating using the concat <em>filter</em>")}
<p>FFmpeg has a <a href="ffmpeg-filters.html#concat">concat filter</a> designed for that.</p>
{_heading(3, "Stdin", "1.2 How can I read from the standard input?")}
<p>Use <samp>-</samp> as file name.</p>
{_heading(2, "Development", "2 Development")}
{_heading(3, "Symbols", "2.1 Why are the ffmpeg programs devoid of debugging symbols?")}
<p>The build process creates <code>ffmpeg_g</code>, <code>ffplay_g</code>, etc. which
contain full debug information.</p>
<p style="font-size: small;">This document was generated using <a
href="https://www.gnu.org/software/texinfo/"><em>makeinfo</em></a>.</p>
</div></body></html>
"""


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    return load_script(BUILDER)


def test_questions_and_answers_come_from_the_section_headings(builder: ModuleType) -> None:
    faq = builder.parse_faq(FAQ_HTML)

    assert [(e.number, e.question) for e in faq.entries] == [
        (1, "How can I join video files?"),
        (2, "How can I read from the standard input?"),
        (3, "Why are the ffmpeg programs devoid of debugging symbols?"),
    ]
    # An answer runs to the next question, its subsections included, without the heading
    # links; the last one stops before the footer.
    assert faq.entries[0].answer == (
        "There are several solutions, depending on the exact circumstances.\n\n"
        "1.1.1 Concatenating using the concat filter\n\n"
        "FFmpeg has a concat filter designed for that."
    )
    assert faq.entries[0].links == ("ffmpeg-filters.html",)
    assert faq.entries[2].answer.endswith("which\ncontain full debug information.")
    items, dropped = builder.EVALSET.qa_items(faq.entries)
    assert [item["id"] for item in items] == ["ffmpegfaq-01", "ffmpegfaq-03"]
    assert [entry.number for entry in dropped] == [2]  # "Use - as file name."


def test_the_corpus_page_keeps_answers_and_chapters_but_not_questions(builder: ModuleType) -> None:
    page = builder.parse_faq(FAQ_HTML).page_without_questions
    text = " ".join(BeautifulSoup(page, "html.parser").get_text().split())

    for question in ("join video files", "standard input", "devoid of", "Table of Contents"):
        assert question not in text
    for kept in ("several solutions", "1.1.1 Concatenating", "as file name", "2 Development"):
        assert kept in text
    # Only the table of contents and the three question headings go.
    assert page.count("<h3") == 0
    assert page.count('<a name="') == 6
    assert page.endswith("</div></body></html>\n")


def test_a_link_to_a_question_names_its_label_in_the_answer_and_the_page(
    builder: ModuleType,
) -> None:
    html = (
        f'<div class="Contents_element"><a href="#Join">1.1 How can I join video files?</a>'
        f"</div>{_heading(3, 'Join', '1.1 How can I join video files?')}"
        "<p>Use the concat demuxer.</p>"
        f"{_heading(3, 'Bg', '1.2 How do I run ffmpeg in the background?')}"
        '<p>Add -nostdin; for the inputs see <a href="#Join"><em>How can I join video\n'
        'files?</em></a> and <a href="#Bg">the question</a> above.</p>'
    )
    faq = builder.parse_faq(html)

    assert faq.entries[1].answer == (
        "Add -nostdin; for the inputs see Join and the question above."
    )
    text = " ".join(BeautifulSoup(faq.page_without_questions, "html.parser").get_text().split())
    assert (
        text
        == "Use the concat demuxer. Add -nostdin; for the inputs see Join and the question above."
    )
    assert (
        '<a href="#Join">Join</a> and <a href="#Bg">the question</a>' in faq.page_without_questions
    )


def test_a_page_of_another_shape_is_an_error(builder: ModuleType) -> None:
    with pytest.raises(ValueError, match="no questions found"):
        builder.parse_faq("<html><body><p>Nothing to ask.</p></body></html>")
    with pytest.raises(ValueError, match="question 1 is not numbered"):
        builder.parse_faq('<h3 class="section">Why?</h3><p>Because it is so.</p>')
    with pytest.raises(ValueError, match=r"question 1\.1 has no answer"):
        builder.parse_faq('<h3 class="section">1.1 Why?</h3><h3 class="section">1.2 How?</h3>')


def test_the_small_subset_is_the_faq_its_links_and_the_key_pages(
    builder: ModuleType, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "faq.html").write_text(FAQ_HTML)
    for page in (*builder.KEY_DOCS, "ffmpeg-filters.html", "ffmpeg-all.html"):
        (docs / page).write_text(f"<html><body><p>{page}</p></body></html>")

    files, items, dropped = builder.EVALSET.build(docs, tmp_path / "small", "small")
    corpus = tmp_path / "small" / "corpus"
    assert (files, len(items), dropped) == (len(builder.KEY_DOCS) + 2, 2, 1)
    assert (corpus / "ffmpeg-filters.html").is_file()  # an answer's link
    assert not (corpus / "ffmpeg-all.html").exists()
    assert "join video files" not in (corpus / "faq.html").read_text()
    full = builder.EVALSET.build(docs, tmp_path / "full", "full")
    assert full[0] == len(builder.KEY_DOCS) + 3
