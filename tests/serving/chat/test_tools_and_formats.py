"""Tools and structured outputs through `ragtune serve` on the real engine, with the clients
applications use: the official `openai` package and LangChain's ChatOpenAI. Every route (RAG,
adapter, base) honours tool_choice and response_format; every JSON answer is parsed against
its schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from langchain_openai import ChatOpenAI
from openai import BadRequestError, OpenAI
from pydantic import BaseModel, Field

from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ragtune_serve
from tests.support.servers import free_port
from tests.support.serving import RAG_QUESTION, attach_env

pytestmark = pytest.mark.engine
KEY = "tools-key"
ADAPTER = "titler"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 24}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
PARAMETERS = {
    "get_weather": WEATHER["function"]["parameters"],
    "get_time": TIME["function"]["parameters"],
}
SUMMARY = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "maxLength": 40},
        "confident": {"type": "boolean"},
    },
    "required": ["topic", "confident"],
    "additionalProperties": False,
}
SUMMARY_FORMAT: Any = {
    "type": "json_schema",
    "json_schema": {"name": "summary", "strict": True, "schema": SUMMARY},
}


@pytest.fixture(scope="module")
def server(api_data: Path, engine: EngineSettings, models_dir: Path) -> Iterator[str]:
    """`ragtune serve` on the small corpus with the `titler` adapter, attached to the session's
    engine, which parses the model's own tool calls."""
    assert engine.tool_call_parser, "the session's engine is started with a tool-call parser"
    env = attach_env(engine, models_dir, RAGTUNE_TOOL_CALL_PARSER=engine.tool_call_parser)
    with ragtune_serve(api_data, free_port(), **env, RAGTUNE_API_KEYS=KEY) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> OpenAI:
    return OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def ask(client: OpenAI, question: str, **fields: Any) -> Any:
    fields.setdefault("max_tokens", 64)
    return client.chat.completions.create(
        model=fields.pop("model", DEFAULT_MODEL_NAME),
        messages=[{"role": "user", "content": question}],
        temperature=0,
        **fields,
    )


def check_call(call: Any, name: str | None = None) -> dict[str, Any]:
    """A tool call as an application runs it: a known function, arguments valid for it."""
    assert call.type == "function"
    assert call.id
    if name is not None:
        assert call.function.name == name
    arguments: dict[str, Any] = json.loads(call.function.arguments)
    jsonschema.validate(arguments, PARAMETERS[call.function.name])
    return arguments


def test_required_and_named_tool_choices_give_valid_calls_on_the_rag_route(
    client: OpenAI,
) -> None:
    # The RAG route forced: the retrieved passages stay in the prompt beside the tools.
    rag = {"ragtune": {"route": "rag"}}
    # One call (parallel_tool_calls forwarded): "required" otherwise lets a small model append
    # calls until max_tokens cuts the list.
    required = ask(
        client,
        RAG_QUESTION,
        tools=[WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        extra_body=rag,
    )
    (call,) = required.choices[0].message.tool_calls
    check_call(call)
    extension = (required.model_extra or {})["ragtune"]
    assert extension["route"] == "rag"
    assert extension["sources"]

    named = ask(
        client,
        "What is the weather in Paris?",
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        extra_body=rag,
    )
    (call,) = named.choices[0].message.tool_calls
    check_call(call, "get_time")


def test_tool_calls_on_the_adapter_and_base_routes(client: OpenAI) -> None:
    for model, extra in ((ADAPTER, {}), (DEFAULT_MODEL_NAME, {"ragtune": {"route": "base"}})):
        answer = ask(
            client,
            "What is the weather in Oslo?",
            model=model,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            extra_body=extra,
        )
        (call,) = answer.choices[0].message.tool_calls
        check_call(call, "get_weather")
        assert (answer.model_extra or {})["ragtune"]["route"] == extra.get("ragtune", {}).get(
            "route", "adapter"
        )


def test_streamed_tool_call_deltas_add_up_to_a_valid_call(client: OpenAI) -> None:
    stream = ask(
        client,
        "What is the weather in Rome?",
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    name, arguments, ids = "", "", set()
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                assert delta.index == 0
                ids.update([delta.id] if delta.id else [])
                name += (delta.function.name or "") if delta.function else ""
                arguments += (delta.function.arguments or "") if delta.function else ""
    assert name == "get_weather"
    assert len(ids) == 1
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])


def test_a_tool_result_round_trip(client: OpenAI) -> None:
    first = ask(
        client,
        "What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    call = first.choices[0].message.tool_calls[0]
    answer = client.chat.completions.create(
        model=DEFAULT_MODEL_NAME,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": call.function.arguments,
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21, "sky": "sunny"}'},
        ],
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=32,
        temperature=0,
    )
    message = answer.choices[0].message
    assert message.content
    assert not message.tool_calls


def test_auto_tool_choice_with_the_configured_parser(client: OpenAI) -> None:
    answer = ask(client, "What is the weather in Paris?", tools=[WEATHER, TIME])
    message = answer.choices[0].message
    # The model decides: a text answer or calls, and any call it makes is a valid one.
    assert message.content or message.tool_calls
    for call in message.tool_calls or []:
        check_call(call)


def test_json_schema_answers_follow_their_schema_on_every_route(client: OpenAI) -> None:
    for model, route, question in (
        (DEFAULT_MODEL_NAME, "base", "Describe the moon."),
        (ADAPTER, "adapter", "Write the title of an article about coral reefs."),
        (DEFAULT_MODEL_NAME, "rag", RAG_QUESTION),
    ):
        answer = ask(
            client,
            question,
            model=model,
            response_format=SUMMARY_FORMAT,
            extra_body={"ragtune": {"route": route}},
        )
        extension = (answer.model_extra or {})["ragtune"]
        assert extension["route"] == route
        assert bool(extension["sources"]) == (route == "rag")
        assert answer.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(answer.choices[0].message.content or ""), SUMMARY)


def test_json_object_answers_are_json_objects(client: OpenAI) -> None:
    answer = ask(
        client,
        "Give the name and the age of a fictional person as JSON.",
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)


def test_content_the_model_cannot_read_is_a_400(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(
            model=DEFAULT_MODEL_NAME,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                }
            ],
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "messages[0].content[1]"
    assert "reads text only" in error["message"]


class Summary(BaseModel):
    """What a passage is about."""

    topic: str = Field(max_length=40)
    confident: bool


def test_langchain_tools_and_structured_output(server: str) -> None:
    llm = ChatOpenAI(
        base_url=f"{server}/v1",
        api_key=KEY,  # type: ignore[arg-type]
        model=DEFAULT_MODEL_NAME,
        temperature=0,
        max_tokens=64,  # type: ignore[call-arg]
        max_retries=0,
    )
    message = llm.bind_tools([WEATHER, TIME], tool_choice="get_weather").invoke(
        "What is the weather in Madrid?"
    )
    (call,) = message.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather"
    jsonschema.validate(call["args"], WEATHER["function"]["parameters"])

    structured = llm.with_structured_output(Summary, method="json_schema", strict=True)
    summary = structured.invoke(RAG_QUESTION)
    assert isinstance(summary, Summary)
