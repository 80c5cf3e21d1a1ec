"""LoRA adapters with random weights for a base model, made with PEFT: they exercise the engine's
LoRA path (loading, selection by name, batching with other adapters) without any training, for
tests, benchmarks and smoke checks of a deployment. Their answers are not meant to be useful."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def make_random_lora(
    base_model: Path,
    out: Path,
    *,
    seed: int,
    rank: int = 8,
    alpha: int = 16,
    target_modules: Sequence[str] = DEFAULT_TARGETS,
) -> Path:
    """Write a PEFT LoRA directory (`adapter_config.json`, `adapter_model.safetensors`) whose
    A and B matrices are both random, so the adapter really changes the model's output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        # PEFT's default starts B at zero (the adapter is a no-op until trained).
        init_lora_weights=False,
    )
    with warnings.catch_warnings():
        # transformers deprecates an attribute PEFT still reads; nothing for a caller to fix.
        warnings.filterwarnings("ignore", category=FutureWarning)
        peft_model = get_peft_model(model, config)
        peft_model.save_pretrained(str(out), safe_serialization=True)
    return out
