"""Search a collection: the query embedded with the collection's own model, nearest chunks."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.embedder import Embedder
from retrieval.store import Collection, Metadata, Where


@dataclass(frozen=True)
class SearchHit:
    rank: int
    chunk_id: str
    text: str
    source: str
    section: str
    score: float
    """Cosine similarity of query and chunk."""
    metadata: Metadata


class SearchService:
    def __init__(self, collection: Collection, embedder: Embedder) -> None:
        self.collection = collection
        self.embedder = embedder

    def search(self, query: str, k: int = 5, where: Where | None = None) -> list[SearchHit]:
        vector = self.embedder.embed_query(query)
        hits = self.collection.query(vector, k, where)
        return [
            SearchHit(
                rank=n,
                chunk_id=hit.id,
                text=hit.text,
                source=str(hit.metadata.get("source", "")),
                section=str(hit.metadata.get("section", "")),
                score=1.0 - hit.distance,
                metadata=hit.metadata,
            )
            for n, hit in enumerate(hits, start=1)
        ]
