"""Every ASGI middleware of the API, outermost first as `create_app` adds them:

- `RequestContext`: the request id, the request's record, metrics and one log line per request,
  and the 500 (with the id) for what nothing else handled;
- `AnswerCancelledRequests`: a 503 (or a stream's error event) for requests the server cancels as
  it stops;
- `RequestLimits`: header count and size (431), the body's deadline (408);
- `HeadAsGet`: HEAD on every GET route;
- `BodySizeLimit`: the body size, declared or chunked (413).

Their refusals are written by `send_error`, in OpenAI's envelope, and close the connection (what
is left of the request is never read).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragtune.serving.http_errors import RETRY_AFTER_S, unhandled
from ragtune.serving.observability import Metrics, RequestRecord, start_record
from ragtune.serving.protocol import SSE_DONE, error_body, sse_event

access_logger = logging.getLogger("ragtune.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SHUTTING_DOWN = "the server is shutting down; send the request again"


async def send_error(
    send: Send,
    status: int,
    message: str,
    type_: str,
    code: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """A whole error response, then the connection closes."""
    body = json.dumps(error_body(message, type_, None, code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContext:
    """The request id (from `x-request-id` when it is sane, else new), echoed in the response;
    the request's record for the code below; metrics and one log line when the response has
    ended (after the last byte of a stream)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, log_prompts: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.log_prompts = log_prompts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        record, reset = start_record(request_id, scope["method"], scope["path"])
        status = 500
        done = started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, done, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done = True

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Here rather than in Starlette's outermost handler, so that the 500 carries the
            # request id, and its log line (with the traceback) too.
            record.error = type(exc).__name__
            response = unhandled(exc, request_id)
            if started:
                status = 500  # the response broke off; the client sees a cut connection
            else:
                await response(scope, receive, send_with_id)
        finally:
            reset()
            if not done and status < 400:
                status = 499  # the client went away before the response ended
            self.metrics.observe(record, status)
            self._log(record, status)

    def _log(self, record: RequestRecord, status: int) -> None:
        if record.path in ("/health", "/ready", "/metrics"):
            level = logging.DEBUG
        else:
            level = logging.WARNING if status >= 500 else logging.INFO
        fields: dict[str, Any] = {
            "event": "request",
            "method": record.method,
            "path": record.path,
            "status": status,
            "duration_ms": round((time.perf_counter() - record.started) * 1000, 2),
        }
        for name in ("route", "adapter", "adapter_version", "reason", "error"):
            value = getattr(record, name)
            if value is not None:
                fields[name] = value
        if record.route is not None:
            fields["stream"] = record.stream
        fields.update({f"{k}_ms": v for k, v in record.timings_ms.items()})
        if record.prompt_tokens is not None:
            fields["prompt_tokens"] = record.prompt_tokens
        if record.completion_tokens is not None:
            fields["completion_tokens"] = record.completion_tokens
        if record.grounding is not None:
            fields["grounding"] = record.grounding
            fields["unsupported_sentences"] = record.unsupported_sentences
        if self.log_prompts and record.question is not None:
            fields["question"] = record.question
        access_logger.log(
            level,
            "%s %s %s",
            record.method,
            record.path,
            status,
            extra={"request_id": record.request_id, "fields": fields},
        )


class AnswerCancelledRequests:
    """What a client sees of a request that `ragtune serve` cancels as it stops.

    On Ctrl-C or SIGTERM, uvicorn lets requests in flight run for RAGTUNE_SHUTDOWN_TIMEOUT_S,
    then cancels their tasks: the cancellation goes through the app (the engine request is
    closed, so the engine stops generating) and would reach uvicorn as an error, a 500 with a
    traceback. Here it is answered instead: 503 with Retry-After (the connection closed), or,
    for a stream already under way, an error event and `[DONE]`. The app's own cancellations
    (a client that left) never get here: they end inside the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started: Message | None = None
        ended = False

        async def tracking(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = message
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                ended = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except asyncio.CancelledError:
            if ended:
                raise
            if started is None:
                await send_error(
                    send, 503, SHUTTING_DOWN, "server_error", "server_shutting_down",
                    [(b"retry-after", RETRY_AFTER_S.encode())],
                )  # fmt: skip
            else:
                await _end_stream(send, started)
            # The cancellation ends here: the request is answered, and nothing waits for it.


async def _end_stream(send: Send, started: Message) -> None:
    headers = dict(started.get("headers") or [])
    tail = b""
    if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
        error = error_body(SHUTTING_DOWN, "server_error", None, "server_shutting_down")
        tail = (sse_event(error) + SSE_DONE).encode()
    await send({"type": "http.response.body", "body": tail, "more_body": False})


class RequestLimits:
    """431 for a request with more headers than `max_header_count` or a head (line and headers)
    over `max_header_bytes`; 408 (and the connection closed) when its body is not all in
    `body_timeout_s` after its head. The app then hears that the client left, and whatever it
    answers instead is dropped. (The head's own deadline is uvicorn's side: `serving.limits`.)
    A POST to one of `upload_timeouts`' paths gets that path's deadline instead: a 50 MB file
    takes minutes on a slow link, and only callers with credentials get their upload body read,
    a few at a time (`BodySizeLimit`)."""

    def __init__(
        self,
        app: ASGIApp,
        max_header_count: int,
        max_header_bytes: int,
        body_timeout_s: float,
        upload_timeouts: Mapping[str, float] | None = None,
    ) -> None:
        self.app = app
        self.max_header_count = max_header_count
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s
        self.upload_timeouts = dict(upload_timeouts or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        # h11 bounds a head only while it is incomplete: one that arrives whole in a single read
        # (up to 256 KB) passes it, so the size is checked again here.
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        size += sum(len(name) + len(value) + 4 for name, value in headers)
        if len(headers) > self.max_header_count or size > self.max_header_bytes:
            await send_error(
                send,
                431,
                f"the request has {len(headers)} headers, {size} bytes with its line; at most "
                f"{self.max_header_count} headers and {self.max_header_bytes} bytes are accepted",
                "invalid_request_error",
                "request_header_fields_too_large",
            )
            return
        timeout = self.body_timeout_s
        if scope["method"] == "POST":
            timeout = self.upload_timeouts.get(scope["path"], timeout)
        deadline = anyio.current_time() + timeout
        body_done = timed_out = started = False

        async def body_within_deadline() -> Message:
            nonlocal body_done, timed_out
            if timed_out:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()  # waiting for a disconnect while answering: unbounded
            with anyio.move_on_after(deadline - anyio.current_time()) as waited:
                message = await receive()
            if waited.cancelled_caught:
                timed_out = True
                return {"type": "http.disconnect"}
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def unless_timed_out(message: Message) -> None:
            nonlocal started
            if timed_out:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, body_within_deadline, unless_timed_out)
        except Exception:
            if not timed_out:
                raise
        if timed_out and not started:
            await send_error(
                send,
                408,
                f"the request body was not all sent within {timeout:g} s",
                "invalid_request_error",
                "request_timeout",
            )


class HeadAsGet:
    """HEAD answers like GET without the body, on every route that has GET (FastAPI routes
    declare GET only); on other routes it gets the router's 405 with `Allow`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


def _has_credentials(headers: dict[bytes, bytes]) -> bool:
    """A Bearer key, or the operator console's session cookie (whether valid is the route's
    business)."""
    bearer = headers.get(b"authorization", b"").strip().lower().startswith(b"bearer ")
    return bearer or b"ragtune_console=" in headers.get(b"cookie", b"")


class BodySizeLimit:
    """Refuse bodies over the limit with 413, by Content-Length or, for a chunked body, once
    what arrived passes it. The body is read here whole (it is at most `limit` bytes) and
    handed to the app in one message; after that the app's `receive` is the server's, so the
    app still hears when the client disconnects. `uploads` names the POST paths that take
    larger bodies (file uploads), with their own limit. Those bodies are large, so before one is
    read the request must carry credentials (a Bearer key, or the console's session cookie:
    checked for real after the body, by the route) unless authentication is off
    (`open_uploads`), and at most `max_uploads` are read at once (503 beyond, with
    Retry-After): a caller without a key cannot make the server hold even one."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        uploads: dict[str, int] | None = None,
        *,
        open_uploads: bool = False,
        max_uploads: int = 4,
    ) -> None:
        self.app = app
        self.limit = limit
        self.uploads = uploads or {}
        self.open_uploads = open_uploads
        self.max_uploads = max_uploads
        self._receiving = 0
        """Upload bodies being read now (one event loop: a plain counter)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        upload = scope["method"] == "POST" and scope["path"] in self.uploads
        headers = dict(scope.get("headers") or [])
        if upload:
            limit = self.uploads[scope["path"]]
            if not (self.open_uploads or _has_credentials(headers)):
                await send_error(
                    send, 401,
                    "missing API key: send the header `Authorization: Bearer <key>` with uploads",
                    "authentication_error", "invalid_api_key",
                )  # fmt: skip
                return
            if self._receiving >= self.max_uploads:
                await send_error(
                    send, 503,
                    f"{self.max_uploads} uploads are being received already; retry in a few "
                    "seconds", "server_error", "uploads_busy", [(b"retry-after", b"5")],
                )  # fmt: skip
                return
            self._receiving += 1
            try:
                await self._read(scope, receive, send, limit, upload, headers)
            finally:
                self._receiving -= 1
            return
        await self._read(scope, receive, send, limit, upload, headers)

    async def _read(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        limit: int,
        upload: bool,
        headers: dict[bytes, bytes],
    ) -> None:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit, upload)
            return
        parts: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nobody to answer
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                await self._refuse(send, limit, upload)
                return
            parts.append(body)
            more = bool(message.get("more_body", False))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, limit: int, upload: bool) -> None:
        await send_error(
            send,
            413,
            f"the upload is over {limit} bytes (RAGTUNE_MAX_UPLOAD_BYTES); send a smaller file"
            if upload
            else f"the request body is over {limit} bytes (RAGTUNE_MAX_REQUEST_BYTES); "
            "send less context per request",
            "invalid_request_error",
            "request_too_large",
        )
