"""Wire types of `/v1/vector_stores` and its `files` (OpenAI's shapes), plus `ragtune`: a
store's chunk count, a file's ingestion progress."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from ragtune.serving.errors import shorten
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


MAX_SEARCH_QUERY_CHARS = 4000
"""Longest query text a search takes (each of a list's)."""


UNSERVED_FILTERS = (
    "filters: ragtune filters by metadata equality only: "
    '{"type": "eq", "key": ..., "value": ...}, or several joined by '
    '{"type": "and", "filters": [...]}'
)
"""What a search answers to filters it does not serve, malformed ones included."""


MAX_SEARCH_RESULTS = 50
"""The most results a vector store search returns (OpenAI's bound)."""


class RankingOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    ranker: str | None = None
    """Accepted and ignored: the collection's own retrieval (hybrid search, its fusion and any
    reranking stage) ranks."""
    score_threshold: float | None = Field(default=None, ge=0, le=1)
    """Results below this `score` (the passage's similarity to the query) are left out."""

    @model_validator(mode="after")
    def _served(self) -> RankingOptions:
        # What a search cannot honour is refused, never searched without (OpenAI's
        # `hybrid_search` weights, say): the collection's own retrieval ranks.
        unknown = next(iter(self.model_extra or {}), None)
        if unknown is not None:
            raise ValueError(
                f"{shorten(unknown, 32)} is not supported: ragtune ranks with the collection's "
                "own retrieval (hybrid search, its fusion, any reranking stage); give "
                "score_threshold only"
            )
        return self


OBJECT_OR_NULL = {"anyOf": [{"type": "object"}, {"type": "null"}]}
"""The schema `filters` is documented with: what a client should send, not all it may."""


class VectorStoreSearchRequest(BaseModel):
    """OpenAI's vector store search: the store's collection searched as chat's retrieval
    searches it. `filters`: metadata equality (`{"type": "eq", "key": K, "value": V}`, or
    several joined by `{"type": "and", "filters": [...]}`, a list of one or more);
    `rewrite_query` is accepted and ignored (no model rewrites the query)."""

    model_config = ConfigDict(extra="allow")
    query: str | list[str]
    max_num_results: int = Field(default=10, ge=1, le=MAX_SEARCH_RESULTS)
    filters: Annotated[Any, WithJsonSchema(OBJECT_OR_NULL)] = None
    """An object (see above) or null. Typed loosely so that any other value is refused with
    the filters' own 400, as a malformed filter object is, not a schema error."""
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False

    def queries(self) -> list[str]:
        """The query texts, each once. ValueError saying what is wrong with them."""
        given = [self.query] if isinstance(self.query, str) else self.query
        texts = list(dict.fromkeys(q for q in given if q.strip()))
        if not texts or len(texts) > 10:
            raise ValueError("query: give one text, or a list of 1 to 10 texts, not empty")
        if any(len(q) > MAX_SEARCH_QUERY_CHARS for q in texts):
            raise ValueError(f"query: at most {MAX_SEARCH_QUERY_CHARS} characters per text")
        return texts

    def metadata_filters(self) -> dict[str, str]:
        """`filters` as ragtune's metadata filters (`metadata_filters`)."""
        return metadata_filters(self.filters)


def metadata_filters(filters: object) -> dict[str, str]:
    """OpenAI's attribute filters (of a vector store search, or of a `file_search` tool) as
    ragtune's metadata filters (key -> value); None: none. ValueError for any other kind of
    filter, for an `and` that joins no list of them (an empty or malformed one read as no
    filter would search the whole store where the client meant to narrow it), and for one that
    gives a key two values."""
    if filters is None:
        return {}
    conditions: object = [filters]
    if isinstance(filters, dict) and filters.get("type") == "and":
        conditions = filters.get("filters")
    if not isinstance(conditions, list) or not conditions:
        raise ValueError(UNSERVED_FILTERS)
    found: dict[str, str] = {}
    for condition in conditions:
        if (
            not isinstance(condition, dict)
            or condition.get("type") != "eq"
            or not isinstance(condition.get("key"), str)
            or not isinstance(condition.get("value"), str | int | float | bool)
        ):
            raise ValueError(UNSERVED_FILTERS)
        key, value = condition["key"], _filter_value(condition["value"])
        if found.setdefault(key, value) != value:
            # Read as the last of them, it would search where the client did not ask.
            raise ValueError(
                f"filters: {shorten(key, 32)!r} is given two values joined by 'and', which no "
                "passage has: give one"
            )
    return found


def _filter_value(value: str | float | bool) -> str:
    """A filter's value as the metadata it is matched against holds it (`--meta KEY=VALUE`,
    text): a boolean as JSON writes it, `true` (Python writes True, which `--meta draft=true`
    never matched); a number as written (2024, 2.0: a version "2.0" is not "2")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SearchContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class VectorStoreSearchResult(BaseModel):
    file_id: str
    """The uploaded file the passage came from; for a document ingested by `ragtune ingest`,
    its document id."""
    filename: str
    """The file's name as uploaded; for an ingested document, its path below the folder
    ingested (never a server path)."""
    score: float
    """The passage's similarity to the query (0..1); results come in ragtune's ranking."""
    attributes: dict[str, str | float | bool] = Field(default_factory=dict)
    """`heading` (the document's title and sections down to the passage's), `section`,
    `chunk_id` and `document_id` of the passage."""
    content: list[SearchContent]


class VectorStoreSearchPage(BaseModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[VectorStoreSearchResult]
    has_more: bool = False
    next_page: str | None = None
