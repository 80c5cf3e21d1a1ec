"""Limits a client cannot get around, against the real engine: one answer bound that the
engine honours, the rate limit however the key is spelled, throttled key guessing, input no
engine can take refused with 400, and engine-only controls kept from clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragtune.serving.app import create_app
from ragtune.serving.chat.protocol import ChatCompletionRequest
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings
from tests.support.serving import ADMIN, CHAT, api_settings

pytestmark = pytest.mark.engine
LIMIT = 16
AUTH = {"Authorization": f"Bearer {CHAT}"}


@pytest.fixture(scope="module")
def client(api_data: Path, engine: EngineSettings, models_dir: Path) -> Iterator[TestClient]:
    settings = api_settings(api_data, engine, models_dir, max_tokens_limit=LIMIT)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def body(**fields: Any) -> dict[str, Any]:
    return {
        "model": DEFAULT_MODEL_NAME,
        "messages": [{"role": "user", "content": "Tell me a long story about a dragon."}],
        "ragtune": {"route": "base"},
        "temperature": 0,
        **fields,
    }


def post(client: TestClient, payload: dict[str, Any], headers: dict[str, str] = AUTH) -> Any:
    return client.post("/v1/chat/completions", json=payload, headers=headers)


def post_raw(client: TestClient, raw: str) -> Any:
    headers = {**AUTH, "content-type": "application/json"}
    return client.post("/v1/chat/completions", content=raw.encode(), headers=headers)


def error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    found: dict[str, Any] = response.json()["error"]
    assert "Traceback" not in found["message"]
    return found


def engine_request(client: TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    """What ragtune would send the engine for this request."""
    chat = client.app.state.components.chat  # type: ignore[attr-defined]

    async def prepare() -> dict[str, Any]:
        prepared = await chat.prepare(ChatCompletionRequest.model_validate(payload))
        await chat.finish(prepared)
        sent: dict[str, Any] = prepared.engine_request
        return sent

    return asyncio.run(prepare())


def test_the_cap_holds_whichever_field_asks(client: TestClient) -> None:
    # The bypass: max_tokens passed the cap while the engine honoured max_completion_tokens.
    both = post(client, body(max_tokens=8, max_completion_tokens=60, ignore_eos=True))
    assert error(both, 400)["param"] == "max_completion_tokens"
    over = post(client, body(max_completion_tokens=60))
    assert error(over, 400)["param"] == "max_completion_tokens"
    assert str(LIMIT) in over.json()["error"]["message"]

    answer = post(client, body(max_completion_tokens=12, ignore_eos=True))
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 12
    unbounded = post(client, body(ignore_eos=True))
    assert unbounded.json()["usage"]["completion_tokens"] == LIMIT

    sent = engine_request(client, body(max_completion_tokens=12))
    assert sent["max_tokens"] == 12
    assert "max_completion_tokens" not in sent  # one field: the one that was checked


def test_engine_only_controls_are_refused_and_unknown_fields_dropped(client: TestClient) -> None:
    for field, value in (
        ("echo", True),
        ("return_token_ids", True),
        ("prompt_logprobs", 5),
        ("request_id", "chatcmpl-mine"),
        ("truncate_prompt_tokens", 10),
        ("chat_template", "{{ messages }}"),
        ("chat_template_kwargs", {"x": 1}),
        ("add_generation_prompt", False),
        ("continue_final_message", True),
    ):
        refused = error(post(client, body(max_tokens=4, **{field: value})), 400)
        assert refused["param"] == field, refused
    sent = engine_request(client, body(max_tokens=4, top_k=5, some_future_field={"x": 1}))
    assert sent["top_k"] == 5  # a sampling extension of vLLM's: forwarded
    assert "some_future_field" not in sent
    assert post(client, body(max_tokens=4, some_future_field=1)).status_code == 200


def test_an_engine_refusal_names_the_field_plainly(client: TestClient) -> None:
    refused = error(post(client, body(max_tokens=4, top_k="many")), 400)
    assert refused["param"] == "top_k"
    assert "validation error" not in refused["message"]
    assert "{" not in refused["message"]


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('"messages": [{"role": "user", "content": "hi \\ud800 there"}]', "messages.0.content"),
        ('"messages": [{"role": "user", "content": "hi"}], "stop": "\\ud800"', "stop"),
        ('"messages": [{"role": "user", "content": "hi"}], "stop": ["x", "\\udc00"]', "stop.1"),
        ('"messages": [{"role": "user", "content": "hi"}], "user": "\\ud800"', "user"),
        ('"messages": [{"role": "user", "content": "hi"}], "top_k": NaN', "top_k"),
        ('"messages": [{"role": "user", "content": "hi"}], "repetition_penalty": Infinity',
         "repetition_penalty"),
        ('"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"50": NaN}',
         "logit_bias.50"),
        ('"messages": [{"role": "user", "content": "hi"}], "ragtune": {"filters": {"$or": "x"}}',
         "ragtune.filters"),
        ('"messages": [{"role": "user", "content": "hi"}], "ragtune": {"filters": {"a=b": "c"}}',
         "ragtune.filters"),
    ],
)  # fmt: skip
def test_input_no_engine_or_store_can_take_is_a_400(
    client: TestClient, raw: str, param: str
) -> None:
    found = error(
        post_raw(client, f'{{"model": "{DEFAULT_MODEL_NAME}", "max_tokens": 4, {raw}}}'), 400
    )
    assert found["param"] == param


def test_thousands_of_filters_are_a_400(client: TestClient) -> None:
    filters = {f"key{i}": "v" for i in range(2000)}
    found = error(
        post(client, body(max_tokens=4, ragtune={"route": "rag", "filters": filters})), 400
    )
    assert found["param"] == "ragtune.filters"


def test_lenient_input_is_not_taken_for_something_else(client: TestClient) -> None:
    assert error(post(client, body(model="", max_tokens=4)), 400)["param"] == "model"
    assert error(post(client, body(max_tokens=True)), 422)["param"] == "max_tokens"
    huge = "m" * 100_000
    unknown = error(post(client, body(model=huge, max_tokens=4)), 404)
    assert len(unknown["message"]) < 300  # the name is not echoed back whole


def test_the_rate_limit_counts_the_key_however_it_is_spelled(
    api_data: Path, engine: EngineSettings, models_dir: Path
) -> None:
    settings = api_settings(api_data, engine, models_dir, rate_limit=2, rate_limit_burst=2)
    spellings = [f"Bearer {CHAT}", f"bearer {CHAT}", f"BEARER   {CHAT}", f" Bearer {CHAT} "]
    with TestClient(create_app(settings)) as limited:
        codes = [
            limited.get("/v1/models", headers={"Authorization": spelling}).status_code
            for spelling in spellings
        ]
    assert codes == [200, 200, 429, 429]


def test_guessing_keys_is_throttled_per_address(
    api_data: Path, engine: EngineSettings, models_dir: Path
) -> None:
    settings = api_settings(
        api_data, engine, models_dir, auth_failure_limit=2, auth_failure_burst=3
    )
    with TestClient(create_app(settings)) as guarded:
        ok = guarded.get("/v1/models", headers=AUTH)
        guesses = [
            guarded.get("/v1/models", headers={"Authorization": f"Bearer guess-{i}"}).status_code
            for i in range(5)
        ]
        # Once throttled, the address gets 429 even with the right key: guessing gains nothing.
        after = guarded.get("/v1/models", headers=AUTH)
        admin_after = guarded.get("/admin/adapters", headers={"Authorization": f"Bearer {ADMIN}"})
        # No key at all guesses nothing and is not what the throttle counts.
        missing = guarded.get("/v1/models")
    assert ok.status_code == 200
    assert guesses == [401, 401, 401, 429, 429]
    assert after.status_code == 429
    assert int(after.headers["retry-after"]) >= 1
    assert admin_after.status_code == 429
    assert missing.status_code == 429  # the address is throttled, whatever it sends


def test_a_missing_key_is_not_counted_as_a_guess(
    api_data: Path, engine: EngineSettings, models_dir: Path
) -> None:
    settings = api_settings(
        api_data, engine, models_dir, auth_failure_limit=2, auth_failure_burst=2
    )
    with TestClient(create_app(settings)) as guarded:
        codes = [guarded.get("/v1/models").status_code for _ in range(5)]
        ok = guarded.get("/v1/models", headers=AUTH)
    assert codes == [401] * 5
    assert ok.status_code == 200


def test_a_streamed_request_is_checked_like_a_whole_one(client: TestClient) -> None:
    streamed = post(client, body(stream=True, max_tokens=8, max_completion_tokens=60))
    assert error(streamed, 400)["param"] == "max_completion_tokens"
    raw = json.dumps(body(stream=True, max_tokens=4)).replace(
        '"base"}', '"base"}, "stop": "\\ud800"'
    )
    assert error(post_raw(client, raw), 400)["param"] == "stop"
