"""A fake vLLM engine for fast unit tests: vLLM's OpenAI HTTP API as ragtune calls it, answered
in process behind `httpx.MockTransport` (no model, no network), recording what it was sent."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from ragtune.serving.engine.client import EngineClient

BASE = "base-model"
"""The base model the fake engine serves."""
REFUND_ANSWER = "Invoices are refunded within thirty days [1]."
"""The answer to the refund question the serving tests ask (their first passage is the policy)."""
USAGE = {"prompt_tokens": 50, "completion_tokens": 3, "total_tokens": 53}


class FakeEngine:
    """One vLLM replica at `url` as ragtune calls it: `/health`, the model list (BASE and the
    adapters loaded at runtime), loading and unloading adapters, and chat completions, whole or
    streamed, that answer `text` in the name of the model asked (vLLM's 404 for a model it does
    not serve). Every request it takes is recorded in `calls`."""

    def __init__(self, url: str = "http://engine", text: str = REFUND_ANSWER) -> None:
        self.url = url
        self.text = text
        self.adapters: set[str] = set()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refuse = False
        """When set, every connection is refused (a replica that is down)."""
        self.answer: dict[str, Any] | None = None
        """The whole answer to send, when set (else `text` in a minimal one)."""
        self.chunks: list[dict[str, Any]] | None = None
        """The stream's chunks to send, when set (else `text` word by word)."""

    def client(self) -> EngineClient:
        """ragtune's client of this engine, with no retries: a refusal fails at once."""
        return EngineClient(self.url, connect_retries=0, transport=httpx.MockTransport(self.handle))

    def sent(self, path: str) -> list[dict[str, Any]]:
        """The bodies of the requests sent to `path`, in order."""
        return [body for called, body in self.calls if called == path]

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.refuse:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        self.calls.append((path, body))
        if path == "/health":
            return httpx.Response(200)
        if path == "/v1/models":
            models = [{"id": BASE, "max_model_len": 2048}]
            models += [{"id": name, "parent": BASE} for name in sorted(self.adapters)]
            return httpx.Response(200, json={"object": "list", "data": models})
        if path == "/v1/load_lora_adapter":
            self.adapters.add(body["lora_name"])
            return httpx.Response(200, text="Success")
        if path == "/v1/unload_lora_adapter":
            self.adapters.discard(body["lora_name"])
            return httpx.Response(200, text="Success")
        assert path == "/v1/chat/completions", path
        model = body["model"]
        if model != BASE and model not in self.adapters:
            error = {"message": f"The model `{model}` does not exist.", "code": 404}
            return httpx.Response(404, json={"error": error})
        if body.get("stream"):
            chunks = self.chunks if self.chunks is not None else stream(model, self.text)
            return httpx.Response(
                200, text=sse(chunks), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(200, json=self.answer or completion(model, self.text))


def completion(model: str, text: str) -> dict[str, Any]:
    """A whole chat answer of `text`, in the fields ragtune reads."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": USAGE,
    }


def stream(model: str, text: str) -> list[dict[str, Any]]:
    """`text` streamed a word a chunk (each with the space before it), then the usage chunk."""
    head = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model}
    deltas: list[dict[str, Any]] = [{"content": word} for word in re.findall(r"\s*\S+", text)]
    deltas[0]["role"] = "assistant"
    choices = [{"index": 0, "delta": delta, "finish_reason": None} for delta in deltas]
    choices[-1]["finish_reason"] = "stop"
    return [{**head, "choices": [choice]} for choice in choices] + [
        {**head, "choices": [], "usage": USAGE}
    ]


def sse(chunks: list[dict[str, Any]]) -> str:
    """Chunks as vLLM streams them: server-sent events ending with `data: [DONE]`."""
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
