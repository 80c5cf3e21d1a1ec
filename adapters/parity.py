"""Parity of a served adapter with PEFT: the greedy answers the engine gives with the adapter,
compared with PEFT's own generation of the same adapter on the same prompts. vLLM has served
LoRA adapters as silent no-ops or with diverging outputs (vllm-project/vllm#10798, #48019,
#47026); an adapter ragtune trained is registered only when the two agree.

Usage:
    reference = peft_reference(base_model_dir, adapter_dir, conversations, max_new_tokens=32)
    result = check_parity(served_answers, served_base_answers, reference)
    if not result.ok: raise InvalidAdapterError(result.message())
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AGREEMENT = 0.8
"""Mean agreement below which the served adapter does not match PEFT's. Agreement of two answers
is the share of the longer one's tokens that both share as a common prefix: the engine computes
in another precision than PEFT on the CPU, so a long greedy answer may drift after a while."""


@dataclass
class ParityResult:
    agreement: float
    """Mean per-prompt agreement of the served answers with PEFT's (0..1)."""
    prompts: int
    no_op: bool
    """The served adapter answered exactly as the base model, where PEFT's adapter did not."""
    pairs: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.agreement >= AGREEMENT and not self.no_op

    def message(self) -> str:
        if self.no_op:
            return (
                "the engine serves this adapter as if it were the base model (its answers equal "
                "the base model's on every checked prompt, PEFT's do not): a silent LoRA no-op; "
                "check the engine's LoRA support for this model before registering it"
            )
        return (
            f"the engine's answers with this adapter agree with PEFT's only {self.agreement:.0%} "
            f"on {self.prompts} held-out prompts (at least {AGREEMENT:.0%} needed): the served "
            "adapter would not behave as trained"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "agreement": round(self.agreement, 4),
            "prompts": self.prompts,
            "no_op": self.no_op,
            "ok": self.ok,
            "threshold": AGREEMENT,
            "pairs": self.pairs,
        }


def agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """The share of the longer token sequence covered by the common prefix (1.0 when both are
    empty)."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    same = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        same += 1
    return same / longest


@dataclass(frozen=True)
class PeftReference:
    """PEFT's greedy answers on the checked prompts, with and without the adapter, and the base
    model's tokenizer to compare answers with."""

    adapter: list[str]
    base: list[str]
    encode: Callable[[str], list[int]]


def check_parity(
    served: Sequence[str], served_base: Sequence[str], reference: PeftReference
) -> ParityResult:
    """The engine's answers with the adapter and without it vs PEFT's (same prompts, same
    order), compared token by token; a served adapter that changes nothing where PEFT's does
    is a no-op."""
    scores = [
        agreement(reference.encode(s.strip()), reference.encode(r.strip()))
        for s, r in zip(served, reference.adapter, strict=True)
    ]
    no_op = list(served) == list(served_base) and reference.adapter != reference.base
    pairs = [{"served": s, "peft": r} for s, r in zip(served, reference.adapter, strict=True)]
    return ParityResult(sum(scores) / len(scores) if scores else 0.0, len(scores), no_op, pairs)


def peft_reference(
    base_model_dir: Path,
    adapter_dir: Path,
    conversations: Sequence[Sequence[dict[str, str]]],
    *,
    max_new_tokens: int,
) -> PeftReference:
    """Greedy answers of the base model alone, then with the adapter applied by PEFT, in
    float32 on the CPU or the first GPU."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    model.to(device).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Only what greedy decoding needs: the model's own generation defaults (a temperature, a
    # top_p) would make transformers warn that they are unused.
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip

    def answers(generator: Any) -> list[str]:
        out = []
        for messages in conversations:
            ids: Any = tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            ids = {k: v.to(device) for k, v in ids.items()}
            with torch.no_grad():
                output = generator.generate(**ids, generation_config=config)
            new = output[0, ids["input_ids"].shape[1] :]
            out.append(str(tokenizer.decode(new, skip_special_tokens=True)))
        return out

    base = answers(model)
    with warnings.catch_warnings():
        # transformers' deprecations that PEFT still calls (is_gradient_checkpointing)
        warnings.filterwarnings("ignore", category=FutureWarning)
        adapted = PeftModel.from_pretrained(model, str(adapter_dir))
    adapted.eval()
    return PeftReference(
        answers(adapted),
        base,
        lambda text: list(tokenizer.encode(text, add_special_tokens=False)),
    )
