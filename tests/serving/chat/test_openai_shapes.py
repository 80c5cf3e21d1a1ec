"""Every kind of response `ragtune serve` gives on the chat API, from the real engine, validated
against OpenAI's schema (vendored from the `openai` package) with ragtune's strictness: whole
answers on each route, every chunk of a stream, the usage chunk, logprobs, error bodies, and
the model list (tests/support/openai_schema.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ragtune_serve
from tests.support.openai_schema import assert_openai_shape
from tests.support.servers import free_port
from tests.support.serving import RAG_QUESTION, SMALL_TALK, attach_env

pytestmark = pytest.mark.engine
KEY = "shapes-key"
TITLE_PROMPT = "Deep residual learning for image recognition."


@pytest.fixture(scope="module")
def server(api_data: Path, engine: EngineSettings, models_dir: Path) -> Iterator[str]:
    """`ragtune serve` attached to the session's engine, on the ingested corpus with the
    `titler` adapter registered."""
    with ragtune_serve(
        api_data, free_port(), **attach_env(engine, models_dir), RAGTUNE_API_KEYS=KEY
    ) as url:
        yield url


def post(server: str, key: str = KEY, **fields: Any) -> httpx.Response:
    body = {
        "model": DEFAULT_MODEL_NAME,
        "messages": [{"role": "user", "content": RAG_QUESTION}],
        "max_tokens": 6,
        "temperature": 0,
        **fields,
    }
    return httpx.post(
        f"{server}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )


def stream(server: str, **fields: Any) -> list[dict[str, Any]]:
    response = post(server, stream=True, **fields)
    assert response.status_code == 200, response.text
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    return [json.loads(event.removeprefix("data: ")) for event in events[:-1]]


@pytest.mark.parametrize(
    ("content", "model", "route"),
    [
        (RAG_QUESTION, DEFAULT_MODEL_NAME, "rag"),
        (SMALL_TALK, DEFAULT_MODEL_NAME, "base"),
        (TITLE_PROMPT, "titler", "adapter"),
    ],
)
def test_whole_answers_on_every_route(server: str, content: str, model: str, route: str) -> None:
    response = post(server, model=model, messages=[{"role": "user", "content": content}])
    assert response.status_code == 200, response.text
    body = response.json()
    assert_openai_shape("chat.completion", body)
    assert body["ragtune"]["route"].startswith(route)
    assert body["model"] == model


def test_every_chunk_of_a_stream_and_its_usage_chunk(server: str) -> None:
    chunks = stream(server, stream_options={"include_usage": True})
    for chunk in chunks:
        assert_openai_shape("chat.completion.chunk", chunk)
    assert chunks[0]["ragtune"]["route"] == "rag"
    usage = chunks[-1]
    assert usage["choices"] == []
    assert_openai_shape("usage", usage["usage"])
    assert usage["usage"]["completion_tokens"] > 0
    assert all("usage" not in chunk for chunk in chunks[:-1])


def test_logprobs_asked_for_whole_and_streamed(server: str) -> None:
    response = post(server, logprobs=True, top_logprobs=2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_openai_shape("chat.completion", body)
    tokens = body["choices"][0]["logprobs"]["content"]
    assert tokens
    assert all(len(token["top_logprobs"]) == 2 for token in tokens)

    chunks = stream(server, logprobs=True, top_logprobs=1)
    for chunk in chunks:
        assert_openai_shape("chat.completion.chunk", chunk)
    assert any(choice.get("logprobs") for chunk in chunks for choice in chunk["choices"])


def test_error_bodies(server: str) -> None:
    cases = [
        (post(server, echo=True), 400),
        (post(server, max_tokens=5, max_completion_tokens=6), 400),
        (post(server, model="no-such-adapter"), 404),
        (post(server, key="wrong-key"), 401),
        (post(server, messages=[]), 422),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert_openai_shape("error", response.json())


def test_the_model_list(server: str) -> None:
    listed = httpx.get(
        f"{server}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    ).json()
    assert_openai_shape("model.list", listed)
    assert {DEFAULT_MODEL_NAME, "titler"} <= {card["id"] for card in listed["data"]}
