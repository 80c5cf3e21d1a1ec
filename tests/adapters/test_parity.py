"""Parity of a served adapter with PEFT: the comparison, and PEFT's side on the real base model
with a real (random) LoRA adapter. The engine's side: tests/evals/test_parity.py."""

from __future__ import annotations

from pathlib import Path

from ragtune.adapters.parity import PeftReference, agreement, check_parity, peft_reference
from ragtune.serving.engine.models import default_model_dir

CONVERSATIONS = [
    [{"role": "user", "content": "Write a title for: solar cells in humid air."}],
    [{"role": "user", "content": "Name three colours."}],
]


def tokens(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_agreement_is_the_shared_prefix_of_the_longer_answer() -> None:
    assert agreement([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert agreement([1, 2, 9, 9], [1, 2, 3, 4]) == 0.5
    assert agreement([1, 2], [1, 2, 3, 4]) == 0.5
    assert agreement([], []) == 1.0


def test_parity_refuses_a_diverging_or_a_no_op_adapter() -> None:
    reference = PeftReference(["abcd", "efgh"], ["zzzz", "yyyy"], tokens)
    same = check_parity(["abcd", "efgh"], ["zzzz", "yyyy"], reference)
    assert same.ok
    assert same.agreement == 1.0
    drifted = check_parity(["abcx", "efgh"], ["zzzz", "yyyy"], reference)
    assert drifted.ok  # a late drift (another precision) is within the tolerance
    diverging = check_parity(["xbcd", "xfgh"], ["zzzz", "yyyy"], reference)
    assert not diverging.ok
    assert "agree with PEFT's only 0%" in diverging.message()
    # The engine answers as the base model where PEFT's adapter does not: a silent no-op.
    no_op = check_parity(["zzzz", "yyyy"], ["zzzz", "yyyy"], reference)
    assert no_op.no_op
    assert not no_op.ok
    assert "no-op" in no_op.message()
    assert no_op.to_dict()["ok"] is False


def test_peft_reference_applies_the_adapter(
    models_dir: Path, lora_adapters: dict[str, Path]
) -> None:
    reference = peft_reference(
        default_model_dir(models_dir), lora_adapters["alpha"], CONVERSATIONS, max_new_tokens=8
    )
    assert len(reference.adapter) == len(reference.base) == 2
    # A random LoRA changes the greedy answers; the same call gives the same answers.
    assert reference.adapter != reference.base
    again = peft_reference(
        default_model_dir(models_dir), lora_adapters["alpha"], CONVERSATIONS, max_new_tokens=8
    )
    assert (again.adapter, again.base) == (reference.adapter, reference.base)
    assert reference.encode("hello")
