"""The Responses API with the official `openai` client against `ragtune serve` running as its
own process on the real engine: `client.responses.create` and `client.responses.stream`, routed
as chat is (the RAG route with its sources, an adapter by name), function tools and their round
trip, and every body and event in OpenAI's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import BadRequestError, OpenAI

from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ragtune_serve
from tests.support.openai_schema import assert_openai_shape
from tests.support.servers import free_port
from tests.support.serving import RAG_QUESTION, abstract_prompts, attach_env, copy_of

pytestmark = pytest.mark.engine
KEY = "responses-key"
CITY = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def client(
    api_data: Path,
    engine: EngineSettings,
    models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OpenAI]:
    """The official client of a `ragtune serve` attached to the session's engine, on the
    ingested small corpus with the `titler` adapter registered."""
    data_dir = copy_of(api_data, tmp_path_factory, "responses")
    with ragtune_serve(
        data_dir, free_port(), **attach_env(engine, models_dir), RAGTUNE_API_KEYS=KEY
    ) as url:
        yield OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)


def create(client: OpenAI, **fields: Any) -> Any:
    """`client.responses.create`, the body checked against OpenAI's Response schema first."""
    request = {"model": DEFAULT_MODEL_NAME, "temperature": 0, "max_output_tokens": 24, **fields}
    raw = client.responses.with_raw_response.create(**request)
    assert_openai_shape("response", raw.http_response.json())
    response = raw.parse()
    assert response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete")
    return response


def ragtune_info(response: Any) -> dict[str, Any]:
    info: dict[str, Any] = (response.model_extra or {})["ragtune"]
    return info


def test_a_question_is_answered_from_the_documents_with_sources(client: OpenAI) -> None:
    response = create(client, input=RAG_QUESTION)
    assert response.output_text.strip()
    assert response.model == DEFAULT_MODEL_NAME
    assert response.usage is not None
    assert 0 < response.usage.output_tokens <= 24
    info = ragtune_info(response)
    assert info["route"] == "rag"
    assert info["sources"]
    assert info["sources"][0]["document"]
    if response.status == "incomplete":
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"


def test_a_message_list_with_instructions(client: OpenAI) -> None:
    response = create(
        client,
        instructions="Answer in one short sentence.",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Hello!"}]},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": RAG_QUESTION},
        ],
    )
    assert response.instructions == "Answer in one short sentence."
    assert response.output_text.strip()
    assert ragtune_info(response)["route"] == "rag"  # routed on the last user message


def test_an_adapter_named_as_model_answers(client: OpenAI) -> None:
    response = create(client, model="titler", input=abstract_prompts()[0])
    assert response.model == "titler"
    info = ragtune_info(response)
    assert info["route"] in ("adapter", "adapter+rag")
    assert info["adapter"] == "titler"


def test_a_required_function_tool_then_its_result(client: OpenAI) -> None:
    question = "What is the weather in Paris right now?"
    called = create(
        client, input=question, tools=[CITY], tool_choice="required", max_output_tokens=64
    )
    calls = [item for item in called.output if item.type == "function_call"]
    assert calls, called.output
    call = calls[0]
    assert call.name == "get_weather"
    assert json.loads(call.arguments)["city"] in ("Paris", "London", "Tokyo")
    assert call.call_id
    assert ragtune_info(called)["route"]

    answered = create(
        client,
        input=[
            {"role": "user", "content": question},
            *[item.model_dump(exclude_none=True) for item in called.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"},
        ],
        tools=[CITY],
        tool_choice="none",
    )
    assert [item.type for item in answered.output] == ["message"]
    assert answered.output_text.strip()


def test_a_refused_feature_is_an_openai_error_naming_the_field(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as caught:
        client.responses.create(
            model=DEFAULT_MODEL_NAME, input="hi", previous_response_id="resp_123"
        )
    assert caught.value.status_code == 400
    assert_openai_shape("error", {"error": caught.value.body})
    assert caught.value.param == "previous_response_id"
    assert "stores no responses" in caught.value.message


def test_the_stream_is_typed_events_in_openais_shape(client: OpenAI) -> None:
    body = {
        "model": DEFAULT_MODEL_NAME, "input": RAG_QUESTION, "stream": True, "temperature": 0,
        "max_output_tokens": 8,
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", f"{client.base_url}responses", json=body, headers=headers, timeout=300
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = [event.split("\n") for event in text.strip().split("\n\n")]
    payloads = [json.loads(data.removeprefix("data: ")) for _, data in events]
    for (name, _), payload in zip(events, payloads, strict=True):
        assert name == f"event: {payload['type']}"
        assert_openai_shape("response.stream_event", payload)
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert payloads[0]["response"]["ragtune"]["route"] == "rag"
    assert payloads[-1]["type"] in ("response.completed", "response.incomplete")


def test_the_openai_client_streams_text(client: OpenAI) -> None:
    with client.responses.stream(
        model=DEFAULT_MODEL_NAME, input=RAG_QUESTION, temperature=0, max_output_tokens=16
    ) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added",
    ]  # fmt: skip
    assert kinds[-4:-1] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
    ]  # fmt: skip
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert deltas.strip()
    assert final.output_text == deltas
    assert ragtune_info(events[0].response)["route"] == "rag"
    assert ragtune_info(final)["sources"]


def test_a_streamed_function_call_and_the_final_response(client: OpenAI) -> None:
    with client.responses.stream(
        model=DEFAULT_MODEL_NAME,
        input="What is the weather in Tokyo?",
        tools=[CITY],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
        max_output_tokens=64,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-3:] == [
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    (call,) = final.output
    assert call.type == "function_call"
    assert json.loads(call.arguments)["city"] in ("Paris", "London", "Tokyo")
