"""Write tests/data/openai/schemas.json: JSON Schemas of OpenAI's response types, generated from
the official `openai` package's pydantic types (which OpenAI generates from its published
OpenAPI spec). The tests validate ragtune's responses against this vendored copy
(tests/support/openai_schema.py adds ragtune's strictness on top).

    .venv/bin/python tests/data/openai/generate.py      # after upgrading the `openai` package
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

from openai.types import CompletionUsage, CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.shared import ErrorObject
from pydantic import TypeAdapter

OUT = Path(__file__).resolve().parent / "schemas.json"


def schema(kind: Any) -> dict[str, Any]:
    generated: dict[str, Any] = TypeAdapter(kind).json_schema()
    return generated


def wrapped(name: str, kind: Any, around: dict[str, Any]) -> dict[str, Any]:
    """An envelope the SDK has no type for (it unwraps it): `around` with `{"$ref": name}`
    standing for `kind`'s schema, whose definitions it takes."""
    inner = schema(kind)
    defs = inner.pop("$defs", {})
    defs[name] = inner
    return {**around, "$defs": defs}


def main() -> None:
    schemas = {
        "chat.completion": schema(ChatCompletion),
        "chat.completion.chunk": schema(ChatCompletionChunk),
        "usage": schema(CompletionUsage),
        "embedding.list": schema(CreateEmbeddingResponse),
        # {"error": {...}}: OpenAI's error envelope around its error object.
        "error": wrapped(
            "ErrorObject",
            ErrorObject,
            {
                "type": "object",
                "properties": {"error": {"$ref": "#/$defs/ErrorObject"}},
                "required": ["error"],
            },
        ),
        # GET /v1/models: {"object": "list", "data": [Model, ...]}.
        "model.list": wrapped(
            "Model",
            Model,
            {
                "type": "object",
                "properties": {
                    "object": {"const": "list", "type": "string"},
                    "data": {"type": "array", "items": {"$ref": "#/$defs/Model"}},
                },
                "required": ["object", "data"],
            },
        ),
        "response": schema(Response),
        "response.stream_event": schema(ResponseStreamEvent),
    }
    document = {
        "generated_by": "tests/data/openai/generate.py",
        "openai_version": version("openai"),
        "schemas": schemas,
    }
    OUT.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} (openai {document['openai_version']}, {len(schemas)} schemas)")


if __name__ == "__main__":
    main()
