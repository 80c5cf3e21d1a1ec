"""Slow and oversized clients against a real `ragtune serve` (raw sockets): a request's head and
body must arrive within their time limits, and its headers are bounded in number and size.
Ordinary clients, keep-alive included, are unaffected. No engine is needed."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ragtune.serving.engine.models import default_model_dir
from tests.support.cli import ragtune_serve
from tests.support.servers import content_length, free_port

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
# Time beyond a limit allowed for the server to act on it (one event-loop turn, a busy CPU).
SLACK_S = 2.0
CHAT = "limits-key"


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("limits") / "data"
    with ragtune_serve(
        data_dir,
        free_port(),
        wait_ready=False,
        RAGTUNE_MODEL=str(default_model_dir(models_dir)),
        RAGTUNE_VLLM_URL=f"http://127.0.0.1:{free_port()}",  # nothing there: not needed
        RAGTUNE_CONNECT_RETRIES="0",
        RAGTUNE_API_KEYS=CHAT,
        RAGTUNE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        RAGTUNE_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
    ) as url:
        yield url


def connect(url: str) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def trickle(sock: socket.socket, data: bytes, every_s: float, for_s: float) -> tuple[bytes, float]:
    """Send `data` a byte every `every_s` until the server answers or closes (or `for_s` has
    passed): what it sent back, and when, in seconds since the first byte."""
    started = time.monotonic()
    sock.settimeout(every_s)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
            answer = sock.recv(65536)
        except TimeoutError:
            answer = None
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        if answer is not None:
            return answer + read_to_end(sock), time.monotonic() - started
        if time.monotonic() - started > for_s:
            break
    pytest.fail(f"the server was still reading after {time.monotonic() - started:.1f} s")


def read_to_end(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    sock.settimeout(timeout_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection stayed open after the server answered: {data[:200]!r}")
    return data


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_headers_sent_a_byte_a_second_are_cut_off(server: str) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"s" * 60 + b"\r\n\r\n"
    with connect(server) as sock:
        answer, after = trickle(sock, head, every_s=1.0, for_s=HEADER_TIMEOUT_S + 3 * SLACK_S)
    assert after < HEADER_TIMEOUT_S + SLACK_S
    assert status(answer) == 408
    assert b"connection: close" in answer.lower()


def test_a_connection_that_sends_nothing_is_closed(server: str) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        assert read_to_end(sock, timeout_s=HEADER_TIMEOUT_S + 3 * SLACK_S) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT_S + SLACK_S


def test_a_body_that_trickles_gets_408(server: str) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + CHAT.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(head)
        answer, after = trickle(sock, b" " * 400, every_s=1.0, for_s=BODY_TIMEOUT_S + 3 * SLACK_S)
    assert after < BODY_TIMEOUT_S + SLACK_S
    assert status(answer) == 408
    lowered = answer.lower()
    assert b"connection: close" in lowered
    assert b"x-request-id:" in lowered  # answered and logged as every other request
    assert b"request_timeout" in answer


@pytest.mark.parametrize(
    "headers",
    [
        [f"X-Many-{i}: v" for i in range(200)],
        ["X-Huge: " + "h" * 100_000],
    ],
    ids=["200-headers", "100-KB-header"],
)
def test_too_many_or_too_large_headers_are_refused(server: str, headers: list[str]) -> None:
    head = "GET /health HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    with connect(server) as sock:
        sock.sendall(head.encode())
        answer = read_to_end(sock)
    assert status(answer) in (400, 431)


def read_response(sock: socket.socket) -> bytes:
    """One response, read to the end of its body (content-length), the connection left open."""
    sock.settimeout(5.0)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection instead of answering: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    while len(body) < content_length(head):
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_an_idle_connection_outlives_the_clients_reuse_window(
    models_dir: Path, tmp_path: Path
) -> None:
    """A connection idle for longer than httpx's and the OpenAI SDK's reuse window (5 s) is still
    served, and closed at the header deadline: the server never closes the connection a pooled
    client is about to send on (uvicorn's own idle close is 5 s)."""
    header_timeout_s = 8.0
    with (
        ragtune_serve(
            tmp_path / "data",
            free_port(),
            wait_ready=False,
            RAGTUNE_MODEL=str(default_model_dir(models_dir)),
            RAGTUNE_VLLM_URL=f"http://127.0.0.1:{free_port()}",
            RAGTUNE_CONNECT_RETRIES="0",
            RAGTUNE_API_KEYS=CHAT,
            RAGTUNE_HEADER_TIMEOUT_S=str(header_timeout_s),
        ) as url,
        connect(url) as sock,
    ):
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status(read_response(sock)) == 200
        time.sleep(6.0)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status(read_response(sock)) == 200
        answered = time.monotonic()
        assert read_to_end(sock, timeout_s=header_timeout_s + 3 * SLACK_S) == b""
        assert 6.0 < time.monotonic() - answered < header_timeout_s + SLACK_S


def test_ordinary_clients_are_unaffected(server: str) -> None:
    headers = {f"X-Extra-{i}": "v" * 100 for i in range(40)}
    # Several requests on one keep-alive connection, a body among them.
    with httpx.Client(base_url=server, headers=headers, timeout=30) as client:
        assert client.get("/health").status_code == 200
        answered = client.post(
            "/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {CHAT}"},
        )
        assert answered.status_code == 404, answered.text  # read and judged: no such model
        assert client.get("/health").status_code == 200
    # A head that arrives in pieces, all within the limit.
    with connect(server) as sock:
        for part in (b"GET /health HT", b"TP/1.1\r\nHost: x\r\n", b"\r\n"):
            sock.sendall(part)
            time.sleep(HEADER_TIMEOUT_S / 4)
        sock.settimeout(5)
        assert status(sock.recv(65536)) == 200
