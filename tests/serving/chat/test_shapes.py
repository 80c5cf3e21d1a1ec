"""The engine's answers reshaped to OpenAI's: bodies as vLLM 0.32 answers them
(tests/support/vllm_bodies.py; tool calls in vLLM's types), checked against the vendored OpenAI
schema with ragtune's strictness (tests/support/openai_schema.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ragtune.serving.chat import shapes
from tests.support.openai_schema import assert_openai_shape, openai_shape_errors
from tests.support.vllm_bodies import vllm_completion, vllm_stream

ENGINE_ONLY = (
    "prompt_logprobs", "prompt_token_ids", "prompt_text", "kv_transfer_params",
    "ec_transfer_params", "metrics",
)  # fmt: skip
BYTES_HELLO = [72, 101, 108, 108, 111]


def token_logprob(top: int = 2) -> dict[str, Any]:
    entry = {"token": "Hello", "logprob": -2.36, "bytes": BYTES_HELLO}
    return {**entry, "top_logprobs": [entry, {"token": "I", "logprob": -2.38, "bytes": [73]}][:top]}


def test_the_recorded_engine_answer_is_not_openais_shape() -> None:
    """The point of the module: vLLM's own body fails the strict check (so the check can fail)."""
    problems = "\n".join(openai_shape_errors("chat.completion", vllm_completion()))
    for field in ("prompt_logprobs", "kv_transfer_params", "token_ids", "stop_reason"):
        assert f".{field}: not in OpenAI's schema" in problems
    for field in ("annotations", "function_call", "service_tier", "prompt_tokens_details"):
        assert f".{field}: null where OpenAI omits the field" in problems


def test_a_whole_answer_keeps_openais_fields_only() -> None:
    body = vllm_completion()
    shaped = shapes.completion(body)
    assert_openai_shape("chat.completion", shaped)
    assert not set(ENGINE_ONLY) & shaped.keys()
    assert "system_fingerprint" not in shaped  # the engine's version, not ragtune's
    assert shaped["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there, welcome", "refusal": None},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    assert shaped["usage"] == {"prompt_tokens": 32, "completion_tokens": 4, "total_tokens": 36}
    assert body == vllm_completion()  # the engine's body is left as it was


def test_logprobs_asked_for_are_kept_in_openais_shape() -> None:
    shaped = shapes.completion(vllm_completion(logprobs={"content": [token_logprob()]}))
    assert_openai_shape("chat.completion", shaped)
    assert shaped["choices"][0]["logprobs"] == {"content": [token_logprob()], "refusal": None}


def test_tool_calls_are_kept_and_an_answer_of_calls_only_has_null_content() -> None:
    call = {
        "id": "chatcmpl-tool-9f1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }  # fmt: skip
    body = vllm_completion(finish_reason="tool_calls")
    body["choices"][0]["message"].update(content=None, tool_calls=[call])
    shaped = shapes.completion(body)
    assert_openai_shape("chat.completion", shaped)
    assert shaped["choices"][0]["message"] == {
        "role": "assistant", "content": None, "refusal": None, "tool_calls": [call],
    }  # fmt: skip


def test_usage_details_are_kept_when_the_engine_counted_them() -> None:
    body = vllm_completion()
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 16, "created_cache_tokens": None}
    body["usage"]["completion_tokens_details"] = {}
    shaped = shapes.completion(body)
    assert_openai_shape("chat.completion", shaped)
    assert shaped["usage"]["prompt_tokens_details"] == {"cached_tokens": 16}
    assert "completion_tokens_details" not in shaped["usage"]


@pytest.mark.parametrize("usage_wanted", [False, True])
def test_every_chunk_of_a_stream_has_openais_shape(usage_wanted: bool) -> None:
    chunks = [shapes.chunk(c, usage_wanted=usage_wanted) for c in vllm_stream()]
    for chunk in chunks:
        assert_openai_shape("chat.completion.chunk", chunk)
        assert not set(ENGINE_ONLY) & chunk.keys()
    assert chunks[0]["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    assert chunks[1]["choices"][0] == {
        "index": 0,
        "delta": {"content": "Hello"},
        "finish_reason": None,
    }
    assert chunks[2]["choices"][0]["finish_reason"] == "length"
    last = chunks[-1]
    assert last["choices"] == []
    if usage_wanted:
        assert last["usage"] == {"prompt_tokens": 32, "completion_tokens": 4, "total_tokens": 36}
        assert_openai_shape("usage", last["usage"])
    else:
        assert "usage" not in last


def test_streamed_logprobs_and_tool_call_deltas_are_kept() -> None:
    first = vllm_stream()[1]
    first["choices"][0]["logprobs"] = {"content": [token_logprob(top=1)]}
    first["choices"][0]["delta"] = {
        "tool_calls": [
            {
                "id": "chatcmpl-tool-9f1", "type": "function", "index": 0,
                "function": {"name": "get_weather", "arguments": None},
            }
        ]
    }  # fmt: skip
    later = copy.deepcopy(vllm_stream()[1])
    later["choices"][0]["delta"] = {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]
    }
    shaped = [shapes.chunk(c, usage_wanted=False) for c in (first, later)]
    for chunk in shaped:
        assert_openai_shape("chat.completion.chunk", chunk)
    assert shaped[0]["choices"][0]["logprobs"] == {
        "content": [token_logprob(top=1)],
        "refusal": None,
    }
    assert shaped[0]["choices"][0]["delta"]["tool_calls"] == [
        {
            "index": 0,
            "id": "chatcmpl-tool-9f1",
            "type": "function",
            "function": {"name": "get_weather"},
        }
    ]
    assert shaped[1]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}
    ]


def test_the_strict_check_allows_ragtune_at_the_top_only() -> None:
    shaped = shapes.completion(vllm_completion())
    assert_openai_shape("chat.completion", {**shaped, "ragtune": {"route": "rag"}})
    shaped["choices"][0]["ragtune"] = {"route": "rag"}
    assert openai_shape_errors("chat.completion", shaped) == [
        "body.choices[0].ragtune: not in OpenAI's schema (Choice)"
    ]
