"""Calibration from questions a model writes (doc2query), replayed against the real questions:
do generated questions favour BM25 less than sentences cut from the chunks do?

    ragtune engine start        # the engine whose model writes the questions
    .venv/bin/python bench/doc2query.py [--sets python,sqlite,git] [--chunks 300]

Each set's dump from `bench/rerank_explore.py` (ingested once, under its `--out`) gives every
chunk's text and vector, the BM25 index and the real questions' candidates. The engine's model
writes one question for each of `--chunks` chunks drawn at random (greedy, 40 tokens); a
question is kept when it is one line of 4-25 words ending in "?", and its answer is the chunk it
was written from (and that chunk's word-for-word copies). Both retrievers rank every kept
question exactly (cosine over every vector; BM25 over every chunk), and fusion by score at each
BM25 weight is scored by MRR@10 on the generated questions and on the real ones: calibration
would be sound if the weight the generated questions choose were the one the real questions do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np

from bench.common import CACHE
from bench.rerank_explore import Dump, dump_set, metrics, prepare
from ragtune.retrieval.embedder import SentenceTransformerEmbedder
from ragtune.retrieval.fusion import fuse
from ragtune.retrieval.lexical import LexicalIndex, LexicalIndexes
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import open_store
from ragtune.serving.engine.launcher import auth_headers, engine_api_key
from ragtune.serving.settings import EngineSettings

WEIGHTS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5)
PROMPT = (
    "Here is a passage from a software manual.\n\n{passage}\n\n"
    "Write one short question a user might ask whose answer is in this passage. "
    "Reply with the question only."
)


async def write_questions(texts: list[str], engine: EngineSettings) -> list[str]:
    headers = auth_headers(engine_api_key(engine))
    limit = asyncio.Semaphore(8)

    async def one(client: httpx.AsyncClient, text: str) -> str:
        body = {
            "model": engine.served_model_name,
            "temperature": 0,
            "max_tokens": 40,
            "messages": [{"role": "user", "content": PROMPT.format(passage=text[:1500])}],
        }
        async with limit:
            reply = await client.post(
                f"{engine.engine_url}/v1/chat/completions", json=body, headers=headers
            )
        reply.raise_for_status()
        content: str = reply.json()["choices"][0]["message"]["content"] or ""
        return content.strip()

    async with httpx.AsyncClient(timeout=600) as client:
        return list(await asyncio.gather(*(one(client, t) for t in texts)))


def fused_order(cosine: np.ndarray, bm25: np.ndarray, weight: float, depth: int = 50) -> list[int]:
    """Rows in search's order for fusion by score (`retrieval.fusion.fuse`) of each retriever's
    best `depth` (BM25's with a score above 0)."""
    dense = {str(r): (n, float(cosine[r])) for n, r in enumerate(np.argsort(-cosine)[:depth], 1)}
    best = [r for r in np.argsort(-bm25)[:depth] if bm25[r] > 0]
    lexical = {str(r): (n, float(bm25[r])) for n, r in enumerate(best, 1)}
    scores = fuse(dense, lexical, "score", 1.0, weight, 10)
    return [int(r) for r in sorted(scores, key=lambda r: -scores[r])]


def mrr(orders: list[list[int]], answers: list[set[int]]) -> float:
    total = 0.0
    for order, wanted in zip(orders, answers, strict=True):
        total += next((1 / k for k, r in enumerate(order[:10], 1) if r in wanted), 0.0)
    return total / len(orders) if orders else 0.0


def lexical_of(out: Path, name: str, model_id: str) -> LexicalIndex:
    settings = RetrievalSettings(data_dir=out / name)
    with open_store(settings, "read") as store:
        return LexicalIndexes.for_store(settings.data_dir, store).current(
            store.collection("ragtune", model_id), save=False
        )


def replay(name: str, d: Dump, questions: list[tuple[int, str]], out: Path, embedder: Any) -> str:
    lexical = lexical_of(out, name, embedder.model_id)
    order = np.array([lexical.row_of[i] for i in d["ids"]])
    unit = d["vectors"] / np.linalg.norm(d["vectors"], axis=1, keepdims=True)
    words = [" ".join(re.findall(r"\w+", t.lower())) for t in d["texts"]]
    kept = [
        (row, q)
        for row, q in questions
        if "\n" not in q and q.endswith("?") and 4 <= len(q.split()) <= 25
    ]
    vectors = np.asarray(embedder.embed_queries([q for _, q in kept]), dtype=np.float32)
    cosines, bm25s, answers = [], [], []
    for (row, q), vector in zip(kept, vectors, strict=True):
        tokens = lexical._tokenize([q], lexical._stemmer)[0]
        raw = lexical._bm25.get_scores(tokens) if tokens else np.zeros(len(order))  # type: ignore[union-attr]
        bm25s.append(np.asarray(raw, dtype=np.float32)[order])
        cosines.append(unit @ (vector / np.linalg.norm(vector)))
        answers.append({r for r, w in enumerate(words) if w == words[row]})
    real_cos = d["qvecs"] / np.linalg.norm(d["qvecs"], axis=1, keepdims=True) @ unit.T
    n = len(d["questions"])

    def real(weight: float | None) -> float:
        if weight is None:  # BM25 alone
            return metrics(d, [list(np.argsort(-d["bm25"][q])[:10]) for q in range(n)])[1]
        return metrics(d, [fused_order(real_cos[q], d["bm25"][q], weight) for q in range(n)])[1]

    generated = {
        w: mrr([fused_order(c, b, w) for c, b in zip(cosines, bm25s, strict=True)], answers)
        for w in WEIGHTS
    }
    real_scores = {w: real(w) for w in WEIGHTS}
    bm25_alone = mrr([list(np.argsort(-b)[:10]) for b in bm25s], answers)
    lines = [
        f"{name}: {len(kept)} of {len(questions)} questions kept; MRR@10 dense / BM25 alone: "
        f"generated {generated[0.0]:.3f} / {bm25_alone:.3f}, real {real_scores[0.0]:.3f} / "
        f"{real(None):.3f}",
        "  BM25 weight " + " ".join(f"{w:>6}" for w in WEIGHTS),
        "  generated   " + " ".join(f"{generated[w]:6.3f}" for w in WEIGHTS),
        "  real        " + " ".join(f"{real_scores[w]:6.3f}" for w in WEIGHTS),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="python,sqlite,git")
    parser.add_argument("--out", type=Path, default=CACHE / "rerank-explore")
    parser.add_argument("--chunks", type=int, default=300)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    engine = EngineSettings()
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    for name in [n for n in args.sets.split(",") if n]:
        d = dump_set(name, args.out, embedder, 50)
        prepare(d)
        rows = [r for r, t in enumerate(d["texts"]) if len(t.split()) >= 25]
        random.Random(0).shuffle(rows)
        rows = rows[: args.chunks]
        written = asyncio.run(write_questions([d["texts"][r] for r in rows], engine))
        print(
            replay(name, d, list(zip(rows, written, strict=True)), args.out, embedder), flush=True
        )


if __name__ == "__main__":
    main()
