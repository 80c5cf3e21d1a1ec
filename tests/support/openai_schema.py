"""OpenAI's response shapes, strictly: `assert_openai_shape(kind, body)` validates a response
body against the vendored schema (tests/data/openai/schemas.json, generated from the official
`openai` package) and adds ragtune's rules on top, since that schema is lenient (the SDK's
pydantic types allow extra fields and make every optional field nullable):

- no property outside the schema, except `ragtune` at the top level (the one extension);
- a property the schema does not require is omitted rather than null, except those OpenAI's
  spec makes required-and-nullable (`REQUIRED_NULLABLE`, the one list of them).

Kinds: chat.completion, chat.completion.chunk, usage, embedding.list, error, model.list,
response, response.stream_event.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "openai" / "schemas.json"
EXTENSION = "ragtune"

# Fields OpenAI's published spec lists as required but nullable, and OpenAI sends as null
# (the SDK's types cannot say so: they default every optional field to None). Keyed by kind,
# then by the object's definition name in that kind's schema ("#" for the top level).
RESPONSE_NULLABLE = frozenset(
    {"error", "incomplete_details", "instructions", "metadata", "temperature", "top_p"}
)
REQUIRED_NULLABLE: dict[str, dict[str, frozenset[str]]] = {
    "chat.completion": {
        # ChatCompletionResponseMessage: required [role, content, refusal]; content is null
        # when the answer is only tool calls, refusal null unless the model refused.
        "ChatCompletionMessage": frozenset({"content", "refusal"}),
        # Each choice: required [finish_reason, index, message, logprobs]; null logprobs
        # unless the client asked for them.
        "Choice": frozenset({"logprobs"}),
        # The logprobs object: required [content, refusal], both nullable.
        "ChoiceLogprobs": frozenset({"content", "refusal"}),
        # ChatCompletionTokenLogprob and its top_logprobs: `bytes` required, nullable.
        "ChatCompletionTokenLogprob": frozenset({"bytes"}),
        "TopLogprob": frozenset({"bytes"}),
    },
    "chat.completion.chunk": {
        # A chunk's choice: required [delta, finish_reason, index]; finish_reason is null on
        # every chunk but the last. (The delta's fields are all optional: omitted when null.)
        "Choice": frozenset({"finish_reason"}),
        "ChoiceLogprobs": frozenset({"content", "refusal"}),
        "ChatCompletionTokenLogprob": frozenset({"bytes"}),
        "TopLogprob": frozenset({"bytes"}),
    },
    # The error object: required [type, message, param, code]; param and code nullable.
    "error": {"ErrorObject": frozenset({"param", "code"})},
    # The Response: required [id, object, created_at, error, incomplete_details, instructions,
    # model, tools, output, parallel_tool_calls, metadata, tool_choice, temperature, top_p];
    # these nullable (null when unset: no error, no instructions, the engine's sampling).
    "response": {"#": RESPONSE_NULLABLE},
    "response.stream_event": {
        "Response": RESPONSE_NULLABLE,
        # The `error` event: required [type, code, message, param, sequence_number].
        "ResponseErrorEvent": frozenset({"code", "param"}),
    },
}
# Fields outside OpenAI's Model that GET /v1/models carries by vLLM's convention (parent, root,
# max_model_len) and ragtune's (an adapter's task); clients that list models ignore them.
EXTRA_FIELDS: dict[str, dict[str, frozenset[str]]] = {
    "model.list": {"Model": frozenset({"parent", "root", "max_model_len", "task"})},
    # The Response inside response.created, .in_progress, .completed...: ragtune's extension
    # rides on it, as on the whole Response.
    "response.stream_event": {"Response": frozenset({EXTENSION})},
}


@functools.cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SCHEMAS.read_text())
    return document


def openai_version() -> str:
    """The `openai` package version the vendored schemas come from."""
    return str(_document()["openai_version"])


@functools.cache
def _validator(kind: str) -> Draft202012Validator:
    schemas = _document()["schemas"]
    if kind not in schemas:
        raise KeyError(f"no vendored schema {kind!r}; known: {sorted(schemas)}")
    return Draft202012Validator(schemas[kind])


def openai_shape_errors(kind: str, body: Any) -> list[str]:
    """Every way `body` departs from OpenAI's `kind` (empty when it has OpenAI's shape)."""
    validator = _validator(kind)
    problems = [
        f"{_where(list(e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)
    ]
    if problems:
        return problems
    return _Strict(kind, validator).check(body, validator.schema, "#", [], top=True)


def assert_openai_shape(kind: str, body: Any) -> None:
    """AssertionError listing what in `body` is not OpenAI's `kind` (see the module doc)."""
    problems = openai_shape_errors(kind, body)
    assert not problems, f"not OpenAI's {kind} shape:\n  " + "\n  ".join(problems[:20])


def _where(path: list[Any]) -> str:
    return "body" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in path)


class _Strict:
    """The strictness rules, walking the body along the (already satisfied) schema."""

    def __init__(self, kind: str, validator: Draft202012Validator) -> None:
        self.kind = kind
        self.validator = validator
        self.defs: dict[str, Any] = validator.schema.get("$defs", {})
        self.nullable = REQUIRED_NULLABLE.get(kind, {})
        self.extra = EXTRA_FIELDS.get(kind, {})

    def resolve(self, schema: dict[str, Any], name: str) -> tuple[dict[str, Any], str]:
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = self.defs[name]
        return schema, name

    def check(
        self, value: Any, schema: dict[str, Any], name: str, path: list[Any], top: bool = False
    ) -> list[str]:
        schema, name = self.resolve(schema, name)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            # The branch(es) the value satisfies; the value passes if one of them is strict.
            fits = [
                b
                for b in branches
                if b.get("type") != "null" and self._fits(value, self.resolve(b, name)[0])
            ]
            if not fits:
                return []
            attempts = [self.check(value, b, name, path) for b in fits]
            return min(attempts, key=len)
        if isinstance(value, dict) and "properties" in schema:
            return self._object(value, schema, name, path, top)
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            problems = []
            for index, item in enumerate(value):
                problems += self.check(item, schema["items"], name, [*path, index])
            return problems
        return []

    def _fits(self, value: Any, schema: dict[str, Any]) -> bool:
        resolver_schema = {**schema, "$defs": self.defs}
        return bool(self.validator.evolve(schema=resolver_schema).is_valid(value))

    def _object(
        self, value: dict[str, Any], schema: dict[str, Any], name: str, path: list[Any], top: bool
    ) -> list[str]:
        properties: dict[str, Any] = schema["properties"]
        required = set(schema.get("required", ()))
        nullable = self.nullable.get("#" if top else name, frozenset())
        extra = self.extra.get(name, frozenset())
        problems = []
        for key, item in value.items():
            where = _where([*path, key])
            if key not in properties:
                if not ((top and key == EXTENSION) or key in extra):
                    problems.append(f"{where}: not in OpenAI's schema ({name})")
                continue
            if item is None:
                if key not in required and key not in nullable:
                    problems.append(f"{where}: null where OpenAI omits the field ({name})")
                continue
            problems += self.check(item, properties[key], name, [*path, key])
        for key in sorted(nullable - value.keys()):
            problems.append(f"{_where([*path, key])}: missing (required, nullable) ({name})")
        return problems
