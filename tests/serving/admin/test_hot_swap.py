"""Hot-swap under load: 8 clients streaming from an adapter while it is swapped 5 times; no
request fails and every answer comes wholly from one version."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragtune.adapters.registry import AdapterRegistry
from ragtune.adapters.settings import adapters_dir
from ragtune.serving.engine.launcher import auth_headers, engine_api_key
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ragtune, ragtune_serve
from tests.support.servers import free_port
from tests.support.serving import attach_env, copy_of

pytestmark = pytest.mark.engine
CHAT, ADMIN = "chat-key", "admin-key"
PROMPT = "Name three primary colours."


@pytest.fixture(scope="module")
def server(
    ingested: tuple[Path, Any],
    engine: EngineSettings,
    models_dir: Path,
    lora_adapters: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, EngineSettings]]:
    data_dir = copy_of(ingested[0], tmp_path_factory, "swap")
    AdapterRegistry(adapters_dir(data_dir)).add(
        lora_adapters["alpha"], "swapper", "Name things.", base_model=DEFAULT_MODEL_NAME
    )
    with ragtune_serve(
        data_dir,
        free_port(),
        **attach_env(engine, models_dir),
        RAGTUNE_API_KEYS=CHAT,
        RAGTUNE_ADMIN_API_KEYS=ADMIN,
    ) as url:
        yield url, engine


async def stream_once(client: httpx.AsyncClient) -> tuple[int, str, list[str]]:
    """(adapter version, text, errors) of one streamed answer."""
    body = {
        "model": "swapper",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {CHAT}"}
    version, text, errors = -1, "", []
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        if r.status_code != 200:
            await r.aread()
            return version, text, [f"{r.status_code}: {r.text}"]
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                errors.append(chunk["error"]["message"])
                continue
            if "ragtune" in chunk:
                version = chunk["ragtune"]["adapter_version"]
            if chunk.get("choices"):
                text += chunk["choices"][0]["delta"].get("content") or ""
    return version, text, errors


def engine_get(engine: EngineSettings, path: str) -> httpx.Response:
    """A GET straight to the engine, with its key."""
    return httpx.get(f"{engine.engine_url}{path}", headers=auth_headers(engine_api_key(engine)))


async def swap(client: httpx.AsyncClient, path: Path) -> httpx.Response:
    return await client.post(
        "/admin/adapters/swapper/swap",
        json={"path": str(path)},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=300,
    )


def test_eight_streams_through_five_swaps(
    server: tuple[str, EngineSettings], lora_adapters: dict[str, Path]
) -> None:
    url, engine = server
    weights = {1: lora_adapters["alpha"], 0: lora_adapters["beta"]}  # by version parity

    async def scenario() -> tuple[dict[int, str], list[tuple[int, str, list[str]]], list[Any]]:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            expected = {}
            version, text, errors = await stream_once(client)
            assert (version, errors) == (1, [])
            expected[1] = text
            assert (await swap(client, weights[0])).status_code == 200
            version, text, errors = await stream_once(client)
            assert (version, errors) == (2, [])
            expected[0] = text
            assert expected[0] != expected[1], "the two weight sets must answer differently"

            results: list[tuple[int, str, list[str]]] = []
            swapping = True

            async def reader() -> None:
                while swapping:
                    results.append(await stream_once(client))

            readers = [asyncio.create_task(reader()) for _ in range(8)]
            swaps = []
            for step in range(5):
                await asyncio.sleep(1.0)
                swaps.append((await swap(client, weights[(3 + step) % 2])).json())
            swapping = False
            await asyncio.gather(*readers)
            return expected, results, swaps

    expected, results, swaps = asyncio.run(scenario())
    assert [s["version"] for s in swaps] == [3, 4, 5, 6, 7]
    assert len(results) >= 16
    failures = [r for r in results if r[2] or r[0] < 2]
    assert not failures, failures
    mixed = [r for r in results if r[1] != expected[r[0] % 2]]
    assert not mixed, f"answers not wholly from their version: {mixed}"
    assert len({r[0] for r in results}) >= 3  # the storm really spanned several versions

    served = {m["id"] for m in engine_get(engine, "/v1/models").json()["data"]}
    assert "swapper@v7" in served
    assert not {f"swapper@v{v}" for v in range(1, 7)} & served  # old versions unloaded


def test_failed_swap_leaves_the_old_version_serving(
    server: tuple[str, EngineSettings], tmp_path: Path
) -> None:
    url, _ = server

    async def scenario() -> tuple[httpx.Response, tuple[int, str, list[str]]]:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            before = await stream_once(client)
            refused = await swap(client, tmp_path / "no-such-adapter")
            after = await stream_once(client)
            assert after[0] == before[0]
            assert after[1] == before[1]
            return refused, after

    refused, after = asyncio.run(scenario())
    assert refused.status_code == 400
    assert "is not a directory" in refused.json()["error"]["message"]
    assert after[2] == []


def test_cli_swap_targets_the_server(
    server: tuple[str, EngineSettings], lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    url, _ = server
    swapped = ragtune(
        "adapters", "swap", "swapper", lora_adapters["beta"], "--url", url,
        data_dir=tmp_path, RAGTUNE_ADMIN_KEY=ADMIN,
    )  # fmt: skip
    assert swapped.returncode == 0, swapped.stderr
    assert "now serves v" in swapped.stdout
    refused = ragtune(
        "adapters", "swap", "swapper", lora_adapters["beta"], "--url", url,
        data_dir=tmp_path, RAGTUNE_ADMIN_KEY=CHAT,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "403" in refused.stderr


def test_cli_operates_a_remote_server(
    server: tuple[str, EngineSettings], lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    url, engine = server
    remote = {"RAGTUNE_URL": url, "RAGTUNE_ADMIN_KEY": ADMIN}

    def cli(*args: str | Path, **env: str) -> Any:
        result = ragtune("adapters", *args, data_dir=tmp_path, **{**remote, **env})
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if "--json" in args else result.stdout

    def loaded() -> dict[str, bool]:
        return {row["name"]: row["loaded"] for row in cli("list", "--json")}

    added = cli("add", lora_adapters["beta"], "--name", "remote", "--task", "Remote task.",
                "--json")  # fmt: skip
    assert added["served_name"] == "remote@v1"
    assert loaded()["remote"] is True
    shown = cli("show", "remote", "--json")
    assert shown["task"] == "Remote task."
    assert shown["weights_sha256"]
    cli("unload", "remote")
    assert loaded()["remote"] is False
    assert "remote@v1" not in {m["id"] for m in engine_get(engine, "/v1/models").json()["data"]}
    assert "loaded remote v1" in cli("load", "remote")
    assert loaded()["remote"] is True
    cli("rm", "remote")
    assert "remote" not in loaded()
    # Nothing was written locally: the server did it all.
    assert not (adapters_dir(tmp_path)).exists()
    refused = ragtune("adapters", "list", data_dir=tmp_path, RAGTUNE_URL=url,
                      RAGTUNE_ADMIN_KEY=CHAT)  # fmt: skip
    assert refused.returncode == 2
    assert "403" in refused.stderr


def test_swap_failing_in_the_engine_halfway_leaves_the_old_version_serving(
    server: tuple[str, EngineSettings], lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    """The new version passes ragtune's validation and is stored, then vLLM refuses to load it
    (it asks for DoRA, which vLLM does not support): the stored version is taken back and the
    old one never stops serving."""
    url, engine = server
    broken = tmp_path / "dora"
    shutil.copytree(lora_adapters["beta"], broken)
    config = json.loads((broken / "adapter_config.json").read_text())
    (broken / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))

    async def scenario() -> tuple[httpx.Response, tuple[int, str, list[str]], Any]:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            before = await stream_once(client)
            during = asyncio.create_task(stream_once(client))
            refused = await swap(client, broken)
            after = await stream_once(client)
            assert (await during)[2] == []
            assert after[:2] == before[:2]
            status = await client.get(
                "/admin/adapters/swapper", headers={"Authorization": f"Bearer {ADMIN}"}
            )
            return refused, after, status.json()

    refused, after, status = asyncio.run(scenario())
    assert refused.status_code in (400, 503), refused.text
    assert "DoRA" in refused.json()["error"]["message"]
    assert after[2] == []
    served = {m["id"] for m in engine_get(engine, "/v1/models").json()["data"]}
    assert status["served_name"] in served
    assert f"swapper@v{status['version'] + 1}" not in served
    # The refused version was not kept: the next good swap takes its number.
    good = asyncio.run(_swap_once(url, lora_adapters["alpha"]))
    assert good.json()["version"] == status["version"] + 1


async def _swap_once(url: str, path: Path) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        return await swap(client, path)
