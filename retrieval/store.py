"""The vector store: chunks with their embeddings and metadata, in Chroma.

`ChromaStore` is the real store: embedded (`PersistentClient` under the data directory) or a
Chroma server (`HttpClient`, when `RAGTUNE_CHROMA_URL` is set). Embeddings are always passed
in: no Chroma embedding function is ever used (the default one would download a model).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt

from ragtune.retrieval.embedder import Vector, same_model
from ragtune.retrieval.errors import (
    CollectionNotFoundError,
    EmbeddingModelMismatchError,
    RetrievalError,
    StagingDroppedError,
    StoreBusyError,
    StoreUnavailableError,
)
from ragtune.retrieval.settings import (
    RESERVED_NAME_MARK,
    RetrievalSettings,
    check_collection_name,
)

MetadataValue = str | int | float | bool
Metadata = dict[str, MetadataValue]
Where = dict[str, Any]


def display_source(metadata: Mapping[str, Any]) -> str:
    """The reader's name of a chunk's document: its path below the folder ingested, or an
    upload's file name, never the server's own path (`source`). Chunks ingested before
    `display_source` was stored show their file name."""
    shown = metadata.get("display_source")
    if isinstance(shown, str) and shown:
        return shown
    return PurePath(str(metadata.get("source", ""))).name


logger = logging.getLogger("ragtune.store")

EMBEDDING_MODEL_KEY = "embedding_model"
REPLACED_SUFFIX = RESERVED_NAME_MARK + "replaced"
REPLACEMENT_GRACE_S = 1.0
"""How long a collection found set aside by a replacement (`replace_collection`) is given to
reappear under its name before it is taken for an interrupted one and put back. A replacement
renames twice, a few milliseconds apart."""
STAGING_SUFFIX = RESERVED_NAME_MARK + "staging"
EMBEDDING_BASE_KEY = "embedding_base"
"""Set on a collection re-embedded with a model tuned for it (`ragtune tune embedder`): the
model that one was tuned from, which the deployment configures."""
REVISION_KEY = "revision"
SCAN_PAGE = 5000


STORE_KEY_PREFIXES = ("$", "#", "chroma:")
"""How the metadata keys a vector store keeps for itself begin (Chroma: "$" operators,
"#document", "chroma:document"): it refuses a chunk whose metadata holds one, and a filter on
one is no filter on a metadata name."""


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk as written to the store."""

    id: str
    text: str
    metadata: Metadata
    embedding: Vector


@dataclass(frozen=True)
class StoredChunk:
    """One chunk as read back: text only when asked for."""

    id: str
    metadata: Metadata
    text: str | None = None


@dataclass(frozen=True)
class StoredDocument:
    """One document as its chunks' metadata tell it (ingestion writes these keys on every
    chunk): which version of it is stored and since when."""

    doc_id: str
    source: str
    doc_hash: str
    """The stored version's hash; the hashes of every version present, joined by "+", while an
    interrupted ingestion left chunks of more than one."""
    ingested_at: str
    """When that version was stored (ISO 8601, UTC)."""
    chunks: int


@dataclass(frozen=True)
class QueryHit:
    id: str
    text: str
    metadata: Metadata
    distance: float


@dataclass
class CollectionInfo:
    name: str
    embedding_model: str | None
    count: int
    metadata: Metadata = field(default_factory=dict)


class Collection(ABC):
    """One collection of chunks. Writes are split to the backend's batch limit here, once."""

    name: str
    embedding_model: str

    @property
    def max_batch(self) -> int:
        return 1000

    def add(self, records: Sequence[ChunkRecord]) -> None:
        """Insert or replace records (by id)."""
        if not records:
            return
        self._changing()
        for start in range(0, len(records), self.max_batch):
            self._upsert(records[start : start + self.max_batch])
        self._changing()

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        """Replace the metadata of stored chunks, keeping their text and embedding."""
        if not ids:
            return
        self._changing()
        for start in range(0, len(ids), self.max_batch):
            end = start + self.max_batch
            self._update_metadata(ids[start:end], metadatas[start:end])
        self._changing()

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        self._changing()
        for start in range(0, len(ids), self.max_batch):
            self._delete(ids[start : start + self.max_batch])
        self._changing()

    def _changing(self) -> None:
        # Stamped before the write, so that an index derived from the collection (the lexical
        # one) is seen as stale even if this process dies halfway through the write; and again
        # after it, so that a reader that looked between the first stamp and the write landing
        # (`adaptation.adopt` carrying writes over to a copy) sees it change once more.
        self._set_revision(uuid.uuid4().hex)

    @abstractmethod
    def revision(self) -> str:
        """Changes with every write; derived indexes compare it with the one they were built at."""

    def replaced(self) -> bool:
        """Whether the collection's name no longer names this collection: it was deleted, or
        a rebuilt one was put in its place (`VectorStore.replace_collection`, as `ragtune tune
        embedder` does), by this process or another sharing the store. A handle then reads
        nothing current: open the collection again. False by default: a collection nothing
        else can replace."""
        return False

    def metadata(self) -> Metadata:
        """The collection's own metadata (embedding model, revision, calibration...)."""
        return {}

    def set_metadata_value(self, key: str, value: MetadataValue) -> None:
        """Store one value in the collection's own metadata (not a chunk write: the revision
        stays)."""
        raise RuntimeError(f"collection {self.name!r} keeps no metadata")

    @abstractmethod
    def _set_revision(self, revision: str) -> None: ...

    @abstractmethod
    def _upsert(self, records: Sequence[ChunkRecord]) -> None: ...

    @abstractmethod
    def _update_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None: ...

    @abstractmethod
    def _delete(self, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def scan(self, where: Where | None = None, with_text: bool = False) -> Iterator[StoredChunk]:
        """Every chunk (matching `where`), in pages."""

    @abstractmethod
    def get(self, ids: Sequence[str], with_text: bool = True) -> list[StoredChunk]: ...

    def vectors(self) -> tuple[list[str], npt.NDArray[np.float32]] | None:
        """Every chunk's id and stored vector (one row each, in the same order), for exact
        search over a small collection (`retrieval.search.Retriever`); None where the store
        does not give them out (search then asks `nearest`)."""
        return None

    def documents(self) -> list[StoredDocument]:
        """Every document of the collection, by source: read from the chunks' metadata alone
        (no texts, no vectors)."""
        found: dict[str, tuple[str, set[str], str, int]] = {}
        for chunk in self.scan():
            meta = chunk.metadata
            doc_id = str(meta.get("doc_id", ""))
            source, hashes, ingested_at, chunks = found.get(doc_id, ("", set(), "", 0))
            hashes.add(str(meta.get("doc_hash", "")))
            found[doc_id] = (
                source or str(meta.get("source", "")),
                hashes,
                max(ingested_at, str(meta.get("ingested_at", ""))),
                chunks + 1,
            )
        documents = [
            StoredDocument(doc_id, source, "+".join(sorted(hashes)), ingested_at, chunks)
            for doc_id, (source, hashes, ingested_at, chunks) in found.items()
        ]
        return sorted(documents, key=lambda d: (d.source, d.doc_id))

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def query(self, vector: Vector, k: int, where: Where | None = None) -> list[QueryHit]:
        """The `k` nearest chunks by cosine distance, with their text and metadata."""

    @abstractmethod
    def nearest(
        self, vector: Vector, k: int, where: Where | None = None
    ) -> list[tuple[str, float]]:
        """The `k` nearest chunks as (id, cosine distance) only: cheaper when most candidates
        are dropped later (fusion), and the few kept are fetched with `get`."""


class EmptyCollection(Collection):
    """A collection that does not exist yet, seen by a run that must not create it (a dry run).

    It holds nothing and accepts no writes.
    """

    def __init__(self, name: str, embedding_model: str) -> None:
        self.name = name
        self.embedding_model = embedding_model

    def _refuse(self) -> None:
        raise RuntimeError(f"collection {self.name!r} does not exist: nothing can be written")

    def revision(self) -> str:
        return ""

    def _set_revision(self, revision: str) -> None:
        self._refuse()

    def _upsert(self, records: Sequence[ChunkRecord]) -> None:
        if records:
            self._refuse()

    def _update_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        if ids:
            self._refuse()

    def _delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._refuse()

    def scan(self, where: Where | None = None, with_text: bool = False) -> Iterator[StoredChunk]:
        return iter(())

    def get(self, ids: Sequence[str], with_text: bool = True) -> list[StoredChunk]:
        return []

    def count(self) -> int:
        return 0

    def query(self, vector: Vector, k: int, where: Where | None = None) -> list[QueryHit]:
        return []

    def nearest(
        self, vector: Vector, k: int, where: Where | None = None
    ) -> list[tuple[str, float]]:
        return []


class VectorStore(ABC):
    """A set of named collections, each bound to one embedding model."""

    location: str
    """Where the store is (a path or a URL), for messages and for keying derived indexes."""

    @abstractmethod
    def collection(self, name: str, embedding_model: str, create: bool = False) -> Collection:
        """Open (or create) a collection; refuse one built with another embedding model."""

    @abstractmethod
    def list_collections(self) -> list[CollectionInfo]: ...

    @abstractmethod
    def delete_collection(self, name: str) -> None: ...

    @abstractmethod
    def create_staging(self, name: str, embedding_model: str, metadata: Metadata) -> Collection:
        """A new, empty collection `name` for a collection being rebuilt (any left from an
        interrupted rebuild is dropped first), with `metadata` beside the store's own keys."""

    @abstractmethod
    def delete_staging(self, staging: Collection) -> None:
        """Drop a copy `create_staging` made, unless another rebuild of the same collection has
        since dropped it and made its own under the name (that one is left alone)."""

    @abstractmethod
    def replace_collection(self, name: str, staging: Collection) -> None:
        """Put the collection `staging` (made by `create_staging`) in the place of `name` (the
        old one is deleted). StagingDroppedError, with nothing changed, when `staging` no longer
        holds its name (another rebuild of the same collection dropped it and made its own)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the store holds (locks, connections)."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_embedding_model(name: str, recorded: object, configured: str) -> None:
    if recorded is not None and not same_model(recorded, configured):
        raise EmbeddingModelMismatchError(
            f"collection {name!r} was built with embedding model {recorded!r}, but "
            f"{configured!r} is configured: vectors of two models cannot be compared. Set "
            f"RAGTUNE_EMBEDDING_MODEL to the collection's model, or use another collection "
            "(--collection NAME)."
        )


def collection_not_found(name: str, location: str) -> CollectionNotFoundError:
    return CollectionNotFoundError(
        f"collection {name!r} does not exist in {location}; ingest documents into it "
        f"first: ragtune ingest PATH --collection {name}",
        collection=name,
    )


class StoreLock:
    """Guards the embedded store against use by two processes at once.

    Chroma's embedded store is not safe for concurrent use by several processes, so readers
    take a shared lock and a writer an exclusive one, for as long as they hold the store. A
    process that cannot get its lock is refused at once with a message naming the fix.
    """

    def __init__(self, store_path: Path, mode: Literal["read", "write"]) -> None:
        self.path = store_path.parent / f"{store_path.name}.lock"
        self.mode = mode
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        op = fcntl.LOCK_EX if self.mode == "write" else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            os.close(fd)
            store = self.path.with_suffix("")
            raise StoreBusyError(
                f"the embedded store {store} is in use by another process{holder}; it cannot "
                f"be {'written' if self.mode == 'write' else 'read'} while that process "
                "holds it. Wait for it to finish or stop it, or share one store between "
                f"processes with a Chroma server: `chroma run --path {store} --port 8000` "
                "and RAGTUNE_CHROMA_URL=http://localhost:8000"
            ) from None
        self._fd = fd
        if self.mode == "write":
            info = {"pid": os.getpid(), "command": " ".join(sys.argv[:3])}
            self._info_path().write_text(json.dumps(info))

    def release(self) -> None:
        if self._fd is None:
            return
        if self.mode == "write":
            self._info_path().unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def _info_path(self) -> Path:
        return self.path.with_name(self.path.name + ".owner")

    def _holder(self) -> str:
        try:
            info = json.loads(self._info_path().read_text())
        except (OSError, ValueError):
            return ""
        return f" (pid {info.get('pid')}: {info.get('command')})"


HNSW_CONFIGURATION: dict[str, str | int] = {
    "space": "cosine",
    "max_neighbors": 32,
    "ef_construction": 200,
    "ef_search": 200,
}
"""How a new collection's vector index (Chroma's HNSW) is built and searched. With Chroma's
defaults (16 neighbours, ef 100 to build and to search) the index left out 49 of the exact ten
nearest chunks of 221 questions at 100,000 chunks (recall 0.978), and two builds of the same
SQLite collection differed: one missed a question's best chunk outright (an HNSW graph
differs from build to build), so retrieval moved between identical ingests. With these it
left out none, query p50 2.15 ms against 2.40, indexing 2,700 chunks/s against 4,200, far
above what embedding them takes (bench/ann.py). Only new collections get them: Chroma fixes a
collection's graph when it is created. Fewer misses are not none (later builds of the same
SQLite collection still missed that chunk), so search does not ask the index of a collection
small enough to compare with every vector (`RetrievalSettings.exact_search_max_chunks`)."""


class ChromaCollection(Collection):
    def __init__(self, client: Any, raw: Any, embedding_model: str, max_batch: int) -> None:
        self._client = client
        self._raw = raw
        self.name = raw.name
        self.embedding_model = embedding_model
        self._max_batch = max_batch

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def _metadata(self) -> dict[str, Any]:
        # Read afresh: another process may have written since this handle was opened.
        fresh = self._client.get_collection(self.name, embedding_function=None)
        return dict(fresh.metadata or {})

    def revision(self) -> str:
        return str(self._metadata().get(REVISION_KEY, ""))

    def replaced(self) -> bool:
        import chromadb.errors

        try:
            current = self._client.get_collection(self.name, embedding_function=None)
        except (chromadb.errors.NotFoundError, ValueError):
            # Deleted, or set aside for the moment between a replacement's two renames (this
            # collection still exists then, and the next look finds the new one).
            try:
                self._raw.count()
            except (chromadb.errors.NotFoundError, ValueError):
                return True
            return False
        return bool(current.id != self._raw.id)

    def metadata(self) -> Metadata:
        return {k: v for k, v in self._metadata().items() if isinstance(v, MetadataValue)}

    def set_metadata_value(self, key: str, value: MetadataValue) -> None:
        if key in (REVISION_KEY, EMBEDDING_MODEL_KEY):
            raise ValueError(f"{key!r} is kept by the store itself")
        self._raw.modify(metadata={**self._metadata(), key: value})

    def _set_revision(self, revision: str) -> None:
        self._raw.modify(metadata={**self._metadata(), REVISION_KEY: revision})

    def _upsert(self, records: Sequence[ChunkRecord]) -> None:
        self._raw.upsert(
            ids=[r.id for r in records],
            embeddings=[r.embedding for r in records],
            documents=[r.text for r in records],
            metadatas=[r.metadata for r in records],
        )

    def _update_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        self._raw.update(ids=list(ids), metadatas=list(metadatas))

    def _delete(self, ids: Sequence[str]) -> None:
        self._raw.delete(ids=list(ids))

    def scan(self, where: Where | None = None, with_text: bool = False) -> Iterator[StoredChunk]:
        include = ["metadatas", "documents"] if with_text else ["metadatas"]
        offset = 0
        while True:
            page = self._raw.get(where=where, include=include, limit=SCAN_PAGE, offset=offset)
            ids = page["ids"]
            docs = page.get("documents") or [None] * len(ids)
            for chunk_id, meta, text in zip(ids, page["metadatas"], docs, strict=True):
                yield StoredChunk(chunk_id, dict(meta or {}), text)
            if len(ids) < SCAN_PAGE:
                return
            offset += SCAN_PAGE

    def get(self, ids: Sequence[str], with_text: bool = True) -> list[StoredChunk]:
        if not ids:
            return []
        include = ["metadatas", "documents"] if with_text else ["metadatas"]
        page = self._raw.get(ids=list(ids), include=include)
        docs = page.get("documents") or [None] * len(page["ids"])
        return [
            StoredChunk(i, dict(m or {}), t)
            for i, m, t in zip(page["ids"], page["metadatas"], docs, strict=True)
        ]

    def vectors(self) -> tuple[list[str], npt.NDArray[np.float32]] | None:
        ids: list[str] = []
        pages: list[npt.NDArray[np.float32]] = []
        offset = 0
        while True:
            page = self._raw.get(include=["embeddings"], limit=SCAN_PAGE, offset=offset)
            ids.extend(page["ids"])
            if len(page["ids"]):
                pages.append(np.asarray(page["embeddings"], dtype=np.float32))
            if len(page["ids"]) < SCAN_PAGE:
                break
            offset += SCAN_PAGE
        return ids, np.concatenate(pages) if pages else np.zeros((0, 0), dtype=np.float32)

    def count(self) -> int:
        return int(self._raw.count())

    def nearest(
        self, vector: Vector, k: int, where: Where | None = None
    ) -> list[tuple[str, float]]:
        if k < 1:
            return []
        result = self._raw.query(
            query_embeddings=[vector], n_results=k, where=where, include=["distances"]
        )
        return [
            (i, float(d)) for i, d in zip(result["ids"][0], result["distances"][0], strict=True)
        ]

    def query(self, vector: Vector, k: int, where: Where | None = None) -> list[QueryHit]:
        if k < 1:
            return []
        result = self._raw.query(
            query_embeddings=[vector],
            n_results=k,
            where=where,
            include=["metadatas", "documents", "distances"],
        )
        return [
            QueryHit(i, t or "", dict(m or {}), float(d))
            for i, t, m, d in zip(
                result["ids"][0],
                result["documents"][0],
                result["metadatas"][0],
                result["distances"][0],
                strict=True,
            )
        ]


class _ServerGuard:
    """A Chroma server client (or one of its collections) whose calls turn a lost connection
    into `StoreUnavailableError`: the server stopped or cannot be reached. Nothing stored is
    lost by that; the next call after it is back works."""

    def __init__(self, target: Any, url: str) -> None:
        self._target = target
        self._url = url

    def __getattr__(self, name: str) -> Any:
        import httpx

        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = value(*args, **kwargs)
            except httpx.TransportError as exc:
                raise StoreUnavailableError(
                    f"the Chroma server at {self._url} does not answer ({type(exc).__name__}: "
                    f"{exc}); start it again (`chroma run`): what is stored is kept"
                ) from exc
            if type(result).__name__ == "Collection" and hasattr(result, "query"):
                return _ServerGuard(result, self._url)
            return result

        return call


class ChromaStore(VectorStore):
    """Chroma, embedded under the data directory or as a server by URL."""

    def __init__(self, settings: RetrievalSettings, mode: Literal["read", "write"]) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        self._lock: StoreLock | None = None
        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        if settings.chroma_url:
            url = urlparse(settings.chroma_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise StoreUnavailableError(
                    f"RAGTUNE_CHROMA_URL={settings.chroma_url!r} is not an http(s) URL; "
                    "expected something like http://localhost:8000"
                )
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                self._client: Any = chromadb.HttpClient(
                    host=url.hostname,
                    port=port,
                    ssl=url.scheme == "https",
                    settings=chroma_settings,
                )
                self._client.heartbeat()
                self._client = _ServerGuard(self._client, settings.chroma_url)
            except Exception as exc:
                raise StoreUnavailableError(
                    f"cannot reach the Chroma server at {settings.chroma_url} "
                    f"({type(exc).__name__}: {exc}). Start it (`chroma run --path DIR "
                    f"--port {port}`) or unset RAGTUNE_CHROMA_URL to use the embedded store."
                ) from exc
            self.location = settings.chroma_url
        else:
            path = settings.chroma_path
            self._lock = StoreLock(path, mode)
            self._lock.acquire()
            try:
                path.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
            except Exception as exc:
                self._lock.release()
                raise StoreUnavailableError(
                    f"cannot open the embedded Chroma store at {path} ({type(exc).__name__}: {exc})"
                ) from exc
            self.location = str(path)
        self._max_batch = int(self._client.get_max_batch_size())

    def collection(self, name: str, embedding_model: str, create: bool = False) -> Collection:
        import chromadb.errors

        try:
            check_collection_name(name)
        except ValueError as exc:
            raise RetrievalError(str(exc)) from None
        try:
            raw = self._client.get_collection(name, embedding_function=None)
        except chromadb.errors.NotFoundError:
            raw = self._restore_replaced(name)
        if raw is None:
            if not create:
                raise collection_not_found(name, self.location) from None
            raw = self._create_raw(name, embedding_model, {})
        recorded = (raw.metadata or {}).get(EMBEDDING_MODEL_KEY)
        if recorded is not None and (
            same_model(recorded, embedding_model)
            or same_model((raw.metadata or {}).get(EMBEDDING_BASE_KEY), embedding_model)
        ):
            # The configured model under the identity it was recorded with (a folder's name
            # alone, before fingerprints), or a model tuned from it: read with that model.
            embedding_model = str(recorded)
        check_embedding_model(name, recorded, embedding_model)
        return ChromaCollection(self._client, raw, embedding_model, self._max_batch)

    def _restore_replaced(self, name: str) -> Any:
        """The collection `name` put back from a replacement interrupted between its two
        renames (see `replace_collection`); None when there is none to put back. A replacement
        under way in another process leaves the name missing for the moment between its
        renames: it is waited for (`REPLACEMENT_GRACE_S`), not undone."""
        import chromadb.errors

        missing = (chromadb.errors.NotFoundError, ValueError)
        try:
            raw = self._client.get_collection(name + REPLACED_SUFFIX, embedding_function=None)
        except missing:
            return None
        time.sleep(REPLACEMENT_GRACE_S)
        with contextlib.suppress(*missing):
            return self._client.get_collection(name, embedding_function=None)  # it finished
        try:
            raw.modify(name=name)
            return self._client.get_collection(name, embedding_function=None)
        except missing:
            return None

    def create_staging(self, name: str, embedding_model: str, metadata: Metadata) -> Collection:
        """A new, empty collection `name` for a collection being rebuilt (any left from an
        interrupted rebuild is dropped first), with `metadata` beside the store's own keys."""
        import chromadb.errors

        with contextlib.suppress(chromadb.errors.NotFoundError, ValueError):
            self._client.delete_collection(name)
        raw = self._create_raw(
            name, embedding_model, {k: v for k, v in metadata.items() if k != REVISION_KEY}
        )
        return ChromaCollection(self._client, raw, embedding_model, self._max_batch)

    def _create_raw(self, name: str, embedding_model: str, metadata: Metadata) -> Any:
        """A new Chroma collection, indexed with `HNSW_CONFIGURATION`, with `metadata` beside
        the store's own keys."""
        return self._client.create_collection(
            name,
            embedding_function=None,
            configuration={"hnsw": dict(HNSW_CONFIGURATION)},
            metadata={**metadata, EMBEDDING_MODEL_KEY: embedding_model, "created_by": "ragtune"},
        )

    def delete_staging(self, staging: Collection) -> None:
        import chromadb.errors

        if not staging.replaced():
            with contextlib.suppress(chromadb.errors.NotFoundError, ValueError):
                self._client.delete_collection(staging.name)

    def replace_collection(self, name: str, staging: Collection) -> None:
        """Put the collection `staging` in the place of `name` (renamed; the old one is deleted
        once the new one holds the name)."""
        import chromadb.errors

        missing = (chromadb.errors.NotFoundError, ValueError)
        if not isinstance(staging, ChromaCollection) or staging.replaced():
            raise StagingDroppedError(
                f"the rebuilt copy of collection {name!r} ({staging.name}) was dropped by "
                "another rebuild of the same collection (two `ragtune tune embedder` runs on "
                "it at once); nothing was changed. Let the other run finish"
            )
        old = name + REPLACED_SUFFIX
        with contextlib.suppress(*missing):
            self._client.delete_collection(old)
        self._client.get_collection(name, embedding_function=None).modify(name=old)
        try:
            staging._raw.modify(name=name)
        except BaseException:
            self._client.get_collection(old, embedding_function=None).modify(name=name)
            raise
        try:
            self._client.delete_collection(old)
        except Exception as exc:  # the swap is done: the copy set aside goes with the next
            logger.warning(
                "collection %r was replaced, but its old copy %s could not be deleted (%s); "
                "it is deleted with the next rebuild or when the collection is deleted",
                name,
                old,
                exc,
            )

    def list_collections(self) -> list[CollectionInfo]:
        infos = []
        for raw in self._client.list_collections():
            if raw.name.endswith((REPLACED_SUFFIX, STAGING_SUFFIX)):
                continue  # a rebuild under way, or one interrupted (see `replace_collection`)
            meta: Mapping[str, Any] = raw.metadata or {}
            infos.append(
                CollectionInfo(raw.name, meta.get(EMBEDDING_MODEL_KEY), raw.count(), dict(meta))
            )
        return infos

    def delete_collection(self, name: str) -> None:
        import chromadb.errors

        self._client.delete_collection(name)
        # An old copy a replacement left set aside (interrupted before it deleted it) would
        # otherwise be put back under the name when it is next opened.
        with contextlib.suppress(chromadb.errors.NotFoundError, ValueError):
            self._client.delete_collection(name + REPLACED_SUFFIX)

    def close(self) -> None:
        if self._client is not None:
            # chromadb's HTTP client leaves its connection pool open when closed.
            for owner in (self._client, getattr(self._client, "_admin_client", None)):
                session = getattr(getattr(owner, "_server", None), "_session", None)
                if session is not None:
                    session.close()
            self._client.close()
            self._client = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def open_store(settings: RetrievalSettings, mode: Literal["read", "write"]) -> VectorStore:
    """The configured store; `mode` decides the lock taken on an embedded one."""
    return ChromaStore(settings, mode)
