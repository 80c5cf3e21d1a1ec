"""Fast checks of what a chat request may ask the model to produce and read, without a server:
tools and tool_choice, response_format, content parts the model cannot read, tool turns in the
conversation; and what of them reaches the engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragtune.serving.chat.protocol import MAX_TOOLS, ChatCompletionRequest
from ragtune.serving.chat.service import _engine_request
from ragtune.serving.engine.launcher import EngineLauncher
from ragtune.serving.errors import InvalidRequestError
from ragtune.serving.http_errors import response_for
from ragtune.serving.prompting import PromptBuilder, PromptPlan
from ragtune.serving.settings import EngineSettings

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
PERSON = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "strict": True,
        "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
    },
}


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def refusal(fields: dict[str, Any], *, auto: bool = False) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        request(**fields).check_content(auto_tool_choice=auto)
    # Every refusal is the client's 400 in OpenAI's envelope, naming the field.
    response = response_for(caught.value)
    assert response.status_code == 400
    assert json.loads(bytes(response.body))["error"]["param"] == caught.value.param
    return caught.value


def engine_body(fields: dict[str, Any], *, auto: bool = True) -> dict[str, Any]:
    checked = request(**fields)
    checked.check_content(auto_tool_choice=auto)
    prompt = PromptPlan(checked.conversation(), [], 10)
    return _engine_request(checked, prompt, "served@v1", 64)


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"tools": [{"type": "retrieval"}], "tool_choice": "required"}, "tools[0].type",
         "only function tools"),
        ({"tools": [{"type": "function"}], "tool_choice": "required"}, "tools[0].function",
         "missing"),
        ({"tools": [WEATHER, {"type": "function", "function": {"name": "get weather!"}}],
          "tool_choice": "required"}, "tools[1].function.name", "not a function name"),
        ({"tools": [{"type": "function", "function": {"name": "x" * 65}}],
          "tool_choice": "required"}, "tools[0].function.name", "1 to 64"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "array"}}}], "tool_choice": "required"}, "tools[0].function.parameters",
         "JSON Schema of an object"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}],
          "tool_choice": "required"}, "tools[0].function.parameters", "object"),
        ({"tools": [WEATHER, WEATHER], "tool_choice": "required"}, "tools", "two tools"),
        ({"tools": [TIME] * (MAX_TOOLS + 1), "tool_choice": "required"}, "tools",
         f"at most {MAX_TOOLS}"),
        ({"tools": [WEATHER], "tool_choice": "any"}, "tool_choice", "none, auto, required"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function",
          "function": {"name": "get_time"}}}, "tool_choice.function.name",
         "not among the request's tools (get_weather)"),
        ({"tool_choice": "required"}, "tool_choice", "has no tools"),
    ],
)  # fmt: skip
def test_tools_the_engine_cannot_take_are_refused(
    fields: dict[str, Any], param: str, says: str
) -> None:
    error = refusal(fields, auto=True)
    assert error.param == param
    assert says in str(error)


@pytest.mark.parametrize("choice", [{}, {"tool_choice": "auto"}])
def test_auto_tool_choice_needs_a_tool_call_parser(choice: dict[str, Any]) -> None:
    # Tools without tool_choice mean "auto" (OpenAI's default).
    error = refusal({"tools": [WEATHER], **choice}, auto=False)
    assert error.param == "tool_choice"
    assert "RAGTUNE_TOOL_CALL_PARSER" in str(error)
    assert '"required"' in str(error)
    # With a parser configured, the same request goes to the engine.
    assert engine_body({"tools": [WEATHER], **choice}, auto=True)["tools"] == [WEATHER]


def test_forced_tool_choices_need_no_parser() -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", "none", named):
        body = engine_body({"tools": [WEATHER, TIME], "tool_choice": choice}, auto=False)
        assert body["tool_choice"] == choice
        assert body["tools"] == [WEATHER, TIME]


def test_tools_reach_the_engine_rebuilt_from_their_known_fields() -> None:
    loose = {
        "type": "function",
        "function": {**WEATHER["function"], "strict": True, "x-internal": "dropped"},
        "cache_control": {"type": "ephemeral"},
    }
    body = engine_body({"tools": [loose], "tool_choice": "required", "parallel_tool_calls": False})
    assert body["tools"] == [
        {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    ]
    assert body["parallel_tool_calls"] is False
    # No tools: nothing about them is sent (vLLM refuses a tool_choice without tools).
    plain = engine_body({"tool_choice": "none", "parallel_tool_calls": True})
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(plain)


@pytest.mark.parametrize(
    ("response_format", "param", "says"),
    [
        ({"type": "xml"}, "response_format.type", "text, json_object or json_schema"),
        ({"type": "structural_tag"}, "response_format.type", "json_schema"),
        ({"type": "json_schema"}, "response_format.json_schema", "missing"),
        ({"type": "json_schema", "json_schema": {"name": "p"}},
         "response_format.json_schema.schema", "is missing"),
        ({"type": "json_schema", "json_schema": {"name": "p", "schema": "object"}},
         "response_format.json_schema.schema", "not a JSON object"),
        ({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
         "response_format.json_schema.name", "missing"),
        ({"type": "json_schema", "json_schema": {"name": "a person", "schema": {}}},
         "response_format.json_schema.name", "not a function name"),
    ],
)  # fmt: skip
def test_formats_the_engine_cannot_hold_to_are_refused(
    response_format: dict[str, Any], param: str, says: str
) -> None:
    error = refusal({"response_format": response_format})
    assert error.param == param
    assert says in str(error)


@pytest.mark.parametrize("response_format", [{"type": "text"}, {"type": "json_object"}, PERSON])
def test_formats_reach_the_engine(response_format: dict[str, Any]) -> None:
    loose = {**response_format, "extra": 1}
    assert engine_body({"response_format": loose})["response_format"] == response_format


@pytest.mark.parametrize(
    ("part", "kind"),
    [
        ({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}, "image_url"),
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "input_audio"),
        ({"type": "file", "file": {"file_id": "file-1"}}, "file"),
    ],
)
def test_content_the_model_cannot_read_is_refused(part: dict[str, Any], kind: str) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]},
    ]
    error = refusal({"model": "SmolLM2-135M-Instruct", "messages": messages})
    assert error.param == "messages[1].content[1]"
    assert f"messages[1].content[1] is an '{kind}' part" in str(error)
    assert "'SmolLM2-135M-Instruct' reads text only" in str(error)


TOOL_TURNS = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'},
]


def test_tool_turns_reach_the_template_with_known_fields_only() -> None:
    messages = [{**TOOL_TURNS[0], "secret_engine_field": 1}, *TOOL_TURNS[1:]]
    conversation = request(messages=messages).conversation()
    assert conversation == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": TOOL_TURNS[1]["tool_calls"]},
        {"role": "tool", "content": '{"celsius": 21}', "tool_call_id": "call_1"},
    ]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "tool", "content": "21"}, "messages[1].tool_call_id"),
        ({"role": "user", "content": "x", "tool_calls": TOOL_TURNS[1]["tool_calls"]},
         "messages[1].tool_calls"),
        ({"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "no spaces", "arguments": "{}"}}]}, "messages[1].tool_calls[0].function.name"),
    ],
)  # fmt: skip
def test_malformed_tool_turns_are_refused(message: dict[str, Any], param: str) -> None:
    messages = [TOOL_TURNS[0], message, {"role": "user", "content": "and?"}]
    assert refusal({"messages": messages}).param == param


class ToolsCountingTokenizer:
    """A template that writes the tools into the prompt (one token per tool name)."""

    all_special_tokens = ()
    added_tokens_decoder: dict[int, Any] = {}  # noqa: RUF012 (read only)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [0] * len(text.split())

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> list[int]:
        words = sum(len(m["content"].split()) + 2 for m in conversation)
        return [0] * (words + len(kwargs.get("tools") or []))


def test_the_prompt_count_includes_the_tools_the_template_renders() -> None:
    builder = PromptBuilder(ToolsCountingTokenizer(), 4096)
    messages = [{"role": "user", "content": "hi there"}]
    without = builder.plain(messages, 16).prompt_tokens
    tools = request(tools=[WEATHER, TIME], tool_choice="required").engine_tools()
    assert builder.plain(messages, 16, tools).prompt_tokens == without + 2


def test_a_tool_call_parser_starts_the_engine_with_auto_tool_choice(tmp_path: Path) -> None:
    def flags(**settings: Any) -> list[str]:
        launcher = EngineLauncher(EngineSettings(data_dir=tmp_path, **settings))
        return launcher.command("/models/m", python=Path("/venv/bin/python"))

    assert "--enable-auto-tool-choice" not in flags()
    command = flags(tool_call_parser="xlam")
    at = command.index("--tool-call-parser")
    assert command[at + 1] == "xlam"
    assert "--enable-auto-tool-choice" in command
