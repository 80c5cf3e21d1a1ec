"""Hand-made LoRA adapter directories: a config and tensors of chosen shapes, types and
values, for the checks an adapter must pass before the engine sees it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

PREFIX = "base_model.model.model.layers"


def lora_pair(module: str, a: list[int], b: list[int], layer: int = 0) -> dict[str, list[int]]:
    """The lora_A and lora_B tensor names (PEFT's) and shapes of one module of one layer,
    e.g. lora_pair("self_attn.q_proj", [8, 576], [576, 8])."""
    prefix = f"{PREFIX}.{layer}.{module}"
    return {f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": b}


def crafted_adapter(
    path: Path,
    tensors: dict[str, list[int]],
    *,
    config: Any = None,
    fill: float = 0.01,
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> Path:
    """A LoRA directory with the given tensor shapes (every value `fill`). The config is PEFT's
    usual one (r 8, alpha 16, q_proj) with `overrides` applied (None leaves a field out), or
    `config` as it is."""
    path.mkdir(parents=True)
    if config is None:
        config = {
            "peft_type": "LORA",
            "r": 8,
            "lora_alpha": 16,
            "target_modules": ["q_proj"],
            "bias": "none",
            **overrides,
        }
        config = {k: v for k, v in config.items() if v is not None}
    (path / "adapter_config.json").write_text(json.dumps(config))
    save_file(
        {k: torch.full(shape, fill).to(dtype) for k, shape in tensors.items()},
        str(path / "adapter_model.safetensors"),
    )
    return path
