"""Honest fakes for fast unit tests: small, deterministic, and held to the same contract
tests as the real embedder and store."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

from ragtune.retrieval.embedder import Embedder, Vector, same_model
from ragtune.retrieval.errors import StagingDroppedError
from ragtune.retrieval.settings import check_collection_name
from ragtune.retrieval.store import (
    EMBEDDING_BASE_KEY,
    ChunkRecord,
    Collection,
    CollectionInfo,
    Metadata,
    QueryHit,
    StoredChunk,
    VectorStore,
    Where,
    check_embedding_model,
    collection_not_found,
)

_WORD = re.compile(r"\w+")


class FakeEmbedder(Embedder):
    """Hashed bag of words: texts sharing words are close; a "token" is a word."""

    def __init__(self, dimension: int = 64, max_tokens: int = 64, batch_size: int = 8) -> None:
        self.model_id = f"fake-bow-{dimension}"
        self.dimension = dimension
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.calls: list[int] = []

    @property
    def embedded(self) -> int:
        return sum(self.calls)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(_WORD.findall(t)) + self.special_tokens for t in texts]

    def _encode(self, texts: Sequence[str]) -> list[Vector]:
        self.calls.append(len(texts))
        return [self._vector(t) for t in texts]

    def _vector(self, text: str) -> Vector:
        vector = [0.0] * self.dimension
        for word in _WORD.findall(text.lower()):
            vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension] += 1.0
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        return [x / norm for x in vector]


def _matches(metadata: Metadata, where: Where | None) -> bool:
    if not where:
        return True
    for key, condition in where.items():
        if key == "$and":
            if not all(_matches(metadata, w) for w in condition):
                return False
        elif key == "$or":
            if not any(_matches(metadata, w) for w in condition):
                return False
        elif isinstance(condition, dict):
            ((op, value),) = condition.items()
            if not _compare(op, metadata.get(key), value):
                return False
        elif metadata.get(key) != condition:
            return False
    return True


def _compare(op: str, actual: object, value: Any) -> bool:
    if op == "$eq":
        return actual == value
    if op == "$ne":
        return actual != value
    if op == "$in":
        return actual in value
    if op == "$nin":
        return actual not in value
    raise ValueError(f"the fake store does not know the operator {op}")


class InMemoryCollection(Collection):
    def __init__(self, name: str, embedding_model: str, max_batch: int = 7) -> None:
        self.name = name
        self.embedding_model = embedding_model
        self._max_batch = max_batch
        self.rows: dict[str, tuple[str, Metadata, Vector]] = {}
        self.operations: list[tuple[str, int]] = []
        self._revision = ""
        self.store: InMemoryStore | None = None
        """The store that holds it, if any (see `replaced`)."""
        self.base_model: object = None
        """The model the collection's tuned model was tuned from (`EMBEDDING_BASE_KEY`)."""

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def replaced(self) -> bool:
        return self.store is not None and self.store.collections.get(self.name) is not self

    def revision(self) -> str:
        return self._revision

    def _set_revision(self, revision: str) -> None:
        self._revision = revision

    def _upsert(self, records: Sequence[ChunkRecord]) -> None:
        self.operations.append(("upsert", len(records)))
        for r in records:
            self.rows[r.id] = (r.text, dict(r.metadata), list(r.embedding))

    def _update_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        self.operations.append(("update", len(ids)))
        for chunk_id, metadata in zip(ids, metadatas, strict=True):
            if chunk_id in self.rows:
                text, _, vector = self.rows[chunk_id]
                self.rows[chunk_id] = (text, dict(metadata), vector)

    def _delete(self, ids: Sequence[str]) -> None:
        self.operations.append(("delete", len(ids)))
        for chunk_id in ids:
            self.rows.pop(chunk_id, None)

    def scan(self, where: Where | None = None, with_text: bool = False) -> Iterator[StoredChunk]:
        for chunk_id, (text, metadata, _) in list(self.rows.items()):
            if _matches(metadata, where):
                yield StoredChunk(chunk_id, dict(metadata), text if with_text else None)

    def get(self, ids: Sequence[str], with_text: bool = True) -> list[StoredChunk]:
        return [
            StoredChunk(i, dict(self.rows[i][1]), self.rows[i][0] if with_text else None)
            for i in ids
            if i in self.rows
        ]

    def count(self) -> int:
        return len(self.rows)

    def query(self, vector: Vector, k: int, where: Where | None = None) -> list[QueryHit]:
        scored = []
        for chunk_id, (text, metadata, stored) in self.rows.items():
            if _matches(metadata, where):
                similarity = sum(a * b for a, b in zip(vector, stored, strict=True))
                scored.append(QueryHit(chunk_id, text, dict(metadata), 1.0 - similarity))
        scored.sort(key=lambda h: (h.distance, h.id))
        return scored[:k]

    def nearest(
        self, vector: Vector, k: int, where: Where | None = None
    ) -> list[tuple[str, float]]:
        return [(hit.id, hit.distance) for hit in self.query(vector, k, where)]


class InMemoryStore(VectorStore):
    def __init__(self) -> None:
        self.collections: dict[str, InMemoryCollection] = {}
        self.location = "memory"

    def collection(self, name: str, embedding_model: str, create: bool = False) -> Collection:
        check_collection_name(name)
        if name not in self.collections:
            if not create:
                raise collection_not_found(name, "memory")
            self._hold(InMemoryCollection(name, embedding_model))
        existing = self.collections[name]
        if not same_model(existing.base_model, embedding_model):  # else: read with its tuned model
            check_embedding_model(name, existing.embedding_model, embedding_model)
        return existing

    def list_collections(self) -> list[CollectionInfo]:
        return [
            CollectionInfo(c.name, c.embedding_model, c.count()) for c in self.collections.values()
        ]

    def delete_collection(self, name: str) -> None:
        self.collections.pop(name, None)

    def create_staging(self, name: str, embedding_model: str, metadata: Metadata) -> Collection:
        staging = InMemoryCollection(name, embedding_model)
        staging.base_model = metadata.get(EMBEDDING_BASE_KEY)
        return self._hold(staging)

    def _hold(self, collection: InMemoryCollection) -> InMemoryCollection:
        collection.store = self
        self.collections[collection.name] = collection
        return collection

    def delete_staging(self, staging: Collection) -> None:
        if self.collections.get(staging.name) is staging:
            del self.collections[staging.name]

    def replace_collection(self, name: str, staging: Collection) -> None:
        if self.collections.get(staging.name) is not staging:
            raise StagingDroppedError(f"the rebuilt copy of collection {name!r} was dropped")
        replacement = self.collections.pop(staging.name)
        replacement.name = name
        self.collections[name] = replacement

    def snapshot(self) -> dict[str, Any]:
        return {name: dict(c.rows) for name, c in self.collections.items()}


class FakeTokenizer:
    """A chat model's tokenizer in miniature: a token is a whitespace-separated word, and the
    chat template wraps each message as `<|im_start|> role content... <|im_end|>` (so a
    message costs its words plus three), then opens the assistant's turn (two)."""

    all_special_tokens = ("<|im_start|>", "<|im_end|>")
    added_tokens_decoder: dict[int, Any] = {}  # noqa: RUF012 (read only)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [len(word) for word in text.split()]

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> list[int]:
        ids: list[int] = []
        for message in conversation:
            ids += [0, *self.encode(message["role"]), *self.encode(message["content"]), 1]
        if kwargs.get("add_generation_prompt"):
            ids += [0, *self.encode("assistant")]
        return ids


def spy_on_index(monkeypatch: Any, collection: Collection) -> list[int]:
    """A list that grows by one each time `collection`'s approximate index is asked
    (`Collection.nearest`), which still answers: to tell exact search from the index's."""
    asked: list[int] = []
    index_nearest = collection.nearest

    def nearest(*args: Any, **kwargs: Any) -> list[tuple[str, float]]:
        asked.append(1)
        return index_nearest(*args, **kwargs)

    monkeypatch.setattr(collection, "nearest", nearest)
    return asked
