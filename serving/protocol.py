"""What every HTTP feature shares on the wire: OpenAI's error envelope and SSE framing. Every
error a client sees (a route's, a middleware's, one inside a stream) is built by `error_body`."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import BaseModel

from ragtune.serving.errors import InvalidRequestError

_SURROGATE = re.compile("[\ud800-\udfff]")
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


def check_json_values(value: Any, path: str = "") -> None:
    """Values a client sent that no engine, store or encoder can take: unpaired UTF-16
    surrogates in any text (they cannot be encoded), NaN or Infinity in any number.
    InvalidRequestError naming the field (`path`)."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise InvalidRequestError(
                f"{path or 'the request'} holds an unpaired UTF-16 surrogate (an invalid "
                "character); send valid Unicode text",
                param=path or None,
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequestError(
                f"{path or 'the request'} is {value}: numbers must be finite", param=path or None
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json_values(key, path)
            check_json_values(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json_values(item, f"{path}.{index}" if path else str(index))
