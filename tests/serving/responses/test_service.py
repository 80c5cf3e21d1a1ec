"""The Responses API as a translation of the chat path, over the server's real parts with fakes
at the edges (an engine behind `httpx.MockTransport` answering as vLLM does, the fake embedder,
the in-memory store): the chat request a Responses request becomes, the refusals, the Response
and the typed events made of the chat answer, each checked against OpenAI's vendored schema and
read back by the official `openai` client. Seconds, no model."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from unittest.mock import ANY

import anyio
import httpx
import pytest
from openai import OpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from ragtune.adapters.settings import AdapterSettings
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord
from ragtune.serving.components import Components, assemble
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.errors import InvalidRequestError
from ragtune.serving.responses.protocol import ResponsesRequest
from ragtune.serving.responses.service import to_chat_request
from ragtune.serving.settings import ApiSettings, EngineSettings, RouterSettings, ServingSettings
from tests.support.fakes import FakeEmbedder, FakeTokenizer, InMemoryStore
from tests.support.openai_schema import assert_openai_shape

BASE = "base-model"
PASSAGE = "Invoices are refunded within thirty days of the refund request."
QUESTION = "How are invoices refunded, and within how many days?"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
EVENTS = TypeAdapter(ResponseStreamEvent)
T = TypeVar("T")


class Engine:
    """vLLM's OpenAI API as ragtune calls it: the model list and chat completions, answering
    `message` (whole) or `deltas` (streamed; without [DONE] when `broken`)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.message: dict[str, Any] = {"role": "assistant", "content": "Thirty days [1]."}
        self.finish_reason = "stop"
        self.deltas: list[dict[str, Any]] = [
            {"role": "assistant", "content": ""},
            {"content": "Thirty"},
            {"content": " days [1]."},
        ]
        self.broken = False

    def client(self) -> EngineClient:
        return EngineClient(
            "http://engine", connect_retries=0, transport=httpx.MockTransport(self.handle)
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": BASE, "max_model_len": 2048}]})
        if path == "/health":
            return httpx.Response(200)
        assert path == "/v1/chat/completions", path
        body = json.loads(request.content)
        self.sent.append(body)
        usage = {"prompt_tokens": 50, "completion_tokens": 3, "total_tokens": 53}
        if not body.get("stream"):
            choice = {"index": 0, "message": self.message, "finish_reason": self.finish_reason}
            return httpx.Response(
                200,
                json={
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                    "model": body["model"], "choices": [choice], "usage": usage,
                },
            )  # fmt: skip
        chunks = [
            {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
            for delta in self.deltas
        ]
        chunks[-1]["finish_reason"] = self.finish_reason
        payloads = [
            {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
             "choices": [choice]}
            for choice in chunks
        ]  # fmt: skip
        if self.broken:
            text = "".join(f"data: {json.dumps(p)}\n\n" for p in payloads[:2])
        else:
            payloads.append({"id": "c", "object": "chat.completion.chunk", "created": 0,
                             "model": body["model"], "choices": [], "usage": usage})  # fmt: skip
            text = "".join(f"data: {json.dumps(p)}\n\n" for p in payloads) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})


def components(data_dir: Path, engine: Engine, **api: Any) -> Components:
    settings = ServingSettings(
        retrieval=RetrievalSettings(data_dir=data_dir),
        engine=EngineSettings(data_dir=data_dir, max_model_len=2048),
        adapters=AdapterSettings(data_dir=data_dir),
        router=RouterSettings(),
        api=ApiSettings(allow_unauthenticated=True, **api),
    )
    embedder = FakeEmbedder()
    store = InMemoryStore()
    collection = store.collection("default", embedder.model_id, create=True)
    metadata = {"source": "/srv/policy.md", "display_source": "policy.md", "doc_id": "policy"}
    collection.add([ChunkRecord("doc-1", PASSAGE, metadata, embedder.embed([PASSAGE])[0])])
    pool = EnginePool([engine.client()], slots=2)
    return assemble(
        settings, store=store, embedder=embedder, engines=pool, tokenizer=FakeTokenizer(),
        base_model=BASE,
    )  # fmt: skip


def run(parts: Components, work: Callable[[], Awaitable[T]]) -> T:
    async def within() -> T:
        async with parts:
            return await work()

    return anyio.run(within)


def request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": BASE, "input": QUESTION, **fields})


def answer(parts: Components, body: ResponsesRequest) -> dict[str, Any]:
    async def work() -> dict[str, Any]:
        return await parts.responses.complete(await parts.responses.prepare(body))

    response = run(parts, work)
    assert_openai_shape("response", response)
    Response.model_validate(response)
    return response


def stream(parts: Components, body: ResponsesRequest) -> list[str]:
    """The SSE events of a streamed Response, as they go out."""

    async def work() -> list[str]:
        events = await parts.responses.open_stream(await parts.responses.prepare(body))
        return [event async for event in events]

    return run(parts, work)


def payloads(events: list[str]) -> list[dict[str, Any]]:
    """Each event's data, checked: OpenAI's shape, the `event:` line naming its type, and the
    sequence numbers counting up from 0."""
    found = []
    for number, event in enumerate(events):
        name, data = event.removesuffix("\n\n").split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        assert payload["sequence_number"] == number
        assert_openai_shape("response.stream_event", payload)
        EVENTS.validate_python(payload)
        found.append(payload)
    return found


def read_by_the_openai_client(events: list[str], **create: Any) -> Any:
    """What `client.responses.stream(...)` makes of these events: (events, final response)."""
    body = "".join(events).encode()
    transport = httpx.MockTransport(
        lambda _: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    client = OpenAI(
        base_url="http://ragtune/v1", api_key="k", http_client=httpx.Client(transport=transport)
    )
    with client.responses.stream(model=BASE, input=QUESTION, **create) as responses:
        seen = list(responses)
        return seen, responses.get_final_response()


@pytest.fixture
def engine() -> Engine:
    return Engine()


# Request -> chat request


def test_string_input_and_instructions_become_a_system_then_a_user_message() -> None:
    chat = to_chat_request(
        request(instructions="Answer briefly.", max_output_tokens=20, temperature=0, top_p=0.5)
    )
    assert [(m.role, m.text()) for m in chat.messages] == [
        ("system", "Answer briefly."),
        ("user", QUESTION),
    ]
    assert (chat.max_tokens, chat.temperature, chat.top_p) == (20, 0, 0.5)
    assert chat.question() == QUESTION


def test_message_items_keep_their_roles_and_text_parts() -> None:
    chat = to_chat_request(
        request(
            input=[
                {"role": "developer", "content": "Use British spelling."},
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "Hello"}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Hi!",
                                                   "annotations": []}]},
                {"role": "user", "content": QUESTION},
            ]
        )
    )  # fmt: skip
    assert [(m.role, m.text()) for m in chat.messages] == [
        ("system", "Use British spelling."),  # a developer message is the system prompt
        ("user", "Hello"),
        ("assistant", "Hi!"),
        ("user", QUESTION),
    ]
    assert chat.question() == QUESTION


def test_a_function_call_round_trip_becomes_tool_calls_and_a_tool_message() -> None:
    chat = to_chat_request(
        request(
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather",
                 "arguments": '{"city": "Paris"}', "id": "fc_1", "status": "completed"},
                {"type": "function_call_output", "call_id": "call_1", "output": "18 C, sunny"},
            ],
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_weather"},
        )
    )  # fmt: skip
    sent = chat.model_dump(exclude_none=True)
    assert chat.conversation()[1:] == [
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    ]  # fmt: skip
    assert chat.engine_tools() == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_a_previous_responses_file_search_output_goes_back_as_it_is() -> None:
    """A response that used file_search starts its output with a `file_search_call` item;
    sent back with the rest of that output (as the README says output items can be), it was
    a 400, so a follow-up could not be asked. It is the record of that search: the follow-up
    is read with the conversation, and its own file_search searches again."""
    chat = to_chat_request(
        request(
            input=[
                {"role": "user", "content": "How do I enable WAL mode?"},
                {"type": "file_search_call", "id": "fs_1", "status": "completed",
                 "queries": ["How do I enable WAL mode?"], "results": None},
                {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                 "content": [{"type": "output_text", "text": "Run PRAGMA journal_mode=WAL [1].",
                              "annotations": []}]},
                {"role": "user", "content": "And how do I turn that off?"},
            ],
            tools=[{"type": "file_search", "vector_store_ids": ["docs"]}],
        )
    )  # fmt: skip
    assert [(m.role, m.text()) for m in chat.messages] == [
        ("user", "How do I enable WAL mode?"),
        ("assistant", "Run PRAGMA journal_mode=WAL [1]."),
        ("user", "And how do I turn that off?"),
    ]
    assert chat.user_turns() == ["How do I enable WAL mode?", "And how do I turn that off?"]
    with pytest.raises(InvalidRequestError, match="'web_search_call' are not supported"):
        to_chat_request(request(input=[{"type": "web_search_call", "id": "ws_1"}]))


def test_text_formats_become_the_chat_response_format() -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    chat = to_chat_request(
        request(text={"format": {"type": "json_schema", "name": "t", "schema": schema,
                                 "strict": True}})
    )  # fmt: skip
    assert chat.response_format is not None
    assert chat.response_format.for_engine() == {
        "type": "json_schema",
        "json_schema": {"name": "t", "schema": schema, "strict": True},
    }
    plain = to_chat_request(request(text={"format": {"type": "json_object"}}))
    assert plain.response_format is not None
    assert plain.response_format.for_engine() == {"type": "json_object"}


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "stores no responses"),
        ({"conversation": "conv_1"}, "conversation", "stores no conversations"),
        ({"background": True}, "background", "within the request"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt", "no stored prompt"),
        ({"include": ["message.output_text.logprobs"]}, "include", "no extra output"),
        ({"reasoning": {"effort": "high"}}, "reasoning", "reasoning channel"),
        ({"truncation": "auto"}, "truncation", "does not drop turns"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "built-in"),
        ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": []}]},
         "tools", "give 1 to 8 ids"),
        ({"tools": [WEATHER], "tool_choice": {"type": "web_search_preview"}}, "tool_choice",
         '{"type": "function", "name": ...}'),
        ({"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://example.com/a.png"}]}]},
         "input[0].content[1]", f"input_image part, but the model {BASE!r} reads text only"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input[0].content[0]", "input_file part"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
         "input[0].content[0]", "input_audio part"),
        ({"input": [{"role": "user", "content": "hi"}, {"type": "reasoning", "summary": []}]},
         "input[1].type", "'reasoning' are not supported"),
        ({"input": [{"role": "user", "content": "hi"},
                    {"type": "function_call_output", "call_id": "call_9", "output": "1"}]},
         "input[1].call_id", "no function_call item before it"),
        ({"input": [{"role": "system", "content": "Be brief."}]}, "input", "no user message"),
        ({"max_output_tokens": 65}, "max_output_tokens", "above this server's limit of 64"),
    ],
)  # fmt: skip
def test_what_the_subset_does_not_serve_is_a_400_naming_the_field(
    tmp_path: Path, engine: Engine, fields: dict[str, Any], param: str, says: str
) -> None:
    parts = components(tmp_path, engine, max_tokens_limit=64)

    async def prepare() -> None:
        await parts.responses.prepare(request(**fields))

    with pytest.raises(InvalidRequestError) as caught:
        run(parts, prepare)
    assert caught.value.param == param
    assert says in str(caught.value)
    assert engine.sent == []
    assert parts.engines.in_flight(BASE) == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"store": False},
        {"store": True},  # accepted: the Response carries no `store`, nothing is kept
        {"background": False, "reasoning": {"effort": None}, "include": []},
        {"truncation": "disabled", "metadata": {"ticket": "42"}, "stream_options": {}},
    ],
)
def test_harmless_fields_are_accepted(
    tmp_path: Path, engine: Engine, fields: dict[str, Any]
) -> None:
    response = answer(components(tmp_path, engine), request(**fields))
    assert response["status"] == "completed"
    assert "store" not in response
    assert response["metadata"] == fields.get("metadata", {})


def test_the_chat_paths_400s_name_the_responses_fields(tmp_path: Path, engine: Engine) -> None:
    parts = components(tmp_path, engine)

    def refusal(**fields: Any) -> InvalidRequestError:
        async def prepare() -> None:
            await parts.responses.prepare(request(**fields))

        with pytest.raises(InvalidRequestError) as caught:
            run(parts, prepare)
        return caught.value

    # "auto" (also meant by tools without tool_choice) needs the engine's tool-call parser.
    auto = refusal(tools=[WEATHER])
    assert auto.param == "tool_choice"
    assert '{"type": "function", "name": ...}' in str(auto)
    named = refusal(tools=[{**WEATHER, "name": "get weather"}], tool_choice="required")
    assert named.param == "tools[0].name"
    unknown = refusal(tools=[WEATHER], tool_choice={"type": "function", "name": "other"})
    assert unknown.param == "tool_choice.name"
    schema = refusal(text={"format": {"type": "json_schema", "name": "bad name", "schema": {}}})
    assert schema.param == "text.format.name"
    assert engine.sent == []


# Chat answer -> Response


def test_a_whole_answer_is_a_response_with_the_route_and_sources(
    tmp_path: Path, engine: Engine
) -> None:
    response = answer(
        components(tmp_path, engine),
        request(instructions="Answer briefly.", max_output_tokens=30, temperature=0),
    )
    (sent,) = engine.sent
    assert sent["max_tokens"] == 30
    assert sent["messages"][0]["role"] == "system"
    assert "Answer briefly." in sent["messages"][0]["content"]  # after ragtune's instructions
    assert PASSAGE in sent["messages"][0]["content"]
    assert response["id"].startswith("resp_")
    assert (response["object"], response["status"], response["model"]) == (
        "response", "completed", BASE,
    )  # fmt: skip
    assert (response["instructions"], response["max_output_tokens"]) == ("Answer briefly.", 30)
    (message,) = response["output"]
    assert message["id"].startswith("msg_")
    assert message["content"] == [
        {"type": "output_text", "text": "Thirty days [1].", "annotations": []}
    ]
    assert response["usage"]["input_tokens"] == 50
    assert response["usage"]["output_tokens"] == 3
    assert response["usage"]["total_tokens"] == 53
    info = response["ragtune"]
    assert info["route"] == "rag"
    assert [s["document"] for s in info["sources"]] == ["policy.md"]
    assert Response.model_validate(response).output_text == "Thirty days [1]."


def test_an_answer_cut_by_the_bound_is_incomplete(tmp_path: Path, engine: Engine) -> None:
    engine.finish_reason = "length"
    response = answer(components(tmp_path, engine), request(max_output_tokens=3))
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"


def test_a_tool_call_answer_is_a_function_call_item(tmp_path: Path, engine: Engine) -> None:
    engine.message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "chatcmpl-tool-1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    }  # fmt: skip
    engine.finish_reason = "tool_calls"
    response = answer(
        components(tmp_path, engine), request(tools=[WEATHER], tool_choice="required")
    )
    (call,) = response["output"]
    assert call["type"] == "function_call"
    assert call["id"].startswith("fc_")
    assert (call["call_id"], call["name"], call["status"]) == (
        "chatcmpl-tool-1", "get_weather", "completed",
    )  # fmt: skip
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert (response["tool_choice"], response["tools"]) == ("required", [WEATHER])
    assert engine.sent[0]["tool_choice"] == "required"


# Chat chunks -> typed events

TEXT_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added",
    "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
    "response.output_text.done", "response.content_part.done", "response.output_item.done",
    "response.completed",
]  # fmt: skip


def test_a_stream_is_the_typed_events_the_openai_client_reads(
    tmp_path: Path, engine: Engine
) -> None:
    parts = components(tmp_path, engine)
    events = stream(parts, request(stream=True, max_output_tokens=30))
    found = payloads(events)
    assert [p["type"] for p in found] == TEXT_EVENTS
    created, completed = found[0]["response"], found[-1]["response"]
    assert created["status"] == "in_progress"
    assert created["output"] == []
    assert created["ragtune"]["route"] == "rag"
    assert completed["id"] == created["id"]
    # Once complete, the answer's grounding in its passages joins `ragtune`.
    assert completed["ragtune"] == {**created["ragtune"], "grounding": ANY}
    assert completed["ragtune"]["grounding"]["sentences"] == 1
    assert completed["usage"]["output_tokens"] == 3
    deltas = "".join(p["delta"] for p in found if p["type"] == "response.output_text.delta")
    assert deltas == "Thirty days [1]."
    assert engine.sent[0]["stream_options"] == {"include_usage": True}
    assert parts.engines.in_flight(BASE) == 0

    seen, final = read_by_the_openai_client(events)
    assert [event.type for event in seen] == TEXT_EVENTS
    assert final.output_text == deltas
    assert final.id == created["id"]
    assert (final.model_extra or {})["ragtune"]["sources"]


def test_the_response_whole_or_streamed_carries_the_answers_grounding(
    tmp_path: Path, engine: Engine
) -> None:
    off_topic = "The cafeteria serves vegetarian lunches on Wednesdays."
    text = f"{PASSAGE[:-1]} [1]. {off_topic}"
    engine.message = {"role": "assistant", "content": text}
    engine.deltas = [{"role": "assistant", "content": ""}, {"content": text}]
    expected = {"score": 0.5, "sentences": 2, "unsupported": [off_topic], "method": "similarity"}
    whole = answer(components(tmp_path / "whole", engine), request())
    assert whole["ragtune"]["grounding"] == expected
    events = stream(components(tmp_path / "stream", engine), request(stream=True))
    found = payloads(events)
    assert "grounding" not in found[0]["response"]["ragtune"]  # response.created: not known yet
    assert found[-1]["type"] == "response.completed"
    assert found[-1]["response"]["ragtune"]["grounding"] == expected
    _, final = read_by_the_openai_client(events)
    assert (final.model_extra or {})["ragtune"]["grounding"] == expected


def test_a_stream_cut_by_the_bound_ends_incomplete(tmp_path: Path, engine: Engine) -> None:
    engine.finish_reason = "length"
    found = payloads(stream(components(tmp_path, engine), request(stream=True)))
    assert found[-1]["type"] == "response.incomplete"
    assert found[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert found[-2]["item"]["status"] == "incomplete"


def test_a_streamed_tool_call_is_a_function_call_item_with_argument_deltas(
    tmp_path: Path, engine: Engine
) -> None:
    engine.deltas = [
        {"role": "assistant", "content": ""},
        {"tool_calls": [{"index": 0, "id": "chatcmpl-tool-1", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    ]  # fmt: skip
    engine.finish_reason = "tool_calls"
    fields = {"tools": [WEATHER], "tool_choice": "required"}
    events = stream(components(tmp_path, engine), request(stream=True, **fields))
    found = payloads(events)
    assert [p["type"] for p in found] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert found[5]["arguments"] == '{"city": "Paris"}'
    assert found[-1]["response"]["output"] == [found[-2]["item"]]

    _, final = read_by_the_openai_client(events, tools=[WEATHER], tool_choice="required")
    (call,) = final.output
    assert (call.type, call.call_id, call.name) == (
        "function_call",
        "chatcmpl-tool-1",
        "get_weather",
    )
    assert json.loads(call.arguments) == {"city": "Paris"}


def test_an_engine_failure_mid_stream_ends_in_error_and_response_failed(
    tmp_path: Path, engine: Engine
) -> None:
    engine.broken = True  # the stream ends without [DONE] after the first text
    parts = components(tmp_path, engine)
    found = payloads(stream(parts, request(stream=True)))
    assert [p["type"] for p in found[-3:]] == [
        "response.output_item.done", "error", "response.failed",
    ]  # fmt: skip
    assert found[-3]["item"]["status"] == "incomplete"
    failed = found[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"
    assert "engine" in found[-2]["message"]
    assert found[-2]["code"] == "engine_stream_error"  # chat's code, passed on
    assert "http" not in found[-2]["message"]  # no engine URL reaches a client
    assert parts.engines.in_flight(BASE) == 0
