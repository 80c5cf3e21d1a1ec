"""Adapters trained alongside a collection, over the server's real parts with fakes at the edges
(the in-memory store, the fake embedder, an engine never called): for staleness tests."""

from __future__ import annotations

from pathlib import Path

import httpx

from ragtune.adapters.provenance import CollectionSnapshot
from ragtune.adapters.registry import MANIFEST, AdapterManifest, AdapterRegistry
from ragtune.adapters.settings import AdapterSettings
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord, Collection
from ragtune.serving.components import Components, assemble
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.settings import EngineSettings, ServingSettings
from tests.support.fakes import FakeEmbedder, InMemoryStore

BASE = "base-model"


def routing_components(data_dir: Path, store: InMemoryStore, embedder: FakeEmbedder) -> Components:
    """The parts of a server that only routes (no tokenizer; the engine is never called)."""
    settings = ServingSettings(
        retrieval=RetrievalSettings(data_dir=data_dir),
        engine=EngineSettings(data_dir=data_dir),
        adapters=AdapterSettings(data_dir=data_dir),
    )
    idle = httpx.MockTransport(lambda request: httpx.Response(503))
    engines = EnginePool([EngineClient("http://engine", connect_retries=0, transport=idle)], 2)
    return assemble(
        settings, store=store, embedder=embedder, engines=engines, tokenizer=None, base_model=BASE
    )


def register_trained(
    data_dir: Path, name: str, task: str, collection: CollectionSnapshot | None
) -> AdapterManifest:
    """A registered adapter version that records `collection` as the one it was trained
    alongside (its weights are never read)."""
    manifest = AdapterManifest(
        name=name, base_model=BASE, rank=8, alpha=16, target_modules=["q_proj"], task=task,
        weights_sha256="0" * 64, training_data_sha256="1" * 64, training_collection=collection,
        created="2025-01-01T00:00:00Z",
    )  # fmt: skip
    folder = AdapterRegistry(AdapterSettings(data_dir=data_dir).adapters_dir).path(manifest)
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(manifest.model_dump_json())
    return manifest


def write_document(
    collection: Collection,
    embedder: FakeEmbedder,
    doc: str,
    text: str,
    version: str,
    ingested_at: str = "2025-01-01T00:00:00+00:00",
) -> None:
    """One document of one chunk, as ingestion stores it (another `version`: another hash)."""
    metadata: dict[str, str | int | float | bool] = {
        "source": f"/srv/docs/{doc}.md",
        "display_source": f"{doc}.md",
        "doc_id": doc,
        "doc_hash": version,
        "ingested_at": ingested_at,
        "section": "",
    }
    collection.add([ChunkRecord(f"{doc}-0", text, metadata, embedder.embed([text])[0])])
