"""The adapter registry refuses what vLLM should never see, and keeps what it accepts."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ragtune.adapters.errors import AdapterConflictError, AdapterNotFoundError, InvalidAdapterError
from ragtune.adapters.registry import AdapterRegistry
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME, default_model_dir
from tests.support.cli import ragtune
from tests.support.serving import attach_env

TASK = "Write the title of a scientific article from its abstract."


def add(registry: AdapterRegistry, source: Path, models_dir: Path, name: str = "titler") -> object:
    return registry.add(
        source,
        name,
        TASK,
        base_model=DEFAULT_MODEL_NAME,
        max_rank=16,
        base_model_dir=default_model_dir(models_dir),
    )


def crafted_adapter(
    path: Path, tensors: dict[str, list[int]], rank: int = 8, targets: object = ("q_proj",)
) -> Path:
    """A LoRA directory with the given tensor shapes (zeros: only shapes are checked)."""
    path.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "target_modules": list(targets)}
    (path / "adapter_config.json").write_text(json.dumps(config))
    save_file(
        {k: torch.zeros(shape) for k, shape in tensors.items()},
        str(path / "adapter_model.safetensors"),
    )
    return path


def q_proj(layer: int, a: list[int], b: list[int]) -> dict[str, list[int]]:
    prefix = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
    return {f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": b}


def test_a_real_peft_adapter_is_registered_with_its_manifest(
    lora_adapters: dict[str, Path], models_dir: Path, tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    manifest = add(registry, lora_adapters["alpha"], models_dir)
    assert registry.get("titler") == manifest
    assert manifest.rank == 8
    assert manifest.target_modules == ["k_proj", "o_proj", "q_proj", "v_proj"]
    stored = registry.path(manifest)
    assert (stored / "adapter_model.safetensors").read_bytes() == (
        lora_adapters["alpha"] / "adapter_model.safetensors"
    ).read_bytes()
    with pytest.raises(AdapterConflictError, match="already exists"):
        add(registry, lora_adapters["beta"], models_dir)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (q_proj(0, [8, 512], [576, 8]), "built for another base model: .*576x576"),
        (q_proj(0, [8, 576], [640, 8]), "built for another base model"),
        (q_proj(40, [8, 576], [576, 8]), "layers.40.*does not have \\(30 layers\\)"),
    ],
)
def test_adapter_for_another_base_model_is_refused(
    tensors: dict[str, list[int]], message: str, models_dir: Path, tmp_path: Path
) -> None:
    source = crafted_adapter(tmp_path / "other", tensors)
    with pytest.raises(InvalidAdapterError, match=message):
        add(AdapterRegistry(tmp_path / "adapters"), source, models_dir)
    assert not (tmp_path / "adapters" / "titler").exists()


def test_rank_above_the_engine_limit_and_unknown_targets_are_refused(
    models_dir: Path, tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    big = crafted_adapter(tmp_path / "big", q_proj(0, [32, 576], [576, 32]), rank=32)
    with pytest.raises(InvalidAdapterError, match=r"rank 32 is above .*--max-lora-rank 16"):
        add(registry, big, models_dir)
    odd = crafted_adapter(
        tmp_path / "odd", q_proj(0, [8, 576], [576, 8]), targets=("q_proj", "c_attn")
    )
    with pytest.raises(InvalidAdapterError, match="does not have: c_attn"):
        add(registry, odd, models_dir)


def test_pickle_weights_symlinks_and_bad_names_are_refused(
    lora_adapters: dict[str, Path], models_dir: Path, tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(lora_adapters["alpha"] / "adapter_config.json", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(InvalidAdapterError, match="pickle"):
        add(registry, pickled, models_dir)

    linked = tmp_path / "linked"
    linked.mkdir()
    shutil.copy(lora_adapters["alpha"] / "adapter_config.json", linked)
    (linked / "adapter_model.safetensors").symlink_to(
        lora_adapters["alpha"] / "adapter_model.safetensors"
    )
    with pytest.raises(InvalidAdapterError, match="symbolic link"):
        add(registry, linked, models_dir)

    for name in ("../escape", "a/b", "UPPER", ""):
        with pytest.raises(InvalidAdapterError, match="invalid adapter name"):
            add(registry, lora_adapters["alpha"], models_dir, name=name)
    with pytest.raises(AdapterNotFoundError):
        registry.get("../../etc")
    assert not any((tmp_path / "adapters").glob("**/*.safetensors"))


def test_cli_add_list_show_rm(
    lora_adapters: dict[str, Path], models_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    model = {"RAGTUNE_MODEL": str(default_model_dir(models_dir))}
    examples = tmp_path / "examples.jsonl"
    examples.write_text(
        json.dumps({"instruction": "Write a title:", "input": "We study sleep in mice."}) + "\n"
    )
    added = ragtune(
        "adapters", "add", lora_adapters["alpha"], "--name", "titler", "--task", TASK,
        "--examples", examples, data_dir=data_dir, **model,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = json.loads(ragtune("adapters", "list", "--json", data_dir=data_dir).stdout)
    assert [(a["name"], a["version"], a["task"]) for a in listed] == [("titler", 1, TASK)]
    shown = json.loads(ragtune("adapters", "show", "titler", "--json", data_dir=data_dir).stdout)
    assert shown["examples"] == ["Write a title: We study sleep in mice."]
    assert shown["base_model"] == DEFAULT_MODEL_NAME

    refused = ragtune(
        "adapters", "add", tmp_path / "missing", "--name", "other", "--task", TASK,
        data_dir=data_dir, **model,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "is not a directory" in refused.stderr

    assert ragtune("adapters", "rm", "titler", data_dir=data_dir).returncode == 0
    assert json.loads(ragtune("adapters", "list", "--json", data_dir=data_dir).stdout) == []
    gone = ragtune("adapters", "show", "titler", data_dir=data_dir)
    assert gone.returncode == 2
    assert "no adapter named 'titler'" in gone.stderr


@pytest.mark.engine
def test_cli_load_and_unload_on_the_engine(
    engine: Any, lora_adapters: dict[str, Path], models_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = attach_env(engine, models_dir)
    added = ragtune(
        "adapters", "add", lora_adapters["beta"], "--name", "cli-beta", "--task", TASK,
        data_dir=data_dir, **env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr

    def loaded() -> object:
        rows = json.loads(ragtune("adapters", "list", "--json", data_dir=data_dir, **env).stdout)
        return rows[0]["loaded"]

    assert loaded() is False
    load = ragtune("adapters", "load", "cli-beta", data_dir=data_dir, **env)
    assert load.returncode == 0, load.stderr
    assert loaded() is True
    unload = ragtune("adapters", "unload", "cli-beta", data_dir=data_dir, **env)
    assert unload.returncode == 0, unload.stderr
    assert loaded() is False


def test_a_refused_adapter_leaves_the_name_free(
    lora_adapters: dict[str, Path], models_dir: Path, tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    bad = crafted_adapter(tmp_path / "bad", q_proj(0, [64, 576], [576, 64]))
    with pytest.raises(InvalidAdapterError, match="tensors have rank 64"):
        add(registry, bad, models_dir)
    with pytest.raises(AdapterNotFoundError):
        registry.get("titler")
    assert add(registry, lora_adapters["alpha"], models_dir).version == 1


def test_of_concurrent_adds_of_one_name_exactly_one_wins(
    lora_adapters: dict[str, Path], models_dir: Path, tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    start = threading.Barrier(6)

    def attempt(_: int) -> str:
        start.wait()
        try:
            add(registry, lora_adapters["alpha"], models_dir)
        except AdapterConflictError as exc:
            return f"conflict: {exc}"
        return "added"

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(attempt, range(6)))
    assert outcomes.count("added") == 1, outcomes
    assert all("already exists" in o for o in outcomes if o != "added")
    assert [m.version for m in registry.versions("titler")] == [1]
    # Nothing half-written is left behind.
    assert sorted(p.name for p in (tmp_path / "adapters" / "titler").iterdir()) == ["v1"]


def test_of_concurrent_removals_exactly_one_wins(
    lora_adapters: dict[str, Path], models_dir: Path, tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    add(registry, lora_adapters["alpha"], models_dir)
    start = threading.Barrier(4)

    def attempt(_: int) -> str:
        start.wait()
        try:
            registry.remove("titler")
        except AdapterNotFoundError:
            return "not found"
        return "removed"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(attempt, range(4)))
    assert outcomes == ["not found", "not found", "not found", "removed"]
    assert not any((tmp_path / "adapters").iterdir())


def test_old_versions_can_be_removed_but_not_the_current_one(
    lora_adapters: dict[str, Path], models_dir: Path, tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    add(registry, lora_adapters["alpha"], models_dir)
    registry.add_version("titler", lora_adapters["beta"])
    registry.add_version("titler", lora_adapters["alpha"])
    assert [m.version for m in registry.versions("titler")] == [1, 2, 3]
    with pytest.raises(AdapterConflictError, match="v3 is the version of 'titler' in force"):
        registry.remove_version("titler", 3)
    assert registry.remove_version("titler", 2).version == 2
    assert [m.version for m in registry.versions("titler")] == [1, 3]
    with pytest.raises(AdapterNotFoundError, match=r"has no version 2 \(it has v1, v3\)"):
        registry.remove_version("titler", 2)
    with pytest.raises(AdapterNotFoundError):
        registry.remove_version("nobody", 1)
    assert registry.get("titler").version == 3


def test_example_prompts_over_the_limit_are_refused(
    lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    prompts = [f"Write a title for abstract {i}." for i in range(11)]
    with pytest.raises(InvalidAdapterError, match=r"11 example prompts are more than the 10"):
        registry.add(
            lora_adapters["alpha"], "titler", TASK, base_model=DEFAULT_MODEL_NAME,
            examples=prompts, max_examples=10,
        )  # fmt: skip
    with pytest.raises(AdapterNotFoundError):
        registry.get("titler")
    manifest = registry.add(
        lora_adapters["alpha"], "titler", TASK, base_model=DEFAULT_MODEL_NAME,
        examples=prompts[:10], max_examples=10,
    )  # fmt: skip
    assert len(manifest.examples) == 10


def test_task_profiles_are_stored_with_the_manifest_and_keyed(
    lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    manifest = registry.add(lora_adapters["alpha"], "titler", TASK, base_model=DEFAULT_MODEL_NAME)
    assert registry.load_profile(manifest, "model-a:123") is None
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    registry.save_profile(manifest, "model-a:123", vectors)
    stored = registry.path(manifest) / "profile.safetensors"
    assert stored.is_file()
    assert [p.name for p in registry.path(manifest).iterdir() if p.name.startswith(".")] == []
    np.testing.assert_array_equal(registry.load_profile(manifest, "model-a:123"), vectors)
    # Made by another embedder, or from other texts: not used.
    assert registry.load_profile(manifest, "model-b:123") is None
    stored.write_bytes(b"not safetensors")
    assert registry.load_profile(manifest, "model-a:123") is None


def test_cli_removes_an_old_version_but_not_the_current_one(
    lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    registry = AdapterRegistry(data_dir / "adapters")
    registry.add(lora_adapters["alpha"], "titler", TASK, base_model=DEFAULT_MODEL_NAME)
    registry.add_version("titler", lora_adapters["beta"])
    current = ragtune("adapters", "rm", "titler", "--version", "2", data_dir=data_dir)
    assert current.returncode == 2
    assert "v2 is the version of 'titler' in force" in current.stderr
    old = ragtune("adapters", "rm", "titler", "--version", "1", data_dir=data_dir)
    assert old.returncode == 0, old.stderr
    assert "removed titler v1" in old.stdout
    assert [m.version for m in registry.versions("titler")] == [2]
    assert ragtune("adapters", "rm", "titler", data_dir=data_dir).returncode == 0
    assert registry.list() == []


def test_text_no_file_can_hold_is_refused(lora_adapters: dict[str, Path], tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    for task, examples in (("Titles \udc80.", []), (TASK, ["fine", "broken \ud800 prompt"])):
        with pytest.raises(InvalidAdapterError, match="lone surrogate"):
            registry.add(
                lora_adapters["alpha"], "titler", task, base_model=DEFAULT_MODEL_NAME,
                examples=examples,
            )  # fmt: skip
    assert registry.list() == []
