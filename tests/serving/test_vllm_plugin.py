"""ragtune's vLLM plugin on a LoRA op shaped like vLLM's torch `bgmv_expand`: rows that ask for
no adapter (index -1) stay untouched instead of getting the last slot's delta."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "engine-plugin"))
from ragtune_vllm_plugin import mask_no_lora_rows


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    """vLLM 0.32's torch op, reduced: index -1 silently selects the last slot."""
    selected = lora_b_weights[lora_indices_tensor]
    outputs = torch.einsum("bi, boi -> bo", inputs, selected)
    if add_inputs:
        output_tensor[:, :] += outputs
    else:
        output_tensor[:, :] = outputs


def test_no_adapter_rows_are_left_untouched_and_adapter_rows_unchanged() -> None:
    torch.manual_seed(0)
    slots = torch.randn(3, 5, 4)  # 3 LoRA slots, rank 4 -> 5 outputs
    inputs = torch.randn(4, 4)
    indices = torch.tensor([0, -1, 2, -1])
    base = torch.randn(4, 5)

    buggy = base.clone()
    bgmv_expand(inputs, slots, buggy, indices)
    assert not torch.equal(buggy[1], base[1])  # the bug the plugin exists for

    for add_inputs in (True, False):
        fixed = base.clone()
        mask_no_lora_rows(bgmv_expand)(inputs, slots, fixed, indices, add_inputs)
        assert torch.equal(fixed[1], base[1])
        assert torch.equal(fixed[3], base[3])
        expected = base.clone()
        bgmv_expand(inputs, slots, expected, indices.clamp(min=0), add_inputs)
        assert torch.equal(fixed[0], expected[0])
        assert torch.equal(fixed[2], expected[2])


def test_all_rows_without_adapter_is_a_no_op_and_wrapping_twice_is_harmless() -> None:
    slots = torch.randn(2, 5, 4)
    base = torch.randn(3, 5)
    out = base.clone()
    wrapped = mask_no_lora_rows(mask_no_lora_rows(bgmv_expand))
    wrapped(torch.randn(3, 4), slots, out, torch.tensor([-1, -1, -1]))
    assert torch.equal(out, base)
