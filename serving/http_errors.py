"""Every error the API's routes return, in OpenAI's envelope (`protocol.error_body`). Domain
exceptions are mapped to HTTP here and nowhere else; no traceback reaches a client."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ragtune.adapters.errors import (
    AdapterBusyError,
    AdapterConflictError,
    AdapterError,
    AdapterNotFoundError,
    InvalidAdapterError,
)
from ragtune.retrieval.errors import (
    CollectionNotFoundError,
    InvalidFilterError,
    RetrievalError,
    StoreBusyError,
    StoreUnavailableError,
)
from ragtune.serving.errors import (
    AdapterSlotsBusyError,
    AuthError,
    ContextLengthError,
    EmbeddingModelNotFoundError,
    EngineError,
    EngineNotRunningError,
    EngineRequestError,
    EngineSaturatedError,
    EngineTimeoutError,
    FileBatchNotFoundError,
    ForbiddenError,
    GenerationTimeoutError,
    InvalidRequestError,
    KeyNotFoundError,
    KeyStoreError,
    ModelNotFoundError,
    QuotaExceededError,
    RateLimitedError,
    RequestTooLargeError,
    RouteRequestError,
    ServingError,
    UploadedFileNotFoundError,
    VectorStoreNotFoundError,
    shorten,
)
from ragtune.serving.protocol import error_body

logger = logging.getLogger("ragtune.api")
RETRY_AFTER_S = "5"

# (exception, status, OpenAI error type, code), first match wins.
_MAPPING: list[tuple[type[Exception], int, str, str | None]] = [
    (AuthError, 401, "authentication_error", "invalid_api_key"),
    (ForbiddenError, 403, "permission_error", "insufficient_scope"),
    (RateLimitedError, 429, "rate_limit_error", "rate_limit_exceeded"),
    (RequestTooLargeError, 413, "invalid_request_error", "request_too_large"),
    (KeyNotFoundError, 404, "invalid_request_error", "key_not_found"),
    (KeyStoreError, 503, "server_error", "key_store_unavailable"),
    (ModelNotFoundError, 404, "invalid_request_error", "model_not_found"),
    (UploadedFileNotFoundError, 404, "invalid_request_error", "file_not_found"),
    (VectorStoreNotFoundError, 404, "invalid_request_error", "vector_store_not_found"),
    (FileBatchNotFoundError, 404, "invalid_request_error", "file_batch_not_found"),
    (QuotaExceededError, 403, "permission_error", "quota_exceeded"),
    (ContextLengthError, 400, "invalid_request_error", "context_length_exceeded"),
    (RouteRequestError, 400, "invalid_request_error", "invalid_route"),
    (InvalidRequestError, 400, "invalid_request_error", "invalid_value"),
    (AdapterSlotsBusyError, 503, "server_error", "adapter_slots_busy"),
    (EngineSaturatedError, 503, "server_error", "engine_saturated"),
    (GenerationTimeoutError, 504, "server_error", "generation_timeout"),
    (EngineTimeoutError, 503, "server_error", "engine_timeout"),
    (EngineError, 503, "server_error", "engine_unavailable"),
    (AdapterNotFoundError, 404, "invalid_request_error", "adapter_not_found"),
    (InvalidAdapterError, 400, "invalid_request_error", "invalid_adapter"),
    (AdapterBusyError, 409, "invalid_request_error", "adapter_busy"),
    (AdapterConflictError, 409, "invalid_request_error", "adapter_conflict"),
    (AdapterError, 400, "invalid_request_error", None),
    (CollectionNotFoundError, 404, "invalid_request_error", "collection_not_found"),
    (InvalidFilterError, 400, "invalid_request_error", "invalid_filter"),
    (StoreUnavailableError, 503, "server_error", "store_unavailable"),
    (StoreBusyError, 503, "server_error", "store_busy"),
    (RetrievalError, 500, "server_error", None),
]


def error_response(
    status: int, message: str, type_: str, param: str | None = None, code: Any = None
) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_S} if status in (429, 503) else None
    return JSONResponse(error_body(message, type_, param, code), status, headers=headers)


def client_message(exc: Exception) -> str:
    """What a client is told. Errors about the server's own parts (engine, store) name no
    URL, path or engine internals: the server log has those. Names a client sent are echoed
    shortened."""
    if isinstance(exc, ModelNotFoundError) and not isinstance(exc, EmbeddingModelNotFoundError):
        name = shorten(exc.model or "")
        return (
            f"no model or adapter named {name!r}: use the base model (the router chooses) or an "
            "adapter listed by GET /v1/models"
        )
    if isinstance(exc, CollectionNotFoundError):
        name = shorten(exc.collection or "")
        return f"collection {name!r} does not exist; ingest documents into it first"
    if isinstance(exc, AdapterSlotsBusyError):
        return (
            "every adapter slot of the engine holds an adapter that is answering requests; "
            "try again shortly (operators: raise RAGTUNE_MAX_LORAS with vLLM's --max-loras)"
        )
    if isinstance(exc, EngineNotRunningError):
        return (
            "the generation engine is not reachable; try again shortly (operators: "
            "`ragtune engine status`, and the server log)"
        )
    if isinstance(exc, GenerationTimeoutError | EngineSaturatedError):
        return str(exc)  # the limit, the progress, what to do: no server internals
    if isinstance(exc, EngineTimeoutError):
        return (
            "the generation engine did not answer within the server's time limit "
            "(RAGTUNE_REQUEST_TIMEOUT_S); ask for a shorter answer (max_tokens) or try again"
        )
    if isinstance(exc, EngineError):
        return "the generation engine failed; try again (the server log has the details)"
    if isinstance(exc, KeyStoreError):
        return "the stored API keys cannot be read; try again shortly (the server log says why)"
    if isinstance(exc, StoreUnavailableError):
        return "the document store is not reachable; try again shortly"
    if isinstance(exc, StoreBusyError):
        return "the document store is held by another process; try again shortly"
    if isinstance(exc, RetrievalError) and not isinstance(exc, InvalidFilterError):
        return "retrieval failed (the server log has the details)"
    return str(exc)


def stream_error(exc: Exception) -> dict[str, Any]:
    """The error event that ends a stream the engine broke after it began (the HTTP status has
    gone out): what a client is told, as `response_for` says it, and a code naming what
    happened (`generation_timeout`, `engine_saturated`, else `engine_stream_error`)."""
    message = client_message(exc)
    if message != str(exc):
        logger.warning("%s: %s", type(exc).__name__, exc)  # the details, for operators
    code = "engine_stream_error"
    for kind, _status, _type, mapped in _MAPPING:
        if isinstance(exc, kind):
            if isinstance(exc, GenerationTimeoutError | EngineSaturatedError):
                code = mapped or code
            break
    return error_body(message, "server_error", code=code)


def response_for(exc: Exception) -> JSONResponse:
    if isinstance(exc, RateLimitedError):
        response = error_response(429, str(exc), "rate_limit_error", None, "rate_limit_exceeded")
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return response
    message = client_message(exc)
    if message != str(exc):
        logger.warning("%s: %s", type(exc).__name__, exc)  # the details, for operators
    for kind, status, type_, code in _MAPPING:
        if isinstance(exc, kind):
            param = "model" if isinstance(exc, ModelNotFoundError) else None
            if isinstance(exc, ContextLengthError):
                param = "messages"
            if isinstance(exc, InvalidRequestError):
                param = exc.param
            response = error_response(status, message, type_, param, code)
            if isinstance(exc, GenerationTimeoutError):
                # The same answer would take as long again: clients (openai's) must not retry.
                response.headers["x-should-retry"] = "false"
            return response
    if isinstance(exc, EngineRequestError):
        return error_response(exc.status_code, message, "invalid_request_error", exc.param)
    return unhandled(exc)


def unhandled(exc: BaseException, request_id: str | None = None) -> JSONResponse:
    """A 500 for what no handler expected; the traceback goes to the log (with the request's
    id), never to the client."""
    extra = {"request_id": request_id} if request_id else None
    logger.error("unhandled error", exc_info=exc, extra=extra)
    return error_response(500, "internal error; the server log has the details", "server_error")


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on the request's path (HEAD with GET),
    found by asking the routes (included routers too) whether they take it."""
    routes = request.app.router.routes
    methods = {
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    }
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


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
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: "
            f"{str(e.get('msg')).removeprefix('Value error, ')}"
            for e in errors[:5]
        )
        return error_response(
            422, f"invalid request: {problems}", "invalid_request_error",
            ".".join(location) or None, "invalid_request",
        )  # fmt: skip

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        response = error_response(exc.status_code, str(exc.detail), type_)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; FastAPI has one
            # route per method.
            response.headers["Allow"] = ", ".join(allowed_methods(request))
        return response

    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    # Anything else is answered by the request context middleware (serving/middleware.py),
    # inside which the response still gets its request id.
    for kind in (ServingError, AdapterError, RetrievalError):
        app.add_exception_handler(kind, on_domain_error)
