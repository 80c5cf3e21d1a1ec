"""Adapters' task profiles: each adapter's task description and example prompts as unit vectors,
which the router matches a request against (with the same vector retrieval used).

Embedding many example prompts is slow, so a profile is stored next to its manifest, keyed by
what it was made from (`profile_key`): a restart or another API replica reuses it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ragtune.retrieval.embedder import Embedder

Matrix = npt.NDArray[np.float32]
PROFILE_FORMAT = "task, examples, their centroid; unit vectors; v1"
"""Part of a stored profile's key: changing how profiles are made invalidates stored ones."""


@dataclass(frozen=True)
class AdapterProfile:
    """An adapter's task, as unit vectors: its task description and each example prompt."""

    name: str
    vectors: Matrix

    def match(self, question: Matrix) -> float:
        return float(np.max(self.vectors @ question)) if len(self.vectors) else 0.0


def adapter_matches(
    profiles: Sequence[AdapterProfile], question: Matrix
) -> list[tuple[str, float]]:
    """(adapter, similarity) for every profile, best first (ties by name: deterministic)."""
    matches = [(p.name, p.match(question)) for p in profiles]
    return sorted(matches, key=lambda m: (-m[1], m[0]))


def profile_key(model_id: str, texts: Sequence[str]) -> str:
    """What a stored profile was made from: the embedding model and the texts (hashed)."""
    digest = hashlib.sha256()
    for part in (PROFILE_FORMAT, model_id, *texts):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return f"{model_id}:{digest.hexdigest()}"


def profile_shape(texts: Sequence[str], embedder: Embedder) -> tuple[int, int]:
    """The shape `embed_profile` gives these texts (a stored profile of another shape is stale)."""
    return len(texts) + (1 if len(texts) > 2 else 0), embedder.dimension


def embed_profile(embedder: Embedder, texts: Sequence[str]) -> np.ndarray[Any, Any]:
    """Unit vectors of the texts, plus the examples' centroid when there are several."""
    # In batches, except the texts longer than the model reads: those are truncated like a
    # query (one at a time), as an example prompt may be longer.
    lengths = embedder.count_tokens(texts)
    fits = [i for i, n in enumerate(lengths) if n <= embedder.max_tokens]
    embedded = dict(zip(fits, embedder.embed([texts[i] for i in fits]), strict=True))
    vectors = np.asarray(
        [embedded[i] if i in embedded else embedder.embed_query(t) for i, t in enumerate(texts)],
        np.float32,
    )
    if len(vectors) > 2:
        # The examples' centroid: what they share (the task's phrasing) without what
        # each is about; it matches new requests of the task best.
        vectors = np.vstack([vectors, vectors[1:].mean(axis=0, keepdims=True)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    return vectors
