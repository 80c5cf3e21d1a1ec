"""How the dense and the lexical rankings of one query become one: the fused score of each
candidate, shared by search and by self-calibration (`retrieval.calibration`).

- `score` (the default): each retriever's scores scaled to 0..1 over its own candidates (cosine
  similarity min-max over the dense list; BM25 divided by the best BM25 score), then weighted
  and summed. Measured on both developers' sets (bench/retrieval.py) against reciprocal rank
  fusion with the weights tuned on the Python set (BM25 0.3, rrf_k 10): Python hybrid R@5
  0.851 -> 0.856, MRR@10 0.723 -> 0.729; SQLite 0.556 -> 0.630, 0.408 -> 0.459: how far apart
  two scores are says more than their ranks do, and BM25's best match counts when it is a
  clear one. In a sweep over the same candidates every BM25 weight from 0.4 to 1.0 beat that
  RRF on both sets; 0.6 is the middle of the plateau, not the best of either set.
- `rrf`: reciprocal rank fusion, weight / (rrf_k + rank) per retriever.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

FusionMethod = Literal["score", "rrf"]
Ranked = Mapping[str, tuple[int, float]]
"""One retriever's candidates: chunk id -> (rank from 1, its score)."""


def fuse(
    dense: Ranked,
    lexical: Ranked,
    method: FusionMethod,
    dense_weight: float,
    lexical_weight: float,
    rrf_k: int,
) -> dict[str, float]:
    """The fused score of every candidate of either retriever (higher is better)."""
    fused: dict[str, float] = {}
    if method == "rrf":
        for chunk_id, (rank, _) in dense.items():
            fused[chunk_id] = dense_weight / (rrf_k + rank)
        for chunk_id, (rank, _) in lexical.items():
            fused[chunk_id] = fused.get(chunk_id, 0.0) + lexical_weight / (rrf_k + rank)
        return fused
    if dense:
        scores = [score for _, score in dense.values()]
        low, span = min(scores), max(scores) - min(scores)
        for chunk_id, (_, score) in dense.items():
            fused[chunk_id] = dense_weight * ((score - low) / span if span > 0 else 1.0)
    best = max((score for _, score in lexical.values()), default=0.0)
    for chunk_id, (_, score) in lexical.items():
        share = score / best if best > 0 else 0.0
        fused[chunk_id] = fused.get(chunk_id, 0.0) + lexical_weight * share
    return fused
