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


def register() -> None:
    """Entry point: patch the torch LoRA ops wherever vLLM holds a reference to them."""
    patched = []
    for module_name in _MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # another vLLM layout, or a build without these ops
        for name in _OPS:
            op = getattr(module, name, None)
            if callable(op):
                setattr(module, name, mask_no_lora_rows(op))
                patched.append(f"{module_name}.{name}")
    if patched:
        logger.info("ragtune_vllm_plugin: masked no-adapter rows in %s", ", ".join(patched))
    else:
        logger.warning(
            "ragtune: no vLLM torch LoRA ops found to patch; CPU LoRA batches with "
            "base-model rows may be wrong on this vLLM version"
        )
