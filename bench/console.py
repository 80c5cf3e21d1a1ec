"""Operator console benchmark: how long the console page takes to load in a real browser
against a server with many adapters and a large collection.

    .venv/bin/python bench/console.py [--adapters 20] [--chunks 50000] [--loads 10]

The API is the real app (`create_app`) served by uvicorn on loopback, over an embedded Chroma
collection of --chunks chunks (synthetic vectors and metadata, 10 chunks a document) and
--adapters registered adapters, all loaded; the engine is a stand-in behind
`httpx.MockTransport` (the page never generates). Headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright) logs in, then loads /console --loads times; each load is timed from
navigation to the `load` event (server rendering included).
Target: median page load < 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import httpx
import uvicorn

from ragtune.adapters.registry import MANIFEST, AdapterManifest, AdapterRegistry
from ragtune.adapters.settings import AdapterSettings
from ragtune.retrieval.embedder import load_embedder
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord, open_store
from ragtune.serving.app import create_app
from ragtune.serving.components import Components, assemble
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.settings import ApiSettings, EngineSettings, ServingSettings

BASE = "base-model"
ADMIN = "bench-admin-key"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def engine_handler(request: httpx.Request) -> httpx.Response:
    """vLLM's API as far as the console needs it: health, models, adapter loading."""
    if request.url.path == "/v1/models":
        return httpx.Response(200, json={"object": "list", "data": [{"id": BASE}]})
    return httpx.Response(200, text="Success")


def fill(settings: ServingSettings, chunks: int, adapters: int, model_id: str, dim: int) -> None:
    rng = random.Random(0)
    with open_store(settings.retrieval, "write") as store:
        collection = store.collection("default", model_id, create=True)
        batch: list[ChunkRecord] = []
        for n in range(chunks):
            doc = f"doc-{n // 10:05d}"
            vector = [rng.gauss(0, 1) for _ in range(dim)]
            norm = sum(x * x for x in vector) ** 0.5
            metadata: dict[str, str | int | float | bool] = {
                "source": f"/srv/docs/{doc}.md", "display_source": f"{doc}.md", "doc_id": doc,
                "doc_hash": "v1", "section": "", "chunk_index": n % 10,
                "ingested_at": "2025-01-01T00:00:00+00:00",
            }  # fmt: skip
            batch.append(
                ChunkRecord(f"{doc}-{n % 10}", f"text {n}", metadata, [x / norm for x in vector])
            )
            if len(batch) == 2000:
                collection.add(batch)
                batch = []
        if batch:
            collection.add(batch)
    root = AdapterRegistry(settings.adapters.adapters_dir)
    for n in range(adapters):
        manifest = AdapterManifest(
            name=f"adapter-{n:02d}", base_model=BASE, rank=8, alpha=16,
            target_modules=["q_proj"], task=f"Task number {n}: answer in house style {n}.",
            examples=[], weights_sha256="0" * 64, created="2025-01-01T00:00:00Z",
            evaluation={"advise": {"verdict": "adapter" if n % 2 else "prompting"}},
        )  # fmt: skip
        folder = root.path(manifest)
        folder.mkdir(parents=True)
        (folder / MANIFEST).write_text(manifest.model_dump_json())


def open_parts(settings: ServingSettings) -> Components:
    store = open_store(settings.retrieval, "read")
    engine = EngineClient(
        "http://engine", connect_retries=0, transport=httpx.MockTransport(engine_handler)
    )
    return assemble(
        settings, store=store, embedder=load_embedder(settings.retrieval),
        engines=EnginePool([engine], slots=64), tokenizer=None, base_model=BASE,
        base_model_path=str(settings.retrieval.data_dir / "no-base-model"),
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    data_dir = Path(tempfile.mkdtemp(prefix="ragtune-console-bench-")) / "data"
    settings = ServingSettings(
        retrieval=RetrievalSettings(data_dir=data_dir),
        engine=EngineSettings(data_dir=data_dir),
        adapters=AdapterSettings(data_dir=data_dir),
        api=ApiSettings(admin_api_keys=ADMIN),
    )
    embedder = load_embedder(settings.retrieval)
    started = time.perf_counter()
    fill(settings, args.chunks, args.adapters, embedder.model_id, embedder.dimension)
    print(f"store: {args.chunks} chunks, {args.adapters} adapters in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, open_parts=open_parts), host="127.0.0.1", port=port,
            log_level="warning",
        )
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    url = f"http://127.0.0.1:{port}"
    # Adapters resident, as on a busy server (residency per engine is on the page).
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        for row in admin.get("/admin/adapters").json():
            admin.post(f"/admin/adapters/{row['name']}/load").raise_for_status()

    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = browser.new_page()
        page.goto(f"{url}/console/login")
        page.fill("#key", ADMIN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/console")
        rows = page.locator("tr[data-adapter]").count()
        for _ in range(args.loads):
            begun = time.perf_counter()
            page.goto(f"{url}/console", wait_until="load")
            times.append(time.perf_counter() - begun)
        browser.close()
    server.should_exit = True
    thread.join(timeout=30)
    result = {
        "adapters_shown": rows,
        "chunks": args.chunks,
        "page_load_ms_median": round(statistics.median(times) * 1000, 1),
        "page_load_ms_max": round(max(times) * 1000, 1),
        "target_ms": 1000,
    }
    print(json.dumps(result))
    verdict = "meets" if statistics.median(times) < 1 else "misses"
    print(f"console page load: median {result['page_load_ms_median']} ms ({verdict} < 1 s)")


if __name__ == "__main__":
    main()
