"""The engine's key: the engine ragtune starts refuses whoever does not send it (on every route
but /health, /invocations included), ragtune sends it on every call, and it is never written
where others can read it (command line, log, pid file)."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.launcher import KEY_FILE, KEY_GUARD, EngineLauncher, engine_api_key
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.errors import EngineError
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ENGINE_API_KEY, ragtune, serve_process
from tests.support.processes import (
    group_members,
    own_engine_env,
    port_open,
    reaped_group,
    wait_until,
)
from tests.support.servers import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "engine-plugin"))
from ragtune_vllm_plugin.guard import RequireApiKey

KEY = "s3cret-engine-key"
CHAT, ADMIN = "key-chat", "key-admin"
CHAT_BODY = {
    "model": DEFAULT_MODEL_NAME,
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 2,
}


# --- the plugin's guard, in front of any app -------------------------------------------------


def guarded(monkeypatch: pytest.MonkeyPatch, key: str | None) -> TestClient:
    async def anything(request: Request) -> PlainTextResponse:
        return PlainTextResponse("served")

    paths = ["/health", "/invocations", "/tokenize", "/metrics", "/v1/chat/completions", "/load"]
    app = Starlette(routes=[Route(p, anything, methods=["GET", "POST"]) for p in paths])
    if key is None:
        monkeypatch.delenv("VLLM_API_KEY", raising=False)
    else:
        monkeypatch.setenv("VLLM_API_KEY", key)
    return TestClient(RequireApiKey(app))  # reads the key when vLLM builds its app


@pytest.mark.parametrize(
    "path", ["/invocations", "/tokenize", "/metrics", "/v1/chat/completions", "/load"]
)
def test_the_guard_refuses_requests_without_the_key(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    client = guarded(monkeypatch, KEY)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": KEY},
        {"Authorization": f"Basic {KEY}"},
        {"X-Api-Key": KEY},
    ):
        refused = client.post(path, headers=headers)
        assert refused.status_code == 401, (path, headers)
        assert refused.headers["www-authenticate"] == "Bearer"
        assert KEY not in refused.text
    assert client.post(path, headers={"Authorization": f"Bearer {KEY}"}).text == "served"
    assert client.get(path, headers={"Authorization": f"bearer {KEY}"}).text == "served"


def test_the_guard_leaves_health_open_and_does_nothing_without_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert guarded(monkeypatch, KEY).get("/health").text == "served"
    assert guarded(monkeypatch, None).post("/invocations").text == "served"


# --- ragtune's side: where the key comes from, and that it is sent ----------------------------


def test_the_key_is_the_setting_or_the_data_directorys_own(tmp_path: Path) -> None:
    managed = EngineSettings(data_dir=tmp_path)
    assert engine_api_key(managed) is None  # nothing started yet: nothing to send
    launcher = EngineLauncher(managed)
    managed.engine_dir.mkdir(parents=True)
    generated = launcher._ensure_api_key()
    key_file = managed.engine_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(generated) >= 32
    # Every later command on this data directory sends (and a restart reuses) the same key.
    assert engine_api_key(managed) == generated
    assert EngineLauncher(managed)._ensure_api_key() == generated

    assert engine_api_key(managed.model_copy(update={"engine_api_key": SecretStr(KEY)})) == KEY
    # An attached engine is someone else's: its key comes from the setting only.
    attached = managed.model_copy(update={"vllm_url": "http://gpu:8000"})
    assert engine_api_key(attached) is None
    assert engine_api_key(attached.model_copy(update={"engine_api_key": SecretStr(KEY)})) == KEY


def test_the_key_reaches_vllm_in_its_environment_not_its_command_line(tmp_path: Path) -> None:
    launcher = EngineLauncher(EngineSettings(data_dir=tmp_path, engine_api_key=KEY))
    command = launcher.command("/models/m")
    assert not any(KEY in part for part in command)
    assert not any(part.startswith("--api-key") for part in command)
    assert command[command.index("--middleware") + 1] == KEY_GUARD
    assert launcher.environment(KEY)["VLLM_API_KEY"] == KEY
    assert KEY not in repr(launcher.settings)  # a secret in logs and tracebacks


def test_the_engine_leaves_cores_unbound_unless_the_operator_binds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher = EngineLauncher(EngineSettings(data_dir=tmp_path, engine_api_key=KEY))
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    # a core bound by a busy engine starved every other thread held on it (torch's import)
    assert launcher.environment(KEY)["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-3")
    assert launcher.environment(KEY)["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"


def test_the_client_sends_the_key_on_every_call() -> None:
    seen: dict[str, str | None] = {}

    def engine(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.headers.get("authorization")
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": []})
        if request.url.path == "/v1/chat/completions" and b'"stream":true' in request.content:
            return httpx.Response(200, text="data: [DONE]\n\n")
        return httpx.Response(200, json={"choices": []})

    async def every_call() -> None:
        async with EngineClient(
            "http://engine", api_key=KEY, transport=httpx.MockTransport(engine)
        ) as client:
            await client.health()
            await client.list_models()
            await client.chat_completion(CHAT_BODY)
            async for _ in client.stream_chat_completion(CHAT_BODY):
                pass
            await client.load_adapter("a", "/adapters/a")
            await client.unload_adapter("a")

    asyncio.run(every_call())
    assert set(seen) == {
        "/health",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/load_lora_adapter",
        "/v1/unload_lora_adapter",
    }
    assert set(seen.values()) == {f"Bearer {KEY}"}


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.chat_completion(CHAT_BODY),
        lambda c: c.load_adapter("a", "/adapters/a"),
        lambda c: c.list_models(),
    ],
    ids=["chat", "load-adapter", "models"],
)
def test_a_refused_key_is_the_operators_problem_not_the_clients(
    call: Callable[[EngineClient], Any],
) -> None:
    async def run() -> None:
        transport = httpx.MockTransport(lambda _: httpx.Response(401, json={"error": "no"}))
        async with EngineClient("http://engine", api_key="old", transport=transport) as client:
            await call(client)

    # An EngineError (503 engine_unavailable to the client), not the engine's 401 passed on
    # as if the client's own key were wrong.
    with pytest.raises(EngineError, match="RAGTUNE_ENGINE_API_KEY"):
        asyncio.run(run())


# --- the real thing ---------------------------------------------------------------------------


@pytest.mark.engine
def test_the_engine_ragtune_serve_starts_answers_only_with_its_key(
    models_dir: Path, lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    data_dir, engine_port = tmp_path / "data", free_port()
    engine_dir = data_dir / "engine"
    # No key set: ragtune makes one for this data directory.
    env = own_engine_env(
        models_dir,
        engine_port,
        RAGTUNE_ENGINE_API_KEY="",
        RAGTUNE_API_KEYS=CHAT,
        RAGTUNE_ADMIN_API_KEYS=ADMIN,
    )

    def pgid() -> int | None:
        try:
            pid: int = json.loads((engine_dir / "engine.json").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return None
        return pid

    port = free_port()
    with reaped_group(pgid):
        with serve_process(data_dir, port, ready_timeout_s=600, **env) as (_, url):
            key = (engine_dir / KEY_FILE).read_text().strip()
            assert key != ENGINE_API_KEY
            assert stat.S_IMODE((engine_dir / KEY_FILE).stat().st_mode) == 0o600
            engine = f"http://127.0.0.1:{engine_port}"
            strangers = [
                ("GET", "/v1/models", None),
                ("POST", "/v1/chat/completions", CHAT_BODY),
                # vLLM's own check leaves these open; ragtune's guard does not.
                ("POST", "/invocations", CHAT_BODY),
                ("POST", "/tokenize", {"model": DEFAULT_MODEL_NAME, "prompt": "hi"}),
                ("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(tmp_path)}),
                ("GET", "/metrics", None),
            ]
            for method, path, body in strangers:
                for headers in ({}, {"Authorization": f"Bearer {ENGINE_API_KEY}"}):
                    answer = httpx.request(method, engine + path, json=body, headers=headers)
                    assert answer.status_code == 401, (method, path, headers, answer.text)
            assert httpx.get(f"{engine}/health").status_code == 200
            with_key = {"Authorization": f"Bearer {key}"}
            assert httpx.get(f"{engine}/v1/models", headers=with_key).status_code == 200
            tokenized = httpx.post(
                f"{engine}/tokenize",
                json={"model": DEFAULT_MODEL_NAME, "prompt": "hi"},
                headers=with_key,
            )
            assert tokenized.status_code == 200

            # ragtune's own calls carry it: a chat, an adapter loaded at run time, the status.
            chat = httpx.post(
                f"{url}/v1/chat/completions",
                json={**CHAT_BODY, "ragtune": {"route": "base"}},
                headers={"Authorization": f"Bearer {CHAT}"},
                timeout=300,
            )
            assert chat.status_code == 200, chat.text
            added = httpx.post(
                f"{url}/admin/adapters",
                json={"name": "keyed", "path": str(lora_adapters["alpha"]), "task": "Titles."},
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=300,
            )
            assert added.status_code == 200, added.text
            served = httpx.get(f"{engine}/v1/models", headers=with_key).json()["data"]
            assert "keyed@v1" in {m["id"] for m in served}
            status = ragtune(
                "engine",
                "status",
                "--json",
                data_dir=data_dir,
                RAGTUNE_ENGINE_API_KEY="",
                RAGTUNE_ENGINE_PORT=str(engine_port),
            )
            assert status.returncode == 0, status.stdout + status.stderr
            report = json.loads(status.stdout)
            assert report["base_model"] == DEFAULT_MODEL_NAME
            assert report["adapters"] == ["keyed@v1"]

            # Never written where it could be read: command lines, the log, the pid file.
            group = pgid()
            assert group is not None
            for pid in group_members(group):
                assert key.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            for written in (engine_dir / "engine.log", engine_dir / "engine.json"):
                assert key not in written.read_text()
        # `ragtune serve` was stopped with SIGTERM: the engine it started went with it
        # (checked before the clean-up).
        assert wait_until(lambda: not group_members(group), 30)
        assert not port_open(engine_port)
    assert "engine stopped" in (data_dir.parent / f"serve-{port}.log").read_text()
    assert key not in (data_dir.parent / f"serve-{port}.log").read_text()
