"""LoRA training with PEFT on the served base model: loss on the answer tokens only, padding per
batch, a held-out split evaluated before and after, progress reported per step."""

from __future__ import annotations

import hashlib
import json
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.adapters.errors import InvalidAdapterError

IGNORE = -100  # label of tokens the loss skips (the prompt, the padding)


class TrainingDataError(InvalidAdapterError):
    """The training data file is missing, malformed or too small."""


@dataclass(frozen=True)
class Example:
    messages: list[dict[str, str]]
    """The conversation up to the answer."""
    answer: str

    def prompt(self) -> str:
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    def to_json(self) -> str:
        return json.dumps(
            {"messages": [*self.messages, {"role": "assistant", "content": self.answer}]}
        )


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


def load_examples(path: Path) -> list[Example]:
    """JSONL: {"instruction", "input", "output"} or {"messages": [..., {"role": "assistant"}]}."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise TrainingDataError(f"cannot read the training data {path}: {exc}") from exc
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise TrainingDataError(f"{path}, line {number}: not JSON ({exc})") from exc
        example = _example(row)
        if example is None:
            raise TrainingDataError(
                f'{path}, line {number}: expected {{"instruction", "input", "output"}} or '
                '{"messages": [...]} ending with an assistant message'
            )
        examples.append(example)
    if len(examples) < 2:
        raise TrainingDataError(f"{path} has {len(examples)} example(s); training needs more")
    return examples


def _example(row: Any) -> Example | None:
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("messages"), list):
        messages = [
            {"role": str(m.get("role")), "content": str(m.get("content") or "")}
            for m in row["messages"]
            if isinstance(m, dict)
        ]
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            return None
        if not any(m["role"] == "user" for m in messages[:-1]):
            return None
        return Example(messages[:-1], messages[-1]["content"])
    if isinstance(row.get("output"), str) and (row.get("instruction") or row.get("input")):
        prompt = " ".join(str(row[k]).strip() for k in ("instruction", "input") if row.get(k))
        return Example([{"role": "user", "content": prompt}], row["output"])
    return None


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


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
