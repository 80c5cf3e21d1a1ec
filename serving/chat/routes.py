"""HTTP routes of the chat API (HTTP only: the logic is in service.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ragtune.serving.auth import principal, require_chat
from ragtune.serving.chat.protocol import ChatCompletionRequest, ChatCompletionResponse
from ragtune.serving.chat.service import ChatService
from ragtune.serving.http import CLIENT_CLOSED, error_responses, unless_disconnected

router = APIRouter()


def chat_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.components.chat
    return service


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses=error_responses(),
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
    request extension: `ragtune: {"route": ..., "filters": {...}, "collection": ...}`. A
    tenant's key sees only its own collections (the first when none is named) and adapters.
    """
    prepared = await service.prepare(body, principal(request))
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
