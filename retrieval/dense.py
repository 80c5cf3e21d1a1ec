"""Dense search: the chunks nearest to a query vector, exactly for a small collection."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ragtune.retrieval.embedder import Vector
from ragtune.retrieval.lexical import LexicalIndex
from ragtune.retrieval.store import Collection, Where


class DenseSearch:
    """The chunks of one collection nearest to a query vector by cosine: exactly, over every
    chunk's stored vector, while the collection holds at most `max_exact` chunks; otherwise
    from the store's approximate (HNSW) index, which can miss a chunk for good: in one SQLite
    build the best chunk for a question was out of reach until 1,000 results were asked for
    (README, "A vector index that finds what exact search finds"). Comparing with every vector
    costs about a millisecond at 20,000 chunks. Search, calibration and the embedder's tuning
    all rank through this, so that what they measure is what search does."""

    def __init__(self, collection: Collection, max_exact: int) -> None:
        one_blas_thread()
        self.collection = collection
        self.max_exact = max_exact
        self._exact: tuple[str, npt.NDArray[np.float32] | None] | None = None
        """(revision, every chunk's unit vector in the lexical index's row order, or None to
        ask the HNSW index)."""

    def matrix(self, lexical: LexicalIndex) -> npt.NDArray[np.float32] | None:
        """Every chunk's unit vector, in `lexical`'s row order (so that a filter's mask applies
        as it does to BM25), for a collection of at most `max_exact` chunks; read once per
        revision. None: search the store's index instead."""
        if self._exact is not None and self._exact[0] == lexical.revision:
            return self._exact[1]
        matrix = None
        if 0 < len(lexical) <= self.max_exact:
            stored = self.collection.vectors()
            if stored is not None:
                ids, vectors = stored
                row = {chunk_id: n for n, chunk_id in enumerate(ids)}
                if len(ids) != len(lexical) or any(i not in row for i in lexical.ids):
                    return None  # written since the BM25 index was read: the index, this once
                matrix = vectors[[row[i] for i in lexical.ids]]
                norms = np.linalg.norm(matrix, axis=1, keepdims=True)
                matrix = (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        self._exact = (lexical.revision, matrix)
        return matrix

    def nearest(
        self,
        lexical: LexicalIndex,
        vector: Vector,
        depth: int,
        mask: npt.NDArray[np.bool_] | None = None,
        where: Where | None = None,
    ) -> list[tuple[str, float]]:
        """(chunk id, cosine distance) of the `depth` nearest chunks, best first; `mask` (over
        `lexical`'s rows) and `where` are the same filter in the two forms."""
        matrix = self.matrix(lexical)
        if matrix is None:
            return self.collection.nearest(vector, depth, where)
        return [
            (lexical.ids[row], distance)
            for row, distance in exact_nearest(matrix, vector, depth, mask)
        ]


def exact_nearest(
    matrix: npt.NDArray[np.float32],
    vector: Vector,
    depth: int,
    mask: npt.NDArray[np.bool_] | None = None,
) -> list[tuple[int, float]]:
    """(row, cosine distance) of the `depth` rows of `matrix` (unit vectors) nearest to
    `vector`, best first, among the rows `mask` lets through: dense search over a small
    collection (`DenseSearch`)."""
    q = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(q))
    scores = matrix @ (q / norm if norm > 0 else q)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    n = min(depth, int(np.count_nonzero(np.isfinite(scores))))
    if n < 1:
        return []
    top = np.argpartition(-scores, n - 1)[:n]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(r), 1.0 - float(scores[r])) for r in top]


def one_blas_thread() -> None:
    """Run the BLAS libraries loaded in this process (numpy's OpenBLAS, scipy's own when it is
    loaded) on one thread from now on; every `DenseSearch` does it (about a millisecond:
    threadpoolctl lists the loaded libraries), so a library loaded after the first is held too.
    A process that searches also encodes queries with torch, whose threads take every core;
    numpy's BLAS started as many threads of its own for the exact search's product, and they
    kept spinning after it, so the next query's encoding waited for the cores.
    `bench/search.py` at 10,000 chunks on 2 cores, p50: hybrid search 32-39 ms, of which the
    query's encoding 22-27 ms (11 ms alone), hybrid p95 117 ms; with this, 16.8 ms, 12.0 ms and
    20.5 ms. One thread does the product of 20,000 chunks' vectors (the exact search's limit)
    in well under a millisecond. torch's own threads are not touched."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
