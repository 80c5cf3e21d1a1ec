"""Every error the API returns, in OpenAI's envelope `{"error": {message, type, param, code}}`.
Domain exceptions are mapped to HTTP here and nowhere else; no traceback reaches a client."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import AdapterError, AdapterNotFoundError, InvalidAdapterError
from retrieval.errors import (
    CollectionNotFoundError,
    InvalidFilterError,
    RetrievalError,
    StoreBusyError,
    StoreUnavailableError,
)
from serving.errors import (
    AdapterSlotsBusyError,
    AuthError,
    ContextLengthError,
    EngineError,
    EngineRequestError,
    EngineTimeoutError,
    ForbiddenError,
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitedError,
    RequestTooLargeError,
    RouteRequestError,
    ServingError,
)

logger = logging.getLogger("ragtune.api")
RETRY_AFTER_S = "5"

# (exception, status, OpenAI error type, code), first match wins.
_MAPPING: list[tuple[type[Exception], int, str, str | None]] = [
    (AuthError, 401, "authentication_error", "invalid_api_key"),
    (ForbiddenError, 403, "permission_error", "insufficient_scope"),
    (RateLimitedError, 429, "rate_limit_error", "rate_limit_exceeded"),
    (RequestTooLargeError, 413, "invalid_request_error", "request_too_large"),
    (ModelNotFoundError, 404, "invalid_request_error", "model_not_found"),
    (ContextLengthError, 400, "invalid_request_error", "context_length_exceeded"),
    (RouteRequestError, 400, "invalid_request_error", "invalid_route"),
    (InvalidRequestError, 400, "invalid_request_error", "invalid_value"),
    (AdapterSlotsBusyError, 503, "server_error", "adapter_slots_busy"),
    (EngineTimeoutError, 503, "server_error", "engine_timeout"),
    (EngineError, 503, "server_error", "engine_unavailable"),
    (AdapterNotFoundError, 404, "invalid_request_error", "adapter_not_found"),
    (InvalidAdapterError, 400, "invalid_request_error", "invalid_adapter"),
    (AdapterError, 400, "invalid_request_error", None),
    (CollectionNotFoundError, 404, "invalid_request_error", "collection_not_found"),
    (InvalidFilterError, 400, "invalid_request_error", "invalid_filter"),
    (StoreUnavailableError, 503, "server_error", "store_unavailable"),
    (StoreBusyError, 503, "server_error", "store_busy"),
    (RetrievalError, 500, "server_error", None),
]


def error_body(message: str, type_: str, param: str | None = None, code: Any = None) -> Any:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int, message: str, type_: str, param: str | None = None, code: Any = None
) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_S} if status in (429, 503) else None
    return JSONResponse(error_body(message, type_, param, code), status, headers=headers)


def response_for(exc: Exception) -> JSONResponse:
    if isinstance(exc, RateLimitedError):
        response = error_response(429, str(exc), "rate_limit_error", None, "rate_limit_exceeded")
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return response
    for kind, status, type_, code in _MAPPING:
        if isinstance(exc, kind):
            param = "model" if isinstance(exc, ModelNotFoundError) else None
            if isinstance(exc, ContextLengthError):
                param = "messages"
            if isinstance(exc, InvalidRequestError):
                param = exc.param
            return error_response(status, str(exc), type_, param, code)
    if isinstance(exc, EngineRequestError):
        return error_response(exc.status_code, str(exc), "invalid_request_error")
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal error; the server log has the details", "server_error")


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        return response_for(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(
                400, "the request body is not valid JSON", "invalid_request_error", None,
                "invalid_json",
            )  # fmt: skip
        first = errors[0] if errors else {}
        location = [str(p) for p in first.get("loc", ()) if p != "body"]
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in errors[:5]
        )
        return error_response(
            422, f"invalid request: {problems}", "invalid_request_error",
            ".".join(location) or None, "invalid_request",
        )  # fmt: skip

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), type_)

    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for kind in (ServingError, AdapterError, RetrievalError, Exception):
        app.add_exception_handler(kind, on_domain_error)
