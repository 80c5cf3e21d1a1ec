"""The ingestion run: discover files, skip what is unchanged, embed only new chunks, sync.

Identity and change detection:
- a document's id comes from its absolute path; its hash covers the file's bytes, the chunker's
  settings and the `--meta` pairs, so an unchanged file is skipped before it is even parsed;
- a chunk's id comes from its document and the exact text it is embedded with, so a chunk that
  survives an edit keeps its id and its embedding (only its metadata is rewritten).

Writes go new-before-old: a changed document's new chunks are stored before its stale ones are
deleted, so readers always find one version or the other. A run stopped at any point leaves
each document in a state the next run recognises as incomplete and finishes, without
duplicates (ids are deterministic).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from ragtune.ingest.chunking import Chunk, Chunker
from ragtune.ingest.documents import absolute
from ragtune.ingest.errors import DocumentLoadError, InvalidMetadataError
from ragtune.ingest.loaders import file_type_of, load_document, loader_version
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.embedder import Embedder
from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.store import (
    STORE_KEY_PREFIXES,
    ChunkRecord,
    Collection,
    Metadata,
    MetadataValue,
)

# Metadata keys ragtune writes on every chunk; `--meta` may not use them.
RESERVED_KEYS = frozenset(
    {
        "source",
        "display_source",
        "doc_id",
        "title",
        "section",
        "heading",
        "chunk_index",
        "n_chunks",
        "doc_hash",
        "chunk_hash",
        "file_type",
        "page",
        "embedding_model",
        "ingested_at",
        "meta_keys",
    }
)


class FileStatus(StrEnum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    REMOVED = "removed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class FileResult:
    source: str
    status: FileStatus
    chunks: int = 0
    embedded: int = 0
    reason: str | None = None


@dataclass
class IngestSummary:
    collection: str
    dry_run: bool
    files: list[FileResult] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_reused: int = 0
    chunks_deleted: int = 0
    seconds: float = 0.0

    def count(self, status: FileStatus) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == FileStatus.FAILED]

    @property
    def read(self) -> int:
        """How many files were read: neither failed nor skipped as a type ragtune does not read."""
        return len(self.files) - self.count(FileStatus.FAILED) - self.count(FileStatus.SKIPPED)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["counts"] = {status.value: self.count(status) for status in FileStatus}
        return data


class IngestProgress(Protocol):
    """Told how the run advances (the CLI draws a progress bar from it)."""

    def start(self, total_files: int) -> None: ...

    def file_done(self, result: FileResult) -> None: ...

    def embedded(self, chunks: int) -> None: ...


class _Silent:
    def start(self, total_files: int) -> None:
        pass

    def file_done(self, result: FileResult) -> None:
        pass

    def embedded(self, chunks: int) -> None:
        pass


def parse_meta(pairs: Iterable[str]) -> dict[str, str]:
    """`key=value` strings -> a dict; refuses malformed pairs and reserved keys."""
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidMetadataError(f"--meta expects key=value, got {pair!r}")
        if key in RESERVED_KEYS:
            raise InvalidMetadataError(
                f"--meta key {key!r} is reserved by ragtune; choose another name "
                f"(reserved: {', '.join(sorted(RESERVED_KEYS))})"
            )
        kept = [prefix for prefix in STORE_KEY_PREFIXES if key.startswith(prefix)]
        if kept:
            raise InvalidMetadataError(
                f"--meta key {key!r} starts with {kept[0]!r}, which the vector store keeps for "
                "its own keys; choose another name"
            )
        meta[key] = value
    return meta


def document_id(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:20]


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


@dataclass
class _StoredDocument:
    source: str
    chunk_ids: set[str] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)
    n_chunks: set[int] = field(default_factory=set)

    def is_complete(self, doc_hash: str) -> bool:
        """Exactly one whole version, and it is `doc_hash`."""
        return self.hashes == {doc_hash} and self.n_chunks == {len(self.chunk_ids)}


@dataclass
class _Pending:
    """A parsed document waiting for its new chunks' embeddings."""

    result: FileResult
    doc_id: str
    records: list[tuple[str, Chunk, Metadata]]
    new_ids: set[str]
    stale_ids: set[str]


def scan_documents(collection: Collection) -> dict[str, _StoredDocument]:
    documents: dict[str, _StoredDocument] = {}
    for chunk in collection.scan():
        meta = chunk.metadata
        doc_id = str(meta.get("doc_id", ""))
        doc = documents.setdefault(doc_id, _StoredDocument(str(meta.get("source", ""))))
        doc.chunk_ids.add(chunk.id)
        doc.hashes.add(str(meta.get("doc_hash", "")))
        n = meta.get("n_chunks")
        doc.n_chunks.add(int(n) if isinstance(n, int | float) else -1)
    return documents


@dataclass(frozen=True)
class FoundFile:
    path: Path
    explicit: bool
    """Named on the command line (an unsupported type is then a failure, not a skip)."""
    display: str
    """What readers of answers are shown instead of the server's path: the path below the
    folder that was ingested, that folder's name first (`docs/guide/setup.md`), or the file's
    name when the file itself was named."""


def _shown(path: Path) -> str:
    """The path as text, a byte of a name that is not valid UTF-8 written as "\\xff"."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _unreadable_name(path: Path) -> FileResult | None:
    """A failure for a path whose name is not valid UTF-8 (a file copied from another system):
    it cannot be stored as a document's source."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        reason = "its name is not valid UTF-8; rename the file"
        return FileResult(_shown(path), FileStatus.FAILED, reason=reason)
    return None


def discover(paths: Sequence[Path]) -> tuple[list[FoundFile], list[FileResult]]:
    """Files under `paths` (recursively); missing paths fail, as do files whose names are not
    valid UTF-8."""
    files: list[FoundFile] = []
    problems: list[FileResult] = []
    seen: set[Path] = set()

    def found(path: Path, explicit: bool, display: str) -> None:
        if path in seen:
            return
        seen.add(path)
        unreadable = _unreadable_name(path)
        if unreadable is not None:
            problems.append(unreadable)
        else:
            files.append(FoundFile(path, explicit, display))

    for given in paths:
        path = absolute(given)
        if path.is_file():
            found(path, True, path.name)
        elif path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    child = Path(root) / name
                    if not name.startswith("."):
                        display = (Path(path.name) / child.relative_to(path)).as_posix()
                        found(child, False, display)
        else:
            problems.append(
                FileResult(_shown(path), FileStatus.FAILED, reason="no such file or directory")
            )
    return files, problems


class IngestService:
    """Runs ingestion into one collection; the CLI and (later) the API call it."""

    def __init__(
        self,
        settings: IngestSettings,
        collection: Collection,
        embedder: Callable[[], Embedder],
        lexical: LexicalIndexes | None = None,
        writing: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.settings = settings
        self.collection = collection
        self.lexical = lexical
        self.writing = writing
        """Entered around each write of chunks, once they are embedded: where the server holds
        its collection's lock (never while it embeds), and may stop the run by raising."""
        self._embedder_factory = embedder
        self._embedder: Embedder | None = None
        self._chunker: Chunker | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._embedder_factory()
        return self._embedder

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            self._chunker = Chunker(
                self.embedder,
                self.settings.chunk_max_tokens,
                self.settings.chunk_overlap_tokens,
                self.settings.embed_headings,
                self.settings.split_on_blank_lines,
            )
        return self._chunker

    def chunker_signature(self) -> str:
        # Known without loading the model: the configured sizes and the model's identity.
        s = self.settings
        return (
            f"chunker-v10:max={s.chunk_max_tokens}:overlap={s.chunk_overlap_tokens}:"
            f"headings={s.embed_headings}:blank-lines={s.split_on_blank_lines}:"
            f"model={self.collection.embedding_model}"
        )

    def run(
        self,
        paths: Sequence[Path],
        meta: Mapping[str, str] | None = None,
        sync: bool = False,
        dry_run: bool = False,
        progress: IngestProgress | None = None,
    ) -> IngestSummary:
        files, missing = discover(paths)
        # A named path that is gone is a failure, with or without --sync: its documents are kept
        # (a typo or a share not mounted would otherwise remove every document under it).
        roots = [root for root in map(absolute, paths) if root.exists()]
        return self._run(files, missing, roots, meta, sync, dry_run, progress)

    def run_file(
        self,
        path: Path,
        display: str,
        meta: Mapping[str, str] | None = None,
        progress: IngestProgress | None = None,
    ) -> IngestSummary:
        """Ingest one named file (an unsupported type fails), its readers shown `display`
        instead of its path: what the HTTP API runs for a file attached to a vector store, with
        the loaders, chunking and bookkeeping of `run`."""
        # As given: the caller finds the document by an id it makes of this same path.
        found = FoundFile(path.expanduser().absolute(), True, display)
        return self._run([found], [], [], meta, False, False, progress)

    def _run(
        self,
        files: Sequence[FoundFile],
        missing: list[FileResult],
        roots: Sequence[Path],
        meta: Mapping[str, str] | None,
        sync: bool,
        dry_run: bool,
        progress: IngestProgress | None,
    ) -> IngestSummary:
        started = time.perf_counter()
        progress = progress or _Silent()
        meta = dict(meta or {})
        summary = IngestSummary(self.collection.name, dry_run)
        stored = scan_documents(self.collection)
        progress.start(len(files) + len(missing))

        if sync:
            missing = [self._kept_under(m, stored) for m in missing]
        for result in missing:
            summary.files.append(result)
            progress.file_done(result)

        window: list[_Pending] = []
        window_chunks = 0
        for found in files:
            result, pending = self._prepare(found, meta, stored)
            if pending is None:
                summary.files.append(result)
                progress.file_done(result)
                continue
            window.append(pending)
            window_chunks += len(pending.new_ids)
            if window_chunks >= self.settings.embed_window:
                self._flush(window, summary, dry_run, progress)
                window, window_chunks = [], 0
        self._flush(window, summary, dry_run, progress)

        if sync:
            present = {str(found.path) for found in files}
            for doc_id, doc in sorted(stored.items(), key=lambda item: item[1].source):
                if doc.source in present or not _under_any(absolute(doc.source), roots):
                    continue
                if Path(doc.source).exists():
                    continue  # still there (perhaps skipped): --sync removes only what is gone
                if not dry_run:
                    self.collection.delete(sorted(doc.chunk_ids))
                summary.chunks_deleted += len(doc.chunk_ids)
                result = FileResult(doc.source, FileStatus.REMOVED, chunks=len(doc.chunk_ids))
                summary.files.append(result)
                del stored[doc_id]
        if self.lexical is not None and not dry_run:
            # Keep BM25 in step with what was just written (and repair a stale index).
            self.lexical.current(self.collection, save=True)
        summary.seconds = time.perf_counter() - started
        return summary

    @staticmethod
    def _kept_under(missing: FileResult, stored: Mapping[str, _StoredDocument]) -> FileResult:
        """A named path that is gone, under --sync: its stored documents are kept, and the
        failure says so and how to remove them."""
        kept = sum(
            _under_any(absolute(doc.source), [Path(missing.source)]) for doc in stored.values()
        )
        if not kept:
            return missing
        reason = (
            f"{missing.reason}; its {kept} stored document{'s' if kept > 1 else ''} "
            "kept (--sync removes the documents of files deleted under a path that is there; "
            f"to remove these: ragtune docs rm {shlex.quote(missing.source)})"
        )
        return FileResult(missing.source, missing.status, reason=reason)

    def _prepare(
        self,
        found: FoundFile,
        meta: Mapping[str, str],
        stored: Mapping[str, _StoredDocument],
    ) -> tuple[FileResult, _Pending | None]:
        path, explicit = found.path, found.explicit
        source = str(path)
        if file_type_of(path) is None:
            reason = f"unsupported file type {path.suffix or '(no extension)'!r}"
            status = FileStatus.FAILED if explicit else FileStatus.SKIPPED
            return FileResult(source, status, reason=reason), None
        try:
            size = path.stat().st_size
            if size > self.settings.max_file_bytes:
                return FileResult(
                    source,
                    FileStatus.FAILED,
                    reason=f"file is {size:,} bytes, over the {self.settings.max_file_bytes:,}"
                    "-byte limit (RAGTUNE_MAX_FILE_BYTES)",
                ), None
            data = path.read_bytes()
        except OSError as exc:
            return FileResult(source, FileStatus.FAILED, reason=f"cannot read: {exc}"), None

        doc_id = document_id(source)
        meta_json = json.dumps(meta, sort_keys=True).encode()
        # The loader's version too: a file read differently by a newer loader is re-chunked.
        version = loader_version(path)
        signature = self.chunker_signature() + (f":loader={version}" if version > 1 else "")
        doc_hash = _sha256(data, signature.encode(), meta_json)
        previous = stored.get(doc_id)
        if previous is not None and previous.is_complete(doc_hash):
            return FileResult(source, FileStatus.UNCHANGED, chunks=len(previous.chunk_ids)), None
        status = FileStatus.NEW if previous is None else FileStatus.CHANGED
        try:
            document = load_document(path, data)
        except DocumentLoadError as exc:
            # What is stored of this file stays as it was: a bad version never erases a good one.
            return FileResult(source, FileStatus.FAILED, reason=str(exc)), None
        try:
            chunks = self.chunker.chunk(document)
        except RetrievalError:
            raise  # the embedding model's or the store's: every file would fail alike
        except Exception as exc:  # this file's, not the run's: the other files go on
            reason = f"could not be cut into chunks ({type(exc).__name__}: {str(exc)[:200]})"
            return FileResult(source, FileStatus.FAILED, reason=reason), None
        ingested_at = datetime.now(UTC).isoformat(timespec="seconds")
        records: list[tuple[str, Chunk, Metadata]] = []
        seen: dict[str, int] = defaultdict(int)
        for chunk in chunks:
            chunk_hash = _sha256(chunk.embed_text.encode())
            seen[chunk_hash] += 1
            chunk_id = f"{doc_id}-{chunk_hash[:16]}"
            if seen[chunk_hash] > 1:
                chunk_id += f"-{seen[chunk_hash]}"
            metadata: dict[str, MetadataValue] = {
                "source": source,
                "display_source": found.display,
                "doc_id": doc_id,
                "title": document.title,
                "section": chunk.section,
                "heading": chunk.heading,
                "chunk_index": chunk.index,
                "n_chunks": len(chunks),
                "doc_hash": doc_hash,
                "chunk_hash": chunk_hash,
                "file_type": document.file_type,
                "embedding_model": self.collection.embedding_model,
                "ingested_at": ingested_at,
                "meta_keys": ",".join(sorted(meta)),
            }
            if chunk.page is not None:
                metadata["page"] = chunk.page
            metadata.update(meta)
            records.append((chunk_id, chunk, metadata))
        known = previous.chunk_ids if previous else set()
        ids = {chunk_id for chunk_id, _, _ in records}
        result = FileResult(source, status, chunks=len(records))
        return result, _Pending(result, doc_id, records, ids - known, known - ids)

    def _flush(
        self,
        window: list[_Pending],
        summary: IngestSummary,
        dry_run: bool,
        progress: IngestProgress,
    ) -> None:
        if not window:
            return
        to_embed = [
            (chunk_id, chunk)
            for p in window
            for chunk_id, chunk, _ in p.records
            if chunk_id in p.new_ids
        ]
        vectors: dict[str, list[float]] = {}
        if to_embed and not dry_run:
            embedded = self.embedder.embed([chunk.embed_text for _, chunk in to_embed])
            vectors = dict(zip((chunk_id for chunk_id, _ in to_embed), embedded, strict=True))
            progress.embedded(len(to_embed))
        new_records: list[ChunkRecord] = []
        kept_ids: list[str] = []
        kept_meta: list[Metadata] = []
        stale: list[str] = []
        for pending in window:
            for chunk_id, chunk, metadata in pending.records:
                if chunk_id in pending.new_ids:
                    if not dry_run:
                        new_records.append(
                            ChunkRecord(chunk_id, chunk.text, metadata, vectors[chunk_id])
                        )
                else:
                    kept_ids.append(chunk_id)
                    kept_meta.append(metadata)
            stale.extend(sorted(pending.stale_ids))
            pending.result.embedded = len(pending.new_ids)
            summary.chunks_embedded += len(pending.new_ids)
            summary.chunks_reused += len(pending.records) - len(pending.new_ids)
            summary.chunks_deleted += len(pending.stale_ids)
        if not dry_run:
            with self.writing():
                # New before old: a changed document is never absent from the store.
                self.collection.add(new_records)
                self.collection.update_metadata(kept_ids, kept_meta)
                self.collection.delete(stale)
        for pending in window:
            summary.files.append(pending.result)
            progress.file_done(pending.result)


def _under_any(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)
