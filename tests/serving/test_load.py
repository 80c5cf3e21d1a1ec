"""Load: 60 s of mixed traffic (RAG, adapter, base; streamed and not) from 16 clients, enough
to keep the engine's batch full, through `ragtune serve` as its own process: zero 5xx, zero
failed or broken responses; the latency percentiles are printed (and measured properly by
bench/load.py, not asserted here)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ragtune.adapters.registry import AdapterRegistry
from ragtune.adapters.settings import adapters_dir
from ragtune.evals.load import Kind, run_load
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ragtune_serve
from tests.support.servers import free_port
from tests.support.serving import abstract_prompts, attach_env

pytestmark = pytest.mark.engine
CHAT = "load-key"


def test_sixty_seconds_of_mixed_traffic_without_a_server_error(
    ingested: tuple[Path, Any],
    eval_small: Path,
    engine: EngineSettings,
    models_dir: Path,
    lora_adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(ingested[0], data_dir)
    AdapterRegistry(adapters_dir(data_dir)).add(
        lora_adapters["alpha"], "titler", "Write a title.", base_model=DEFAULT_MODEL_NAME
    )
    questions = tuple(q["question"] for q in json.loads((eval_small / "qa.json").read_text()))
    abstracts = tuple(abstract_prompts()[:20])
    small_talk = ("Good morning!", "Tell me a joke.", "What's your favourite colour?")
    kinds = [
        Kind(f"{name}{'-stream' if stream else ''}", model, prompts, stream, route, expect)
        for name, model, prompts, route, expect in (
            ("rag", DEFAULT_MODEL_NAME, questions, None, "rag"),
            ("adapter", "titler", abstracts, None, "adapter"),
            ("base", DEFAULT_MODEL_NAME, small_talk, "base", "base"),
        )
        for stream in (False, True)
    ]
    with ragtune_serve(
        data_dir,
        free_port(),
        **attach_env(engine, models_dir),
        RAGTUNE_API_KEYS=CHAT,
        RAGTUNE_LOG_LEVEL="warning",
    ) as url:
        result = asyncio.run(run_load(url, CHAT, kinds, clients=16, duration_s=60, max_tokens=16))
    for kind in ("rag", "adapter", "base", None):
        print(kind or "all", json.dumps(result.summary(kind)))
    # Every kind was asked (each client starts at its own kind). How many requests fit in the
    # 60 s is this machine's speed, which a test does not judge: 32 was asked for here, and a
    # CI run on a busy 2-core machine finished 30, every one of them a 200 (bench/load.py
    # measures throughput).
    assert {o.kind for o in result.outcomes} == {k.name for k in kinds}
    assert not result.server_errors, result.server_errors[:5]
    assert not result.failures, result.failures[:5]
