"""The admin endpoints under hostile and clumsy use, against the real engine: adapters the
engine cannot load are refused with a 400 that names the problem and leave the name free;
racing adds, deletes and swaps give one winner and clean 404/409s, never a 500; busy adapters
are not unloaded; old versions can be deleted; many example prompts neither freeze the server
nor get embedded again at the next start."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from ragtune.adapters.scaffold import make_random_lora
from ragtune.adapters.settings import AdapterSettings, adapters_dir
from ragtune.retrieval.embedder import SentenceTransformerEmbedder
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.serving.app import create_app
from ragtune.serving.engine.launcher import auth_headers, engine_api_key
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME, default_model_dir
from ragtune.serving.settings import (
    ApiSettings,
    EngineSettings,
    RouterSettings,
    ServingSettings,
)
from tests.support.adapters import crafted_adapter, lora_pair
from tests.support.cli import ragtune, ragtune_serve
from tests.support.servers import free_port
from tests.support.serving import attach_env

pytestmark = pytest.mark.engine
CHAT, ADMIN = "chat-key", "admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
Q = "self_attn.q_proj"


def settings_for(
    data_dir: Path, engine: EngineSettings, models_dir: Path, *, max_lora_rank: int = 0, **api: Any
) -> ServingSettings:
    update: dict[str, Any] = {
        "data_dir": data_dir,
        "vllm_url": engine.engine_url,
        "model": str(default_model_dir(models_dir)),
        "served_model_name": DEFAULT_MODEL_NAME,
    }
    if max_lora_rank:
        update["max_lora_rank"] = max_lora_rank
    return ServingSettings(
        retrieval=RetrievalSettings(data_dir=data_dir),
        engine=engine.model_copy(update=update),
        adapters=AdapterSettings(data_dir=data_dir),
        router=RouterSettings(),
        api=ApiSettings(api_keys=CHAT, admin_api_keys=ADMIN, **api),
    )


@pytest.fixture(scope="module")
def client(
    engine: EngineSettings, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("admin") / "data"
    with TestClient(create_app(settings_for(data_dir, engine, models_dir))) as test_client:
        yield test_client
        # Leave no adapter of ours resident in the shared engine.
        for row in test_client.get("/admin/adapters", headers=AUTH).json():
            test_client.delete(f"/admin/adapters/{row['name']}", headers=AUTH)


def registry_root(client: TestClient) -> Path:
    root: Path = client.app.state.components.registry.root  # type: ignore[attr-defined]
    return root


def concurrently(client: TestClient, *calls: tuple[str, str, Any]) -> list[httpx.Response]:
    """Send the requests at once, on the app's own event loop (as a server would see them)."""

    async def send() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://admin.test", headers=AUTH, timeout=300
        ) as http:
            return list(
                await asyncio.gather(*(http.request(m, p, json=body) for m, p, body in calls))
            )

    return client.portal.call(send)  # type: ignore[union-attr]


def add(client: TestClient, name: str, path: Path, **extra: Any) -> httpx.Response:
    body = {"name": name, "path": str(path), "task": "Name things.", **extra}
    return client.post("/admin/adapters", json=body, headers=AUTH)


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


def served(engine: EngineSettings) -> set[str]:
    headers = auth_headers(engine_api_key(engine))
    models = httpx.get(f"{engine.engine_url}/v1/models", headers=headers, timeout=30).json()["data"]
    return {m["id"] for m in models}


def with_config(source: Path, out: Path, **changes: Any) -> Path:
    shutil.copytree(source, out)
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    return out


@pytest.fixture(scope="module")
def bad_adapters(
    lora_adapters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, str]]:
    """Adapters the probe registered and the engine could not load: name -> (path, what the
    error must say)."""
    root = tmp_path_factory.mktemp("bad-adapters")
    real = lora_adapters["alpha"]
    nan = shutil.copytree(real, root / "nan")
    tensors = load_file(str(nan / "adapter_model.safetensors"))
    tensors[sorted(tensors)[0]][0, 0] = math.nan
    save_file(tensors, str(nan / "adapter_model.safetensors"))
    list_config = shutil.copytree(real, root / "list-config")
    (list_config / "adapter_config.json").write_text(json.dumps([{"peft_type": "LORA"}]))
    embedding = {
        "base_model.model.model.embed_tokens.lora_embedding_A": [8, 49152],
        "base_model.model.model.embed_tokens.lora_embedding_B": [576, 8],
        **lora_pair(Q, [8, 576], [576, 8]),
    }
    return {
        "three-d": (
            crafted_adapter(root / "3d", lora_pair(Q, [2, 8, 576], [2, 576, 8])),
            "has 3 dimensions",
        ),
        "rank-64": (
            crafted_adapter(root / "r64", lora_pair(Q, [64, 576], [576, 64])),
            "the tensors have rank 64, but .* gives rank 8",
        ),
        "embed-tokens": (
            crafted_adapter(root / "embed", embedding, target_modules=["embed_tokens", "q_proj"]),
            "adapts an embedding or output layer",
        ),
        "inner-ranks": (
            crafted_adapter(root / "inner", lora_pair(Q, [8, 576], [576, 4])),
            "their inner dimension",
        ),
        "r-true": (with_config(real, root / "r-true", r=True), "r must be .* not True"),
        "r-float": (with_config(real, root / "r-float", r=8.9), "r must be .* not 8.9"),
        "r-list": (with_config(real, root / "r-list", r=[1]), r"r must be .* not \[1\]"),
        "r-text": (with_config(real, root / "r-text", r="abc"), "r must be .* not 'abc'"),
        "list-config": (list_config, "must hold a JSON object"),
        "nan": (nan, "NaN or infinite values"),
        "dora": (with_config(real, root / "dora", use_dora=True), "DoRA"),
    }


def test_adapters_the_engine_cannot_load_are_refused_and_leave_the_name_free(
    client: TestClient,
    engine: EngineSettings,
    bad_adapters: dict[str, tuple[Path, str]],
    lora_adapters: dict[str, Path],
) -> None:
    for name, (path, message) in bad_adapters.items():
        refused = error(add(client, name, path), 400, "invalid_adapter")
        assert re.search(message, refused["message"]), (name, refused)
        error(client.get(f"/admin/adapters/{name}", headers=AUTH), 404, "adapter_not_found")
        assert not (registry_root(client) / name).exists(), name
    assert not {n for n in served(engine) if n.split("@")[0] in bad_adapters}
    # The name is free: a good adapter takes it and answers.
    assert add(client, "rank-64", lora_adapters["alpha"]).status_code == 200
    answer = client.post(
        "/v1/chat/completions",
        json={"model": "rank-64", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        headers={"Authorization": f"Bearer {CHAT}"},
    )
    assert answer.status_code == 200, answer.text


def test_an_adapter_the_engine_refuses_is_not_registered(
    engine: EngineSettings,
    models_dir: Path,
    lora_adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    """ragtune believes the engine takes rank 64 (a misconfiguration): a rank-32 adapter passes
    its checks, and vLLM (--max-lora-rank 16) refuses it. Neither the add nor the swap leaves
    anything behind."""
    rank_32 = make_random_lora(default_model_dir(models_dir), tmp_path / "rank-32", seed=3, rank=32)
    settings = settings_for(tmp_path / "data", engine, models_dir, max_lora_rank=64)
    with TestClient(create_app(settings)) as test_client:
        refused = error(add(test_client, "wide", rank_32), 400, "invalid_adapter")
        assert "max_lora_rank" in refused["message"]
        assert "not registered" in refused["message"]
        error(test_client.get("/admin/adapters/wide", headers=AUTH), 404, "adapter_not_found")
        assert not (adapters_dir(tmp_path / "data") / "wide").exists()

        assert add(test_client, "narrow", lora_adapters["alpha"]).status_code == 200
        swap = test_client.post(
            "/admin/adapters/narrow/swap", json={"path": str(rank_32)}, headers=AUTH
        )
        assert "v1 keeps serving" in error(swap, 400, "invalid_adapter")["message"]
        detail = test_client.get("/admin/adapters/narrow", headers=AUTH).json()
        assert (detail["version"], detail["versions"], detail["loaded"]) == (1, [1], True)
        assert test_client.delete("/admin/adapters/narrow", headers=AUTH).status_code == 204
    assert not {"wide@v1", "narrow@v1", "narrow@v2"} & served(engine)


def test_concurrent_adds_of_one_name_have_one_winner(
    client: TestClient, lora_adapters: dict[str, Path]
) -> None:
    body = {"name": "same", "path": str(lora_adapters["alpha"]), "task": "Same."}
    responses = concurrently(client, *[("POST", "/admin/adapters", body)] * 4)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert "already exists" in error(response, 409, "adapter_conflict")["message"]
    assert sorted(p.name for p in (registry_root(client) / "same").iterdir()) == ["v1"]


def test_delete_races_have_one_winner(client: TestClient, lora_adapters: dict[str, Path]) -> None:
    assert add(client, "twice", lora_adapters["beta"]).status_code == 200
    responses = concurrently(client, *[("DELETE", "/admin/adapters/twice", None)] * 4)
    assert sorted(r.status_code for r in responses) == [204, 404, 404, 404]
    for response in responses[1:]:
        if response.status_code == 404:
            error(response, 404, "adapter_not_found")
    assert not (registry_root(client) / "twice").exists()


def test_swap_and_delete_racing_end_clean(
    client: TestClient, engine: EngineSettings, lora_adapters: dict[str, Path]
) -> None:
    for attempt in range(2):
        name = f"racer-{attempt}"
        assert add(client, name, lora_adapters["alpha"]).status_code == 200
        swap = ("POST", f"/admin/adapters/{name}/swap", {"path": str(lora_adapters["beta"])})
        delete = ("DELETE", f"/admin/adapters/{name}", None)
        # Sent in both orders.
        responses = concurrently(client, *((swap, delete) if attempt == 0 else (delete, swap)))
        statuses = [r.status_code for r in responses]
        assert all(s < 500 for s in statuses), [r.text for r in responses]
        # Swap first: both succeed; delete first: the swap finds no adapter.
        assert sorted(statuses) in ([200, 204], [204, 404]), [r.text for r in responses]
        error(client.get(f"/admin/adapters/{name}", headers=AUTH), 404, "adapter_not_found")
        assert not (registry_root(client) / name).exists()
        assert not {n for n in served(engine) if n.startswith(f"{name}@")}


def test_a_busy_adapter_is_not_unloaded_or_removed(
    client: TestClient, lora_adapters: dict[str, Path]
) -> None:
    assert add(client, "busy", lora_adapters["beta"]).status_code == 200
    chat = {
        "model": "busy",
        "messages": [{"role": "user", "content": "Tell me a very long story about a fox."}],
        "max_tokens": 300,
        "temperature": 1.0,
    }

    async def scenario() -> tuple[list[int], list[dict[str, Any]], int]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://admin.test", timeout=300
        ) as http:
            for _ in range(3):  # in case an answer ends before the admin calls are made
                answer = asyncio.create_task(
                    http.post(
                        "/v1/chat/completions",
                        json=chat,
                        headers={"Authorization": f"Bearer {CHAT}"},
                    )
                )
                while not answer.done():
                    status = await http.get("/admin/adapters/busy", headers=AUTH)
                    if status.json()["in_flight"]:
                        break
                    await asyncio.sleep(0.01)
                unload = await http.post("/admin/adapters/busy/unload", headers=AUTH)
                delete = await http.delete("/admin/adapters/busy", headers=AUTH)
                finished = answer.done()
                response = await answer
                if not finished:
                    return (
                        [unload.status_code, delete.status_code],
                        [unload.json()["error"], delete.json()["error"]],
                        response.status_code,
                    )
            raise AssertionError("no answer lasted long enough to catch it in flight")

    statuses, errors, answered = client.portal.call(scenario)  # type: ignore[union-attr]
    assert statuses == [409, 409], errors
    assert {e["code"] for e in errors} == {"adapter_busy"}
    assert all("answering 1 request" in e["message"] for e in errors)
    assert answered == 200
    # Once it is idle, both work.
    assert client.post("/admin/adapters/busy/unload", headers=AUTH).json()["loaded"] is False
    assert client.delete("/admin/adapters/busy", headers=AUTH).status_code == 204


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/adapters/ghost", None),
        ("POST", "/admin/adapters/ghost/load", None),
        ("POST", "/admin/adapters/ghost/unload", None),
        ("POST", "/admin/adapters/ghost/swap", {"path": "/nonexistent"}),
        ("DELETE", "/admin/adapters/ghost", None),
        ("DELETE", "/admin/adapters/ghost/versions/1", None),
    ],
)
def test_admin_404s_speak_of_adapters(
    client: TestClient, method: str, path: str, body: Any
) -> None:
    response = client.request(method, path, json=body, headers=AUTH)
    refused = error(response, 404, "adapter_not_found")
    assert refused["param"] is None
    assert "no adapter named 'ghost'" in refused["message"]
    assert "model" not in refused["message"]


def test_old_versions_can_be_deleted_but_not_the_current_one(
    client: TestClient, engine: EngineSettings, lora_adapters: dict[str, Path]
) -> None:
    assert add(client, "versioned", lora_adapters["alpha"]).status_code == 200
    for weights in ("beta", "alpha"):
        swap = client.post(
            "/admin/adapters/versioned/swap",
            json={"path": str(lora_adapters[weights])},
            headers=AUTH,
        )
        assert swap.status_code == 200, swap.text
    assert client.get("/admin/adapters/versioned", headers=AUTH).json()["versions"] == [1, 2, 3]
    assert client.delete("/admin/adapters/versioned/versions/1", headers=AUTH).status_code == 204
    current = client.delete("/admin/adapters/versioned/versions/3", headers=AUTH)
    assert (
        "v3 is the version of 'versioned' in force"
        in (error(current, 409, "adapter_conflict")["message"])
    )
    missing = client.delete("/admin/adapters/versioned/versions/7", headers=AUTH)
    assert "has no version 7 (it has v2, v3)" in error(missing, 404, "adapter_not_found")["message"]
    invalid = client.delete("/admin/adapters/versioned/versions/0", headers=AUTH)
    assert invalid.status_code == 422
    detail = client.get("/admin/adapters/versioned", headers=AUTH).json()
    assert (detail["version"], detail["versions"], detail["loaded"]) == (3, [2, 3], True)
    assert "versioned@v3" in served(engine)


def test_example_prompts_over_the_limit_are_refused(
    client: TestClient, lora_adapters: dict[str, Path]
) -> None:
    prompts = [f"Give prompt {i} a name." for i in range(501)]
    refused = add(client, "chatty", lora_adapters["alpha"], examples=prompts)
    message = error(refused, 400, "invalid_adapter")["message"]
    assert "501 example prompts are more than the 500 allowed" in message
    assert "RAGTUNE_MAX_ADAPTER_EXAMPLES" in message
    error(client.get("/admin/adapters/chatty", headers=AUTH), 404, "adapter_not_found")


def test_many_examples_neither_freeze_the_server_nor_are_embedded_again(
    engine: EngineSettings,
    models_dir: Path,
    lora_adapters: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(tmp_path / "data", engine, models_dir)
    prompts = [
        f"Write the title of the paper whose abstract reads: we measured effect {i} of sleep "
        f"on the memory of {i % 7 + 2} groups of mice over {i % 11 + 1} weeks."
        for i in range(500)
    ]

    async def add_while_probing(http: httpx.AsyncClient) -> tuple[httpx.Response, list[float]]:
        body = {"name": "titler", "path": str(lora_adapters["alpha"]), "task": "Write titles."}
        adding = asyncio.create_task(
            http.post("/admin/adapters", json={**body, "examples": prompts}, headers=AUTH)
        )
        # When each /health answer came: a blocked event loop shows as a long gap.
        answered = [time.monotonic()]
        while not adding.done():
            assert (await http.get("/health")).status_code == 200
            answered.append(time.monotonic())
            await asyncio.sleep(0.1)
        added = await adding
        answered.append(time.monotonic())
        return added, [later - earlier for earlier, later in itertools.pairwise(answered)]

    with TestClient(create_app(settings)) as first:

        async def scenario() -> tuple[httpx.Response, list[float]]:
            transport = httpx.ASGITransport(app=first.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://admin.test", timeout=600
            ) as http:
                return await add_while_probing(http)

        added, gaps = first.portal.call(scenario)  # type: ignore[union-attr]
        assert added.status_code == 200, added.text
        components = first.app.state.components  # type: ignore[attr-defined]
        profile = next(p for p in components.fleet.profiles if p.name == "titler")
        stored = components.registry.path(components.fleet.manifest("titler"))
    # /health answered all along (the embedding of 500 prompts ran off the event loop); on
    # the event loop, it kept the server from answering for 10 s to a minute.
    assert len(gaps) >= 4, gaps
    assert max(gaps) < 5.0, gaps
    assert (stored / "profile.safetensors").is_file()
    assert len(profile.vectors) == 502  # the task, the prompts and their centroid

    encoded: list[int] = []
    original = SentenceTransformerEmbedder._encode

    def counting(self: SentenceTransformerEmbedder, texts: Any) -> Any:
        encoded.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(SentenceTransformerEmbedder, "_encode", counting)
    with TestClient(create_app(settings)) as second:
        fleet = second.app.state.components.fleet  # type: ignore[attr-defined]
        again = next(p for p in fleet.profiles if p.name == "titler")
        assert encoded == []  # nothing embedded at this start: the stored vectors were used
        assert (again.vectors == profile.vectors).all()
        assert second.delete("/admin/adapters/titler", headers=AUTH).status_code == 204


def test_cli_removes_an_old_version_on_a_remote_server(
    engine: EngineSettings, models_dir: Path, lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {
        **attach_env(engine, models_dir),
        "RAGTUNE_API_KEYS": CHAT,
        "RAGTUNE_ADMIN_API_KEYS": ADMIN,
    }
    with ragtune_serve(data_dir, free_port(), **env) as url:
        remote = {"RAGTUNE_URL": url, "RAGTUNE_ADMIN_KEY": ADMIN}
        elsewhere = tmp_path / "cli"

        def cli(*args: str | Path) -> Any:
            return ragtune("adapters", *args, data_dir=elsewhere, **remote)

        added = cli("add", lora_adapters["alpha"], "--name", "remote", "--task", "Remote.")
        assert added.returncode == 0, added.stderr
        assert cli("swap", "remote", lora_adapters["beta"]).returncode == 0
        current = cli("rm", "remote", "--version", "2")
        assert current.returncode == 2
        assert "v2 is the version of 'remote' in force" in current.stderr
        old = cli("rm", "remote", "--version", "1")
        assert old.returncode == 0, old.stderr
        assert "removed remote v1" in old.stdout
        assert sorted(p.name for p in (adapters_dir(data_dir) / "remote").iterdir()) == ["v2"]
        assert cli("rm", "remote").returncode == 0
        gone = cli("rm", "remote")
        assert gone.returncode == 2
        assert "404" in gone.stderr
        assert "no adapter named 'remote'" in gone.stderr
