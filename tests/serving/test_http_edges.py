"""HTTP as a careful client expects it, and what a client may learn of the server: request ids
on every response (500s included), 413 for any body over the limit, `Allow` on 405s, HEAD on
GET routes; no server paths, engine URLs or other tenants' names in what a chat client sees;
the API documents and readiness details for operators only."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragtune.serving.app import create_app
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings
from tests.support.servers import free_port
from tests.support.serving import ADMIN, CHAT, RAG_QUESTION, api_settings

pytestmark = pytest.mark.engine
AUTH = {"Authorization": f"Bearer {CHAT}"}
LIMIT = 50_000


@pytest.fixture(scope="module")
def client(api_data: Path, engine: EngineSettings, models_dir: Path) -> Iterator[TestClient]:
    settings = api_settings(api_data, engine, models_dir, max_request_bytes=LIMIT)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def chat_body(**fields: Any) -> dict[str, Any]:
    return {
        "model": DEFAULT_MODEL_NAME,
        "messages": [{"role": "user", "content": RAG_QUESTION}],
        "max_tokens": 4,
        **fields,
    }


def test_every_response_carries_its_request_id(client: TestClient) -> None:
    responses = [
        client.get("/health"),
        client.get("/v1/models"),  # 401
        client.get("/no/such/path"),  # 404
        client.post("/v1/chat/completions", json={"model": "x"}, headers=AUTH),  # 422
        client.post("/v1/chat/completions", content=b"x" * (LIMIT + 1), headers=AUTH),  # 413
        client.put("/health"),  # 405
    ]
    for response in responses:
        assert len(response.headers.get("x-request-id", "")) >= 16, response


def test_a_500_carries_its_request_id_and_its_log_line_too(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    chat = client.app.state.components.chat  # type: ignore[attr-defined]

    async def broken(request: Any) -> Any:
        raise RuntimeError("a bug nobody expected")

    monkeypatch.setattr(chat, "prepare", broken)
    with caplog.at_level(logging.ERROR, logger="ragtune.api"):
        response = client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={**AUTH, "x-request-id": "bug-report-17"},
        )
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "bug-report-17"
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert "nobody expected" not in error["message"]  # no internals for the client
    logged = [r for r in caplog.records if r.exc_info and r.name == "ragtune.api"]
    assert logged, "the traceback is logged"
    from ragtune.serving.observability import JsonFormatter, TextFormatter

    assert '"request_id": "bug-report-17"' in JsonFormatter().format(logged[-1])
    assert "request_id=bug-report-17" in TextFormatter().format(logged[-1])


def test_a_chunked_body_over_the_limit_is_a_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "x", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"y" * 5_000  # no Content-Length: the size shows only while reading
        yield b'"}]}'

    response = client.post(
        "/v1/chat/completions",
        content=chunks(),
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"


def test_a_body_under_the_limit_still_reaches_the_api_whole(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "%s", "max_tokens": 2, ' % DEFAULT_MODEL_NAME.encode()
        yield b'"messages": [{"role": "user", "content": "hello"}]}'

    response = client.post(
        "/v1/chat/completions",
        content=chunks(),
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


def test_405s_say_which_methods_are_allowed(client: TestClient) -> None:
    for method, path, allowed in (
        ("GET", "/v1/chat/completions", "POST"),
        ("DELETE", "/health", "GET, HEAD"),
        ("PUT", "/admin/adapters", "GET, HEAD, POST"),
    ):
        response = client.request(method, path, headers=AUTH)
        assert response.status_code == 405, (method, path)
        assert set(response.headers["allow"].split(", ")) == set(allowed.split(", "))
        assert response.json()["error"]["message"]


def test_head_works_on_get_routes(client: TestClient) -> None:
    health = client.head("/health")
    assert health.status_code == 200
    assert health.content == b""
    assert int(health.headers["content-length"]) == len(client.get("/health").content)
    models = client.head("/v1/models", headers=AUTH)
    assert models.status_code == 200
    assert models.content == b""
    assert client.head("/v1/models").status_code == 401  # HEAD is not a way around the key
    post_only = client.head("/v1/chat/completions", headers=AUTH)
    assert post_only.status_code == 405
    assert post_only.headers["allow"] == "POST"


def test_api_documents_are_for_operators_unless_made_public(
    client: TestClient, api_data: Path, engine: EngineSettings, models_dir: Path
) -> None:
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/openapi.json", headers=AUTH).status_code == 403
    spec = client.get("/openapi.json", headers={"Authorization": f"Bearer {ADMIN}"})
    assert spec.status_code == 200
    assert "/v1/chat/completions" in spec.json()["paths"]
    settings = api_settings(api_data, engine, models_dir, api_docs_public=True)
    with TestClient(create_app(settings)) as public:
        assert public.get("/openapi.json").status_code == 200
        assert public.get("/docs").status_code == 200


def test_ready_says_only_ready_without_a_key(client: TestClient) -> None:
    anonymous = client.get("/ready")
    assert anonymous.status_code == 200
    assert anonymous.json() == {"status": "ready"}
    operator = client.get("/ready", headers={"Authorization": f"Bearer {ADMIN}"})
    assert operator.json()["status"] == "ready"
    assert operator.json()["engines"]
    assert client.get("/ready", headers=AUTH).status_code == 403


def test_a_missing_collection_is_named_without_the_store_path(
    client: TestClient, api_data: Path
) -> None:
    response = client.post(
        "/v1/chat/completions", json=chat_body(ragtune={"collection": "nope"}), headers=AUTH
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "collection_not_found"
    assert "'nope'" in error["message"]
    assert str(api_data) not in error["message"]
    assert "/" not in error["message"].replace("does not exist", "")


def test_an_engine_that_is_down_is_reported_without_its_address(
    api_data: Path, engine: EngineSettings, models_dir: Path
) -> None:
    settings = api_settings(api_data, engine, models_dir)
    port = free_port()
    settings.engine = settings.engine.model_copy(
        update={"vllm_url": f"http://127.0.0.1:{port}", "connect_retries": 0}
    )
    with TestClient(create_app(settings)) as down:
        response = down.post(
            "/v1/chat/completions", json=chat_body(ragtune={"route": "base"}), headers=AUTH
        )
        ready = down.get("/ready")
        detailed = down.get("/ready", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "engine_unavailable"
    assert str(port) not in response.text
    assert "127.0.0.1" not in response.text
    assert ready.status_code == 503
    assert ready.json() == {"status": "not ready"}
    assert str(port) not in ready.text
    assert detailed.status_code == 503
    assert str(port) in detailed.text  # an operator gets the details
