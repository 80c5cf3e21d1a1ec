"""Build real test files of each format (PDF by hand, encrypted with pypdf; DOCX with
python-docx), so that tests never depend on files nobody can regenerate."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any


def pdf_bytes(pages: list[list[str]], title: str | None = None) -> bytes:
    """A valid PDF with one text line per entry (12 pt, 16 pt apart), one page per list."""
    return placed_pdf_bytes(
        [[(704 - 16 * n, 12, line) for n, line in enumerate(lines)] for lines in pages], title
    )


def placed_pdf_bytes(
    pages: list[list[tuple[float, float, str]]], title: str | None = None
) -> bytes:
    """A valid PDF whose lines are placed by hand: (baseline y from the page's bottom, type
    size, text) per line, one page per list, as a word processor sets headings and paragraphs."""
    objects: list[str] = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    font = 3 + 2 * len(pages)
    for lines in pages:
        page_no = len(objects) + 1
        kids.append(f"{page_no} 0 R")
        content = " ".join(
            f"BT /F1 {size:g} Tf 72 {y:g} Td ({_pdf_escaped(text)}) Tj ET"
            for y, size, text in lines
        )
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {page_no + 1} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>"
        )
        objects.append(f"<< /Length {len(content)} >>\nstream\n{content}\nendstream")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    info = ""
    if title:
        objects.append(f"<< /Title ({_pdf_escaped(title)}) >>")
        info = f" /Info {len(objects)} 0 R"
    return _pdf_file(objects, info)


def with_outline(pdf: bytes, entries: list[tuple[str, int, int]]) -> bytes:
    """`pdf` with an outline (bookmarks): (title, page index, level from 1) per entry, in
    order; an entry of level n + 1 is a child of the last one of level n."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    parents: dict[int, Any] = {}
    for title, page, level in entries:
        parents[level] = writer.add_outline_item(
            title=title, page_number=page, parent=parents.get(level - 1)
        )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _pdf_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _pdf_file(objects: list[str], info: str) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{n} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\n"
        f"startxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def encrypted_pdf_bytes(pages: list[list[str]], password: str = "secret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(pages))))
    writer.encrypt(user_password=password, owner_password=password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write_docx(path: Path, title: str, sections: list[tuple[int, str, list[str]]]) -> Path:
    """sections: (heading level, heading, paragraphs)."""
    import docx

    document = docx.Document()
    document.add_heading(title, 0)
    for level, heading, paragraphs in sections:
        document.add_heading(heading, level)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    document.save(str(path))
    return path
