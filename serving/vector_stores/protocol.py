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
