"""Cut a document's sections into chunks that the embedding model reads whole.

Each chunk stays inside one section, and inside one block of it: a run of two or more blank
lines is a break its author put there (reStructuredText sources put two before each section;
the HTML loader puts two around self-contained blocks such as blockquotes and definition-list
entries), so no chunk spans one. The heading path ("Title > Section > Subsection") is kept
with every chunk; it is embedded in front of the text only when `embed_headings` is set,
because on the developers' evaluation set it made dense retrieval worse (all chunks of a page
share a prefix).
Chunk sizes are counted in the embedding model's own word pieces, heading included when
embedded, and every chunk is checked against the model's limit: nothing is ever cut off by the
embedder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from langchain_text_splitters import RecursiveCharacterTextSplitter

from ragtune.ingest.loaders import MARKDOWN, RST, LoadedDocument

HEADING_SEPARATOR = " > "
# Where to cut, best first, per format (headings are already split off by the loaders).
_SEPARATORS: dict[str, list[str]] = {
    RST: ["\n\n.. ", "\n\n", "\n", ". ", " ", ""],
    MARKDOWN: ["\n```", "\n\n", "\n", ". ", " ", ""],
}
_DEFAULT_SEPARATORS = ["\n\n", "\n", ". ", " ", ""]
_BLANK_RUN = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")


class TokenCounter(Protocol):
    """What chunking needs of an embedder."""

    max_tokens: int

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def content_tokens(self, text: str) -> int: ...


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    """The chunk as stored and shown: the section's own text."""
    heading: str
    """Title and section path, as embedded in front of the text."""
    section: str
    """The section path below the title ("" for text before the first section)."""
    page: int | None
    embed_text: str
    """Exactly what the embedding model reads for this chunk."""


def embed_text(heading: str, text: str) -> str:
    return f"{heading}\n{text}" if heading else text


def heading_of(title: str, path: tuple[str, ...]) -> tuple[str, str]:
    """(heading line to embed, section path below the title)."""
    below = path[1:] if path and path[0] == title else path
    section = HEADING_SEPARATOR.join(below)
    heading = HEADING_SEPARATOR.join((title, *below)) if title else section
    return heading, section


class Chunker:
    """Splits documents for one embedding model."""

    def __init__(
        self,
        counter: TokenCounter,
        max_tokens: int | None = None,
        overlap_tokens: int = 24,
        embed_headings: bool = False,
        split_on_blank_lines: bool = True,
    ) -> None:
        self.counter = counter
        self.max_tokens = min(max_tokens or counter.max_tokens, counter.max_tokens)
        self.overlap_tokens = overlap_tokens
        self.embed_headings = embed_headings
        self.split_on_blank_lines = split_on_blank_lines

    def chunk(self, document: LoadedDocument) -> list[Chunk]:
        chunks: list[Chunk] = []
        separators = _SEPARATORS.get(document.file_type, _DEFAULT_SEPARATORS)
        for section in document.sections:
            heading, section_path = heading_of(document.title, section.path)
            prefix = self._fit_heading(heading) if self.embed_headings else ""
            blocks = _BLANK_RUN.split(section.text) if self.split_on_blank_lines else [section.text]
            for block in blocks:
                for text in self._split(block, prefix, separators):
                    chunks.append(
                        Chunk(
                            len(chunks),
                            text,
                            heading,
                            section_path,
                            section.page,
                            embed_text(prefix, text),
                        )
                    )
        return chunks

    def _fit_heading(self, heading: str) -> str:
        # A heading may take at most a quarter of the chunk; keep its innermost part.
        limit = self.max_tokens // 4
        while heading and self.counter.content_tokens(heading) > limit:
            parts = heading.split(HEADING_SEPARATOR)
            heading = HEADING_SEPARATOR.join(parts[1:]) if len(parts) > 1 else heading[:-10]
        return heading

    def _split(self, text: str, heading: str, separators: list[str]) -> list[str]:
        if not text.strip():
            return []
        special = self.counter.count_tokens([""])[0]
        heading_tokens = self.counter.content_tokens(heading + "\n") if heading else 0
        budget = self.max_tokens - special - heading_tokens
        texts = self._split_to(text, budget, separators)
        # Token counts of pieces do not always add up exactly once the pieces are joined:
        # check every chunk as it will be embedded and cut again what is still too long.
        while True:
            lengths = self.counter.count_tokens([embed_text(heading, t) for t in texts])
            over = [i for i, n in enumerate(lengths) if n > self.max_tokens]
            if not over:
                return texts
            budget = max(8, int(budget * 0.85))
            for i in reversed(over):
                texts[i : i + 1] = self._split_to(texts[i], budget, separators)

    def _split_to(self, text: str, budget: int, separators: list[str]) -> list[str]:
        splitter = RecursiveCharacterTextSplitter(
            separators=separators,
            chunk_size=budget,
            chunk_overlap=min(self.overlap_tokens, budget // 4),
            length_function=self.counter.content_tokens,
            strip_whitespace=True,
        )
        return [t for t in splitter.split_text(text) if t.strip()]
