"""The engine's chat answers in OpenAI's shapes: each object keeps the fields OpenAI's schema
gives it (an allow-list per object), so the engine's own fields (vLLM's `prompt_token_ids`,
`prompt_logprobs`, `kv_transfer_params`, `token_ids`, `stop_reason`, `reasoning`...) never
reach a client; a field OpenAI omits when it has no value is omitted, not null, and the few
that OpenAI's spec requires and sends as null are always there.

Usage: `completion(body)` for a whole answer, `chunk(body, usage=...)` for each streamed chunk
(the usage chunk included). The caller adds `model` and the `ragtune` extension afterwards.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

# Each object's fields in OpenAI's order, and those it requires but sends as null. OpenAI
# fields ragtune never produces are left out: `audio`, `annotations`, the deprecated
# `function_call` (vLLM's versions of them do not have OpenAI's shapes), `service_tier`,
# `moderation`, `obfuscation`; and `system_fingerprint`, which vLLM fills with its own version
# (an engine internal, not a fingerprint of ragtune's configuration).
_COMPLETION = ("id", "object", "created", "model", "choices", "usage")
_CHOICE = ("index", "message", "logprobs", "finish_reason")
_CHOICE_NULLABLE = frozenset({"logprobs"})
_MESSAGE = ("role", "content", "refusal", "tool_calls")
_MESSAGE_NULLABLE = frozenset({"content", "refusal"})
_TOOL_CALL = ("id", "type", "function")
_FUNCTION = ("name", "arguments")
_CHUNK_CHOICE = ("index", "delta", "logprobs", "finish_reason")
_CHUNK_CHOICE_NULLABLE = frozenset({"finish_reason"})
_DELTA = ("role", "content", "refusal", "tool_calls")
_DELTA_TOOL_CALL = ("index", "id", "type", "function")
_LOGPROBS = ("content", "refusal")
_LOGPROBS_NULLABLE = frozenset(_LOGPROBS)
_TOKEN_LOGPROB = ("token", "logprob", "bytes", "top_logprobs")
_TOP_LOGPROB = ("token", "logprob", "bytes")
_BYTES_NULLABLE = frozenset({"bytes"})
_USAGE = (
    "prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details",
    "completion_tokens_details",
)  # fmt: skip
_PROMPT_DETAILS = ("cached_tokens", "audio_tokens")
_COMPLETION_DETAILS = (
    "reasoning_tokens", "audio_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens",
)  # fmt: skip
_NONE: frozenset[str] = frozenset()


def completion(body: Json) -> Json:
    """A whole chat completion (`chat.completion`) in OpenAI's shape."""
    shaped = _pick(body, _COMPLETION)
    shaped["choices"] = [_choice(c) for c in body.get("choices") or ()]
    if "usage" in shaped:
        shaped["usage"] = usage(shaped["usage"])
    return shaped


def chunk(body: Json, *, usage_wanted: bool) -> Json:
    """A streamed chunk (`chat.completion.chunk`) in OpenAI's shape; `usage` is kept only when
    the client asked for it (`stream_options.include_usage`)."""
    shaped = _pick(body, _COMPLETION)
    shaped["choices"] = [_chunk_choice(c) for c in body.get("choices") or ()]
    if "usage" in shaped:
        if usage_wanted:
            shaped["usage"] = usage(shaped["usage"])
        else:
            del shaped["usage"]
    return shaped


def usage(body: Json) -> Json:
    """Token counts (`CompletionUsage`); the details only when the engine counted some."""
    shaped = _pick(body, _USAGE)
    for name, fields in (
        ("prompt_tokens_details", _PROMPT_DETAILS),
        ("completion_tokens_details", _COMPLETION_DETAILS),
    ):
        if name in shaped:
            details = _pick(shaped[name], fields)
            if details:
                shaped[name] = details
            else:
                del shaped[name]
    return shaped


def _choice(body: Json) -> Json:
    shaped = _pick(body, _CHOICE, _CHOICE_NULLABLE)
    shaped["message"] = _message(body.get("message") or {}, _MESSAGE, _MESSAGE_NULLABLE)
    if shaped["logprobs"] is not None:
        shaped["logprobs"] = _logprobs(shaped["logprobs"])
    return shaped


def _chunk_choice(body: Json) -> Json:
    shaped = _pick(body, _CHUNK_CHOICE, _CHUNK_CHOICE_NULLABLE)
    shaped["delta"] = _message(body.get("delta") or {}, _DELTA, _NONE)
    if "logprobs" in shaped:
        shaped["logprobs"] = _logprobs(shaped["logprobs"])
    return shaped


def _message(body: Json, fields: tuple[str, ...], nullable: frozenset[str]) -> Json:
    shaped = _pick(body, fields, nullable)
    calls = shaped.pop("tool_calls", None)
    if calls:  # an empty list is omitted, as OpenAI does
        call_fields = _DELTA_TOOL_CALL if fields is _DELTA else _TOOL_CALL
        shaped["tool_calls"] = [_tool_call(call, call_fields) for call in calls]
    return shaped


def _tool_call(body: Json, fields: tuple[str, ...]) -> Json:
    shaped = _pick(body, fields)
    if "function" in shaped:
        shaped["function"] = _pick(shaped["function"], _FUNCTION)
    return shaped


def _logprobs(body: Json) -> Json:
    shaped = _pick(body, _LOGPROBS, _LOGPROBS_NULLABLE)
    if shaped["content"] is not None:
        shaped["content"] = [
            {
                **_pick(token, _TOKEN_LOGPROB[:3], _BYTES_NULLABLE),
                "top_logprobs": [
                    _pick(top, _TOP_LOGPROB, _BYTES_NULLABLE)
                    for top in token.get("top_logprobs") or ()
                ],
            }
            for token in shaped["content"]
        ]
    return shaped


def _pick(body: Json, fields: tuple[str, ...], nullable: frozenset[str] = _NONE) -> Json:
    """`body`'s `fields` (in that order) that have a value; a `nullable` one always, null when
    missing."""
    shaped = {}
    for name in fields:
        value = body.get(name)
        if value is not None or name in nullable:
            shaped[name] = value
    return shaped
