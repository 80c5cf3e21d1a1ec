"""vLLM general plugin for ragtune's engine: base-model rows in a mixed LoRA batch stay base.

vLLM's PyTorch-native LoRA ops (used by the CPU backend) index the stacked adapter weights with
each token's slot, and a token that asks for no adapter carries slot -1, which Python indexing
reads as the LAST slot. In a batch mixing base-model and adapter requests the base rows therefore
get the last resident adapter's delta. The Triton (GPU) kernels skip -1 rows; this plugin gives
the torch ops the same semantics: rows with index -1 are left exactly as they were.
Upstream: vllm-project/vllm#48421 and #49656.

vLLM loads plugins of the `vllm.general_plugins` group in every process it starts (API server,
engine core, workers), before any model runs.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any

# Under "vllm." so that vLLM's own log handler (its format, its level) prints these lines.
logger = logging.getLogger("vllm.plugins.ragtune")

# The three single-row ops every other torch LoRA op (sgmv_*, the punica CPU wrapper) goes through.
_OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
# Modules that hold their own reference to those ops (`from ... import bgmv_shrink`).
_MODULES = (
    "vllm.lora.ops.torch_ops.lora_ops",
    "vllm.lora.ops.torch_ops",
    "vllm.lora.punica_wrapper.punica_cpu",
)
_PATCHED = "_ragtune_masks_no_lora_rows"


def mask_no_lora_rows(op: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a bgmv op `(inputs, weights, output, lora_indices, ...)` so index -1 rows are untouched.

    The op runs on the indices clamped to a valid slot, then the rows that asked for no adapter
    get their previous values back (the same result as the GPU kernels, which skip them).
    """
    if getattr(op, _PATCHED, False):
        return op

    @functools.wraps(op)
    def masked(
        inputs: Any, weights: Any, output: Any, lora_indices: Any, *args: Any, **kwargs: Any
    ) -> Any:
        no_lora = lora_indices < 0
        if not bool(no_lora.any()):
            return op(inputs, weights, output, lora_indices, *args, **kwargs)
        if bool(no_lora.all()):
            return None  # no row asked for an adapter: nothing to add
        if lora_indices.shape[0] != output.shape[0]:
            # Indices and rows do not line up one to one (a broadcast case); this op cannot be
            # masked safely, so fail loudly rather than serve a wrong answer.
            raise RuntimeError(
                f"ragtune_vllm_plugin: {op.__name__} got {lora_indices.shape[0]} LoRA indices "
                f"for {output.shape[0]} rows with some rows asking for no adapter"
            )
        kept = output[no_lora].clone()
        result = op(inputs, weights, output, lora_indices.clamp(min=0), *args, **kwargs)
        output[no_lora] = kept
        return result

    setattr(masked, _PATCHED, True)
    return masked


def _slot_groups(indices: Any) -> list[tuple[int, Any]]:
    """(slot, rows) for each adapter slot used in a batch; rows is None for "every row"."""
    if indices.numel() == 0:
        return []
    first = int(indices[0])
    if bool((indices == first).all()):
        return [] if first < 0 else [(first, None)]
    return [
        (slot, (indices == slot).nonzero().squeeze(1))
        for slot in torch_unique(indices)
        if slot >= 0
    ]


def torch_unique(indices: Any) -> list[int]:
    import torch

    return [int(s) for s in torch.unique(indices).tolist()]


def _write(output: Any, rows: Any, columns: slice, value: Any, add: bool) -> None:
    if rows is None:
        if add:
            output[:, columns] += value
        else:
            output[:, columns] = value
    elif add:
        output[rows, columns] += value
    else:
        output[rows, columns] = value


def _aligned(inputs: Any, output: Any, indices: Any) -> bool:
    return bool(inputs.shape[0] == indices.shape[0] == output.shape[0])


def _stacked(weights: Any) -> Any:
    return weights.squeeze(1) if weights.dim() == 4 else weights


def grouped_bgmv_shrink(fallback: Callable[..., Any]) -> Callable[..., Any]:
    """`bgmv_shrink` as one matrix product per adapter slot in the batch, instead of gathering a
    copy of the weights for every token; rows asking for no adapter are left untouched."""

    def bgmv_shrink(
        inputs: Any,
        lora_a_weights: Any,
        output_tensor: Any,
        lora_indices_tensor: Any,
        scaling: float = 1.0,
    ) -> None:
        if not _aligned(inputs, output_tensor, lora_indices_tensor):
            return fallback(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling)
        weights, dtype = _stacked(lora_a_weights), output_tensor.dtype
        x = inputs.to(dtype)
        columns = slice(0, weights.shape[1])
        for slot, rows in _slot_groups(lora_indices_tensor):
            rows_x = x if rows is None else x[rows]
            _write(
                output_tensor,
                rows,
                columns,
                scaling * (rows_x @ weights[slot].to(dtype).T),
                add=False,
            )
        return None

    setattr(bgmv_shrink, _PATCHED, True)
    return bgmv_shrink


def grouped_bgmv_expand(fallback: Callable[..., Any]) -> Callable[..., Any]:
    """`bgmv_expand`, one matrix product per adapter slot (see `grouped_bgmv_shrink`)."""

    def bgmv_expand(
        inputs: Any,
        lora_b_weights: Any,
        output_tensor: Any,
        lora_indices_tensor: Any,
        add_inputs: bool = True,
    ) -> None:
        if not _aligned(inputs, output_tensor, lora_indices_tensor):
            return fallback(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs)
        weights, dtype = _stacked(lora_b_weights), output_tensor.dtype
        x = inputs.to(dtype)
        # The adapter and the model may pad their output dimension differently.
        width = min(weights.shape[1], output_tensor.shape[1])
        for slot, rows in _slot_groups(lora_indices_tensor):
            rows_x = x if rows is None else x[rows]
            delta = rows_x @ weights[slot, :width].to(dtype).T
            _write(output_tensor, rows, slice(0, width), delta, add_inputs)
        return None

    setattr(bgmv_expand, _PATCHED, True)
    return bgmv_expand


def grouped_bgmv_expand_slice(fallback: Callable[..., Any]) -> Callable[..., Any]:
    """`bgmv_expand_slice`, one matrix product per adapter slot (see `grouped_bgmv_shrink`)."""

    def bgmv_expand_slice(
        inputs: Any,
        lora_b_weights: Any,
        output_tensor: Any,
        lora_indices_tensor: Any,
        slice_offset: int,
        slice_size: int,
        add_inputs: bool = True,
    ) -> None:
        if not _aligned(inputs, output_tensor, lora_indices_tensor):
            return fallback(
                inputs,
                lora_b_weights,
                output_tensor,
                lora_indices_tensor,
                slice_offset,
                slice_size,
                add_inputs,
            )
        weights, dtype = _stacked(lora_b_weights), output_tensor.dtype
        x = inputs.to(dtype)
        columns = slice(slice_offset, slice_offset + slice_size)
        for slot, rows in _slot_groups(lora_indices_tensor):
            rows_x = x if rows is None else x[rows]
            _write(output_tensor, rows, columns, rows_x @ weights[slot].to(dtype).T, add_inputs)
        return None

    setattr(bgmv_expand_slice, _PATCHED, True)
    return bgmv_expand_slice


_GROUPED = {
    "bgmv_shrink": grouped_bgmv_shrink,
    "bgmv_expand": grouped_bgmv_expand,
    "bgmv_expand_slice": grouped_bgmv_expand_slice,
}


def patched_op(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """The replacement for vLLM's torch op `name`: grouped by slot, with the masked original as
    the fallback for shapes the grouped form does not cover."""
    if getattr(original, _PATCHED, False):
        return original
    return _GROUPED[name](mask_no_lora_rows(original))


def register() -> None:
    """Entry point: patch the torch LoRA ops wherever vLLM holds a reference to them."""
    patched = []
    originals: dict[str, Callable[..., Any]] = {}
    for module_name in _MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # another vLLM layout, or a build without these ops
        for name in _OPS:
            op = getattr(module, name, None)
            if callable(op):
                # One replacement per op, the same object in every module that refers to it.
                replacement = originals.setdefault(name, patched_op(name, op))
                setattr(module, name, replacement)
                patched.append(f"{module_name}.{name}")
    if patched:
        logger.info("ragtune_vllm_plugin: patched %d torch LoRA op references", len(patched))
    else:
        logger.warning(
            "ragtune: no vLLM torch LoRA ops found to patch; CPU LoRA batches with "
            "base-model rows may be wrong on this vLLM version"
        )
