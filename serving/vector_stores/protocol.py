"""Wire types of `/v1/vector_stores` and its `files` (OpenAI's shapes), plus `ragtune`: a
store's chunk count, a file's ingestion progress."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragtune.serving.files.catalog import AttachmentStatus, ErrorCode


class CreateVectorStoreRequest(BaseModel):
    """`name` is the ragtune collection (created when missing; a new `vs_...` name when none
    is given). `file_ids` are attached (ingested) at once. Other OpenAI fields are accepted
    and ignored."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    file_ids: list[str] = Field(default_factory=list, max_length=100)
    metadata: dict[str, str] | None = None


class AttachFileRequest(BaseModel):
    """The uploaded file to ingest into the store. `attributes` and `chunking_strategy` are
    accepted and ignored: chunks are cut as `ragtune ingest` cuts them."""

    model_config = ConfigDict(extra="allow")
    file_id: str
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class FileCounts(BaseModel):
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class VectorStoreInfo(BaseModel):
    collection: str
    chunks: int


class VectorStoreObject(BaseModel):
    id: str
    """The collection's name."""
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str
    usage_bytes: int
    file_counts: FileCounts
    status: Literal["expired", "in_progress", "completed"]
    last_active_at: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    expires_after: dict[str, Any] | None = None
    expires_at: int | None = None
    ragtune: VectorStoreInfo


class VectorStoreList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VectorStoreObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VectorStoreDeleted(BaseModel):
    id: str
    object: Literal["vector_store.deleted"] = "vector_store.deleted"
    deleted: bool = True


class LastError(BaseModel):
    code: ErrorCode
    message: str
    """The same reason `ragtune ingest` gives for the file."""


class IngestProgress(BaseModel):
    filename: str
    chunks_done: int
    chunks_total: int
    """0 until the file is read and cut into chunks."""


class VectorStoreFileObject(BaseModel):
    id: str
    """The file's id."""
    object: Literal["vector_store.file"] = "vector_store.file"
    created_at: int
    usage_bytes: int
    vector_store_id: str
    status: AttachmentStatus
    last_error: LastError | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    ragtune: IngestProgress


class VectorStoreFileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VectorStoreFileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VectorStoreFileDeleted(BaseModel):
    id: str
    object: Literal["vector_store.file.deleted"] = "vector_store.file.deleted"
    deleted: bool = True


class BatchFile(BaseModel):
    """One file of a batch given with its own options (ignored, as for one file)."""

    model_config = ConfigDict(extra="allow")
    file_id: str


class CreateFileBatchRequest(BaseModel):
    """Files to attach to the store at once: `file_ids`, or `files` with a `file_id` each (not
    both). `attributes` and `chunking_strategy` are accepted and ignored: chunks are cut as
    `ragtune ingest` cuts them."""

    model_config = ConfigDict(extra="allow")
    file_ids: list[str] | None = Field(default=None, max_length=2000)
    files: list[BatchFile] | None = Field(default=None, max_length=2000)
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None

    def ids(self) -> list[str]:
        """The files named, each once, in order. ValueError saying what is wrong with them."""
        if (self.file_ids is None) == (self.files is None):
            raise ValueError("give the files in file_ids or in files (one of them)")
        named = self.file_ids
        if named is None:
            named = [given.file_id for given in self.files or []]
        if not named:
            raise ValueError("a batch needs at least one file")
        return list(dict.fromkeys(named))


class VectorStoreFileBatchObject(BaseModel):
    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    """in_progress while any of its files is; then cancelled (when it was), failed (when
    every file failed) or completed."""
    file_counts: FileCounts
