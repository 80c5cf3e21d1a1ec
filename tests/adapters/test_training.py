"""`ragtune adapters train`: PEFT LoRA, answer-only loss, per-batch padding, held-out split;
the train-and-register flow with a stand-in trainer, and end to end through the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from ragtune.adapters.errors import AdapterConflictError, InvalidAdapterError
from ragtune.adapters.examples import Example, load_examples
from ragtune.adapters.provenance import CollectionSnapshot, DocumentVersion
from ragtune.adapters.registry import MANIFEST, AdapterRegistry
from ragtune.adapters.training import (
    IGNORE,
    Trainer,
    TrainingConfig,
    TrainingResult,
    collate,
    encode,
    train_and_register,
)
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME, default_model_dir
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ragtune, ragtune_serve
from tests.support.servers import free_port
from tests.support.serving import attach_env

ABSTRACTS = Path(__file__).resolve().parents[3] / "shared" / "eval" / "abstract2title.jsonl"


def test_loss_covers_the_answer_only_and_batches_pad_to_their_longest(models_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir(models_dir))
    example = Example([{"role": "user", "content": "Title for: we study sleep."}], "Sleep")
    ids, labels = encode(tokenizer, example, max_length=512)
    answer = [*tokenizer.encode("Sleep", add_special_tokens=False), tokenizer.eos_token_id]
    assert ids[-len(answer) :] == answer
    assert labels[-len(answer) :] == answer
    assert set(labels[: -len(answer)]) == {IGNORE}

    short = encode(tokenizer, Example([{"role": "user", "content": "Hi"}], "Hello"), 512)
    batch_ids, mask, batch_labels = collate([(ids, labels), short], pad=0)
    assert batch_ids.shape == (2, len(ids))  # the longest of this batch, not a fixed length
    assert int(mask[1].sum()) == len(short[0])
    assert set(batch_labels[1, len(short[0]) :].tolist()) == {IGNORE}


class CopyTrainer(Trainer):
    """Stands in for PEFT: "trains" by copying a ready LoRA directory, and remembers what it
    was given."""

    def __init__(self, adapter: Path) -> None:
        self.adapter = adapter
        self.seen: tuple[list[Example], list[Example]] | None = None

    def train(
        self,
        base_model_dir: Path,
        train: Sequence[Example],
        held_out: Sequence[Example],
        out: Path,
        config: TrainingConfig,
        on_step: Callable[[int, int, float], None] | None = None,
    ) -> TrainingResult:
        self.seen = (list(train), list(held_out))
        shutil.copytree(self.adapter, out)
        if on_step:
            on_step(1, 1, 1.5)
        return TrainingResult(out, 1, len(train), list(held_out), 2.0, 1.0, 1.5, 0.5, "")


def write_examples(path: Path, count: int) -> Path:
    rows = [
        {"instruction": "Title:", "input": f"Abstract number {n}.", "output": f"Title {n}"}
        for n in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_train_and_register_keeps_the_held_out_split_and_records_the_run(
    models_dir: Path, lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    data = write_examples(tmp_path / "titles.jsonl", 30)
    trainer = CopyTrainer(lora_adapters["alpha"])
    steps: list[int] = []
    trained = train_and_register(
        registry, data, "titler", "Write a paper's title.",
        base_model=DEFAULT_MODEL_NAME,
        base_model_dir=lambda: default_model_dir(models_dir),
        max_rank=16,
        config=TrainingConfig(max_examples=25, eval_split=0.2),
        trainer=trainer,
        on_step=lambda step, total, loss: steps.append(step),
    )  # fmt: skip
    assert trainer.seen is not None
    train, held_out = trainer.seen
    assert (len(train), len(held_out)) == (20, 5)  # the first 25 examples, a fifth held out
    assert steps == [1]

    manifest = registry.get("titler")
    assert manifest == trained.manifest
    assert manifest.version == 1
    assert manifest.examples == [e.prompt() for e in train]
    assert manifest.training_data_sha256
    summary = manifest.evaluation["training"]
    assert summary["examples"] == 20
    assert summary["held_out"] == 5
    assert (summary["eval_loss_before"], summary["eval_loss_after"]) == (2.0, 1.0)
    # The held-out examples lie next to the adapter, in the format `eval compare --task` reads.
    assert trained.held_out_file == registry.path(manifest) / "heldout.jsonl"
    assert summary["held_out_file"] == str(trained.held_out_file)
    assert load_examples(trained.held_out_file) == held_out
    assert not list(registry.root.glob(".training-*"))  # the staging folder is gone


def test_training_records_the_collection_made_alongside_and_a_new_version_forgets_it(
    models_dir: Path, lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    recorded = CollectionSnapshot(
        name="handbook",
        revision="r1",
        documents=[
            DocumentVersion(doc_id="d1", source="/docs/refunds.md", doc_hash="h1", ingested_at="t")
        ],
    )
    train_and_register(
        registry, write_examples(tmp_path / "titles.jsonl", 10), "titler", "Titles.",
        base_model=DEFAULT_MODEL_NAME, base_model_dir=lambda: default_model_dir(models_dir),
        max_rank=16, config=TrainingConfig(), trainer=CopyTrainer(lora_adapters["alpha"]),
        collection=recorded,
    )  # fmt: skip
    manifest = registry.get("titler")
    assert manifest.training_collection == recorded
    stored = json.loads((registry.path(manifest) / MANIFEST).read_text())
    assert stored["training_collection"]["documents"][0]["doc_hash"] == "h1"
    # A version swapped in from a folder: what it was trained on is not known.
    newer = registry.add_version("titler", lora_adapters["beta"])
    assert (newer.training_collection, newer.training_data_sha256) == (None, None)


def test_a_refused_training_stops_before_the_base_model_is_prepared(
    lora_adapters: dict[str, Path], tmp_path: Path
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    data = write_examples(tmp_path / "titles.jsonl", 4)
    trainer = CopyTrainer(lora_adapters["alpha"])

    def unprepared() -> Path:
        raise AssertionError("the base model was asked for")

    def train(name: str, data: Path = data, rank: int = 8) -> None:
        train_and_register(
            registry, data, name, "A task.", base_model=DEFAULT_MODEL_NAME,
            base_model_dir=unprepared, max_rank=16, config=TrainingConfig(rank=rank),
            trainer=trainer,
        )  # fmt: skip

    with pytest.raises(InvalidAdapterError, match="invalid adapter name"):
        train("Not A Name")
    with pytest.raises(InvalidAdapterError, match=r"--rank 32 is above .* 16"):
        train("titler", rank=32)
    prose = tmp_path / "prose.jsonl"
    prose.write_text("Titles are short.\n")
    with pytest.raises(InvalidAdapterError, match=r"prose\.jsonl, line 1: not JSON"):
        train("titler", data=prose)
    registry.add(lora_adapters["alpha"], "taken", "A task.", base_model=DEFAULT_MODEL_NAME)
    with pytest.raises(AdapterConflictError, match="already exists"):
        train("taken")
    assert trainer.seen is None  # nothing was trained


@pytest.fixture(scope="module")
def trained(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A tiny adapter trained by the CLI on 12 abstracts (kept short for CI)."""
    data_dir = tmp_path_factory.mktemp("trained") / "data"
    # No engine at that address: the parity check cannot run, the adapter is registered.
    env = {
        "RAGTUNE_MODEL": str(default_model_dir(models_dir)),
        "RAGTUNE_VLLM_URL": f"http://127.0.0.1:{free_port()}",
    }
    result = ragtune(
        "adapters", "train", ABSTRACTS, "--name", "titler", "--task", "Write a paper's title.",
        "--max-examples", "12", "--eval-split", "0.25", "--batch-size", "4", "--epochs", "2",
        "--max-length", "256", "--lr", "1e-3", "--json", data_dir=data_dir, **env,
    )  # fmt: skip
    return data_dir, result


def test_cli_trains_registers_and_keeps_the_held_out_split(
    models_dir: Path, trained: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    data_dir, result = trained
    env = {"RAGTUNE_MODEL": str(default_model_dir(models_dir))}
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    training = manifest["evaluation"]["training"]
    assert training["examples"] == 9
    assert training["held_out"] == 3
    assert training["steps"] == 6
    # It learned: the held-out titles are likelier after training than before.
    assert training["eval_loss_after"] < training["eval_loss_before"]
    held_out = Path(training["held_out_file"]).read_text().splitlines()
    assert len(held_out) == 3
    assert manifest["rank"] == 8
    assert manifest["training_data_sha256"]
    assert len(manifest["examples"]) == 9
    parity = manifest["evaluation"]["parity"]
    assert parity["checked"] is False
    assert "not running" in parity["reason"]
    listed = json.loads(ragtune("adapters", "list", "--json", data_dir=data_dir, **env).stdout)
    assert [a["name"] for a in listed] == ["titler"]


@pytest.mark.engine
def test_the_adapter_just_trained_is_served(
    engine: EngineSettings,
    models_dir: Path,
    trained: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    data_dir, result = trained
    assert result.returncode == 0, result.stderr
    held_out = json.loads(
        Path(json.loads(result.stdout)["evaluation"]["training"]["held_out_file"])
        .read_text()
        .splitlines()[0]
    )
    env = {
        **attach_env(engine, models_dir),
        "RAGTUNE_API_KEYS": "chat-key",
    }
    with ragtune_serve(data_dir, free_port(), **env) as url:
        prompt = next(m["content"] for m in held_out["messages"] if m["role"] == "user")
        for model in ("titler", DEFAULT_MODEL_NAME):  # by name, then chosen by the router
            response = httpx.post(
                f"{url}/v1/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 24,
                    "temperature": 0,
                },
                headers={"Authorization": "Bearer chat-key"},
                timeout=300,
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["ragtune"]["route"] in ("adapter", "adapter+rag")
            assert answer["ragtune"]["adapter"] == "titler"
            assert answer["choices"][0]["message"]["content"].strip()


@pytest.mark.engine
def test_training_checks_the_served_adapter_against_peft(
    engine: EngineSettings, models_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    result = ragtune(
        "adapters", "train", ABSTRACTS, "--name", "titler", "--task", "Write a paper's title.",
        "--max-examples", "8", "--eval-split", "0.25", "--batch-size", "4", "--epochs", "1",
        "--max-length", "128", "--json", data_dir=data_dir, **attach_env(engine, models_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parity = json.loads(result.stdout)["evaluation"]["parity"]
    assert parity["ok"]
    assert parity["prompts"] == 2  # the held-out examples
    assert parity["agreement"] >= parity["threshold"]
