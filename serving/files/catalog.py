"""The records of documents over HTTP, persisted under `<data_dir>/files/`: uploaded files
(their bytes in one folder each, beside a SQLite table), the vector stores seen, and each file
attached to a store with its ingestion's status and progress (the job's record).

File names are data: a file's bytes are stored under the server's own id and a sanitised name;
the name the client gave is kept only as a column."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

AttachmentStatus = Literal["in_progress", "completed", "failed", "cancelled"]
ErrorCode = Literal["server_error", "unsupported_file", "invalid_file"]

FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_FILENAME = 255

_SCHEMA = """
create table if not exists files (
    id text primary key,
    tenant text not null,
    filename text not null,
    stored_name text not null,
    bytes integer not null,
    purpose text not null,
    created_at integer not null
);
create index if not exists files_by_tenant on files (tenant, created_at);
create table if not exists vector_stores (
    name text primary key,
    created_at integer not null,
    last_active_at integer not null
);
create table if not exists attachments (
    vector_store text not null,
    file_id text not null,
    tenant text not null,
    status text not null,
    created_at integer not null,
    chunks_done integer not null default 0,
    chunks_total integer not null default 0,
    error_code text,
    error_message text,
    doc_id text not null,
    usage_bytes integer not null default 0,
    primary key (vector_store, file_id)
);
create index if not exists attachments_by_status on attachments (status);
create table if not exists file_batches (
    id text primary key,
    vector_store text not null,
    tenant text not null,
    created_at integer not null,
    cancelled integer not null default 0
);
create table if not exists batch_files (
    batch_id text not null,
    file_id text not null,
    primary key (batch_id, file_id)
);
"""


def now() -> int:
    return int(time.time())


def printable_name(filename: str) -> str:
    """The name a client gave without control characters or surrounding blanks, whole: the
    name its type is read from."""
    return "".join(ch for ch in filename if ch.isprintable()).strip()


def display_name(filename: str, suffix: str) -> str:
    """The name a client gave, as it is kept and shown: no control characters, at most
    MAX_FILENAME characters; slashes and all else as given (data, never a path). A longer name
    loses the end of its stem, never `suffix` (the type its file is read by, as the name
    ends), so the name shown still says what the file is. A `suffix` too long to leave room
    for a stem is cut like the rest."""
    name = printable_name(filename)
    if len(name) <= MAX_FILENAME:
        return name or "upload"
    ends_in_suffix = bool(suffix) and name.lower().endswith(suffix.lower())
    kept = name[-len(suffix) :] if ends_in_suffix and len(suffix) < MAX_FILENAME // 2 else ""
    return name[: MAX_FILENAME - len(kept)] + kept


def stored_name(filename: str, suffix: str) -> str:
    """The name a file's bytes are stored under: letters, digits, `._-` only, no leading dot,
    ending in `suffix` (the type the loaders read it by)."""
    stem = display_name(filename, suffix)
    if stem.lower().endswith(suffix):
        stem = stem[: -len(suffix)]
    stem = _UNSAFE.sub("_", stem).strip("._-")[:100] or "upload"
    return stem + suffix


@dataclass(frozen=True)
class FileRecord:
    """One uploaded file: who owns it, the name it was given, where its bytes are."""

    id: str
    tenant: str
    filename: str
    stored_name: str
    bytes: int
    purpose: str
    created_at: int


@dataclass(frozen=True)
class FileBatch:
    """Files attached to a store in one request (OpenAI's file batch): what they are is read
    from their attachments."""

    id: str
    vector_store: str
    tenant: str
    created_at: int
    cancelled: bool
    file_ids: tuple[str, ...]


@dataclass(frozen=True)
class Attachment:
    """A file attached to a vector store: the job that ingests it, and what came of it."""

    vector_store: str
    file_id: str
    tenant: str
    status: AttachmentStatus
    created_at: int
    doc_id: str
    """The document's id in the collection (`ingest.pipeline.document_id` of its path)."""
    chunks_done: int = 0
    chunks_total: int = 0
    error_code: ErrorCode | None = None
    error_message: str | None = None
    usage_bytes: int = 0


class FileCatalog:
    """The SQLite table of files, vector stores and attachments, safe to use from several
    threads (the routes and the ingestion workers).

    Usage:
        catalog = FileCatalog(data_dir / "files")
        catalog.add_file(record); catalog.file(record.id)
        catalog.attach(attachment); catalog.update(store, file_id, status="completed")
    """

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()  # a document's id comes from its absolute path
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "catalog.sqlite3", check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("pragma journal_mode=wal")
            self._db.executescript(_SCHEMA)
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._db.cursor()
            try:
                yield cursor
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
            finally:
                cursor.close()

    def path(self, record: FileRecord) -> Path:
        """Where the file's bytes lie: under its id (generated here), never under its name."""
        return self.root / record.id / record.stored_name

    # Files

    def add_file(self, record: FileRecord) -> None:
        with self._cursor() as cur:
            cur.execute(
                "insert into files values (?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.tenant, record.filename, record.stored_name, record.bytes,
                 record.purpose, record.created_at),
            )  # fmt: skip

    def file(self, file_id: str) -> FileRecord | None:
        with self._cursor() as cur:
            row = cur.execute("select * from files where id = ?", (file_id,)).fetchone()
        return FileRecord(**dict(row)) if row else None

    def files(self, tenant: str) -> list[FileRecord]:
        """The tenant's files, oldest first."""
        with self._cursor() as cur:
            rows = cur.execute(
                "select * from files where tenant = ? order by created_at, rowid", (tenant,)
            ).fetchall()
        return [FileRecord(**dict(row)) for row in rows]

    def usage(self, tenant: str) -> tuple[int, int]:
        """(files, bytes) the tenant keeps."""
        with self._cursor() as cur:
            row = cur.execute(
                "select count(*), coalesce(sum(bytes), 0) from files where tenant = ?", (tenant,)
            ).fetchone()
        return int(row[0]), int(row[1])

    def remove_file(self, file_id: str) -> None:
        with self._cursor() as cur:
            cur.execute("delete from files where id = ?", (file_id,))

    # Vector stores

    def touch_store(self, name: str) -> int:
        """The store's creation time, recorded now when it is first seen."""
        stamp = now()
        with self._cursor() as cur:
            cur.execute(
                "insert or ignore into vector_stores values (?, ?, ?)", (name, stamp, stamp)
            )
            row = cur.execute(
                "select created_at from vector_stores where name = ?", (name,)
            ).fetchone()
        return int(row[0])

    def forget_store(self, name: str) -> None:
        with self._cursor() as cur:
            cur.execute("delete from vector_stores where name = ?", (name,))
            cur.execute("delete from attachments where vector_store = ?", (name,))
            cur.execute(
                "delete from batch_files where batch_id in "
                "(select id from file_batches where vector_store = ?)",
                (name,),
            )
            cur.execute("delete from file_batches where vector_store = ?", (name,))

    # File batches

    def add_batch(self, batch: FileBatch) -> None:
        with self._cursor() as cur:
            cur.execute(
                "insert into file_batches values (?, ?, ?, ?, ?)",
                (batch.id, batch.vector_store, batch.tenant, batch.created_at,
                 int(batch.cancelled)),
            )  # fmt: skip
            cur.executemany(
                "insert or ignore into batch_files values (?, ?)",
                [(batch.id, file_id) for file_id in batch.file_ids],
            )

    def batch(self, batch_id: str) -> FileBatch | None:
        with self._cursor() as cur:
            row = cur.execute("select * from file_batches where id = ?", (batch_id,)).fetchone()
            if row is None:
                return None
            files = cur.execute(
                "select file_id from batch_files where batch_id = ? order by rowid", (batch_id,)
            ).fetchall()
        return FileBatch(
            id=row["id"],
            vector_store=row["vector_store"],
            tenant=row["tenant"],
            created_at=row["created_at"],
            cancelled=bool(row["cancelled"]),
            file_ids=tuple(f[0] for f in files),
        )

    def cancel_batch(self, batch_id: str) -> None:
        with self._cursor() as cur:
            cur.execute("update file_batches set cancelled = 1 where id = ?", (batch_id,))

    # Attachments (the ingestion jobs)

    def attach(self, attachment: Attachment) -> None:
        """Record (or record again: a file attached anew) a file's attachment to a store."""
        values = {f.name: getattr(attachment, f.name) for f in fields(Attachment)}
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._cursor() as cur:
            cur.execute(
                f"insert or replace into attachments ({columns}) values ({marks})",
                tuple(values.values()),
            )

    def attachment(self, vector_store: str, file_id: str) -> Attachment | None:
        with self._cursor() as cur:
            row = cur.execute(
                "select * from attachments where vector_store = ? and file_id = ?",
                (vector_store, file_id),
            ).fetchone()
        return Attachment(**dict(row)) if row else None

    def attachments(
        self,
        *,
        vector_store: str | None = None,
        file_id: str | None = None,
        tenant: str | None = None,
        status: AttachmentStatus | None = None,
    ) -> list[Attachment]:
        """The attachments matching every filter given, oldest first."""
        given = {
            "vector_store": vector_store,
            "file_id": file_id,
            "tenant": tenant,
            "status": status,
        }
        where = [(f"{column} = ?", value) for column, value in given.items() if value is not None]
        sql = "select * from attachments"
        if where:
            sql += " where " + " and ".join(clause for clause, _ in where)
        with self._cursor() as cur:
            rows = cur.execute(
                sql + " order by created_at, rowid", tuple(v for _, v in where)
            ).fetchall()
        return [Attachment(**dict(row)) for row in rows]

    def update(self, vector_store: str, file_id: str, **values: Any) -> None:
        """Set columns of one attachment (status, progress, error)."""
        allowed = {f.name for f in fields(Attachment)} - {"vector_store", "file_id"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"not attachment columns: {sorted(unknown)}")
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self._cursor() as cur:
            cur.execute(
                f"update attachments set {assignments} where vector_store = ? and file_id = ?",
                (*values.values(), vector_store, file_id),
            )
            cur.execute(
                "update vector_stores set last_active_at = ? where name = ?",
                (now(), vector_store),
            )

    def detach(self, vector_store: str, file_id: str) -> None:
        with self._cursor() as cur:
            cur.execute(
                "delete from attachments where vector_store = ? and file_id = ?",
                (vector_store, file_id),
            )
