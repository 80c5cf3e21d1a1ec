"""HTTP routes of the chat API (HTTP only: the logic is in service.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from serving.auth import require_chat
from serving.chat.protocol import ChatCompletionRequest, ChatCompletionResponse, ErrorResponse
from serving.chat.service import ChatService

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 429, 503)
}


def chat_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses=ERRORS,
    dependencies=[Depends(require_chat)],
)
async def create_chat_completion(
    body: ChatCompletionRequest,
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
    headers: dict[str, str] = {"x-ragtune-route": prepared.decision.route}
    if prepared.decision.adapter:
        headers["x-ragtune-adapter"] = prepared.decision.adapter
    if body.stream:
        return StreamingResponse(
            await service.open_stream(prepared), media_type="text/event-stream", headers=headers
        )
    return JSONResponse(await service.complete(prepared), headers=headers)
