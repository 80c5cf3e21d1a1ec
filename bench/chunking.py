"""Chunking benchmark: the chunker on ordinary and hostile text, against the tokenizer's own
pass over the same text.

    .venv/bin/python bench/chunking.py [--kb 200]

For each text, measured in one run: one tokenizer pass over the whole text, in 1,000-character
slices (the floor: chunking must read every character with the model's tokenizer at least once);
the chunker as it runs (it remembers each distinct piece's length); and the chunker measuring
every piece afresh, as it did before (LangChain's splitter measures each piece two or three
times, one tokenizer call each). The texts: the developers' small Python set as plain text and as
reStructuredText, its words with no punctuation (cut down to words) and '-\\n' repeated (a piece
per line). Every pair of runs must give the same chunks. Target: chunking <= 10x the tokenizer
pass on every text.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The repository root goes first on the path, not bench/ (whose modules would otherwise shadow
# the packages of the same names when a bench runs as a script).
sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import eval_set
from ragtune.ingest.chunking import Chunk, Chunker, _CharactersCount, _least_pieces
from ragtune.ingest.loaders import RST, TEXT, LoadedDocument, Section
from ragtune.retrieval.embedder import SentenceTransformerEmbedder

TARGET = 10.0


def _unremembered(self: _CharactersCount, text: str) -> int:
    return max(self._counter.content_tokens(text), _least_pieces(text))


def _timed(run: Callable[[], list[Chunk]]) -> tuple[float, list[Chunk]]:
    start = time.perf_counter()
    chunks = run()
    return time.perf_counter() - start, chunks


def _digest(chunks: list[Chunk]) -> str:
    return hashlib.sha256("\0".join(c.embed_text for c in chunks).encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kb", type=int, default=200, help="size of each text, in KB")
    args = parser.parse_args()
    size = args.kb * 1000
    files = sorted((eval_set("small") / "corpus").rglob("*.txt"))
    corpus = "\n\n".join(path.read_text("utf-8") for path in files)
    if len(corpus) < size:
        corpus = (corpus + "\n\n") * (size // len(corpus) + 1)
    words = " ".join(re.findall(r"[A-Za-z]+", corpus))
    texts = [
        ("Python docs as text", corpus[:size], TEXT),
        ("Python docs as RST", corpus[:size], RST),
        ("its words, no punctuation", words[:size], TEXT),
        ("'-\\n' repeated", "-\n" * (size // 2), TEXT),
    ]
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    remembered = _CharactersCount.content_tokens
    print(f"chunking {args.kb} KB texts with all-MiniLM-L6-v2's tokenizer")
    print(
        f"{'text':28} {'tokenize':>9} {'chunking':>9} {'ratio':>6} {'before':>8} "
        f"{'speed-up':>8} {'chunks':>7}  target"
    )
    failed = False
    for name, text, kind in texts:
        document = LoadedDocument("Bench", kind, [Section(("Bench",), text)])
        start = time.perf_counter()
        embedder.count_tokens([text[i : i + 1000] for i in range(0, len(text), 1000)])
        tokenize = time.perf_counter() - start
        now, chunks = _timed(lambda d=document: Chunker(embedder).chunk(d))
        _CharactersCount.content_tokens = _unremembered  # type: ignore[method-assign]
        try:
            before, old_chunks = _timed(lambda d=document: Chunker(embedder).chunk(d))
        finally:
            _CharactersCount.content_tokens = remembered  # type: ignore[method-assign]
        if _digest(chunks) != _digest(old_chunks):
            sys.exit(f"{name}: remembering lengths changed the chunks")
        ratio = now / tokenize
        met = ratio <= TARGET
        failed |= not met
        print(
            f"{name:28} {tokenize:8.2f}s {now:8.2f}s {ratio:5.1f}x {before:7.2f}s "
            f"{before / now:7.1f}x {len(chunks):7}  {'met' if met else 'MISSED'} (<= {TARGET:g}x)"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
