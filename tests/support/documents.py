"""What the tests of documents over HTTP share: the server's parts over a real embedded
Chroma, the fake embedder and an engine behind `httpx.MockTransport`; a small document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from openai import OpenAI

from ragtune.adapters.settings import AdapterSettings
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import open_store
from ragtune.serving.components import Components, assemble
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.settings import ApiSettings, EngineSettings, FileSettings, ServingSettings
from tests.support.fakes import FakeEmbedder, FakeTokenizer

KEY = "files-key"
ADMIN_KEY = "documents-admin-key"
BASE = "base-model"
STORE = "handbook"
GUIDE = b"""# Refunds

Invoices are refunded within thirty days of the refund request.

# Holidays

The office is closed on public holidays and at weekends.
"""
PARCELS = b"""# Parcels

Parcels are shipped by courier on the next working day after payment.
"""


def engine(request: httpx.Request) -> httpx.Response:
    """vLLM's OpenAI API in miniature: health, the model list, one answer."""
    if request.url.path == "/health":
        return httpx.Response(200)
    if request.url.path == "/v1/models":
        return httpx.Response(200, json={"data": [{"id": BASE, "max_model_len": 2048}]})
    answer = {
        "id": "c", "object": "chat.completion", "created": 0, "model": BASE,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Thirty days [1]."}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }  # fmt: skip
    return httpx.Response(200, json=answer)


def serving_settings(data_dir: Path, **files: Any) -> ServingSettings:
    return ServingSettings(
        retrieval=RetrievalSettings(data_dir=data_dir),
        engine=EngineSettings(data_dir=data_dir, vllm_url="http://engine", max_model_len=2048),
        adapters=AdapterSettings(data_dir=data_dir),
        api=ApiSettings(api_keys=KEY, admin_api_keys=ADMIN_KEY),
        files=FileSettings(**files),
    )


def fake_parts(settings: ServingSettings, generation: bool = True) -> Components:
    pool = EnginePool(
        [EngineClient("http://engine", connect_retries=0, transport=httpx.MockTransport(engine))],
        slots=2,
    )
    return assemble(
        settings, store=open_store(settings.retrieval, "write"), embedder=FakeEmbedder(),
        engines=pool, tokenizer=FakeTokenizer(), base_model=BASE,
    )  # fmt: skip


def openai_client(test_client: TestClient, key: str = KEY) -> OpenAI:
    """The official `openai` client, talking to the app through its TestClient."""
    return OpenAI(
        base_url="http://testserver/v1", api_key=key, http_client=test_client, max_retries=0
    )


def components_of(test_client: TestClient) -> Components:
    """The server's parts, as the app holds them."""
    found: Components = test_client.app.state.components  # type: ignore[attr-defined]
    return found
