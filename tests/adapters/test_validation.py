"""Adapter validation refuses, with a message that says what to fix, every adapter vLLM would
refuse to load (or load wrongly), and accepts the ones it serves. No engine needed: the checks
mirror vLLM 0.32's PEFTHelper and LoRA loader."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from ragtune.adapters.errors import InvalidAdapterError
from ragtune.adapters.validation import validate_adapter
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME, default_model_dir
from tests.support.adapters import PREFIX, crafted_adapter, lora_pair

MAX_RANK = 16
Q = "self_attn.q_proj"  # 576x576 in SmolLM2-135M
GOOD = lora_pair(Q, [8, 576], [576, 8])


def check(source: Path, base_dir: Path | None) -> Any:
    return validate_adapter(
        source, max_rank=MAX_RANK, base_model_dir=base_dir, base_model=DEFAULT_MODEL_NAME
    )


# (case id, tensors, config overrides (or {"config": whole config}), fill, dtype, message)
BAD: list[tuple[str, dict[str, list[int]], dict[str, Any], float, torch.dtype, str]] = [
    ("3-D tensors", lora_pair(Q, [1, 8, 576], [1, 576, 8]), {}, 0.01, torch.float32,
     r"has 3 dimensions \(1x8x576\); a LoRA matrix has 2"),
    ("tensor rank above r", lora_pair(Q, [64, 576], [576, 64]), {}, 0.01, torch.float32,
     r"tensors have rank 64, but .*adapter_config.json gives rank 8"),
    ("rank above the engine", lora_pair(Q, [64, 576], [576, 64]), {"r": 64}, 0.01,
     torch.float32, r"rank 64 is above the engine's --max-lora-rank 16"),
    ("mismatched inner ranks", lora_pair(Q, [8, 576], [576, 4]), {}, 0.01, torch.float32,
     r"lora_A is 8x576 and lora_B is 576x4; their inner dimension"),
    ("embed_tokens lora_embedding",
     {"base_model.model.model.embed_tokens.lora_embedding_A": [8, 49152],
      "base_model.model.model.embed_tokens.lora_embedding_B": [576, 8], **GOOD},
     {"target_modules": ["q_proj", "embed_tokens"]}, 0.01, torch.float32,
     r"embed_tokens.lora_embedding_[AB] adapts an embedding or output layer"),
    ("embed_tokens as linear",
     {"base_model.model.model.embed_tokens.lora_A.weight": [8, 576],
      "base_model.model.model.embed_tokens.lora_B.weight": [49152, 8]},
     {"target_modules": ["embed_tokens"]}, 0.01, torch.float32,
     r"adapts an embedding or output layer; .*linear layers only"),
    ("r true", GOOD, {"r": True}, 0.01, torch.float32,
     r"r must be a positive whole number, not True"),
    ("r 8.9", GOOD, {"r": 8.9}, 0.01, torch.float32, r"r must be a positive whole number, not 8.9"),
    ("r list", GOOD, {"r": [1]}, 0.01, torch.float32, r"not \[1\]"),
    ("r text", GOOD, {"r": "abc"}, 0.01, torch.float32, r"not 'abc'"),
    ("r zero", GOOD, {"r": 0}, 0.01, torch.float32, r"not 0"),
    ("no r", GOOD, {"r": None}, 0.01, torch.float32, r"gives no LoRA rank \(r\)"),
    ("config is a list", GOOD, {"config": [{"peft_type": "LORA", "r": 8}]}, 0.01,
     torch.float32, r"must hold a JSON object .*not: \[\{"),
    ("config is a number", GOOD, {"config": 8}, 0.01, torch.float32,
     r"must hold a JSON object .*not: 8"),
    ("no lora_alpha", GOOD, {"lora_alpha": None}, 0.01, torch.float32, r"gives no lora_alpha"),
    ("lora_alpha text", GOOD, {"lora_alpha": "16"}, 0.01, torch.float32,
     r"lora_alpha must be a number, not '16'"),
    ("target_modules missing", GOOD, {"target_modules": None}, 0.01, torch.float32,
     r"target_modules must be a list of module names"),
    ("NaN weights", GOOD, {}, math.nan, torch.float32, r"NaN or infinite values in 2 tensor"),
    ("infinite weights", GOOD, {}, math.inf, torch.float32, r"NaN or infinite values"),
    ("integer weights", GOOD, {}, 1.0, torch.int32,
     r"is of type I32; LoRA weights must be floating point"),
    ("DoRA", GOOD, {"use_dora": True}, 0.01, torch.float32, r"DoRA \(use_dora\)"),
    ("DoRA magnitude", {**GOOD, f"{PREFIX}.0.{Q}.lora_magnitude_vector": [576]}, {}, 0.01,
     torch.float32, r"DoRA magnitude vector"),
    ("modules_to_save", GOOD, {"modules_to_save": ["lm_head"]}, 0.01, torch.float32,
     r"modules_to_save"),
    ("base biases", GOOD, {"bias": "all"}, 0.01, torch.float32, r"bias='all' trains the base"),
    ("lora bias flag", GOOD, {"lora_bias": True}, 0.01, torch.float32, r"LoRA bias \(lora_bias\)"),
    ("lora bias tensor", {**GOOD, f"{PREFIX}.0.{Q}.lora_B.bias": [576]}, {}, 0.01,
     torch.float32, r"is a LoRA bias"),
    ("PiSSA init", GOOD, {"init_lora_weights": "pissa"}, 0.01, torch.float32,
     r"init_lora_weights='pissa' changes the base model's weights"),
    ("aLoRA", GOOD, {"alora_invocation_tokens": [1, 2]}, 0.01, torch.float32, r"Activated LoRA"),
    ("rank_pattern above the engine", lora_pair(Q, [32, 576], [576, 32]),
     {"rank_pattern": {"q_proj": 32}}, 0.01, torch.float32, r"rank 32 is above the engine"),
    ("rank_pattern not a number", GOOD, {"rank_pattern": {"q_proj": True}}, 0.01,
     torch.float32, r"rank_pattern\['q_proj'\] must be a positive whole number"),
    ("adapter name in keys",
     {f"{PREFIX}.0.{Q}.lora_A.default.weight": [8, 576],
      f"{PREFIX}.0.{Q}.lora_B.default.weight": [576, 8]},
     {}, 0.01, torch.float32, r"still carries a PEFT adapter name"),
    ("a saved base module", {**GOOD, "base_model.model.lm_head.weight": [49152, 576]}, {}, 0.01,
     torch.float32, r"lm_head.weight is not a LoRA matrix"),
    ("lora_B missing", {f"{PREFIX}.0.{Q}.lora_A.weight": [8, 576]}, {}, 0.01, torch.float32,
     r"has no lora_B matrix"),
    ("empty tensors", lora_pair(Q, [8, 0], [0, 8]), {}, 0.01, torch.float32, r"is empty"),
    ("no tensors", {}, {}, 0.01, torch.float32, r"holds no LoRA tensors"),
]  # fmt: skip

# Only the served base model's own shapes can refuse these.
BAD_FOR_THE_BASE_MODEL = [
    ("norm layer", lora_pair("input_layernorm", [8, 576], [576, 8]), {},
     r"input_layernorm, which is not a linear layer"),
    ("other hidden size", lora_pair(Q, [8, 512], [512, 8]), {},
     r"built for another base model: .*576x576"),
    ("layer beyond the model", lora_pair(Q, [8, 576], [576, 8], layer=40), {},
     r"layers.40.*does not have \(30 layers\)"),
    ("unknown target", GOOD, {"target_modules": ["q_proj", "c_attn"]},
     r"does not have: c_attn"),
]  # fmt: skip


@pytest.fixture(scope="module")
def base_dir(models_dir: Path) -> Path:
    return default_model_dir(models_dir)


@pytest.mark.parametrize("with_base", [True, False], ids=["local base", "remote base"])
@pytest.mark.parametrize(
    ("tensors", "config", "fill", "dtype", "message"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_what_vllm_would_refuse_is_refused_with_the_problem_named(
    tensors: dict[str, list[int]],
    config: dict[str, Any],
    fill: float,
    dtype: torch.dtype,
    message: str,
    with_base: bool,
    base_dir: Path,
    tmp_path: Path,
) -> None:
    source = crafted_adapter(tmp_path / "bad", tensors, fill=fill, dtype=dtype, **config)
    with pytest.raises(InvalidAdapterError, match=message):
        check(source, base_dir if with_base else None)


@pytest.mark.parametrize(
    ("tensors", "config", "message"),
    [case[1:] for case in BAD_FOR_THE_BASE_MODEL],
    ids=[case[0] for case in BAD_FOR_THE_BASE_MODEL],
)
def test_an_adapter_for_another_model_is_refused(
    tensors: dict[str, list[int]],
    config: dict[str, Any],
    message: str,
    base_dir: Path,
    tmp_path: Path,
) -> None:
    source = crafted_adapter(tmp_path / "other", tensors, **config)
    with pytest.raises(InvalidAdapterError, match=message):
        check(source, base_dir)


def test_a_real_peft_adapter_passes(lora_adapters: dict[str, Path], base_dir: Path) -> None:
    spec = check(lora_adapters["alpha"], base_dir)
    assert (spec.rank, spec.alpha) == (8, 16.0)
    assert spec.target_modules == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_a_real_adapter_with_one_nan_is_refused(
    lora_adapters: dict[str, Path], base_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "diverged"
    shutil.copytree(lora_adapters["alpha"], source)
    weights = source / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[7]
    tensors[name][3, 5] = math.nan
    save_file(tensors, str(weights))
    with pytest.raises(InvalidAdapterError, match=f"NaN or infinite values in 1 tensor.*{name}"):
        check(source, base_dir)


@pytest.mark.parametrize(
    ("tensors", "config", "dtype", "rank", "targets"),
    [
        # rank_pattern: k_proj at rank 4 while r is 8, as PEFT saves it and vLLM serves it.
        ({**GOOD, **lora_pair("self_attn.k_proj", [4, 576], [192, 4])},
         {"target_modules": ["q_proj", "k_proj"], "rank_pattern": {"k_proj": 4}},
         torch.float32, 8, ["k_proj", "q_proj"]),
        # target_modules as a pattern (PEFT's regex form): the tensors say what is adapted.
        (GOOD, {"target_modules": r".*\.q_proj"}, torch.bfloat16, 8, ["q_proj"]),
        (lora_pair("mlp.down_proj", [16, 1536], [576, 16]),
         {"r": 16, "target_modules": ["down_proj"], "init_lora_weights": "gaussian",
          "use_rslora": True}, torch.float16, 16, ["down_proj"]),
    ],
    ids=["rank_pattern", "pattern targets, bf16", "rank at the limit, fp16, rsLoRA"],
)  # fmt: skip
def test_what_vllm_serves_passes(
    tensors: dict[str, list[int]],
    config: dict[str, Any],
    dtype: torch.dtype,
    rank: int,
    targets: list[str],
    base_dir: Path,
    tmp_path: Path,
) -> None:
    source = crafted_adapter(tmp_path / "ok", tensors, dtype=dtype, **config)
    spec = check(source, base_dir)
    assert spec.rank == rank
    assert spec.target_modules == targets
