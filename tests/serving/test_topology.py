"""The deployed topology, for real: the API (`ragtune serve`), a Chroma server (`chroma run`)
and vLLM, each its own process, wired over loopback exactly as deploy/compose.yaml wires them
(RAGTUNE_CHROMA_URL, RAGTUNE_VLLM_URL, keys from the environment); and the faults an operator
meets there: the engine absent at start, killed mid-stream and back, the Chroma server stopped
and restarted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragtune.adapters.registry import AdapterRegistry
from ragtune.adapters.settings import adapters_dir
from ragtune.serving.engine.launcher import EngineLauncher
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME, default_model_dir
from tests.support.cli import ragtune, ragtune_json, ragtune_serve
from tests.support.servers import ChromaServer, engine_settings_for, free_port
from tests.support.serving import attach_env

pytestmark = [pytest.mark.engine, pytest.mark.chroma_server]
REPO = Path(__file__).resolve().parents[2]
CHAT, ADMIN = "chat-key", "admin-key"
QUESTION = "How do I replace an adapter without downtime?"


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def chat(url: str, question: str = QUESTION, **extra: Any) -> httpx.Response:
    body = {
        "model": DEFAULT_MODEL_NAME,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 8,
        "temperature": 0,
        **extra,
    }
    headers = {"Authorization": f"Bearer {CHAT}"}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=300)


def status(url: str, path: str) -> int:
    try:
        return httpx.get(f"{url}{path}", timeout=5).status_code
    except httpx.HTTPError:
        return -1


async def stream_until_killed(url: str, kill: Callable[[], None]) -> list[str]:
    body = {
        "model": DEFAULT_MODEL_NAME,
        "messages": [{"role": "user", "content": "Count from one to one thousand."}],
        "max_tokens": 1000,
        "ignore_eos": True,
        "stream": True,
        "ragtune": {"route": "base"},
    }
    headers = {"Authorization": f"Bearer {CHAT}"}
    events = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line:
                continue
            events.append(line)
            if len(events) == 3:
                kill()
    return events


def test_api_chroma_server_and_vllm_as_separate_processes_through_faults(
    models_dir: Path, lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    chroma = ChromaServer(tmp_path / "chroma")
    (tmp_path / "chroma").mkdir()
    engine = engine_settings_for(tmp_path / "engine", engine_port=free_port())
    launcher = EngineLauncher(engine.model_copy(update={
        "model": str(default_model_dir(models_dir)), "served_model_name": DEFAULT_MODEL_NAME,
    }))  # fmt: skip
    data_dir = tmp_path / "api"
    env = {
        "RAGTUNE_CHROMA_URL": chroma.url,
        **attach_env(engine, models_dir),
        "RAGTUNE_API_KEYS": CHAT,
        "RAGTUNE_ADMIN_API_KEYS": ADMIN,
        "RAGTUNE_REGISTRY_CHECK_S": "1",
    }
    AdapterRegistry(adapters_dir(data_dir)).add(
        lora_adapters["alpha"], "titler", "Write a title.", base_model=DEFAULT_MODEL_NAME
    )
    chroma.start()
    try:
        ingest = ragtune_json("ingest", REPO / "examples" / "docs", data_dir=data_dir, **env)
        assert ingest["counts"]["new"] == 4
        stored = ragtune_json("docs", "list", data_dir=data_dir, **env)

        # The engine is not there yet: the API starts anyway and says why it is not ready.
        with ragtune_serve(data_dir, free_port(), wait_ready=False, **env) as url:
            wait_for(lambda: status(url, "/health") == 200, 120, "the API")
            ready = httpx.get(f"{url}/ready", headers={"Authorization": f"Bearer {ADMIN}"})
            assert ready.status_code == 503
            assert "engine" in ready.json()["problems"]
            down = chat(url)
            assert down.status_code == 503
            assert down.headers["retry-after"]
            assert down.json()["error"]["code"] == "engine_unavailable"

            launcher.start()
            wait_for(lambda: status(url, "/ready") == 200, 60, "/ready once the engine is up")
            answer = chat(url)
            assert answer.status_code == 200, answer.text
            info = answer.json()["ragtune"]
            assert info["route"] == "rag"
            sources = [s["document"] for s in info["sources"]]
            assert any(s.endswith("adapters.rst") for s in sources)

            # The engine came back: the adapter that was resident is loaded there again.
            def titler_loaded() -> bool:
                rows = httpx.get(f"{url}/admin/adapters",
                                 headers={"Authorization": f"Bearer {ADMIN}"}).json()  # fmt: skip
                return bool(rows[0]["loaded"])

            wait_for(titler_loaded, 30, "the adapter loaded again")

            # The engine killed mid-stream: a clean error event, then [DONE]; the API stays up.
            pid = json.loads((engine.engine_dir / "engine.json").read_text())["pid"]
            events = asyncio.run(stream_until_killed(url, lambda: os.killpg(pid, signal.SIGKILL)))
            assert events[-1] == "data: [DONE]"
            error = json.loads(events[-2][6:])
            assert error["error"]["code"] == "engine_stream_error"
            assert status(url, "/health") == 200
            assert chat(url).status_code == 503
            launcher.start()  # the stale pid file is recognised; a fresh engine starts
            wait_for(lambda: status(url, "/ready") == 200, 60, "/ready after the restart")
            again = chat(url, model="titler")
            assert again.status_code == 200, again.text  # reloaded into the new engine
            assert again.json()["ragtune"]["adapter"] == "titler"

            # The Chroma server stopped: RAG fails cleanly, base answers still work, the
            # server comes back on the same data and nothing is lost.
            chroma.stop()
            failed = chat(url)
            assert failed.status_code == 503, failed.text
            assert failed.json()["error"]["code"] == "store_unavailable"
            assert failed.headers["retry-after"]
            assert chat(url, ragtune={"route": "base"}).status_code == 200
            admin = {"Authorization": f"Bearer {ADMIN}"}
            assert httpx.get(f"{url}/ready", headers=admin).json()["problems"]["store"]
            chroma.start()
            back = chat(url)
            assert back.status_code == 200, back.text
            assert [s["document"] for s in back.json()["ragtune"]["sources"]] == sources
            assert ragtune_json("docs", "list", data_dir=data_dir, **env) == stored

            # Ingestion (another process) is counted on the API's /metrics.
            metrics = httpx.get(f"{url}/metrics").text
            assert "ragtune_ingest_runs_total 1.0" in metrics
            assert 'ragtune_ingest_files_total{outcome="new"} 4.0' in metrics
            assert f'ragtune_engine_up{{url="{engine.engine_url}"}} 1.0' in metrics
    finally:
        launcher.stop()
        chroma.stop()
    assert ragtune("docs", "list", data_dir=data_dir, **env).returncode != 0  # server gone
