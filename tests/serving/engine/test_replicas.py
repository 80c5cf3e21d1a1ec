"""Several vLLM replicas behind one API (RAGTUNE_VLLM_URLS): an adapter's requests go to a
replica holding it (or it is loaded there), the rest is spread by load, and a replica that goes
away is passed over."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragtune.adapters.registry import AdapterRegistry
from ragtune.adapters.settings import adapters_dir
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.launcher import EngineLauncher
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME, default_model_dir
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ENGINE_API_KEY, ragtune_serve
from tests.support.servers import engine_settings_for, free_port

CHAT, ADMIN = "chat-key", "admin-key"


def test_choice_prefers_holders_then_free_slots_then_the_least_busy() -> None:
    pool = EnginePool([EngineClient(f"http://127.0.0.1:{9000 + i}") for i in range(3)], slots=2)
    r0, r1, r2 = pool.replicas
    r0.resident["a@v1"] = None
    r2.resident["a@v1"] = None
    r0.in_flight["a@v1"] = 3
    assert pool.choose("a@v1") is r2  # holds it, and is less busy than r0
    r1.resident.update({"x@v1": None, "y@v1": None})
    r1.in_flight.update({"x@v1": 1, "y@v1": 1})  # full, nothing evictable
    r2.resident["z@v1"] = None
    r2.in_flight["z@v1"] = 1  # full, nothing evictable
    assert pool.choose("b@v1") is r0  # the only one with room
    r2.down_until = time.monotonic() + 60
    assert pool.choose("a@v1") is r0  # r2 is down: the other holder
    assert pool.choose(None) is r1  # base requests: the least busy replica that is up
    asyncio.run(pool.aclose())


def engine_requests(url: str) -> float:
    """Requests vLLM has finished, from its own Prometheus metrics."""
    total = 0.0
    # The engine answers only with its key (the plugin's guard covers /metrics too).
    headers = {"Authorization": f"Bearer {ENGINE_API_KEY}"}
    for line in httpx.get(f"{url}/metrics", headers=headers, timeout=10).text.splitlines():
        if line.startswith("vllm:request_success_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.engine
def test_two_replicas_adapter_affinity_spreading_and_failover(
    engine: EngineSettings,
    models_dir: Path,
    lora_adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    second = engine_settings_for(tmp_path / "engine2").model_copy(update={
        "model": str(default_model_dir(models_dir)), "served_model_name": DEFAULT_MODEL_NAME,
    })  # fmt: skip
    launcher = EngineLauncher(second)
    data_dir = tmp_path / "data"
    registry = AdapterRegistry(adapters_dir(data_dir))
    registry.add(lora_adapters["alpha"], "rep-alpha", "Task a.", base_model=DEFAULT_MODEL_NAME)
    urls = [engine.engine_url, second.engine_url]
    launcher.start()
    try:
        with ragtune_serve(
            data_dir,
            free_port(),
            RAGTUNE_VLLM_URLS=",".join(urls),
            RAGTUNE_MODEL=str(default_model_dir(models_dir)),
            RAGTUNE_SERVED_MODEL_NAME=DEFAULT_MODEL_NAME,
            RAGTUNE_API_KEYS=CHAT,
            RAGTUNE_ADMIN_API_KEYS=ADMIN,
            RAGTUNE_CONNECT_RETRIES="0",
            RAGTUNE_MAX_LORAS="2",
        ) as url:
            admin = {"Authorization": f"Bearer {ADMIN}"}

            def loaded_on() -> list[str]:
                detail = httpx.get(f"{url}/admin/adapters/rep-alpha", headers=admin).json()
                return list(detail["loaded_on"])

            assert loaded_on() == [urls[0]]  # first start: on the first replica
            before = [engine_requests(u) for u in urls]

            async def burst(model: str, n: int, **extra: Any) -> list[int | str]:
                body = {"messages": [{"role": "user", "content": "Say hi."}],
                        "max_tokens": 8, "ignore_eos": True, **extra}  # fmt: skip
                async with httpx.AsyncClient(base_url=url, timeout=300) as client:
                    responses = await asyncio.gather(*(
                        client.post("/v1/chat/completions", json={**body, "model": model},
                                    headers={"Authorization": f"Bearer {CHAT}"})
                        for _ in range(n)
                    ))  # fmt: skip
                return [200 if r.status_code == 200 else r.text for r in responses]

            assert asyncio.run(burst("rep-alpha", 6)) == [200] * 6
            after_adapter = [engine_requests(u) for u in urls]
            assert after_adapter[0] - before[0] == 6  # all on the replica holding it
            assert after_adapter[1] == before[1]
            assert loaded_on() == [urls[0]]  # and not loaded anywhere else

            base = asyncio.run(burst(DEFAULT_MODEL_NAME, 8, ragtune={"route": "base"}))
            assert base == [200] * 8
            spread = [engine_requests(u) - a for u, a in zip(urls, after_adapter, strict=True)]
            assert sum(spread) == 8
            assert min(spread) >= 2, spread  # both replicas took a share

            # The second replica dies (the shared session engine stays): what would go to it
            # moves to the first, and the API stays ready.
            pid = json.loads((second.engine_dir / "engine.json").read_text())["pid"]
            os.killpg(pid, signal.SIGKILL)
            # Dead, not dying: a request sent while the kill is still landing is cut mid-way
            # (not refused), which no replica could take over safely.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"{urls[1]}/health", timeout=1)
                except httpx.ConnectError:
                    break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            statuses = asyncio.run(burst(DEFAULT_MODEL_NAME, 6, ragtune={"route": "base"}))
            assert statuses == [200] * 6  # moved to the replica still up
            assert httpx.get(f"{url}/ready").status_code == 200
            engines = httpx.get(f"{url}/ready", headers=admin).json()["engines"]
            assert engines == {urls[0]: True, urls[1]: False}
    finally:
        launcher.stop()
