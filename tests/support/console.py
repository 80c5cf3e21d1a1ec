"""The operator console's harness: a server's parts with fakes at the edges (an engine behind
`httpx.MockTransport`, the fake embedder, the in-memory store), the app over them, and that app
served by a real uvicorn on a free loopback port for the browser."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from ragtune.adapters.registry import MANIFEST, AdapterManifest, AdapterRegistry
from ragtune.adapters.settings import AdapterSettings
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord
from ragtune.serving.app import create_app
from ragtune.serving.components import Components, assemble
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.settings import ApiSettings, EngineSettings, ServingSettings
from tests.support.adapters import crafted_adapter, lora_pair
from tests.support.fake_engine import BASE, FakeEngine
from tests.support.fakes import FakeEmbedder, FakeTokenizer, InMemoryStore
from tests.support.servers import free_port

CHAT, ADMIN = "chat-key", "admin-key"
HOSTILE = "<script>window.pwned = 1</script>"
PASSAGES = {
    "refunds": "Invoices are refunded within thirty days of the refund request.",
    "hours": "The office is closed on public holidays and at weekends.",
}
REFUND_QUESTION = "How are invoices refunded, and within how many days?"


def register(data_dir: Path, name: str, task: str, verdict: str | None = None) -> None:
    """A registered adapter version (its weights are never read: the fake engine takes any)."""
    evaluation = {"advise": {"verdict": verdict}} if verdict else {}
    manifest = AdapterManifest(
        name=name, base_model=BASE, rank=8, alpha=16, target_modules=["q_proj"], task=task,
        examples=[], weights_sha256="0" * 64, created="2025-01-01T00:00:00Z",
        evaluation=evaluation,
    )  # fmt: skip
    folder = AdapterRegistry(AdapterSettings(data_dir=data_dir).adapters_dir).path(manifest)
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(manifest.model_dump_json())


def new_version(path: Path) -> Path:
    """A LoRA directory the registry accepts as a new version (rank 8 on q_proj)."""
    return crafted_adapter(path, lora_pair("self_attn.q_proj", [8, 576], [576, 8]))


def console_settings(data_dir: Path, **api: Any) -> ServingSettings:
    return ServingSettings(
        retrieval=RetrievalSettings(data_dir=data_dir),
        engine=EngineSettings(data_dir=data_dir, max_model_len=2048),
        adapters=AdapterSettings(data_dir=data_dir),
        api=ApiSettings(api_keys=CHAT, admin_api_keys=ADMIN, **api),
    )


def fake_parts(engine: FakeEngine, store: InMemoryStore | None = None) -> Any:
    """`open_parts` for `create_app`: the server's real parts over the fakes. The default
    collection holds the PASSAGES and a document whose name and text are HOSTILE markup."""
    embedder = FakeEmbedder()
    if store is None:
        store = InMemoryStore()
        default = store.collection("default", embedder.model_id, create=True)
        documents = {**PASSAGES, HOSTILE: f"Closing notes {HOSTILE} for the weekends."}
        default.add(
            [
                ChunkRecord(
                    f"{doc}-0",
                    text,
                    {
                        "source": f"/srv/docs/{doc}.md",
                        "display_source": f"{doc}.md",
                        "doc_id": doc,
                        "doc_hash": "v1",
                        "section": "",
                        "ingested_at": "2025-01-01T00:00:00+00:00",
                    },
                    embedder.embed([text])[0],
                )
                for doc, text in documents.items()
            ]
        )

    def open_parts(settings: ServingSettings) -> Components:
        pool = EnginePool([engine.client()], slots=8)
        # No base model on disk: new versions are validated on their own (an empty path
        # would name the working directory).
        return assemble(
            settings, store=store, embedder=embedder, engines=pool, tokenizer=FakeTokenizer(),
            base_model=BASE, base_model_path=str(settings.retrieval.data_dir / "no-base-model"),
        )  # fmt: skip

    return open_parts


def console_app(data_dir: Path, engine: FakeEngine, **api: Any) -> FastAPI:
    return create_app(console_settings(data_dir, **api), open_parts=fake_parts(engine))


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn in a thread on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the console's test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
