"""LoRA training with PEFT on the served base model: loss on the answer tokens only, padding per
batch, a held-out split evaluated before and after, progress reported per step; and the whole
train-and-register flow `ragtune adapters train` runs (`train_and_register`)."""

from __future__ import annotations

import random
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.adapters.errors import AdapterConflictError, InvalidAdapterError, TrainingDataError
from ragtune.adapters.examples import Example, load_examples
from ragtune.adapters.provenance import CollectionSnapshot
from ragtune.adapters.registry import AdapterManifest, AdapterRegistry, check_name, sha256_file

IGNORE = -100  # label of tokens the loss skips (the prompt, the padding)
HELD_OUT_FILE = "heldout.jsonl"
"""Kept next to the adapter: the examples it never saw, for `ragtune eval compare --task`."""
MANIFEST_EXAMPLES = 20
"""Training prompts recorded as the adapter's example prompts: the router matches requests
against each, so a few typical ones are enough and many would slow every request."""


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 2
    rank: int = 8
    alpha: int = 16
    learning_rate: float = 5e-4
    batch_size: int = 8
    max_examples: int | None = None
    eval_split: float = 0.1
    max_length: int = 512
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    seed: int = 0


@dataclass
class TrainingResult:
    adapter_dir: Path
    steps: int
    train_examples: int
    held_out: list[Example]
    eval_loss_before: float | None
    eval_loss_after: float | None
    final_train_loss: float
    seconds: float
    data_sha256: str
    losses: list[float] = field(default_factory=list)


def split_examples(
    examples: Sequence[Example], eval_split: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """(train, held out): a seeded shuffle, at least one held-out example when asked for."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    held = 0 if eval_split <= 0 else max(1, round(len(order) * eval_split))
    if held >= len(order):
        raise TrainingDataError("the held-out split leaves nothing to train on; lower --eval-split")
    return order[held:], order[:held]


ParityCheck = Callable[[Path, Path, Sequence[Example]], dict[str, Any]]
"""(base model folder, trained adapter folder, held-out examples) -> the parity result to keep;
raises InvalidAdapterError when the served adapter does not behave as trained."""


@dataclass(frozen=True)
class TrainedAdapter:
    """What `train_and_register` made: the registered manifest (its evaluation holds the
    training summary), the training run, and where the held-out examples were saved."""

    manifest: AdapterManifest
    result: TrainingResult
    held_out_file: Path


def train_and_register(
    registry: AdapterRegistry,
    data: Path,
    name: str,
    task: str,
    *,
    base_model: str,
    base_model_dir: Callable[[], Path],
    max_rank: int,
    config: TrainingConfig,
    trainer: Trainer | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    check: ParityCheck | None = None,
    collection: CollectionSnapshot | None = None,
) -> TrainedAdapter:
    """Train a LoRA adapter on the examples in `data` and register it as `name` (version 1).

    In order: the name, the rank and the data are checked, and the examples (the first
    `config.max_examples`) split into training and held-out sets, before anything slow;
    `base_model_dir()` gives the served base model as a local directory (it may prepare it);
    the adapter is trained into a staging folder inside the registry, registered from there
    (validated against the base model like any added adapter: `max_rank` is the engine's
    --max-lora-rank) and the staging folder removed; the held-out examples are saved next to
    it (`heldout.jsonl`) and a training summary in its manifest's evaluation. `check` (the
    parity of the served adapter with PEFT's, given the base model's folder, the trained
    folder and the held-out examples) runs before registering: it raises to refuse the
    adapter, and what it returns is kept in the manifest's evaluation as "parity".
    `collection` is the collection the adapter is made alongside, as it is now: the manifest
    keeps it (with the data file's hash) to tell later whether its documents changed.
    """
    check_name(name)
    if any(m.name == name for m in registry.list()):
        raise AdapterConflictError(f"an adapter named {name!r} already exists")
    if config.rank > max_rank:
        raise InvalidAdapterError(
            f"--rank {config.rank} is above the engine's --max-lora-rank {max_rank}"
        )
    examples = load_examples(data)[: config.max_examples]
    train, held_out = split_examples(examples, config.eval_split, config.seed)
    model_dir = base_model_dir()
    if not model_dir.is_dir():
        raise InvalidAdapterError(
            f"training needs the base model as a local directory; {model_dir} is not one"
        )
    staging = registry.root / f".training-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        result = (trainer or PeftLoraTrainer()).train(
            model_dir, train, held_out, staging, config, on_step
        )
        parity = check(model_dir, staging, held_out) if check is not None else None
        manifest = registry.add(
            staging,
            name,
            task,
            base_model=base_model,
            examples=[e.prompt() for e in train[:MANIFEST_EXAMPLES]],
            training_data_sha256=sha256_file(data),
            training_collection=collection,
            max_rank=max_rank,
            base_model_dir=model_dir,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    held_out_file = registry.path(manifest) / HELD_OUT_FILE
    held_out_file.write_text("".join(e.to_json() + "\n" for e in held_out))
    training = {
        "examples": len(train),
        "held_out": len(held_out),
        "held_out_file": str(held_out_file),
        "steps": result.steps,
        "epochs": config.epochs,
        "learning_rate": config.learning_rate,
        "eval_loss_before": result.eval_loss_before,
        "eval_loss_after": result.eval_loss_after,
        "final_train_loss": result.final_train_loss,
        "seconds": round(result.seconds, 1),
    }
    results: dict[str, Any] = {"training": training}
    if parity is not None:
        results["parity"] = parity
    manifest = registry.save_evaluation(manifest, results)
    return TrainedAdapter(manifest, result, held_out_file)


class Trainer(ABC):
    """Trains a LoRA adapter for a base model; writes a PEFT directory."""

    @abstractmethod
    def train(
        self,
        base_model_dir: Path,
        train: Sequence[Example],
        held_out: Sequence[Example],
        out: Path,
        config: TrainingConfig,
        on_step: Callable[[int, int, float], None] | None = None,
    ) -> TrainingResult: ...


class PeftLoraTrainer(Trainer):
    """PEFT LoRA on a transformers causal LM, on the CPU or the first GPU."""

    def train(
        self,
        base_model_dir: Path,
        train: Sequence[Example],
        held_out: Sequence[Example],
        out: Path,
        config: TrainingConfig,
        on_step: Callable[[int, int, float], None] | None = None,
    ) -> TrainingResult:
        import warnings

        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        torch.manual_seed(config.seed)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
        lora = LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            target_modules=list(config.target_modules),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            peft_model = get_peft_model(model, lora)
        peft_model.to(device)

        encoded_train = [encode(tokenizer, e, config.max_length) for e in train]
        encoded_eval = [encode(tokenizer, e, config.max_length) for e in held_out]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        def loss_of(batch: Sequence[tuple[list[int], list[int]]]) -> Any:
            ids, mask, labels = collate(batch, pad)
            return answer_loss(
                peft_model.get_base_model(), ids.to(device), mask.to(device), labels.to(device)
            )

        def evaluate() -> float | None:
            if not encoded_eval:
                return None
            peft_model.eval()
            total = 0.0
            with torch.no_grad():
                for start in range(0, len(encoded_eval), config.batch_size):
                    batch = encoded_eval[start : start + config.batch_size]
                    total += float(loss_of(batch)) * len(batch)
            return total / len(encoded_eval)

        before = evaluate()
        optimizer = torch.optim.AdamW(
            [p for p in peft_model.parameters() if p.requires_grad], lr=config.learning_rate
        )
        rng = random.Random(config.seed)
        steps_per_epoch = -(-len(encoded_train) // config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        losses: list[float] = []
        step = 0
        for _ in range(config.epochs):
            peft_model.train()
            order = list(range(len(encoded_train)))
            rng.shuffle(order)
            for start in range(0, len(order), config.batch_size):
                batch = [encoded_train[i] for i in order[start : start + config.batch_size]]
                loss = loss_of(batch)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                step += 1
                losses.append(loss.item())
                if on_step:
                    on_step(step, total_steps, losses[-1])
        after = evaluate()
        peft_model.save_pretrained(str(out), safe_serialization=True)
        return TrainingResult(
            adapter_dir=out,
            steps=step,
            train_examples=len(train),
            held_out=list(held_out),
            eval_loss_before=before,
            eval_loss_after=after,
            final_train_loss=losses[-1],
            seconds=time.perf_counter() - started,
            data_sha256="",
            losses=losses,
        )


def encode(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): the chat-formatted prompt, then the answer and end-of-turn; the loss
    sees the answer only."""
    prompt = tokenizer.apply_chat_template(
        example.messages, tokenize=True, add_generation_prompt=True
    )
    if hasattr(prompt, "keys"):
        prompt = prompt["input_ids"]
    answer = tokenizer.encode(example.answer, add_special_tokens=False)
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    answer = answer + end
    prompt = list(prompt)[-max(1, max_length - len(answer)) :]  # keep the prompt's end
    ids = (prompt + answer)[:max_length]
    labels = ([IGNORE] * len(prompt) + answer)[:max_length]
    return ids, labels


def answer_loss(model: Any, ids: Any, mask: Any, labels: Any) -> Any:
    """The causal LM loss on the answer tokens, with logits computed for those positions only.

    Same value as `model(input_ids, attention_mask, labels).loss` (mean cross-entropy over the
    tokens whose label is not IGNORE), without the (batch x length x vocabulary) logits tensor:
    with a 49k vocabulary and answers a tenth of the sequence, that tensor and its gradient
    were most of a step's memory and a fifth of its time.
    """
    import torch.nn.functional as F

    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = model.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


def collate(batch: Sequence[tuple[list[int], list[int]]], pad: int) -> tuple[Any, Any, Any]:
    """Right-pad to the longest sequence of this batch (not a fixed length)."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, (tokens, target) in enumerate(batch):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
        labels[row, : len(target)] = torch.tensor(target)
    return ids, mask, labels
