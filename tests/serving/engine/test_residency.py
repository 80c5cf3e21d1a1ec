"""Adapters resident in the engine: bounded by its LoRA slots (least recently used idle one
evicted, a clear refusal when all are busy), and loaded again after `ragtune serve` restarts."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragtune.adapters.registry import AdapterRegistry
from ragtune.adapters.scaffold import make_random_lora
from ragtune.adapters.settings import adapters_dir
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.launcher import auth_headers, engine_api_key
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME, default_model_dir
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.errors import AdapterSlotsBusyError
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ragtune, ragtune_serve
from tests.support.servers import free_port
from tests.support.serving import attach_env

pytestmark = pytest.mark.engine
CHAT, ADMIN = "chat-key", "admin-key"


@pytest.fixture(scope="module")
def three_adapters(
    models_dir: Path, lora_adapters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    third = make_random_lora(
        default_model_dir(models_dir), tmp_path_factory.mktemp("gamma") / "gamma", seed=3
    )
    return {**lora_adapters, "gamma": third}


def engine_models(engine: EngineSettings) -> set[str]:
    data = httpx.get(
        f"{engine.engine_url}/v1/models", headers=auth_headers(engine_api_key(engine)), timeout=10
    ).json()["data"]
    return {m["id"] for m in data}


def test_the_least_recently_used_idle_adapter_is_evicted_and_busy_slots_refuse(
    engine: EngineSettings, three_adapters: dict[str, Path]
) -> None:
    names = {k: f"slot-{k}@v1" for k in three_adapters}

    async def scenario() -> tuple[list[list[str]], int, str]:
        pool = EnginePool([EngineClient.from_settings(engine)], slots=2)
        replica = pool.replicas[0]
        seen = []
        try:
            await pool.ensure_loaded(replica, names["alpha"], str(three_adapters["alpha"]))
            await pool.ensure_loaded(replica, names["beta"], str(three_adapters["beta"]))
            replica.touch(names["alpha"])  # alpha used last: beta is the least recent
            await pool.ensure_loaded(replica, names["gamma"], str(three_adapters["gamma"]))
            seen.append(list(replica.resident))
            # Both resident adapters answering requests: no slot can be freed.
            replica.in_flight[names["alpha"]] += 1
            replica.in_flight[names["gamma"]] += 1
            with pytest.raises(AdapterSlotsBusyError) as refused:
                await pool.ensure_loaded(replica, names["beta"], str(three_adapters["beta"]))
            seen.append(list(replica.resident))
            # One finishes: beta comes back in place of it.
            replica.in_flight[names["gamma"]] -= 1
            await pool.ensure_loaded(replica, names["beta"], str(three_adapters["beta"]))
            seen.append(list(replica.resident))
            return seen, pool.evictions, str(refused.value)
        finally:
            for name in list(replica.resident):
                await pool.unload(name)
            await pool.aclose()

    seen, evictions, message = asyncio.run(scenario())
    assert seen[0] == [names["alpha"], names["gamma"]]
    assert seen[1] == seen[0]  # the refusal changed nothing
    assert seen[2] == [names["alpha"], names["beta"]]
    assert evictions == 2
    assert "all 2 LoRA slots" in message
    assert "RAGTUNE_MAX_LORAS" in message
    assert not set(names.values()) & engine_models(engine)  # all unloaded at the end


def serve_env(engine: EngineSettings, models_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **attach_env(engine, models_dir),
        "RAGTUNE_API_KEYS": CHAT,
        "RAGTUNE_ADMIN_API_KEYS": ADMIN,
        **extra,
    }


def ask(url: str, model: str, max_tokens: int = 4) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    headers = {"Authorization": f"Bearer {CHAT}"}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=300)


def admin(url: str, method: str, path: str = "") -> Any:
    response = httpx.request(
        method,
        f"{url}/admin/adapters{path}",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=300,
    )
    assert response.status_code in (200, 204), response.text
    return response.json() if response.content else None


def test_serving_more_adapters_than_slots_and_the_loaded_set_survives_a_restart(
    ingested: tuple[Path, Any],
    engine: EngineSettings,
    models_dir: Path,
    three_adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(ingested[0], data_dir)
    registry = AdapterRegistry(adapters_dir(data_dir))
    for key, path in three_adapters.items():
        registry.add(path, f"res-{key}", f"Task {key}.", base_model=DEFAULT_MODEL_NAME)
    env = serve_env(engine, models_dir, RAGTUNE_MAX_LORAS="2")
    with ragtune_serve(data_dir, free_port(), **env) as url:
        # A first start with no record loads what fits.
        assert sum(a["loaded"] for a in admin(url, "GET")) == 2
        for key in ("gamma", "alpha", "beta", "gamma"):
            answer = ask(url, f"res-{key}")
            assert answer.status_code == 200, answer.text
            assert answer.json()["ragtune"]["adapter"] == f"res-{key}"
            assert sum(a["loaded"] for a in admin(url, "GET")) <= 2
        loaded = {a["name"] for a in admin(url, "GET") if a["loaded"]}
        assert loaded == {"res-beta", "res-gamma"}  # alpha was the least recently used
        admin(url, "POST", "/res-beta/unload")

    # The engine loses everything too (as if it restarted): the server loads again what was
    # loaded when it stopped, and only that.
    for name in engine_models(engine) & {f"res-{k}@v1" for k in three_adapters}:
        httpx.post(
            f"{engine.engine_url}/v1/unload_lora_adapter",
            json={"lora_name": name},
            headers=auth_headers(engine_api_key(engine)),
        )
    with ragtune_serve(data_dir, free_port(), **env) as url:
        loaded = {a["name"] for a in admin(url, "GET") if a["loaded"]}
        assert loaded == {"res-gamma"}
        assert "res-gamma@v1" in engine_models(engine)
        assert not {"res-alpha@v1", "res-beta@v1"} & engine_models(engine)
        admin(url, "DELETE", "/res-gamma")
        admin(url, "DELETE", "/res-alpha")
        admin(url, "DELETE", "/res-beta")
    assert not {f"res-{k}@v1" for k in three_adapters} & engine_models(engine)


def test_all_slots_busy_is_a_503_with_retry_after(
    ingested: tuple[Path, Any],
    engine: EngineSettings,
    models_dir: Path,
    three_adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(ingested[0], data_dir)
    registry = AdapterRegistry(adapters_dir(data_dir))
    for key in ("alpha", "beta"):
        registry.add(three_adapters[key], f"busy-{key}", "Task.", base_model=DEFAULT_MODEL_NAME)
    env = serve_env(engine, models_dir, RAGTUNE_MAX_LORAS="1")

    async def scenario(url: str) -> tuple[httpx.Response, list[str]]:
        # Long enough that alpha is still answering when beta's request has been routed, on a
        # loaded 2-core CI machine too (200 tokens were once done first).
        body = {
            "model": "busy-alpha",
            "messages": [{"role": "user", "content": "Count to one hundred."}],
            "max_tokens": 800,
            "ignore_eos": True,
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {CHAT}"}
        async with httpx.AsyncClient(base_url=url, timeout=300, headers=headers) as client:
            async with client.stream("POST", "/v1/chat/completions", json=body) as stream:
                lines = stream.aiter_lines()
                first = await anext(lines)  # alpha is answering now: its slot is busy
                other = {**body, "model": "busy-beta", "stream": False, "max_tokens": 2}
                refused = await client.post("/v1/chat/completions", json=other)
                # Alpha's stream goes on after the refusal; then this client leaves it (the
                # rest of 800 tokens would take minutes on a CPU), which must free the slot.
                rest = []
                async for line in lines:
                    if line:
                        rest.append(line)
                    if len(rest) == 5:
                        break
            return refused, [first, *rest]

    with ragtune_serve(data_dir, free_port(), **env) as url:
        # A first request pays for what the server does once (the router's first embedding),
        # so that beta's request below is routed while alpha answers.
        warm = {
            "model": DEFAULT_MODEL_NAME,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 2,
            "ragtune": {"route": "base"},  # no adapter takes the slot
        }
        headers = {"Authorization": f"Bearer {CHAT}"}
        warmed = httpx.post(f"{url}/v1/chat/completions", json=warm, headers=headers, timeout=300)
        assert warmed.status_code == 200, warmed.text
        refused, events = asyncio.run(scenario(url))
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"]
        error = refused.json()["error"]
        assert error["code"] == "adapter_slots_busy"
        assert "RAGTUNE_MAX_LORAS" in error["message"]
        assert "busy-alpha" not in error["message"]  # no other adapter's name
        assert len(events) == 6, events  # the busy stream was not ended by the refusal
        assert all(e.startswith("data: {") for e in events), events
        assert not any('"error"' in e for e in events)  # nor disturbed
        # Once alpha's client has gone, its slot is free again and beta takes it (a client
        # told to retry does so after Retry-After; the engine may take a moment to abort).
        deadline = time.monotonic() + 60
        while (answer := ask(url, "busy-beta")).status_code == 503:
            assert time.monotonic() < deadline, answer.text
            time.sleep(float(answer.headers["retry-after"]))
        assert answer.status_code == 200, answer.text
        loaded = {a["name"] for a in admin(url, "GET") if a["loaded"]}
        assert loaded == {"busy-beta"}
        for key in ("alpha", "beta"):
            admin(url, "DELETE", f"/busy-{key}")
    listed = json.loads(ragtune("adapters", "list", "--json", data_dir=data_dir, **env).stdout)
    assert listed == []
