"""`ragtune eval compare`: prompting, few-shot, RAG and the adapter on one task, and a verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ragtune.adapters.registry import AdapterRegistry
from ragtune.evals.compare import SystemResult, recommend, score
from ragtune.evals.metrics import rouge_l
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ragtune
from tests.support.serving import attach_env

ABSTRACTS = Path(__file__).resolve().parents[3] / "shared" / "eval" / "abstract2title.jsonl"


def test_metrics() -> None:
    assert rouge_l("a b c d", "a c d") == pytest.approx(2 * 0.75 * 1.0 / 1.75)
    assert rouge_l("Solar cells in humid air", "solar cells IN humid air.") == 1.0
    assert rouge_l("", "anything") == 0.0
    assert score("exact", "The Title.", "the title") == 1.0
    assert score("json-valid", '{"a": 1}', "") == 1.0
    assert score("json-valid", "{a: 1}", "") == 0.0


def test_recommendation_follows_the_scores() -> None:
    def results(prompt: float, adapter: float) -> list[SystemResult]:
        return [
            SystemResult("prompt", prompt, 1, 10),
            SystemResult("few-shot", prompt / 2, 1, 10),
            SystemResult("rag", 0.0, 1, 10),
            SystemResult("adapter", adapter, 1, 10),
        ]

    assert recommend(results(0.2, 0.5)).startswith("The adapter earns its place")
    assert recommend(results(0.4, 0.42)).startswith("Prompting is enough")
    assert recommend(results(0.0, 0.0)).startswith("Neither")


@pytest.mark.engine
def test_cli_compares_four_approaches_and_stores_the_result(
    ingested: tuple[Path, Any],
    engine: EngineSettings,
    models_dir: Path,
    lora_adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(ingested[0], data_dir)
    AdapterRegistry(data_dir / "adapters").add(
        lora_adapters["alpha"], "titler", "Write a title.", base_model=DEFAULT_MODEL_NAME
    )
    task = tmp_path / "task.jsonl"
    rows = ABSTRACTS.read_text().splitlines()[30:37]  # 3 few-shot examples + 4 scored
    task.write_text("\n".join(rows) + "\n")
    env = {
        **attach_env(engine, models_dir),
    }
    result = ragtune(
        "eval", "compare", "--task", task, "--adapter", "titler", "--max-tokens", "16", "--json",
        data_dir=data_dir, **env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["system"] for s in report["systems"]] == ["prompt", "few-shot", "rag", "adapter"]
    assert report["examples"] == 4
    assert report["shots"] == 3
    for system in report["systems"]:
        assert 0.0 <= system["metric"] <= 1.0
        assert system["latency_s"] > 0
        assert 0 < system["completion_tokens"] <= 16
    # Real titles share words with what the base model writes from the abstract.
    assert max(s["metric"] for s in report["systems"]) > 0
    assert report["recommendation"]
    shown = json.loads(
        ragtune("adapters", "show", "titler", "--json", data_dir=data_dir, **env).stdout
    )
    assert shown["evaluation"]["compare"]["recommendation"] == report["recommendation"]
