"""ragtune's vLLM plugin on LoRA ops shaped like vLLM 0.32's torch `bgmv_*` ops: rows that ask for
no adapter (index -1) stay untouched instead of getting the last slot's delta, and the grouped
replacements compute what the originals compute for every other row."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "engine-plugin"))
from ragtune_vllm_plugin import mask_no_lora_rows, patched_op


# vLLM 0.32's torch ops (vllm/lora/ops/torch_ops/lora_ops.py), reduced: index -1 silently
# selects the last slot.
def bgmv_shrink(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    output: torch.Tensor,
    indices: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    outputs = torch.einsum("bi, boi -> bo", inputs, weights[indices])
    output[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    output: torch.Tensor,
    indices: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    outputs = torch.einsum("bi, boi -> bo", inputs, weights[indices])
    width = min(outputs.shape[1], output.shape[1])
    if add_inputs:
        output[:, :width] += outputs[:, :width]
    else:
        output[:, :width] = outputs[:, :width]


def bgmv_expand_slice(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    output: torch.Tensor,
    indices: torch.Tensor,
    offset: int,
    size: int,
    add_inputs: bool = True,
) -> None:
    outputs = torch.einsum("bi, boi -> bo", inputs, weights[indices])
    if add_inputs:
        output[:, offset : offset + size] += outputs
    else:
        output[:, offset : offset + size] = outputs


INDICES = torch.tensor([0, -1, 2, -1, 2, 1])


def expected(op, inputs, weights, base, indices, *args):  # type: ignore[no-untyped-def]
    """The original op on the rows that asked for an adapter; the others as they were."""
    out = base.clone()
    op(inputs, weights, out, indices.clamp(min=0), *args)
    out[indices < 0] = base[indices < 0]
    return out


@pytest.mark.parametrize("add_inputs", [True, False])
def test_expand_leaves_no_adapter_rows_untouched(add_inputs: bool) -> None:
    torch.manual_seed(0)
    weights, inputs, base = torch.randn(3, 10, 4), torch.randn(6, 4), torch.randn(6, 10)

    buggy = base.clone()
    bgmv_expand(inputs, weights, buggy, INDICES)
    assert not torch.equal(buggy[1], base[1])  # the bug the plugin exists for

    want = expected(bgmv_expand, inputs, weights, base, INDICES, add_inputs)
    for op in (mask_no_lora_rows(bgmv_expand), patched_op("bgmv_expand", bgmv_expand)):
        got = base.clone()
        op(inputs, weights, got, INDICES, add_inputs)
        assert torch.equal(got[INDICES < 0], base[INDICES < 0])
        torch.testing.assert_close(got, want)


def test_shrink_and_expand_slice_match_the_originals() -> None:
    torch.manual_seed(1)
    a, inputs = torch.randn(3, 1, 8, 16), torch.randn(6, 16)  # 4-D stacked weights, as in vLLM
    base = torch.zeros(6, 8)
    got = base.clone()
    patched_op("bgmv_shrink", bgmv_shrink)(inputs, a, got, INDICES, 0.5)
    torch.testing.assert_close(got, expected(bgmv_shrink, inputs, a.squeeze(1), base, INDICES, 0.5))

    b, x, out = torch.randn(3, 5, 8), torch.randn(6, 8), torch.randn(6, 12)
    got = out.clone()
    patched_op("bgmv_expand_slice", bgmv_expand_slice)(x, b, got, INDICES, 3, 5, True)
    torch.testing.assert_close(got, expected(bgmv_expand_slice, x, b, out, INDICES, 3, 5, True))


def test_one_adapter_for_every_row_and_no_adapter_at_all() -> None:
    torch.manual_seed(2)
    weights, inputs, base = torch.randn(2, 10, 4), torch.randn(3, 4), torch.randn(3, 10)
    op = patched_op("bgmv_expand", bgmv_expand)
    same = torch.tensor([1, 1, 1])
    got = base.clone()
    op(inputs, weights, got, same)
    torch.testing.assert_close(got, expected(bgmv_expand, inputs, weights, base, same))

    untouched = base.clone()
    op(inputs, weights, untouched, torch.tensor([-1, -1, -1]))
    assert torch.equal(untouched, base)
    assert patched_op("bgmv_expand", op) is op  # patching twice is harmless
