"""`ragtune advise` end to end on the real engine: prompting variants on real abstracts, a
registered adapter weighed against them, a learning curve trained with PEFT and checked for
parity, the verdict stored where `adapters show` and the router read it; and bad input refused
before any request or model load."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ragtune.adapters.registry import AdapterRegistry
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ragtune
from tests.support.serving import attach_env

ABSTRACTS = Path(__file__).resolve().parents[3] / "shared" / "eval" / "abstract2title.jsonl"
QUICK = (
    "--dev", "5", "--test", "5", "--shots", "1", "--reasoning-tokens", "16",
    "--cost-requests", "2",
)  # fmt: skip
VERDICTS = {"prompting", "retrieval", "fine-tune", "undecided"}

pytestmark = pytest.mark.engine


def task_file(tmp_path: Path, rows: int = 20) -> Path:
    task = tmp_path / f"titles-{rows}.jsonl"
    task.write_text("\n".join(ABSTRACTS.read_text().splitlines()[40 : 40 + rows]) + "\n")
    return task


@pytest.fixture
def with_adapter(
    ingested: tuple[Path, Any], lora_adapters: dict[str, Path], tmp_path: Path
) -> Path:
    """A copy of the ingested store (a default collection: retrieval variants run) with a
    registered adapter."""
    data_dir = tmp_path / "data"
    shutil.copytree(ingested[0], data_dir)
    AdapterRegistry(data_dir / "adapters").add(
        lora_adapters["alpha"], "titler", "Write a title.", base_model=DEFAULT_MODEL_NAME
    )
    return data_dir


def test_advise_weighs_an_adapter_against_prompting_and_stores_the_verdict(
    with_adapter: Path, engine: EngineSettings, models_dir: Path, tmp_path: Path
) -> None:
    env = attach_env(engine, models_dir)
    report_dir = tmp_path / "report"
    result = ragtune(
        "advise", task_file(tmp_path), "--adapter", "titler", *QUICK, "--report", report_dir,
        "--json", data_dir=with_adapter, **env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["splits"] == {"pool": 10, "dev": 5, "test": 5}
    names = [v["name"] for v in report["variants"]]
    assert names == [
        "instruction", "format", "few-shot-1", "step-by-step", "rag", "rag+few-shot-1",
    ]  # fmt: skip
    # Chosen on the dev split, reported on the test split.
    best = max(report["variants"], key=lambda v: v["scores"]["rouge-l"])  # cheaper on ties
    assert report["best"] == best["name"]
    on_test = {t["name"]: t for t in report["test"]}
    assert report["best"] in on_test
    assert on_test[report["best"]]["split"] == "test"
    assert "titler" in on_test
    for system in [*report["variants"], *report["test"]]:
        assert 0.0 <= system["scores"]["rouge-l"] <= 1.0
        assert system["prompt_tokens"] > 0
    # Few-shot prompts carry their examples: they cost prompt tokens on every call.
    by_name = {v["name"]: v for v in report["variants"]}
    assert by_name["few-shot-1"]["prompt_tokens"] > by_name["format"]["prompt_tokens"]
    assert 0.0 <= report["failures"]["share"] <= 1.0
    interval = report["intervals"][f"adapter - {report['best']}"]["rouge-l"]
    assert interval["low"] <= interval["mean"] <= interval["high"]
    assert "retrieval - none" in report["intervals"]
    side = report["cost"]["side_by_side"]
    assert [(r["concurrency"], r["system"]) for r in side] == [
        (1, report["best"]), (1, "adapter titler"), (8, report["best"]), (8, "adapter titler"),
    ]  # fmt: skip
    assert [r["requests"] for r in side] == [2, 2, 2, 2]  # --cost-requests
    assert report["verdict"] in VERDICTS
    assert report["reasons"]
    assert {p.name for p in report_dir.iterdir()} == {"advice.json", "advice.md", "variants.png"}
    assert report["verdict_words"] in (report_dir / "advice.md").read_text()

    shown = json.loads(
        ragtune("adapters", "show", "titler", "--json", data_dir=with_adapter, **env).stdout
    )
    stored = shown["evaluation"]["advise"]
    assert stored["verdict"] == report["verdict"]
    assert stored["scores"]["titler"] == on_test["titler"]["scores"]["rouge-l"]
    text = ragtune("adapters", "show", "titler", data_dir=with_adapter, **env).stdout
    assert "advice" in text
    assert report["verdict_words"] in text


def test_advise_trains_a_learning_curve_and_registers_a_checked_adapter(
    engine: EngineSettings, models_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"  # no collection: the retrieval variants are skipped
    env = attach_env(engine, models_dir)
    task = task_file(tmp_path)
    result = ragtune(
        "advise", task, "--train", "--name", "titler", "--task", "Write a paper's title.",
        "--sizes", "4", "--epochs", "1", "--max-length", "128", *QUICK, "--json",
        data_dir=data_dir, **env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert any("no retrieval variant" in note for note in report["notes"])
    assert not any(v["name"].startswith("rag") for v in report["variants"])
    assert [p["size"] for p in report["curve"]] == [4, 10]  # nested subsets, then all
    for point in report["curve"]:
        assert point["steps"] > 0
        assert point["training_seconds"] > 0
        assert point["peak_memory_mb"] > 0
    assert report["parity"]["ok"]
    assert report["adapter"] == "titler"
    assert report["cost"]["break_even"]["training_cost"] > 0
    assert report["verdict"] in VERDICTS

    manifest = json.loads(
        ragtune("adapters", "show", "titler", "--json", data_dir=data_dir, **env).stdout
    )
    assert manifest["task"] == "Write a paper's title."
    assert manifest["training_data_sha256"] == hashlib.sha256(task.read_bytes()).hexdigest()
    assert manifest["evaluation"]["parity"]["ok"]
    assert manifest["evaluation"]["advise"]["verdict"] == report["verdict"]
    # Nothing of the curve's other adapters is left behind.
    assert [p.name for p in (data_dir / "adapters").iterdir() if p.name.startswith(".")] == []


def test_bad_input_is_refused_before_any_request(
    with_adapter: Path,
    engine: EngineSettings,
    models_dir: Path,
    lora_adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    env = attach_env(engine, models_dir)
    AdapterRegistry(with_adapter / "adapters").add(
        lora_adapters["beta"], "foreign", "Write a title.", base_model="another-model"
    )
    manifest = (with_adapter / "adapters" / "titler" / "v1" / "manifest.json").read_text()
    task = task_file(tmp_path)
    mixed = tmp_path / "mixed.jsonl"
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    mixed.write_text(task.read_text() + json.dumps(chat) + "\n")
    cases = [
        ((task_file(tmp_path, rows=12), "--adapter", "titler"), "too few"),
        ((mixed, "--adapter", "titler"), "mixes formats"),
        ((task, "--adapter", "foreign"), "was made for 'another-model'"),
        ((task, "--adapter", "nobody"), "no adapter named 'nobody' is registered"),
        ((task, "--adapter", "titler", "--collection", "missing"), "'missing' does not exist"),
        ((task, "--train"), "--train needs --name"),
        ((task, "--train", "--name", "titler"), "already exists"),
        ((task, "--metric", "bleu"), "unknown metric"),
    ]
    # Each mistake is found before any model loads: with an embedding model that cannot load,
    # every case still gets its own message.
    unloadable = str(tmp_path / "no-embedding-model")
    for args, message in cases:
        result = ragtune(
            "advise", *args, *QUICK, data_dir=with_adapter, RAGTUNE_EMBEDDING_MODEL=unloadable,
            **env,
        )  # fmt: skip
        assert result.returncode == 2, (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    # Nothing stored changed.
    assert (with_adapter / "adapters" / "titler" / "v1" / "manifest.json").read_text() == manifest
