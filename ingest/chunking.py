"""Cut a document's sections into chunks that the embedding model reads whole.

Each chunk stays inside one section and is embedded with its heading path in front
("Title > Section > Subsection"), so the vector knows where the text sits. Chunk sizes are
counted in the embedding model's own word pieces, heading included, and every chunk is
checked against the model's limit: nothing is ever cut off by the embedder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from langchain_text_splitters import RecursiveCharacterTextSplitter

from ingest.loaders import MARKDOWN, RST, LoadedDocument, Section

HEADING_SEPARATOR = " > "
# Where to cut, best first, per format (headings are already split off by the loaders).
_SEPARATORS: dict[str, list[str]] = {
    RST: ["\n\n.. ", "\n\n", "\n", ". ", " ", ""],
    MARKDOWN: ["\n```", "\n\n", "\n", ". ", " ", ""],
}
_DEFAULT_SEPARATORS = ["\n\n", "\n", ". ", " ", ""]


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

    @property
    def embed_text(self) -> str:
        return embed_text(self.heading, self.text)


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
        self, counter: TokenCounter, max_tokens: int | None = None, overlap_tokens: int = 24
    ) -> None:
        self.counter = counter
        self.max_tokens = min(max_tokens or counter.max_tokens, counter.max_tokens)
        self.overlap_tokens = overlap_tokens

    def chunk(self, document: LoadedDocument) -> list[Chunk]:
        chunks: list[Chunk] = []
        separators = _SEPARATORS.get(document.file_type, _DEFAULT_SEPARATORS)
        for section in document.sections:
            heading, section_path = heading_of(document.title, section.path)
            heading = self._fit_heading(heading)
            for text in self._split(section, heading, separators):
                chunks.append(Chunk(len(chunks), text, heading, section_path, section.page))
        return chunks

    def _fit_heading(self, heading: str) -> str:
        # A heading may take at most a quarter of the chunk; keep its innermost part.
        limit = self.max_tokens // 4
        while heading and self.counter.content_tokens(heading) > limit:
            parts = heading.split(HEADING_SEPARATOR)
            heading = HEADING_SEPARATOR.join(parts[1:]) if len(parts) > 1 else heading[:-10]
        return heading

    def _split(self, section: Section, heading: str, separators: list[str]) -> list[str]:
        special = self.counter.count_tokens([""])[0]
        heading_tokens = self.counter.content_tokens(heading + "\n") if heading else 0
        budget = self.max_tokens - special - heading_tokens
        texts = self._split_to(section.text, budget, separators)
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
