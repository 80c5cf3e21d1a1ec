"""Upload-to-searchable benchmark: a ~1 MB HTML file through `/v1/files` and a vector store,
against `ragtune ingest` (IngestService) of the same file, in one run.

    .venv/bin/python bench/upload.py [--kilobytes 1000]

Both use the same loaded embedding model (all-MiniLM-L6-v2) and a fresh embedded Chroma:
1. IngestService.run on the file (what `ragtune ingest FILE` does, its process start aside);
2. the app (its lifespan run by FastAPI's TestClient, an engine it never calls) and the
   official `openai` client: `vector_stores.files.upload_and_poll`, then one search of the
   collection that finds the file: the time from the upload's start until that search answers.
Target: upload-to-searchable <= 1.2x the ingest time.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
from fastapi.testclient import TestClient
from openai import OpenAI

from ragtune.ingest.pipeline import IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.embedder import Embedder, SentenceTransformerEmbedder
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import open_store
from ragtune.serving.app import create_app
from ragtune.serving.components import Components, assemble
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.settings import ApiSettings, EngineSettings, ServingSettings

KEY = "bench-key"
WORDS = [
    "invoice",
    "refund",
    "policy",
    "office",
    "holiday",
    "weekend",
    "server",
    "request",
    "client",
    "document",
    "search",
    "index",
    "chunk",
    "vector",
    "model",
    "adapter",
    "route",
    "answer",
    "question",
    "evidence",
    "passage",
    "section",
    "title",
    "python",
    "file",
    "read",
    "write",
    "line",
    "loop",
    "function",
    "class",
    "module",
    "package",
    "install",
    "network",
    "socket",
    "thread",
    "process",
    "memory",
    "disk",
    "cache",
    "queue",
    "worker",
    "job",
    "status",
    "progress",
    "error",
    "reason",
    "limit",
]


def html_document(kilobytes: int, seed: int = 0) -> bytes:
    """An HTML page of sections (h2) and paragraphs of about `kilobytes` KB."""
    rng = random.Random(seed)
    parts = ["<html><head><title>Handbook</title></head><body><h1>Handbook</h1>"]
    size = 0
    section = 0
    while size < kilobytes * 1000:
        section += 1
        parts.append(f"<h2>Section {section}</h2>")
        for _ in range(6):
            sentences = [
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18))).capitalize() + "."
                for _ in range(rng.randint(3, 7))
            ]
            parts.append(f"<p>{' '.join(sentences)}</p>")
        size = sum(len(p) for p in parts)
    parts.append("</body></html>")
    return "".join(parts).encode()


def no_engine(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"data": []})


def cli_ingest(path: Path, data_dir: Path, embedder: Embedder) -> tuple[float, int]:
    settings = RetrievalSettings(data_dir=data_dir)
    started = time.perf_counter()
    with open_store(settings, "write") as store:
        collection = store.collection("bench", embedder.model_id, create=True)
        service = IngestService(
            IngestSettings(),
            collection,
            lambda: embedder,
            LexicalIndexes.for_store(data_dir, store),
        )
        summary = service.run([path])
    return time.perf_counter() - started, summary.chunks_embedded


def upload(path: Path, data_dir: Path, embedder: Embedder) -> tuple[float, int]:
    settings = ServingSettings(
        retrieval=RetrievalSettings(data_dir=data_dir),
        engine=EngineSettings(data_dir=data_dir, vllm_url="http://engine"),
        api=ApiSettings(api_keys=KEY),
    )

    def parts(settings: ServingSettings) -> Components:
        pool = EnginePool(
            [EngineClient("http://engine", transport=httpx.MockTransport(no_engine))], slots=1
        )
        return assemble(
            settings,
            store=open_store(settings.retrieval, "write"),
            embedder=embedder,
            engines=pool,
            tokenizer=None,
            base_model="base",
        )

    with TestClient(create_app(settings, open_parts=parts)) as test_client:
        client = OpenAI(
            base_url="http://testserver/v1", api_key=KEY, http_client=test_client, max_retries=0
        )
        client.vector_stores.create(name="bench")
        started = time.perf_counter()
        done = client.vector_stores.files.upload_and_poll(
            vector_store_id="bench", file=(path.name, path.read_bytes())
        )
        components: Components = test_client.app.state.components  # type: ignore[attr-defined]
        question = "refund policy for invoices"
        hits = components.retrievers.search(
            question, embedder.embed_query(question), k=5, collection="bench"
        )
        seconds = time.perf_counter() - started
    assert done.status == "completed", done.last_error
    assert hits, "the uploaded document is not searchable"
    return seconds, done.model_extra["ragtune"]["chunks_total"]  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kilobytes", type=int, default=1000)
    args = parser.parse_args()
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    embedder.embed(["warm-up"] * 32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "handbook.html"
        path.write_bytes(html_document(args.kilobytes))
        cli_s, cli_chunks = cli_ingest(path, Path(tmp) / "cli", embedder)
        up_s, up_chunks = upload(path, Path(tmp) / "api", embedder)
        size = path.stat().st_size
    assert cli_chunks == up_chunks, (cli_chunks, up_chunks)
    print(f"file                    {size / 1e6:.2f} MB HTML, {cli_chunks} chunks")
    print(f"ragtune ingest          {cli_s:.1f}s")
    print(f"upload to searchable    {up_s:.1f}s")
    print(f"\nupload / ingest time    {up_s / cli_s:6.3f}   target <= 1.2")


if __name__ == "__main__":
    main()
