"""HTTP routes of `/v1/files` (HTTP only: the logic is in service.py)."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from ragtune.serving.auth import principal, require_chat
from ragtune.serving.files.protocol import FileDeleted, FileList, FileObject
from ragtune.serving.files.service import FileService
from ragtune.serving.http import error_responses

router = APIRouter(dependencies=[Depends(require_chat)])
UPLOAD_PATH = "/v1/files"
"""The one route whose body may exceed RAGTUNE_MAX_REQUEST_BYTES (up to the upload limit)."""


def file_service(request: Request) -> FileService:
    service: FileService = request.app.state.components.files
    return service


Files = Annotated[FileService, Depends(file_service)]


@router.post(
    UPLOAD_PATH, response_model=FileObject, responses=error_responses((400, 401, 403, 413, 422))
)
async def upload_file(
    request: Request,
    service: Files,
    file: Annotated[UploadFile, File(description="The document (multipart form field).")],
    purpose: Annotated[str, Form(description="`assistants`: a file for vector stores.")],
) -> FileObject:
    """Upload a document (multipart: `file`, `purpose=assistants`), to attach it to vector
    stores. Accepted types are those `ragtune ingest` reads (.txt .md .rst .html .htm .pdf
    .docx...); up to RAGTUNE_MAX_UPLOAD_BYTES, within the tenant's quotas. The file is your
    tenant's: other tenants never see it. Its name is kept as given, as data."""
    caller = principal(request)
    return await anyio.to_thread.run_sync(service.create, caller, file.filename, purpose, file.file)


@router.get(UPLOAD_PATH, response_model=FileList, responses=error_responses((401,)))
async def list_files(
    request: Request,
    service: Files,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> FileList:
    """Your tenant's files, newest first (OpenAI's cursor: `limit`, `after`, `order`)."""
    caller = principal(request)
    return await anyio.to_thread.run_sync(
        lambda: service.list(caller, limit=limit, after=after, order=order, purpose=purpose)
    )


@router.get("/v1/files/{file_id}", response_model=FileObject, responses=error_responses((401, 404)))
async def retrieve_file(request: Request, service: Files, file_id: str) -> FileObject:
    """One of your tenant's files (404 for any other id)."""
    return await anyio.to_thread.run_sync(service.get, principal(request), file_id)


@router.get(
    "/v1/files/{file_id}/content",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."},
        **error_responses((401, 404)),
    },
)
async def retrieve_file_content(request: Request, service: Files, file_id: str) -> FileResponse:
    """The bytes of one of your tenant's files, exactly as uploaded (`application/
    octet-stream`, offered for download under its name; what `client.files.content(id)`
    reads). 404 for any other id."""
    found = await anyio.to_thread.run_sync(service.content, principal(request), file_id)
    # Always octet-stream, never the type its name suggests: an uploaded .html must not be
    # rendered by a browser on the server's origin.
    return FileResponse(
        found.path,
        media_type="application/octet-stream",
        filename=found.filename,
        stat_result=found.stat,
        headers={"X-Content-Type-Options": "nosniff"},
    )


@router.delete(
    "/v1/files/{file_id}", response_model=FileDeleted, responses=error_responses((401, 404))
)
async def delete_file(request: Request, service: Files, file_id: str) -> FileDeleted:
    """Delete a file: it is detached from every vector store first (its chunks removed from
    search, lexical index included)."""
    return await anyio.to_thread.run_sync(service.delete, principal(request), file_id)
