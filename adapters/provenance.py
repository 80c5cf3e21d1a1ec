"""What an adapter was made alongside, and what changed there since: a collection's revision and
each document's version when training began (kept in the manifest), compared with the
collection as it is now. An adapter whose documents changed is stale: it learned from an
earlier version of them.

Usage:
    recorded = CollectionSnapshot.of(collection)              # before training
    now = current_snapshot(store, recorded.name, embedding_model)
    staleness(recorded, now).changes                          # changed, removed, added
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ragtune.retrieval.errors import CollectionNotFoundError
from ragtune.retrieval.store import Collection, VectorStore

ChangeKind = Literal["changed", "removed", "added"]


class DocumentVersion(BaseModel):
    """One document as it was stored: its id, where it came from, its hash, since when."""

    doc_id: str
    source: str
    doc_hash: str
    ingested_at: str = ""


class CollectionSnapshot(BaseModel):
    """A collection's revision and the version of every document in it, at one moment."""

    name: str
    revision: str = ""
    documents: list[DocumentVersion] = Field(default_factory=list)

    @classmethod
    def of(cls, collection: Collection) -> CollectionSnapshot:
        # The revision first: a write during the scan then shows as a newer revision later.
        revision = collection.revision()
        documents = [
            DocumentVersion(
                doc_id=d.doc_id, source=d.source, doc_hash=d.doc_hash, ingested_at=d.ingested_at
            )
            for d in collection.documents()
        ]
        return cls(name=collection.name, revision=revision, documents=documents)


def current_snapshot(store: VectorStore, name: str, embedding_model: str) -> CollectionSnapshot:
    """Collection `name` as it is now; empty (every document gone) when it no longer exists."""
    try:
        collection = store.collection(name, embedding_model)
    except CollectionNotFoundError:
        return CollectionSnapshot(name=name)
    return CollectionSnapshot.of(collection)


class DocumentChange(BaseModel):
    """A document that differs from the version an adapter was trained alongside."""

    model_config = ConfigDict(frozen=True)

    doc_id: str
    source: str
    change: ChangeKind
    since: str = ""
    """When the version now stored was ingested ("" for a removed document)."""


@dataclass(frozen=True)
class Staleness:
    """How a collection differs from the snapshot an adapter recorded."""

    collection: str
    trained_revision: str
    revision: str
    documents: int
    """Documents the adapter was trained alongside."""
    changes: tuple[DocumentChange, ...] = ()

    @property
    def stale(self) -> bool:
        return bool(self.changes)

    @property
    def changed_ids(self) -> frozenset[str]:
        """The ids of the documents that differ (changed, removed or added)."""
        return frozenset(c.doc_id for c in self.changes)

    def describe(self) -> str:
        """One line: what changed in the collection since training."""
        if not self.changes:
            return f"up to date with {self.collection!r}"
        counts = dict.fromkeys(("changed", "removed", "added"), 0)
        for change in self.changes:
            counts[change.change] += 1
        parts = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        return f"{parts} in {self.collection!r} since training ({self.documents} documents then)"


def staleness(recorded: CollectionSnapshot, now: CollectionSnapshot) -> Staleness:
    """The documents of `now` that differ from `recorded`: changed (another hash), removed,
    added; ordered by source."""
    before = {d.doc_id: d for d in recorded.documents}
    after = {d.doc_id: d for d in now.documents}
    changes = [
        DocumentChange(doc_id=d.doc_id, source=d.source, change="changed", since=d.ingested_at)
        for doc_id, d in after.items()
        if doc_id in before and before[doc_id].doc_hash != d.doc_hash
    ]
    changes += [
        DocumentChange(doc_id=d.doc_id, source=d.source, change="removed")
        for doc_id, d in before.items()
        if doc_id not in after
    ]
    changes += [
        DocumentChange(doc_id=d.doc_id, source=d.source, change="added", since=d.ingested_at)
        for doc_id, d in after.items()
        if doc_id not in before
    ]
    changes.sort(key=lambda c: (c.source, c.doc_id))
    return Staleness(
        collection=recorded.name,
        trained_revision=recorded.revision,
        revision=now.revision,
        documents=len(recorded.documents),
        changes=tuple(changes),
    )
