"""HTTP route of the Responses API (HTTP only: the logic is in service.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ragtune.serving.auth import principal, require_chat
from ragtune.serving.http import CLIENT_CLOSED, error_responses, unless_disconnected
from ragtune.serving.responses.protocol import ResponseObject, ResponsesRequest
from ragtune.serving.responses.service import ResponsesService

router = APIRouter()
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The Response, or with `stream: true` its typed server-sent events.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def responses_service(request: Request) -> ResponsesService:
    service: ResponsesService = request.app.state.components.responses
    return service


@router.post(
    "/v1/responses",
    response_model=ResponseObject,
    responses={**error_responses(), **STREAMED},
    dependencies=[Depends(require_chat)],
)
async def create_response(
    body: ResponsesRequest,
    request: Request,
    service: Annotated[ResponsesService, Depends(responses_service)],
) -> Any:
    """Answer with OpenAI's Responses API (text subset), routed exactly as chat is.

    `input` is a string or a list of items: messages (`user`, `assistant`, `system`,
    `developer`; text or `input_text`/`output_text` parts) and, for function tools,
    `function_call` and `function_call_output` items; a previous response's `file_search_call`
    item sent back is read as the record it is. Also: `instructions`,
    `max_output_tokens`, `temperature`, `top_p`, function `tools` and `tool_choice`,
    `text.format` (text, json_object, json_schema) and `stream` (typed events:
    response.created ... response.completed). The Response's `ragtune` field says which route
    was taken and why, and lists the passages cited as [n].

    The built-in `file_search` tool answers over the vector stores it names: the output starts
    with a `file_search_call` item (its `results`, the passages given to the model, with
    `include: ["file_search_call.results"]`), and the answer's [n] markers come as
    `file_citation` annotations naming each passage's file. ragtune stores nothing (`store` is
    accepted and ignored; there is no GET /v1/responses/{id}): `previous_response_id`,
    `conversation` and `background` are refused (400), as are other built-in tools, other
    `include` values and image, file or audio parts.
    """
    prepared = await service.prepare(body, principal(request))
    plan = prepared.chat.plan
    headers: dict[str, str] = {"x-ragtune-route": plan.route}
    if plan.adapter:
        headers["x-ragtune-adapter"] = plan.adapter
    if body.stream:
        # A stream stops when the client goes away (Starlette cancels it on disconnect).
        return StreamingResponse(
            await service.open_stream(prepared), media_type="text/event-stream", headers=headers
        )
    answer = await unless_disconnected(request, service.complete(prepared))
    if answer is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(answer, headers=headers)
