"""What a client sees of a request that `ragtune serve` cancels as it stops.

On Ctrl-C or SIGTERM, uvicorn lets requests in flight run for RAGTUNE_SHUTDOWN_TIMEOUT_S, then
cancels their tasks: the cancellation goes through the app (the engine request is closed, so
the engine stops generating) and would reach uvicorn as an error, a 500 with a traceback.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragtune.serving.http_errors import error_body

MESSAGE = "the server is shutting down; send the request again"


class AnswerCancelledRequests:
    """A request cancelled by the server is answered 503 with Retry-After (its connection
    closed); a stream already under way ends with an error event and `[DONE]`. The app's own
    cancellations (a client that left) never get here: they end inside the app."""

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
                await _unavailable(send)
            else:
                await _end_stream(send, started)
            # The cancellation ends here: the request is answered, and nothing waits for it.


async def _unavailable(send: Send) -> None:
    body = json.dumps(error_body(MESSAGE, "server_error", None, "server_shutting_down")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", b"5"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _end_stream(send: Send, started: Message) -> None:
    headers = dict(started.get("headers") or [])
    tail = b""
    if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
        error = error_body(MESSAGE, "server_error", None, "server_shutting_down")
        tail = f"data: {json.dumps(error, separators=(',', ':'))}\n\ndata: [DONE]\n\n".encode()
    await send({"type": "http.response.body", "body": tail, "more_body": False})
