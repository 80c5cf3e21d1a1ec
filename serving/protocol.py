"""What every HTTP feature shares on the wire: OpenAI's error envelope and SSE framing. Every
error a client sees (a route's, a middleware's, one inside a stream) is built by `error_body`."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

SSE_DONE = "data: [DONE]\n\n"
"""The event that ends every stream, after an error event too."""


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope (documents the error responses in the OpenAPI document)."""

    error: ErrorDetail


def error_body(
    message: str, type_: str, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}`, as OpenAI's clients read it."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def sse_event(payload: dict[str, Any]) -> str:
    """One server-sent event carrying a JSON payload."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
