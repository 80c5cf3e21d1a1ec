"""Uploaded files: stored under the server's own id, owned by the caller's tenant (another
tenant's file answers exactly as a missing one), within the upload size, the types `ragtune
ingest` reads and the tenant's quotas."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, TypeVar

from ragtune.ingest.loaders import SUFFIXES, supported_suffixes
from ragtune.serving.errors import (
    InvalidRequestError,
    QuotaExceededError,
    RequestTooLargeError,
    UploadedFileNotFoundError,
    shorten,
)
from ragtune.serving.files.catalog import (
    FILE_ID,
    FileCatalog,
    FileRecord,
    display_name,
    now,
    printable_name,
    stored_name,
)
from ragtune.serving.files.protocol import FileDeleted, FileList, FileObject
from ragtune.serving.settings import FileSettings
from ragtune.serving.tenants.principal import Principal
from ragtune.serving.vector_stores.jobs import IngestJobs

PURPOSES = ("assistants", "user_data")
"""The purposes of files that can be attached to a vector store."""
COPY_BLOCK = 1 << 20
T = TypeVar("T")
Order = Literal["asc", "desc"]


def page(
    items: Sequence[T], key: Callable[[T], str], limit: int, after: str | None, order: Order
) -> tuple[list[T], bool]:
    """One page of a list (oldest first as given): `limit` items after the one whose key is
    `after`, in `order`; and whether more follow."""
    ordered = list(items) if order == "asc" else list(reversed(items))
    if after is not None:
        keys = [key(item) for item in ordered]
        ordered = ordered[keys.index(after) + 1 :] if after in keys else []
    return ordered[:limit], len(ordered) > limit


def suffix_of(filename: str) -> str | None:
    """The suffix by which the loaders read a file of this name (None: a type they do not)."""
    lowered = filename.lower()
    return next((suffix for suffix in SUFFIXES if lowered.endswith(suffix)), None)


@dataclass(frozen=True)
class FileContent:
    """Where an uploaded file's bytes lie, to be sent back as they were uploaded."""

    path: Path
    filename: str
    """The name it was uploaded under (data: offered as the download's name, never a path)."""
    stat: os.stat_result
    """The bytes' size and time, read off the event loop."""


def file_object(record: FileRecord) -> FileObject:
    return FileObject(
        id=record.id,
        bytes=record.bytes,
        created_at=record.created_at,
        filename=record.filename,
        purpose=record.purpose,
    )


class FileService:
    """Upload, list, read and delete files, each the caller's tenant's own.

    Usage:
        files = FileService(catalog, settings.files, jobs)
        created = files.create(principal, "guide.md", "assistants", stream)   # blocking
        files.record(principal, created.id)    # UploadedFileNotFoundError unless it is theirs
    """

    def __init__(self, catalog: FileCatalog, settings: FileSettings, jobs: IngestJobs) -> None:
        self.catalog = catalog
        self.settings = settings
        self.jobs = jobs
        self._quota = threading.Lock()

    def create(
        self, principal: Principal, filename: str | None, purpose: str, data: BinaryIO
    ) -> FileObject:
        """Store an upload (blocking: the route runs it in a worker thread). 400 for a purpose
        or a type ragtune does not ingest, 413 over the size limit, 403 over a quota."""
        if purpose not in PURPOSES:
            raise InvalidRequestError(
                f"purpose {shorten(purpose, 32)!r} is not served here: use 'assistants' (files "
                "for vector stores and file_search)",
                param="purpose",
            )
        # The type is read from the whole name: one cut to MAX_FILENAME first could lose it.
        given = printable_name(filename or "")
        suffix = suffix_of(given)
        if suffix is None:
            extension = Path(given).suffix or "(no extension)"
            raise InvalidRequestError(
                f"unsupported file type {shorten(extension, 32)!r}: ragtune reads "
                f"{supported_suffixes()}",
                param="file",
            )
        files, _ = self.catalog.usage(principal.tenant)
        if files >= self.settings.tenant_max_files:
            raise QuotaExceededError(
                f"this tenant keeps {files} files, its quota (RAGTUNE_TENANT_MAX_FILES); delete "
                "some first"
            )
        name = display_name(given, suffix)
        record = FileRecord(
            id=f"file-{uuid.uuid4().hex[:24]}",
            tenant=principal.tenant,
            filename=name,
            stored_name=stored_name(name, suffix),
            bytes=0,
            purpose=purpose,
            created_at=now(),
        )
        path = self.catalog.path(record)
        path.parent.mkdir(parents=True)
        try:
            size = self._copy(data, path)
            with self._quota:
                files, used = self.catalog.usage(principal.tenant)
                if files >= self.settings.tenant_max_files:
                    raise QuotaExceededError(
                        f"this tenant keeps {files} files, its quota (RAGTUNE_TENANT_MAX_FILES); "
                        "delete some first"
                    )
                if used + size > self.settings.tenant_max_bytes:
                    raise QuotaExceededError(
                        f"this file ({size:,} bytes) would take the tenant past its quota of "
                        f"{self.settings.tenant_max_bytes:,} bytes (RAGTUNE_TENANT_MAX_BYTES; "
                        f"{used:,} used); delete files first"
                    )
                record = FileRecord(**{**record.__dict__, "bytes": size})
                self.catalog.add_file(record)
        except BaseException:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise
        return file_object(record)

    def _copy(self, data: BinaryIO, path: Path) -> int:
        limit = self.settings.max_upload_bytes
        size = 0
        with path.open("xb") as out:
            while block := data.read(COPY_BLOCK):
                size += len(block)
                if size > limit:
                    raise RequestTooLargeError(
                        f"the file is over the {limit:,}-byte upload limit "
                        "(RAGTUNE_MAX_UPLOAD_BYTES)"
                    )
                out.write(block)
        return size

    def record(self, principal: Principal, file_id: str) -> FileRecord:
        """The caller's file (an admin key's: any tenant's, so an operator can remove what a
        revoked key left); UploadedFileNotFoundError for a missing one or another tenant's,
        alike."""
        record = self.catalog.file(file_id) if FILE_ID.match(file_id) else None
        if record is None or (record.tenant != principal.tenant and not principal.admin):
            raise UploadedFileNotFoundError(f"no file with id {shorten(file_id)!r}")
        return record

    def get(self, principal: Principal, file_id: str) -> FileObject:
        return file_object(self.record(principal, file_id))

    def content(self, principal: Principal, file_id: str) -> FileContent:
        """The caller's file's bytes (blocking: a stat), found as `record` finds the file: a
        missing one and another tenant's alike are UploadedFileNotFoundError (so is one deleted
        meanwhile)."""
        record = self.record(principal, file_id)
        path = self.catalog.path(record)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise UploadedFileNotFoundError(f"no file with id {shorten(file_id)!r}") from None
        return FileContent(path, record.filename, stat)

    def list(
        self,
        principal: Principal,
        *,
        limit: int = 10_000,
        after: str | None = None,
        order: Order = "desc",
        purpose: str | None = None,
    ) -> FileList:
        records = [
            r
            for r in self.catalog.files(principal.tenant)
            if purpose is None or r.purpose == purpose
        ]
        chosen, more = page(records, lambda r: r.id, limit, after, order)
        data = [file_object(r) for r in chosen]
        return FileList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
        )

    def delete(self, principal: Principal, file_id: str) -> FileDeleted:
        """Delete the file, detached first from every vector store (its chunks removed)."""
        record = self.record(principal, file_id)
        for attachment in self.catalog.attachments(file_id=record.id):
            self.jobs.remove(attachment)
        self.catalog.remove_file(record.id)
        shutil.rmtree(self.catalog.path(record).parent, ignore_errors=True)
        return FileDeleted(id=record.id)
