"""`ragtune router train` and `ragtune eval route --outcomes`, run as a user would (outcomes made
by rule; `router collect` needs the engine: tests/evals/test_outcomes.py)."""

from __future__ import annotations

import json
from pathlib import Path

from ragtune.serving.outcomes import append_outcomes
from tests.support.cli import ragtune
from tests.support.outcomes import outcomes


def test_train_then_compare_on_held_out_outcomes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    append_outcomes(data_dir / "router" / "outcomes.jsonl", outcomes(120, seed=7))
    held_out = tmp_path / "held-out.jsonl"
    append_outcomes(held_out, outcomes(60, seed=8))

    trained = ragtune("router", "train", "--json", data_dir=data_dir)
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)
    assert report["path"] == str(data_dir / "router" / "model.json")
    assert (data_dir / "router" / "model.json").is_file()
    assert {c["name"] for c in report["candidates"]} >= {"logistic C=1", "boosting 50x2"}

    compared = ragtune("eval", "route", "--outcomes", held_out, "--json", data_dir=data_dir)
    assert compared.returncode == 0, compared.stderr
    policies = {p["policy"]: p for p in json.loads(compared.stdout)["policies"]}
    assert set(policies) == {
        "thresholds", "learned", "always rag", "always adapter", "always base", "oracle"
    }  # fmt: skip
    assert policies["learned"]["mean_grade"] > policies["thresholds"]["mean_grade"]

    shown = ragtune("eval", "route", "--outcomes", held_out, data_dir=data_dir)
    assert "closes" in shown.stdout
    assert "of the gap between the thresholds and the oracle" in shown.stdout


def test_bad_input_says_what_to_do(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    missing = ragtune("router", "train", data_dir=data_dir)
    assert missing.returncode != 0
    assert "router collect" in missing.stderr
    assert "Traceback" not in missing.stderr

    few = tmp_path / "few.jsonl"
    append_outcomes(few, outcomes(5))
    refused = ragtune("router", "train", "--outcomes", few, data_dir=data_dir)
    assert refused.returncode != 0
    assert "at least 20" in refused.stderr

    both = ragtune("eval", "route", data_dir=data_dir)
    assert both.returncode != 0
    assert "--cases" in both.stderr

    append_outcomes(data_dir / "router" / "outcomes.jsonl", outcomes(40))
    assert ragtune("router", "train", data_dir=data_dir).returncode == 0
    model = data_dir / "router" / "model.json"
    stored = json.loads(model.read_text())
    stored["embedding_model"] = "other/model"
    model.write_text(json.dumps(stored))
    other = ragtune("eval", "route", "--outcomes", few, data_dir=data_dir)
    assert other.returncode != 0
    assert "other/model" in other.stderr


def test_follow_ups_from_an_earlier_revision_of_the_features_are_left_out_and_said(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    path = data_dir / "router" / "outcomes.jsonl"
    append_outcomes(path, outcomes(40, seed=7))
    with path.open("a") as out:
        for case in outcomes(4, seed=8):
            line = case.to_dict()  # as written before 2026-12-08, a follow-up
            del line["features_revision"]
            line["features"]["turns"] = 2.0
            out.write(json.dumps(line) + "\n")

    trained = ragtune("router", "train", "--json", data_dir=data_dir)
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)
    assert (report["cases"], report["left_out"]) == (40, 4)
    stored = json.loads((data_dir / "router" / "model.json").read_text())
    assert stored["features_revision"] == 2

    compared = ragtune("eval", "route", "--outcomes", path, data_dir=data_dir)
    assert compared.returncode == 0, compared.stderr
    assert "routing policies on 40 cases" in compared.stdout
    assert "left out 4 follow-up case(s) recorded with an earlier revision" in compared.stdout
