"""HTTP routes of `/v1/vector_stores` and its `files` (HTTP only: the logic is in
service.py)."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response

from ragtune.serving.auth import principal, require_chat
from ragtune.serving.files.catalog import AttachmentStatus
from ragtune.serving.http import error_responses
from ragtune.serving.vector_stores.protocol import (
    AttachFileRequest,
    CreateFileBatchRequest,
    CreateVectorStoreRequest,
    VectorStoreDeleted,
    VectorStoreFileBatchObject,
    VectorStoreFileDeleted,
    VectorStoreFileList,
    VectorStoreFileObject,
    VectorStoreList,
    VectorStoreObject,
    VectorStoreSearchPage,
    VectorStoreSearchRequest,
)
from ragtune.serving.vector_stores.service import POLL_AFTER_MS, VectorStoreService

router = APIRouter(dependencies=[Depends(require_chat)])
Order = Literal["asc", "desc"]
Limit = Annotated[int, Query(ge=1, le=100)]
"""A page of a list: 20 by default, at most 100, as OpenAI's (the `openai` client follows
`has_more` with `after`)."""


def vector_store_service(request: Request) -> VectorStoreService:
    service: VectorStoreService = request.app.state.components.vector_stores
    return service


Stores = Annotated[VectorStoreService, Depends(vector_store_service)]


@router.post(
    "/v1/vector_stores",
    response_model=VectorStoreObject,
    responses=error_responses((400, 401, 403, 404, 422)),
)
async def create_vector_store(
    request: Request, service: Stores, body: CreateVectorStoreRequest
) -> VectorStoreObject:
    """Create a vector store: `name` is the ragtune collection it searches (created when
    missing; an existing one is answered as it is). `file_ids` are attached at once (within
    RAGTUNE_TENANT_MAX_PENDING_INGESTS, as for attaching them one by one)."""
    return await anyio.to_thread.run_sync(service.create, principal(request), body)


@router.get("/v1/vector_stores", response_model=VectorStoreList, responses=error_responses((401,)))
async def list_vector_stores(
    request: Request,
    service: Stores,
    limit: Limit = 20,
    after: str | None = None,
    order: Order = "desc",
) -> VectorStoreList:
    """The vector stores (collections) your key may search, with the counts of your files in
    each."""
    caller = principal(request)
    return await anyio.to_thread.run_sync(
        lambda: service.list(caller, limit=limit, after=after, order=order)
    )


@router.get(
    "/v1/vector_stores/{store_id}",
    response_model=VectorStoreObject,
    responses=error_responses((401, 404)),
)
async def retrieve_vector_store(
    request: Request, service: Stores, store_id: str
) -> VectorStoreObject:
    """One vector store; `ragtune.chunks` counts the chunks in its collection."""
    return await anyio.to_thread.run_sync(service.get, principal(request), store_id)


@router.delete(
    "/v1/vector_stores/{store_id}",
    response_model=VectorStoreDeleted,
    responses=error_responses((401, 403, 404)),
)
async def delete_vector_store(
    request: Request, service: Stores, store_id: str
) -> VectorStoreDeleted:
    """Delete a vector store: its collection and every chunk in it (the files stay). Admin keys
    only (403 otherwise): the collection may hold other keys' documents; detach files instead."""
    return await anyio.to_thread.run_sync(service.delete, principal(request), store_id)


@router.post(
    "/v1/vector_stores/{store_id}/files",
    response_model=VectorStoreFileObject,
    responses=error_responses((400, 401, 403, 404, 422)),
)
async def attach_file(
    request: Request, service: Stores, store_id: str, body: AttachFileRequest
) -> VectorStoreFileObject:
    """Attach one of your files: it is ingested into the store's collection in the background,
    as `ragtune ingest` would (status `in_progress`, then `completed`, or `failed` with the
    reason in `last_error`; `ragtune.chunks_done`/`chunks_total` tell the progress). A tenant
    may have RAGTUNE_TENANT_MAX_PENDING_INGESTS files in progress at once: 403
    `quota_exceeded` beyond, until some finish."""
    return await anyio.to_thread.run_sync(
        service.attach, principal(request), store_id, body.file_id
    )


@router.get(
    "/v1/vector_stores/{store_id}/files",
    response_model=VectorStoreFileList,
    responses=error_responses((401, 404)),
)
async def list_vector_store_files(
    request: Request,
    service: Stores,
    store_id: str,
    limit: Limit = 20,
    after: str | None = None,
    order: Order = "desc",
    filter: AttachmentStatus | None = None,
) -> VectorStoreFileList:
    """Your files attached to the store, with their status (`filter` keeps one status)."""
    caller = principal(request)
    return await anyio.to_thread.run_sync(
        lambda: service.list_files(
            caller, store_id, limit=limit, after=after, order=order, status=filter
        )
    )


@router.get(
    "/v1/vector_stores/{store_id}/files/{file_id}",
    response_model=VectorStoreFileObject,
    responses=error_responses((401, 404)),
)
async def retrieve_vector_store_file(
    request: Request, response: Response, service: Stores, store_id: str, file_id: str
) -> VectorStoreFileObject:
    """One attached file: its status, failure reason and progress. While it is in progress,
    the `openai-poll-after-ms` header says when to ask again."""
    found = await anyio.to_thread.run_sync(service.file, principal(request), store_id, file_id)
    if found.status == "in_progress":
        response.headers["openai-poll-after-ms"] = str(POLL_AFTER_MS)
    return found


@router.delete(
    "/v1/vector_stores/{store_id}/files/{file_id}",
    response_model=VectorStoreFileDeleted,
    responses=error_responses((401, 404)),
)
async def detach_file(
    request: Request, service: Stores, store_id: str, file_id: str
) -> VectorStoreFileDeleted:
    """Detach a file: every chunk of it leaves the collection (dense and lexical search
    alike). The file itself stays."""
    return await anyio.to_thread.run_sync(service.detach, principal(request), store_id, file_id)


@router.post(
    "/v1/vector_stores/{store_id}/file_batches",
    response_model=VectorStoreFileBatchObject,
    responses=error_responses((400, 401, 403, 404, 422)),
)
async def create_file_batch(
    request: Request, service: Stores, store_id: str, body: CreateFileBatchRequest
) -> VectorStoreFileBatchObject:
    """Attach several of your files at once (`file_ids`, or `files` with a `file_id` each;
    up to 2000): each is ingested as one attached alone; the batch is `in_progress` while any
    of them is (what `client.vector_stores.file_batches.upload_and_poll` waits for). Within
    RAGTUNE_TENANT_MAX_PENDING_INGESTS: a batch that would go past it is refused whole (403)."""
    return await anyio.to_thread.run_sync(service.create_batch, principal(request), store_id, body)


@router.get(
    "/v1/vector_stores/{store_id}/file_batches/{batch_id}",
    response_model=VectorStoreFileBatchObject,
    responses=error_responses((401, 404)),
)
async def retrieve_file_batch(
    request: Request, response: Response, service: Stores, store_id: str, batch_id: str
) -> VectorStoreFileBatchObject:
    """A batch: its status and its files' counts by status. While it is in progress, the
    `openai-poll-after-ms` header says when to ask again."""
    found = await anyio.to_thread.run_sync(service.batch, principal(request), store_id, batch_id)
    if found.status == "in_progress":
        response.headers["openai-poll-after-ms"] = str(POLL_AFTER_MS)
    return found


@router.post(
    "/v1/vector_stores/{store_id}/file_batches/{batch_id}/cancel",
    response_model=VectorStoreFileBatchObject,
    responses=error_responses((401, 404)),
)
async def cancel_file_batch(
    request: Request, service: Stores, store_id: str, batch_id: str
) -> VectorStoreFileBatchObject:
    """Stop a batch: its files still in progress are detached (nothing of them stays
    searchable); those already completed or failed stay."""
    return await anyio.to_thread.run_sync(
        service.cancel_batch, principal(request), store_id, batch_id
    )


@router.get(
    "/v1/vector_stores/{store_id}/file_batches/{batch_id}/files",
    response_model=VectorStoreFileList,
    responses=error_responses((401, 404)),
)
async def list_file_batch_files(
    request: Request,
    service: Stores,
    store_id: str,
    batch_id: str,
    limit: Limit = 20,
    after: str | None = None,
    order: Order = "desc",
    filter: AttachmentStatus | None = None,
) -> VectorStoreFileList:
    """The batch's files still attached to the store, with their status."""
    caller = principal(request)
    return await anyio.to_thread.run_sync(
        lambda: service.list_batch_files(
            caller, store_id, batch_id, limit=limit, after=after, order=order, status=filter
        )
    )


@router.post(
    "/v1/vector_stores/{store_id}/search",
    response_model=VectorStoreSearchPage,
    responses=error_responses((400, 401, 404, 422)),
)
async def search_vector_store(
    request: Request, service: Stores, store_id: str, body: VectorStoreSearchRequest
) -> VectorStoreSearchPage:
    """The store's best passages for `query` (up to `max_num_results`, 10 by default, at most
    50), as chat's retrieval finds them, each with the file it came from and its similarity
    to the query as `score`. `filters`: metadata equality (`eq`, several joined by `and`) on
    `source`, `section` or a key given at ingest; `ranking_options.score_threshold` leaves out
    results below it."""
    return await anyio.to_thread.run_sync(service.search, principal(request), store_id, body)
