"""HTTP routes of the chat API (HTTP only: the logic is in service.py)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ragtune.serving import observability
from ragtune.serving.auth import require_chat
from ragtune.serving.chat.protocol import ChatCompletionRequest, ChatCompletionResponse
from ragtune.serving.chat.service import ChatService
from ragtune.serving.protocol import ErrorResponse

_T = TypeVar("_T")
CLIENT_CLOSED = 499
"""Logged for a request whose client left before its answer (nginx's convention)."""
router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 429, 503)
}


def chat_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.components.chat
    return service


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses=ERRORS,
    dependencies=[Depends(require_chat)],
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    service: Annotated[ChatService, Depends(chat_service)],
) -> Any:
    """Answer a conversation, OpenAI-style, streamed (SSE) or whole.

    Set `model` to the base model and the router chooses the route: retrieval-augmented (the
    default), an adapter whose task the request matches, both, or the base model alone. Name an
    adapter as `model` to use it. The response's `ragtune` field (on the first chunk of a
    stream) says which route was taken and why, and lists the passages cited as [n]. Optional
    request extension: `ragtune: {"route": ..., "filters": {...}, "collection": ...}`.
    """
    prepared = await service.prepare(body)
    headers: dict[str, str] = {"x-ragtune-route": prepared.plan.route}
    if prepared.plan.adapter:
        headers["x-ragtune-adapter"] = prepared.plan.adapter
    if body.stream:
        # A stream stops when the client goes away (Starlette cancels it on disconnect).
        return StreamingResponse(
            await service.open_stream(prepared), media_type="text/event-stream", headers=headers
        )
    answer = await unless_disconnected(request, service.complete(prepared))
    if answer is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(answer, headers=headers)


async def unless_disconnected(request: Request, work: Awaitable[_T]) -> _T | None:
    """`work`'s result, or None when the client disconnected first: the work is cancelled
    then (the engine request is closed, so the engine stops generating for nobody)."""
    result: list[_T] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as tasks:

        async def run() -> None:
            try:
                result.append(await work)
            except Exception as exc:  # raised below as itself, not in an exception group
                failure.append(exc)
            tasks.cancel_scope.cancel()

        async def watch() -> None:
            # The body has been read: the next message is the client's disconnect.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            tasks.cancel_scope.cancel()

        tasks.start_soon(run)
        tasks.start_soon(watch)
    if failure:
        raise failure[0]
    if not result:
        record = observability.current()
        if record is not None:
            record.error = "the client disconnected before the answer was ready"
    return result[0] if result else None
