"""How long and how much one HTTP client may hold the server: time to send a request's head and
its body, and the size and number of its headers.

uvicorn bounds none of the times itself: it starts no timer on a new connection, and the
keep-alive timer it starts after a response stops at the first byte, so a client sending a byte
a second holds its connection (and a slot of `limit_concurrency`) for ever. Its httptools parser
also takes headers of any size. `ragtune serve` therefore runs uvicorn's h11 protocol (its
incomplete-event bound caps the request line and headers) with a deadline on the head (this
module), and the app with `middleware.RequestLimits` (header count, body deadline) under its
request context, so those refusals are logged and carry a request id like every other response.

The head deadline is also what closes an idle keep-alive connection: uvicorn's own idle close
(5 s by default) is set past it. Clients reuse a pooled connection for up to 5 s (httpx's and the
OpenAI SDK's default), and a close at that same moment crosses their next request on the wire,
which then fails with no answer.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ragtune.serving.settings import ApiSettings

# Written as is (the connection closes right after): no request was parsed to answer through h11.
_HEAD_TIMEOUT_BODY = b"the request line and headers took too long to arrive\n"
_HEAD_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n"
    b"\r\n%s" % (len(_HEAD_TIMEOUT_BODY), _HEAD_TIMEOUT_BODY)
)


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head: from the moment the server
    waits for one (connection made, previous response sent) to the moment it is complete. A
    client that misses it is disconnected, with a 408 if it had begun to send. The time after a
    response also covers the rest of a body the app did not read."""

    header_timeout_s = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        # A request is in the app from its complete head until its response is complete.
        cycle = self.cycle
        return cycle is None or cycle.response_complete

    def _watch_head(self) -> None:
        if self.transport.is_closing() or not self._waiting_for_head():
            self._cancel_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._waiting_for_head():
            return
        if self.conn.trailing_data[0]:  # part of a head; an idle connection just closes
            self.transport.write(_HEAD_TIMEOUT_RESPONSE)
        self.transport.close()


def head_deadline_protocol(header_timeout_s: float) -> type[HeadDeadlineProtocol]:
    return type(
        "HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"header_timeout_s": header_timeout_s}
    )


def server_options(api: ApiSettings) -> dict[str, Any]:
    """uvicorn.run's keyword arguments for these limits."""
    return {
        "http": head_deadline_protocol(api.header_timeout_s),
        # h11 refuses (400) a request whose line and headers pass this before they end.
        "h11_max_incomplete_event_size": api.max_header_bytes,
        # Past the head deadline, which closes an idle connection first (see the module's doc).
        "timeout_keep_alive": math.ceil(api.header_timeout_s) + 1,
    }
