"""ASGI middleware of the API below the request context: the body size limit (declared or
chunked) and HEAD on every GET route."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragtune.serving.http_errors import error_body


class BodySizeLimit:
    """Refuse bodies over the limit with 413, by Content-Length or, for a chunked body, once
    what arrived passes it. The body is read here whole (it is at most `limit` bytes) and
    handed to the app in one message; after that the app's `receive` is the server's, so the
    app still hears when the client disconnects."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
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
            if seen > self.limit:
                await self._refuse(send)
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

    async def _refuse(self, send: Send) -> None:
        message = (
            f"the request body is over {self.limit} bytes (RAGTUNE_MAX_REQUEST_BYTES); "
            "send less context per request"
        )
        body = json.dumps(
            error_body(message, "invalid_request_error", None, "request_too_large")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body is not read: the connection cannot be reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


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
