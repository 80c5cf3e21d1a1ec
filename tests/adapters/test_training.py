"""`ragtune adapters train`: PEFT LoRA, answer-only loss, per-batch padding, held-out split."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from ragtune.adapters.training import (
    IGNORE,
    Example,
    TrainingDataError,
    collate,
    encode,
    load_examples,
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


def test_training_data_formats_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(
        json.dumps({"instruction": "Title:", "input": "An abstract.", "output": "A title"})
        + "\n"
        + json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                ]
            }
        )
        + "\n"
    )
    examples = load_examples(data)
    assert [(e.prompt(), e.answer) for e in examples] == [
        ("Title: An abstract.", "A title"),
        ("Hi", "Hello"),
    ]
    data.write_text(data.read_text() + '{"input": "no output"}\n')
    with pytest.raises(TrainingDataError, match="line 3"):
        load_examples(data)


@pytest.fixture(scope="module")
def trained(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A tiny adapter trained by the CLI on 12 abstracts (kept short for CI)."""
    data_dir = tmp_path_factory.mktemp("trained") / "data"
    env = {"RAGTUNE_MODEL": str(default_model_dir(models_dir))}
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
