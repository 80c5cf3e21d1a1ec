"""`ragtune router collect` on the real engine: every applicable route answers each case,
graded against the reference or by grounding, appended with the router's features; then
`router train` reads what was collected."""

from __future__ import annotations

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

pytestmark = pytest.mark.engine


def test_collect_runs_every_route_and_grades_each_answer(
    ingested: tuple[Path, Any],
    lora_adapters: dict[str, Path],
    engine: EngineSettings,
    models_dir: Path,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(ingested[0], data_dir)
    AdapterRegistry(data_dir / "adapters").add(
        lora_adapters["alpha"], "titler", "Write a paper's title from its abstract.",
        base_model=DEFAULT_MODEL_NAME,
    )  # fmt: skip
    cases = tmp_path / "cases.jsonl"
    lines = [
        {"question": "Why does Python use indentation for grouping of statements?",
         "reference": "Guido van Rossum believes that using indentation for grouping is "
                      "extremely elegant and contributes a lot to the clarity of programs.",
         "expected_route": "rag", "source": "faq"},
        {"messages": [
            {"role": "user", "content": "How do I copy a file in Python?"},
            {"role": "assistant", "content": "Use the shutil module."},
            {"role": "user", "content": "Can you say more about that?"}],
         "expected_route": "rag", "source": "follow-up"},
        {"question": "Tell me a joke about cats.", "source": "general"},
    ]  # fmt: skip
    cases.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "outcomes.jsonl"
    env = attach_env(engine, models_dir)
    result = ragtune(
        "router", "collect", "--cases", cases, "--out", out, "--max-tokens", "24",
        data_dir=data_dir, **env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 cases collected" in result.stdout
    # appended as each case finishes (an interrupted run keeps them): in any order
    collected = sorted(
        (json.loads(line) for line in out.read_text().splitlines()), key=lambda c: c["line"]
    )
    assert [c["source"] for c in collected] == ["faq", "follow-up", "general"]
    for case in collected:
        runs = {(o["route"], o["adapter"]) for o in case["outcomes"]}
        assert runs == {("rag", None), ("base", None), ("adapter", "titler"),
                        ("adapter+rag", "titler")}  # fmt: skip
        assert case["adapter"] == "titler"
        for outcome in case["outcomes"]:
            assert 0.0 <= outcome["grade"] <= 1.0
            assert outcome["completion_tokens"] > 0
            assert outcome["answer"]
    faq, follow_up, general = collected
    assert {o["metric"] for o in faq["outcomes"]} == {"rouge-l"}
    # without a reference: the answer's form, and its grounding where there is evidence
    assert {o["metric"] for o in follow_up["outcomes"]} <= {"grounding", "format", "empty"}
    assert {o["metric"] for o in general["outcomes"]} <= {"format", "empty"}
    assert follow_up["features"]["turns"] == 2.0
    assert follow_up["history"] == ["How do I copy a file in Python?"]
    assert faq["features"]["evidence_top"] > general["features"]["evidence_top"]
    assert general["expected_route"] is None

    # An unknown route names the line; nothing is appended.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "hi", "expected_route": "rag"}\n{"question": "x", '
                   '"expected_route": "elsewhere"}\n')  # fmt: skip
    refused = ragtune("router", "collect", "--cases", bad, "--out", out, data_dir=data_dir, **env)
    assert refused.returncode != 0
    assert "line 2" in refused.stderr
    assert len(out.read_text().splitlines()) == 3
