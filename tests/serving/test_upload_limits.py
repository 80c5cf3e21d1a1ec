"""Upload bodies: read only for callers with credentials, and a bounded number at once (the
body size middleware, driven as ASGI)."""

from __future__ import annotations

import asyncio
from typing import Any

from ragtune.serving.middleware import BodySizeLimit, RequestLimits


def test_upload_bodies_need_credentials_and_are_read_a_few_at_a_time() -> None:
    """An upload path's large body is read only for a request with credentials (a Bearer key or
    the console's session cookie; the route checks them), and at most `max_uploads` at once:
    a caller without a key cannot make the server hold even one."""
    reads: list[bytes] = []
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limited = BodySizeLimit(app, 10, {"/v1/files": 1000}, max_uploads=1)

    async def post(headers: list[tuple[bytes, bytes]]) -> int:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            reads.append(b"x" * 100)
            return {"type": "http.request", "body": reads[-1], "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/files", "headers": headers}
        await limited(scope, receive, send)
        return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))

    async def scenario() -> None:
        assert await post([]) == 401
        assert await post([(b"authorization", b"Basic abc")]) == 401
        assert reads == []  # refused before a byte of the body was read
        key = [(b"authorization", b"Bearer some-key")]
        first = asyncio.create_task(post(key))
        while not reads:
            await asyncio.sleep(0)
        assert await post(key) == 503  # one at a time here
        assert len(reads) == 1
        release.set()
        assert await first == 204
        assert await post([(b"cookie", b"a=1; ragtune_console=abc")]) == 204

    asyncio.run(scenario())


def test_an_upload_body_has_its_own_deadline() -> None:
    """A body that arrives slowly gets 408 after the request deadline, except a POST to an
    upload path, which has the (longer) upload deadline."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limited = RequestLimits(app, 100, 16_384, body_timeout_s=0.05, upload_timeouts={"/up": 30})

    async def post(path: str) -> int:
        sent: list[dict[str, Any]] = []
        parts = iter([b"a", b"b", b"c"])

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(0.1)  # each part after the request deadline has passed
            part = next(parts, b"")
            return {"type": "http.request", "body": part, "more_body": part != b""}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": []}
        await limited(scope, receive, send)
        return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))

    assert asyncio.run(post("/chat")) == 408
    assert asyncio.run(post("/up")) == 204
