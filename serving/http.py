"""What the HTTP routes of every feature share: the error responses they document, the status
logged for a client that left, and racing a request's work against that client leaving."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

import anyio
from fastapi import Request

from ragtune.serving import observability
from ragtune.serving.protocol import ErrorResponse

_T = TypeVar("_T")
CLIENT_CLOSED = 499
"""Logged for a request whose client left before its answer (nginx's convention)."""
GENERATION_ERRORS = (400, 401, 403, 404, 413, 422, 429, 503, 504)
"""The statuses of a route that generates an answer (chat, responses)."""


def error_responses(codes: Iterable[int] = GENERATION_ERRORS) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route: each error status answers OpenAI's envelope."""
    return {code: {"model": ErrorResponse} for code in codes}


async def unless_disconnected(request: Request, work: Awaitable[_T]) -> _T | None:
    """`work`'s result, or None when the client disconnected first: the work is cancelled
    then (the engine request is closed, so the engine stops generating for nobody)."""
    result: list[_T] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as tasks:

        async def run() -> None:
            try:
                result.append(await work)
            except Exception as exc:  # raised below as itself, not in an exception group
                failure.append(exc)
            tasks.cancel_scope.cancel()

        async def watch() -> None:
            # The body has been read: the next message is the client's disconnect.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            tasks.cancel_scope.cancel()

        tasks.start_soon(run)
        tasks.start_soon(watch)
    if failure:
        raise failure[0]
    if not result:
        record = observability.current()
        if record is not None:
            record.error = "the client disconnected before the answer was ready"
    return result[0] if result else None
