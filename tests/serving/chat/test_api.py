"""The chat API against the real engine and a real store: routes, sources, streaming, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragtune.serving.app import create_app
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.errors import ServingError
from ragtune.serving.settings import ApiSettings, EngineSettings, RouterSettings
from tests.support.servers import free_port
from tests.support.serving import (
    ADMIN,
    CHAT,
    RAG_QUESTION,
    SMALL_TALK,
    abstract_prompts,
    api_settings,
)

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def client(api_data: Path, engine: EngineSettings, models_dir: Path) -> Iterator[TestClient]:
    app = create_app(api_settings(api_data, engine, models_dir, max_request_bytes=200_000))
    with TestClient(app) as test_client:
        yield test_client


def chat(client: TestClient, content: str, key: str = CHAT, **extra: Any) -> Any:
    body = {
        "model": DEFAULT_MODEL_NAME,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 24,
        "temperature": 0,
        **extra,
    }
    return client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )


def test_rag_answer_cites_ingested_documents(
    client: TestClient, ingested: tuple[Path, Any], eval_small: Path
) -> None:
    response = chat(client, RAG_QUESTION)
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-ragtune-route"] == "rag"
    assert body["model"] == DEFAULT_MODEL_NAME
    assert body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] > 0
    info = body["ragtune"]
    assert info["route"] == "rag"
    assert info["reason"]
    assert info["scores"]["evidence_top"] >= RouterSettings().evidence_threshold
    sources = info["sources"]
    assert sources
    assert [s["number"] for s in sources] == list(range(1, len(sources) + 1))
    for source in sources:
        # An ingested file of the corpus, named below the folder given to `ragtune ingest`
        # (here `corpus/`), never by the server's own path.
        assert source["document"].startswith("corpus/"), source
        assert (eval_small / source["document"]).is_file()
        assert source["document_id"]
        assert source["chunk_id"]
    # The passages reached the model: the prompt is much longer than the question.
    assert body["usage"]["prompt_tokens"] > 100


def test_streamed_answer_carries_the_route_first_and_ends_with_done(client: TestClient) -> None:
    body = {
        "model": DEFAULT_MODEL_NAME,
        "messages": [{"role": "user", "content": RAG_QUESTION}],
        "max_tokens": 24,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {CHAT}"}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-ragtune-route"] == "rag"
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["ragtune"]["route"] == "rag"
    assert chunks[0]["ragtune"]["sources"]
    # Later, only the answer's grounding, in a chunk of its own before the usage chunk.
    later = [c for c in chunks[1:] if "ragtune" in c]
    assert [(c["choices"], list(c["ragtune"])) for c in later] in ([], [([], ["grounding"])])
    assert "ragtune" not in chunks[-1]  # the usage chunk stays last
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    whole = chat(client, RAG_QUESTION).json()["choices"][0]["message"]["content"]
    assert text == whole
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_abstract_goes_to_the_title_adapter(client: TestClient) -> None:
    response = chat(client, abstract_prompts()[150])
    assert response.status_code == 200, response.text
    info = response.json()["ragtune"]
    assert info["route"] in ("adapter", "adapter+rag")
    assert info["adapter"] == "titler"
    assert info["scores"]["adapter_match"] >= RouterSettings().adapter_threshold
    assert response.headers["x-ragtune-adapter"] == "titler"


def test_adapter_named_as_model_is_used_and_listed(client: TestClient) -> None:
    response = chat(client, "Deep residual learning for image recognition.", model="titler")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "titler"
    assert body["ragtune"]["adapter"] == "titler"
    models = client.get("/v1/models", headers={"Authorization": f"Bearer {CHAT}"}).json()
    cards = {card["id"]: card for card in models["data"]}
    assert cards["titler"]["parent"] == DEFAULT_MODEL_NAME
    assert cards[DEFAULT_MODEL_NAME]["parent"] is None


def test_small_talk_goes_to_the_base_model(client: TestClient) -> None:
    info = chat(client, SMALL_TALK).json()["ragtune"]
    assert info["route"] == "base"
    assert info["sources"] == []


def test_forced_rag_with_weak_evidence_tells_the_model_so(client: TestClient) -> None:
    response = chat(client, SMALL_TALK, ragtune={"route": "rag"})
    assert response.status_code == 200, response.text
    info = response.json()["ragtune"]
    assert info["route"] == "rag"
    assert info["sources"] == []  # nothing reached the evidence threshold


def test_filters_restrict_the_sources(client: TestClient) -> None:
    response = chat(client, RAG_QUESTION, ragtune={"route": "rag", "filters": {"source": "faq/"}})
    assert response.status_code == 200, response.text
    sources = response.json()["ragtune"]["sources"]
    assert all("/faq/" in s["document"] for s in sources)


def test_unknown_fields_are_accepted(client: TestClient) -> None:
    assert chat(client, RAG_QUESTION, some_future_field={"x": 1}).status_code == 200


def error_of(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in error["message"]
    return error


def test_errors_come_in_openai_envelope(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {CHAT}", "content-type": "application/json"}
    malformed = client.post("/v1/chat/completions", content=b'{"model": ', headers=auth)
    assert malformed.status_code == 400
    assert error_of(malformed)["code"] == "invalid_json"

    schema = client.post("/v1/chat/completions", json={"model": "x"}, headers=auth)
    assert schema.status_code == 422
    assert error_of(schema)["param"] == "messages"

    no_key = client.post("/v1/chat/completions", json={})
    assert no_key.status_code == 401
    assert "Authorization: Bearer" in error_of(no_key)["message"]
    assert chat(client, "hi", key="wrong").status_code == 401

    unknown = chat(client, "hi", model="no-such-model")
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == "model_not_found"

    too_long = chat(client, "word " * 3000)
    assert too_long.status_code == 400
    error = error_of(too_long)
    assert error["code"] == "context_length_exceeded"
    assert "2048" in error["message"]

    big = client.post("/v1/chat/completions", content=b"x" * 300_000, headers=auth)
    assert big.status_code == 413
    assert error_of(big)["code"] == "request_too_large"


def test_stream_refused_by_the_engine_gets_a_status_not_a_broken_stream(
    client: TestClient,
) -> None:
    body = {
        "model": DEFAULT_MODEL_NAME,
        "messages": [{"role": "user", "content": SMALL_TALK}],
        "stream": True,
        "top_k": "not-a-number",  # passed through to vLLM, which refuses it
    }
    response = client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {CHAT}"}
    )
    assert response.status_code == 400
    assert "top_k" in error_of(response)["message"]


def test_admin_scope_is_separate(client: TestClient) -> None:
    assert (
        client.get("/admin/adapters", headers={"Authorization": f"Bearer {CHAT}"}).status_code
        == 403
    )
    admin = client.get("/admin/adapters", headers={"Authorization": f"Bearer {ADMIN}"})
    assert admin.status_code == 200
    assert [a["name"] for a in admin.json()] == ["titler"]
    assert client.get("/admin/adapters").status_code == 401
    # An admin key may also chat.
    assert chat(client, SMALL_TALK, key=ADMIN).status_code == 200


def test_engine_down_gives_503_with_retry_after(
    api_data: Path, engine: EngineSettings, models_dir: Path
) -> None:
    settings = api_settings(api_data, engine, models_dir)
    engine_down_url = f"http://127.0.0.1:{free_port()}"
    settings.engine = settings.engine.model_copy(
        update={"vllm_url": engine_down_url, "connect_retries": 0}
    )
    with TestClient(create_app(settings)) as down:
        assert down.get("/health").status_code == 200
        ready = down.get("/ready", headers={"Authorization": f"Bearer {ADMIN}"})
        assert ready.status_code == 503
        assert "engine" in ready.json()["problems"]
        assert ready.headers["retry-after"]
        response = chat(down, RAG_QUESTION)
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert "not reachable" in error_of(response)["message"]
        assert engine_down_url not in response.text  # the engine's address is for operators


def test_keys_are_required_unless_explicitly_switched_off(
    api_data: Path, engine: EngineSettings, models_dir: Path
) -> None:
    settings = api_settings(api_data, engine, models_dir)
    settings.api = ApiSettings()
    with pytest.raises(ServingError, match="RAGTUNE_API_KEYS"):
        create_app(settings)
    settings.api = ApiSettings(allow_unauthenticated=True)
    with TestClient(create_app(settings)) as open_client:
        assert chat(open_client, SMALL_TALK, key="anything").status_code == 200
