"""PDF structure: paragraphs from the lines' spacing, headings from the outline or the type
size (ragtune.ingest.pdf), read from real PDFs built by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragtune.ingest import pdf
from ragtune.ingest.chunking import Chunker
from ragtune.ingest.errors import DocumentLoadError
from ragtune.ingest.loaders import load_document
from tests.support.makers import pdf_bytes, placed_pdf_bytes, with_outline

# A handbook page as a word processor sets it: 12 pt text on 14 pt lines, paragraphs 22 pt
# apart, headings at 18 pt (top level) and 14 pt.
HANDBOOK = [
    [
        (740, 12, "Welcome to the travel handbook of the company."),
        (710, 18, "Booking"),
        (680, 12, "Book every trip through the travel portal at least two weeks"),
        (666, 12, "ahead, so that the fares stay low."),
        (644, 12, "Trips abroad need the approval of your manager."),
        (614, 14, "Trains"),
        (590, 12, "Second class for trips under four hours; first class above."),
    ],
    [
        (740, 12, "Night trains may be booked in a sleeper for journeys over six"),
        (726, 12, "hours."),
        (696, 18, "Refunds"),
        (666, 12, "Send receipts within thirty days of the end of the trip."),
    ],
]
OUTLINE = [("Booking", 0, 1), ("Trains", 0, 2), ("Refunds", 1, 1)]


def sections_of(tmp_path: Path, data: bytes) -> list[tuple[tuple[str, ...], str, int | None]]:
    path = tmp_path / "handbook.pdf"
    path.write_bytes(data)
    return [(s.path, s.text, s.page) for s in load_document(path, data).sections]


def test_outline_headings_become_heading_paths(tmp_path: Path) -> None:
    sections = sections_of(tmp_path, with_outline(placed_pdf_bytes(HANDBOOK), OUTLINE))
    assert sections == [
        ((), "Welcome to the travel handbook of the company.", 1),
        (
            ("Booking",),
            "Book every trip through the travel portal at least two weeks ahead, so that the "
            "fares stay low.\n\nTrips abroad need the approval of your manager.",
            1,
        ),
        (("Booking", "Trains"), "Second class for trips under four hours; first class above.", 1),
        # A section that runs over a page break keeps its path on the next page.
        (
            ("Booking", "Trains"),
            "Night trains may be booked in a sleeper for journeys over six hours.",
            2,
        ),
        (("Refunds",), "Send receipts within thirty days of the end of the trip.", 2),
    ]


def test_without_an_outline_larger_type_makes_the_headings(tmp_path: Path) -> None:
    sections = sections_of(tmp_path, placed_pdf_bytes(HANDBOOK))
    assert [(path, page) for path, _, page in sections] == [
        ((), 1),
        (("Booking",), 1),
        (("Booking", "Trains"), 1),  # smaller than Booking's 18 pt: below it
        (("Booking", "Trains"), 2),
        (("Refunds",), 2),
    ]
    assert "Booking" not in " ".join(text for _, text, _ in sections)


def test_an_outline_title_missing_from_its_page_starts_at_the_page_top(tmp_path: Path) -> None:
    outline = [("Booking", 0, 1), ("Appendix: fares", 1, 1)]  # not printed on page 2
    sections = sections_of(tmp_path, with_outline(placed_pdf_bytes(HANDBOOK), outline))
    assert sections[-1][0] == ("Appendix: fares",)
    assert sections[-1][2] == 2
    assert sections[-1][1].startswith("Night trains may be booked")
    assert sections[-1][1].endswith("Send receipts within thirty days of the end of the trip.")


def test_a_heading_wrapped_over_two_lines_is_one_heading(tmp_path: Path) -> None:
    page = [
        (740, 18, "Expenses for conferences and"),
        (720, 18, "professional training"),
        (690, 12, "The company pays the fee and the travel, the hotel and the meals,"),
        (676, 12, "for up to four events a year, when your manager agrees beforehand."),
    ]
    outline = [("Expenses for conferences and professional training", 0, 1)]
    sections = sections_of(tmp_path, with_outline(placed_pdf_bytes([page]), outline))
    assert sections == [
        (
            ("Expenses for conferences and professional training",),
            "The company pays the fee and the travel, the hotel and the meals, for up to four "
            "events a year, when your manager agrees beforehand.",
            1,
        )
    ]
    without_outline = sections_of(tmp_path, placed_pdf_bytes([page]))
    assert without_outline == sections


def test_hyphen_at_a_line_end_keeps_the_word_whole(tmp_path: Path) -> None:
    page = [
        (740, 12, "Set the working-tree-"),
        (726, 12, "encoding attribute for files that are not UTF-8."),
    ]
    [(_, text, _)] = sections_of(tmp_path, placed_pdf_bytes([page]))
    assert text == "Set the working-tree-encoding attribute for files that are not UTF-8."


def test_paragraphs_reach_the_chunker_as_paragraphs(tmp_path: Path) -> None:
    """A chunk too small for two paragraphs ends at the paragraph's end, not at a printed
    line's end."""

    class Words:
        max_tokens = 24

        def count_tokens(self, texts: list[str]) -> list[int]:
            return [len(t.split()) + 2 for t in texts]

        def content_tokens(self, text: str) -> int:
            return len(text.split())

    path = tmp_path / "handbook.pdf"
    path.write_bytes(with_outline(placed_pdf_bytes(HANDBOOK), OUTLINE))
    chunks = Chunker(Words(), overlap_tokens=0).chunk(load_document(path, path.read_bytes()))
    booking = [c.text for c in chunks if c.section == "Booking"]
    assert booking == [
        "Book every trip through the travel portal at least two weeks ahead, so that the "
        "fares stay low.",
        "Trips abroad need the approval of your manager.",
    ]
    assert [c.page for c in chunks if c.section == "Booking > Trains"] == [1, 2]


def test_plain_lines_read_as_before(tmp_path: Path) -> None:
    """Evenly spaced lines of one size, no outline: one paragraph per page, as pypdf's text."""
    data = pdf_bytes([["Quarterly report", "Sales grew."], ["Costs fell."]], "Q3")
    assert sections_of(tmp_path, data) == [
        ((), "Quarterly report Sales grew.", 1),
        ((), "Costs fell.", 2),
    ]


def test_a_damaged_outline_or_unreadable_positions_fall_back_to_the_page_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class DamagedOutline:
        @property
        def outline(self) -> list[object]:
            raise KeyError("/First")

    assert pdf.outline_marks(DamagedOutline()) == []

    def unreadable(page: object) -> list[pdf.Line]:
        raise ValueError("no positions")

    monkeypatch.setattr(pdf, "read_lines", unreadable)
    sections = sections_of(tmp_path, with_outline(placed_pdf_bytes(HANDBOOK), OUTLINE))
    assert [(path, page) for path, _, page in sections] == [((), 1), ((), 2)]
    assert "Send receipts" in sections[1][1]


def test_an_outline_of_thousands_of_titles_is_read_in_one_pass(tmp_path: Path) -> None:
    """Every line of the page begins every outline title, and none is on it: each title is
    looked for where a title could begin, at most `_TITLE_TRIES` places (2,000 such titles
    over 2,000 lines took 10 s, 5,000 a minute). A title that is there is still found."""
    lines = [(780 - (n % 700) * 1.1, 1, "line") for n in range(3000)]
    lines += [(30, 12, "Closing words"), (14, 12, "The end.")]
    outline = [(f"line missing {n}", 0, 1) for n in range(3000)] + [("Closing words", 0, 1)]
    sections = sections_of(tmp_path, with_outline(placed_pdf_bytes([lines]), outline))
    assert sections[-1][:2] == (("Closing words",), "The end.")
    assert "Closing words" not in " ".join(text for _, text, _ in sections)


def test_a_pdf_of_no_pages_says_so(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    path = tmp_path / "empty.pdf"
    PdfWriter().write(path)
    with pytest.raises(DocumentLoadError, match="the PDF has no pages"):
        load_document(path, path.read_bytes())
