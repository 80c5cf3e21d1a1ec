"""Search a collection: dense (Chroma), lexical (BM25) or both fused (`retrieval.fusion`).

The query is embedded once with the collection's own model (a caller that already has the
vector, such as the chat router, passes it in). Filters apply alike to both retrievers.
Hits carry each retriever's score and rank, so a reader can see why a chunk came up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from ragtune.retrieval.calibration import fusion_in_force, stored_calibration
from ragtune.retrieval.dense import DenseSearch
from ragtune.retrieval.embedder import Embedder, Vector
from ragtune.retrieval.filters import SearchFilter
from ragtune.retrieval.fusion import fuse
from ragtune.retrieval.lexical import LexicalIndex, LexicalIndexes
from ragtune.retrieval.rerank import Reranker
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import Collection, Metadata, Where, display_source


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    DENSE = "dense"
    LEXICAL = "lexical"


@dataclass(frozen=True)
class SearchHit:
    rank: int
    chunk_id: str
    text: str
    source: str
    section: str
    score: float
    """The mode's score: the fused score (hybrid, `retrieval.fusion`), cosine similarity
    (dense) or BM25."""
    metadata: Metadata
    dense_score: float | None = None
    dense_rank: int | None = None
    lexical_score: float | None = None
    lexical_rank: int | None = None
    context: str | None = None
    """The hit with its neighbouring chunks of the same section, when asked for."""
    neighbours: tuple[str, ...] = field(default=())
    rerank_score: float | None = None
    """The reranker's score, when a reranking stage ran (hits are then in its order)."""
    document: str = ""
    """The document as readers of answers see it: its path below the ingested folder (or its
    file name), never the server's own path (`source`)."""
    collection: str = ""
    """The collection the hit was found in, when the searcher records it (the API does)."""

    @property
    def similarity(self) -> float:
        """Its dense similarity to the query; 0.0 for a hit only the lexical retriever found
        (what the router's evidence threshold and the APIs' `score` read)."""
        return self.dense_score or 0.0


STAGES = ("index", "embed", "dense", "lexical", "fusion", "rerank", "texts", "neighbours")
"""The stages of a search whose seconds `Retriever.search` reports when asked (`timings`):
`index`, the lexical index checked against the collection (rebuilt if stale) and the fusion
settings read; `embed`, the query vector (when not passed in); `dense` and `lexical`, each
retriever's candidates; `fusion`, fusing and ordering them; `rerank`, the reranking stage;
`texts`, fetching the passages kept (repeats collapsed); `neighbours`, their neighbouring
chunks. A stage that did not run is absent."""


class _Stages:
    """Adds the time since the previous mark to a stage's entry of `into` (when given)."""

    def __init__(self, into: dict[str, float] | None) -> None:
        self.into = into
        self.last = time.perf_counter()

    def mark(self, stage: str) -> None:
        if self.into is None:
            return
        now = time.perf_counter()
        self.into[stage] = self.into.get(stage, 0.0) + now - self.last
        self.last = now


@dataclass
class _Candidate:
    chunk_id: str
    text: str | None = None
    metadata: Metadata | None = None
    dense_score: float | None = None
    dense_rank: int | None = None
    lexical_score: float | None = None
    lexical_rank: int | None = None
    fused: float = 0.0
    rerank_score: float | None = None


class Retriever:
    """Searches one collection. Keeps its lexical index current (see `retrieval.lexical`)."""

    def __init__(
        self,
        collection: Collection,
        embedder: Embedder,
        indexes: LexicalIndexes,
        settings: RetrievalSettings,
        save_lexical: bool = True,
        reranker: Reranker | None = None,
    ) -> None:
        self.collection = collection
        self.reranker = reranker
        """Reorders the best fused candidates of hybrid searches (see `retrieval.rerank`)."""
        self.embedder = embedder
        self.indexes = indexes
        self.settings = settings
        self._save_lexical = save_lexical
        self._lexical: LexicalIndex | None = None
        self._checked_at = 0.0
        self._fusion: tuple[RetrievalSettings, str] | None = None
        """The settings fusion runs with, and where they came from (see `fusion`)."""
        self.vectors = DenseSearch(collection, settings.exact_search_max_chunks)
        """Dense nearest-neighbour search: exact for a small collection (see `DenseSearch`)."""

    def fusion(self) -> RetrievalSettings:
        """The settings fusion runs with: the collection's calibration (`ragtune tune
        retrieval`) over the shipped defaults, whose BM25 weight is `tuned_lexical_weight` for a
        collection embedded with a tuned model (`ragtune tune embedder`); a fusion setting given
        explicitly (argument, environment, config file) wins over all. RetrievalError when the
        stored calibration came from another embedding model."""
        if self._fusion is None:
            self._fusion = self._read_fusion()
        return self._fusion[0]

    def _read_fusion(self) -> tuple[RetrievalSettings, str]:
        calibration = stored_calibration(self.collection)  # checked even when not used
        return fusion_in_force(self.collection, self.settings, calibration)

    def fusion_summary(self) -> dict[str, object]:
        """The fusion in force and where it came from (`calibration`, `settings`, `tuned
        defaults` or `defaults`), for `search --json` and the like."""
        settings, source = self._fusion or self._read_fusion()
        return {
            "method": settings.fusion,
            "dense_weight": settings.dense_weight,
            "lexical_weight": settings.lexical_weight,
            "rrf_k": settings.rrf_k,
            "from": source,
        }

    def lexical(self) -> LexicalIndex:
        """The lexical index, checked against the collection's revision at most once per
        `lexical_check_seconds`."""
        now = time.monotonic()
        if self._lexical is None or now - self._checked_at >= self.settings.lexical_check_seconds:
            if self._lexical is None or self._lexical.revision != self.collection.revision():
                self._lexical = self.indexes.current(self.collection, save=self._save_lexical)
            self._fusion = None  # read the calibration again: `tune retrieval` may have run
            self._checked_at = now
        return self._lexical

    def search(
        self,
        query: str,
        k: int = 5,
        mode: SearchMode = SearchMode.HYBRID,
        filters: SearchFilter | None = None,
        neighbours: int = 0,
        vector: Vector | None = None,
        timings: dict[str, float] | None = None,
        depth: int | None = None,
    ) -> list[SearchHit]:
        """The `k` best chunks for `query` in `mode`, a passage repeated word for word taking
        one place (`_distinct`). `timings`, when given, receives the seconds each stage took
        (`STAGES`), added to what it holds. `depth`: candidates each retriever gives (default:
        `fusion_depth` for hybrid search, twice `k` for dense or lexical search alone, four
        times more once when repeats leave fewer than `k`)."""
        stages = _Stages(timings)
        filters = filters or SearchFilter()
        lexical = self.lexical()
        fusion = self.fusion()
        stages.mark("index")
        candidates: dict[str, _Candidate] = {}
        alone = depth is None and mode != SearchMode.HYBRID
        if depth is None:
            depth = max(k, fusion.fusion_depth) if mode == SearchMode.HYBRID else 2 * k
        depth = max(depth, k)

        # One filter, one mask: the BM25 rows and the exact dense search share their order.
        mask = None if filters.is_empty() else filters.mask(lexical.rows)
        if mode in (SearchMode.HYBRID, SearchMode.DENSE):
            where = None if filters.is_empty() else filters.chroma_where(lexical.rows)
            if where is not None or filters.is_empty():
                if vector is None:
                    vector = self.embedder.embed_query(query)
                    stages.mark("embed")
                for rank, (chunk_id, distance, payload) in enumerate(
                    self._dense(vector, depth, where or None, mask, mode, lexical), start=1
                ):
                    c = candidates.setdefault(chunk_id, _Candidate(chunk_id))
                    c.dense_score, c.dense_rank = 1.0 - distance, rank
                    if payload is not None:
                        c.text, c.metadata = payload
            stages.mark("dense")

        if mode in (SearchMode.HYBRID, SearchMode.LEXICAL):
            for rank, lexical_hit in enumerate(lexical.search(query, depth, mask), start=1):
                chunk_id = lexical.ids[lexical_hit.row]
                c = candidates.setdefault(chunk_id, _Candidate(chunk_id))
                c.lexical_score, c.lexical_rank = lexical_hit.score, rank
            stages.mark("lexical")

        if mode == SearchMode.HYBRID:
            fused = fuse(
                {
                    i: (c.dense_rank, c.dense_score)
                    for i, c in candidates.items()
                    if c.dense_rank and c.dense_score is not None
                },
                {
                    i: (c.lexical_rank, c.lexical_score)
                    for i, c in candidates.items()
                    if c.lexical_rank and c.lexical_score is not None
                },
                fusion.fusion,
                fusion.dense_weight,
                fusion.lexical_weight,
                fusion.rrf_k,
            )
            for chunk_id, score in fused.items():
                candidates[chunk_id].fused = score

        def order(c: _Candidate) -> tuple[float, ...]:
            if mode == SearchMode.DENSE:
                return (c.dense_rank or 0,)
            if mode == SearchMode.LEXICAL:
                return (c.lexical_rank or 0,)
            return (-c.fused, c.dense_rank or depth + 1, c.lexical_rank or depth + 1)

        ranked = sorted(candidates.values(), key=order)
        stages.mark("fusion")
        if self.reranker is not None and mode == SearchMode.HYBRID and ranked:
            # Repeated texts are set aside before the reranker reads the candidates, so that
            # the `k` it returns are `k` distinct passages whenever the fusion found as many.
            # The best `rerank_depth` whatever `k`, so that a ranking does not depend on how
            # many hits are asked for (`eval retrieval` asks for more than a server serves);
            # past them, the fused order.
            chosen = self._distinct(ranked, max(k, fusion.rerank_depth))
            scored = chosen[: fusion.rerank_depth]
            stages.mark("texts")
            scores = self.reranker.score(query, [c.text or "" for c in scored])
            for c, score in zip(scored, scores, strict=True):
                c.rerank_score = score
            stages.mark("rerank")
            scored = sorted(scored, key=lambda c: -(c.rerank_score or 0.0))
            chosen = (scored + chosen[fusion.rerank_depth :])[:k]
        else:
            chosen = self._distinct(ranked, k)
            if alone and len(chosen) < k and len(ranked) >= depth:
                # Repeats took places a deeper look can fill.
                stages.mark("texts")
                return self.search(query, k, mode, filters, neighbours, vector, timings, 8 * k)
        hits = [self._hit(n, c, mode) for n, c in enumerate(chosen, start=1)]
        stages.mark("texts")
        if neighbours > 0:
            hits = self._with_neighbours(hits, lexical, neighbours)
            stages.mark("neighbours")
        return hits

    def _dense(
        self,
        vector: Vector,
        depth: int,
        where: Where | None,
        mask: npt.NDArray[np.bool_] | None,
        mode: SearchMode,
        lexical: LexicalIndex,
    ) -> list[tuple[str, float, tuple[str, Metadata] | None]]:
        """(id, distance, text and metadata if fetched) of the nearest chunks: exactly, over
        every chunk's vector, in a collection small enough (`DenseSearch`); otherwise from the
        store's approximate index."""
        if mode == SearchMode.DENSE and self.vectors.matrix(lexical) is None:
            # Every hit is kept: fetch texts with the ranking.
            return [
                (h.id, h.distance, (h.text, h.metadata))
                for h in self.collection.query(vector, depth, where)
            ]
        # Fusion keeps a few of `depth` candidates: ids now, texts for the kept ones later.
        return [(i, d, None) for i, d in self.vectors.nearest(lexical, vector, depth, mask, where)]

    def _distinct(self, ranked: list[_Candidate], k: int) -> list[_Candidate]:
        """The first `k` candidates whose texts differ (whitespace aside): a passage repeated
        word for word in several documents (the same option in three manual pages) takes one
        place, the best-ranked, so that the others go to passages that say something else.
        Texts are fetched for the candidates looked at only."""
        chosen: list[_Candidate] = []
        seen: set[str] = set()
        start = 0
        while len(chosen) < k and start < len(ranked):
            batch = ranked[start : start + 2 * (k - len(chosen))]
            start += len(batch)
            self._fill_texts(batch)
            for c in batch:
                text = " ".join((c.text or "").split())
                if text in seen:
                    continue
                seen.add(text)
                chosen.append(c)
                if len(chosen) == k:
                    break
        return chosen

    def _fill_texts(self, chosen: list[_Candidate]) -> None:
        missing = [c.chunk_id for c in chosen if c.text is None]
        if missing:
            found = {s.id: s for s in self.collection.get(missing)}
            for c in chosen:
                if c.chunk_id in found:
                    c.text = found[c.chunk_id].text or ""
                    c.metadata = found[c.chunk_id].metadata

    @staticmethod
    def _hit(rank: int, c: _Candidate, mode: SearchMode) -> SearchHit:
        metadata = c.metadata or {}
        score = {
            SearchMode.HYBRID: c.fused,
            SearchMode.DENSE: c.dense_score,
            SearchMode.LEXICAL: c.lexical_score,
        }[mode]
        return SearchHit(
            rank=rank,
            chunk_id=c.chunk_id,
            text=c.text or "",
            source=str(metadata.get("source", "")),
            section=str(metadata.get("section", "")),
            score=float(score or 0.0),
            document=display_source(metadata),
            metadata=metadata,
            dense_score=c.dense_score,
            dense_rank=c.dense_rank,
            lexical_score=c.lexical_score,
            lexical_rank=c.lexical_rank,
            rerank_score=c.rerank_score,
        )

    def _with_neighbours(
        self, hits: list[SearchHit], lexical: LexicalIndex, width: int
    ) -> list[SearchHit]:
        """Each hit with up to `width` chunks either side from its own section; a chunk is
        shown once only, in the best-ranked hit that reaches it."""
        used = {h.chunk_id for h in hits}
        plans: list[tuple[list[str], list[str]]] = []
        for hit in hits:
            row = lexical.row_of.get(hit.chunk_id)
            before: list[str] = []
            after: list[str] = []
            if row is not None:
                base = lexical.rows[row]
                for step, side in ((-1, before), (1, after)):
                    for offset in range(1, width + 1):
                        other = lexical.position(
                            base["doc_id"], base["chunk_index"] + step * offset
                        )
                        if other is None or lexical.rows[other].get("section") != base.get(
                            "section"
                        ):
                            break
                        other_id = lexical.ids[other]
                        if other_id in used:
                            break
                        used.add(other_id)
                        side.append(other_id)
            plans.append((before[::-1], after))
        wanted = [i for before, after in plans for i in (*before, *after)]
        texts = {s.id: s.text or "" for s in self.collection.get(wanted)} if wanted else {}
        expanded = []
        for hit, (before, after) in zip(hits, plans, strict=True):
            parts = [texts[i] for i in before if i in texts] + [hit.text]
            parts += [texts[i] for i in after if i in texts]
            context = parts[0]
            for part in parts[1:]:
                context = join_overlapping(context, part)
            expanded.append(replace(hit, context=context, neighbours=(*before, *after)))
        return expanded


def join_overlapping(first: str, second: str, min_overlap: int = 16) -> str:
    """Join consecutive chunks, dropping the text they share (chunks overlap a little)."""
    longest = min(len(first), len(second))
    for size in range(longest, min_overlap - 1, -1):
        if first.endswith(second[:size]):
            return first + second[size:]
    return f"{first}\n{second}"
