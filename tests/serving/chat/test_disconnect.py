"""A client that gives up on a whole (non-streamed) answer: the engine stops generating for it
at once, and the request is logged as 499, as streams already were. `ragtune serve` runs as its
own process against the shared engine (a disconnect is a real socket closing)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ENGINE_API_KEY, ragtune_serve
from tests.support.servers import free_port
from tests.support.serving import attach_env, copy_of

pytestmark = pytest.mark.engine
CHAT = "disconnect-key"


def running_in_engine(engine: EngineSettings) -> float:
    """Requests the engine is generating for right now (vLLM's own gauge)."""
    response = httpx.get(
        f"{engine.engine_url}/metrics",
        headers={"Authorization": f"Bearer {ENGINE_API_KEY}"},
        timeout=10,
    )
    response.raise_for_status()
    total = 0.0
    for family in text_string_to_metric_families(response.text):
        if family.name == "vllm:num_requests_running":
            total += sum(sample.value for sample in family.samples)
    return total


def wait_for(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return False


def test_an_abandoned_whole_request_stops_generating(
    ingested: tuple[Path, Any],
    engine: EngineSettings,
    models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir = copy_of(ingested[0], tmp_path_factory, "disconnect")
    port = free_port()
    with ragtune_serve(
        data_dir,
        port,
        **attach_env(engine, models_dir),
        RAGTUNE_API_KEYS=CHAT,
        RAGTUNE_LOG_FORMAT="json",
    ) as url:
        assert wait_for(lambda: running_in_engine(engine) == 0, 60)
        body = {
            "model": DEFAULT_MODEL_NAME,
            "messages": [{"role": "user", "content": "Write a very long story."}],
            "ragtune": {"route": "base"},
            # About two minutes of generation on this CPU, were it not stopped.
            "max_tokens": 1800,
            "ignore_eos": True,
        }
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {CHAT}", "x-request-id": "gave-up-1"},
                timeout=httpx.Timeout(4.0, connect=5.0),
            )
        # The client is gone: the engine stops generating for it, not 1,800 tokens later.
        assert wait_for(lambda: running_in_engine(engine) == 0, 15)
        # The server still answers.
        health = httpx.get(f"{url}/health", timeout=5)
        assert health.status_code == 200
    log = (data_dir.parent / f"serve-{port}.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "gave-up-1"]
    assert any(line.get("status") == 499 for line in mine), mine
