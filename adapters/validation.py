"""Checks an adapter must pass before anything offers it to vLLM: a plain LoRA in safetensors,
with a configuration vLLM accepts, of a rank the engine accepts, every tensor a finite 2-D
LoRA matrix of the rank its configuration gives, built for the served base model (every module
it adapts is a linear layer there, with the same shapes).

The configuration checks mirror vLLM 0.32's `PEFTHelper` (`validate_legal`, `from_dict`) and
the tensor checks its loader (`LoRAModel.from_local_checkpoint`, `parse_fine_tuned_lora_name`
and the layers' `set_lora`), so that an adapter the engine would refuse is refused here first,
with a message that says what to change."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.adapters.errors import InvalidAdapterError

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
# PEFT saves a LoRA tensor as base_model.model.<module path>.lora_A.weight (lora_B alike).
_LORA_TENSOR = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
# Embedding and output layers: vLLM wraps them differently (and SmolLM2-like models tie them);
# ragtune serves LoRA on the transformer's linear layers only.
EMBEDDING_MODULES = frozenset({"embed_tokens", "lm_head", "wte", "word_embeddings", "embed_in"})
# PEFT options that change what the adapter computes and that vLLM does not implement
# (PEFTHelper._validate_features): a config setting one of them to a truthy value is refused.
_UNSUPPORTED_FEATURES = {
    "use_dora": "DoRA (use_dora), which vLLM does not support",
    "lora_bias": "LoRA bias (lora_bias), which vLLM does not support",
    "alora_invocation_tokens": "Activated LoRA (alora_invocation_tokens), which vLLM does "
    "not support",
    "layer_replication": "layer_replication, which vLLM does not support",
    "use_bdlora": "block-diagonal LoRA (use_bdlora), which vLLM does not support",
    "use_qalora": "QALoRA (use_qalora), which vLLM does not support",
    "modules_to_save": "modules_to_save (whole modules saved besides the LoRA), which vLLM "
    "does not serve for a causal language model",
}
# init_lora_weights values that only set the starting weights (vLLM's _init_is_supported);
# the other named inits (PiSSA, OLoRA, CorDA, LoftQ) change the base model's weights.
_PLAIN_INITS = frozenset({"gaussian", "eva", "orthogonal", "mica", "lora_ga"})


@dataclass(frozen=True)
class LoraSpec:
    """What ragtune records of a validated adapter."""

    rank: int
    alpha: float
    target_modules: list[str]
    """The leaf names of the modules the adapter's tensors adapt (q_proj, ...)."""


@dataclass(frozen=True)
class _Tensor:
    shape: list[int]
    dtype: str


def _tensors(path: Path) -> dict[str, _Tensor]:
    from safetensors import safe_open

    tensors: dict[str, _Tensor] = {}
    try:
        with safe_open(str(path), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                part = handle.get_slice(key)
                tensors[key] = _Tensor(list(part.get_shape()), str(part.get_dtype()))
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise InvalidAdapterError(f"cannot read {path}: {exc}") from exc
    return tensors


def _non_finite(path: Path, keys: list[str]) -> list[str]:
    """The tensors holding NaN or infinite values (read one at a time)."""
    import torch
    from safetensors import safe_open

    bad = []
    try:
        with safe_open(str(path), "pt") as handle:
            for key in keys:
                if not bool(torch.isfinite(handle.get_tensor(key)).all()):
                    bad.append(key)
    except Exception as exc:  # a file damaged past its header
        raise InvalidAdapterError(f"cannot read {path}: {exc}") from exc
    return bad


def base_model_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Module path -> weight shape [out, in] of every weight in a local HF model directory."""
    shapes: dict[str, list[int]] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        for key, tensor in _tensors(file).items():
            if key.endswith(".weight"):
                shapes[key.removesuffix(".weight")] = tensor.shape
    return shapes


def validate_adapter(
    source: Path, *, max_rank: int | None, base_model_dir: Path | None, base_model: str
) -> LoraSpec:
    """The adapter's rank, alpha and adapted modules, once every check passed;
    InvalidAdapterError naming the first problem otherwise. `max_rank` is the engine's
    --max-lora-rank (None: not known here); `base_model_dir` the served model's local
    directory (None for a remote model: its shapes are then checked by the engine)."""
    for file in (CONFIG, WEIGHTS):
        if (source / file).is_symlink():
            raise InvalidAdapterError(
                f"{source / file} is a symbolic link; copy the real file into the adapter directory"
            )
    config = read_peft_config(source)
    rank, alpha, rank_pattern = _check_config(source / CONFIG, config, max_rank)
    weights = source / WEIGHTS
    tensors = _tensors(weights)
    modules = _lora_modules(weights, tensors)
    for module, (a, b) in sorted(modules.items()):
        expected = _pattern_value(rank_pattern, module, rank)
        if a[0] != b[1]:
            raise InvalidAdapterError(
                f"{module}: lora_A is {a[0]}x{a[1]} and lora_B is {b[0]}x{b[1]}; their inner "
                "dimension (the rank) must be the same"
            )
        if a[0] != expected:
            where = "its rank_pattern" if expected != rank else "its r"
            raise InvalidAdapterError(
                f"{module}: the tensors have rank {a[0]}, but {source / CONFIG} gives rank "
                f"{expected} ({where}); vLLM sizes the adapter from the configuration, so the "
                "two must agree"
            )
    bad = _non_finite(weights, list(tensors))
    if bad:
        raise InvalidAdapterError(
            f"{weights} holds NaN or infinite values in {len(bad)} tensor(s), e.g. {bad[0]}: "
            "the training diverged; use an earlier checkpoint or retrain with a lower "
            "learning rate"
        )
    targets = sorted({module.rsplit(".", 1)[-1] for module in modules})
    if base_model_dir is not None and base_model_dir.is_dir():
        _check_against_base(config, modules, base_model_shapes(base_model_dir), base_model)
    return LoraSpec(rank=rank, alpha=alpha, target_modules=targets)


def _check_config(
    path: Path, config: dict[str, Any], max_rank: int | None
) -> tuple[int, float, dict[str, int]]:
    """(r, lora_alpha, rank_pattern) after the checks vLLM's PEFTHelper makes."""
    rank = config.get("r")
    if rank is None:
        raise InvalidAdapterError(f"{path} gives no LoRA rank (r)")
    if not _is_int(rank) or rank < 1:
        raise InvalidAdapterError(f"{path}: r must be a positive whole number, not {rank!r}")
    alpha = config.get("lora_alpha")
    if alpha is None:
        raise InvalidAdapterError(f"{path} gives no lora_alpha (vLLM requires it)")
    if not _is_number(alpha):
        raise InvalidAdapterError(f"{path}: lora_alpha must be a number, not {alpha!r}")
    targets = config.get("target_modules")
    if not (
        isinstance(targets, str)
        or (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets))
    ):
        raise InvalidAdapterError(
            f"{path}: target_modules must be a list of module names (or a pattern), not {targets!r}"
        )
    for key, what in _UNSUPPORTED_FEATURES.items():
        if config.get(key):
            raise InvalidAdapterError(
                f"{path} asks for {what}: save it as a plain LoRA (or merge it into the base model)"
            )
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _PLAIN_INITS:
        raise InvalidAdapterError(
            f"{path}: init_lora_weights={init!r} changes the base model's weights when PEFT "
            "loads the adapter, which vLLM cannot do; convert it to a plain LoRA with PEFT's "
            "path_initial_model_for_weight_conversion"
        )
    bias = config.get("bias", "none")
    if bias not in (None, "none"):
        raise InvalidAdapterError(
            f"{path}: bias={bias!r} trains the base model's biases, which vLLM does not "
            'serve; train with bias="none"'
        )
    rank_pattern = _pattern(path, config, "rank_pattern", positive_int=True)
    _pattern(path, config, "alpha_pattern", positive_int=False)
    highest = max([rank, *rank_pattern.values()])
    if max_rank is not None and highest > max_rank:
        raise InvalidAdapterError(
            f"the adapter's rank {highest} is above the engine's --max-lora-rank {max_rank}: "
            f"train it with rank <= {max_rank}, or raise RAGTUNE_MAX_LORA_RANK and restart "
            "the engine"
        )
    return rank, float(alpha), rank_pattern


def _pattern(
    path: Path, config: dict[str, Any], field: str, *, positive_int: bool
) -> dict[str, Any]:
    value = config.get(field) or {}
    if not isinstance(value, dict):
        raise InvalidAdapterError(f"{path}: {field} must be an object, not {value!r}")
    for key, item in value.items():
        ok = _is_int(item) and item > 0 if positive_int else _is_number(item)
        if not ok:
            kind = "a positive whole number" if positive_int else "a number"
            raise InvalidAdapterError(f"{path}: {field}[{key!r}] must be {kind}, not {item!r}")
        try:
            re.compile(rf"(.*\.)?({key})$")
        except re.error as exc:
            message = f"{path}: {field} key {key!r} is not a pattern: {exc}"
            raise InvalidAdapterError(message) from exc
    return value


def _pattern_value(pattern: dict[str, int], module: str, default: int) -> int:
    """PEFT's get_pattern_key, as vLLM applies it: the first key that matches the end of the
    module name at a '.' boundary."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _lora_modules(
    weights: Path, tensors: dict[str, _Tensor]
) -> dict[str, tuple[list[int], list[int]]]:
    """Module path -> (lora_A shape, lora_B shape), after checking every tensor is one of
    those: a 2-D floating-point matrix of a LoRA on a linear layer."""
    parts: dict[str, dict[str, list[int]]] = {}
    for key, tensor in tensors.items():
        match = _LORA_TENSOR.match(key)
        if match is None:
            raise InvalidAdapterError(f"{weights}: {_not_lora(key)}")
        module = match["module"]
        if module.rsplit(".", 1)[-1] in EMBEDDING_MODULES:
            raise InvalidAdapterError(_embedding(weights, key))
        if tensor.dtype not in FLOAT_DTYPES:
            raise InvalidAdapterError(
                f"{weights}: {key} is of type {tensor.dtype}; LoRA weights must be floating "
                "point (float32, float16 or bfloat16)"
            )
        if len(tensor.shape) != 2:
            raise InvalidAdapterError(
                f"{weights}: {key} has {len(tensor.shape)} dimensions "
                f"({'x'.join(map(str, tensor.shape)) or 'a scalar'}); a LoRA matrix has 2"
            )
        if 0 in tensor.shape:
            raise InvalidAdapterError(f"{weights}: {key} is empty ({tensor.shape})")
        parts.setdefault(module, {})[match["part"]] = tensor.shape
    if not parts:
        raise InvalidAdapterError(f"{weights} holds no LoRA tensors")
    modules = {}
    for module, pair in parts.items():
        if "A" not in pair or "B" not in pair:
            missing = "lora_B" if "A" in pair else "lora_A"
            raise InvalidAdapterError(f"{weights}: {module} has no {missing} matrix")
        modules[module] = (pair["A"], pair["B"])
    return modules


def _not_lora(key: str) -> str:
    if key.endswith("lora_magnitude_vector") or ".lora_magnitude_vector." in key:
        return f"{key} is a DoRA magnitude vector; vLLM does not support DoRA"
    if re.search(r"\.lora_B\.bias$", key):
        return f"{key} is a LoRA bias; vLLM does not support LoRA bias"
    if re.search(r"\.lora_embedding_[AB]$", key):
        return _embedding(None, key)
    if re.search(r"\.lora_[AB]\.[^.]+\.weight$", key):
        return (
            f"{key} still carries a PEFT adapter name; save the adapter with PEFT's "
            "save_pretrained, which writes base_model.model.<module>.lora_A.weight"
        )
    return (
        f"{key} is not a LoRA matrix (expected base_model.model.<module>.lora_A.weight or "
        "lora_B.weight); save a plain LoRA with PEFT, without modules_to_save or biases"
    )


def _embedding(weights: Path | None, key: str) -> str:
    where = f"{weights}: " if weights else ""
    return (
        f"{where}{key} adapts an embedding or output layer; ragtune serves LoRA on linear "
        "layers only: train without embed_tokens/lm_head in target_modules"
    )


def _check_against_base(
    config: dict[str, Any],
    modules: dict[str, tuple[list[int], list[int]]],
    base: dict[str, list[int]],
    base_model: str,
) -> None:
    layers = {int(m) for key in base for m in re.findall(r"\.layers\.(\d+)\.", key)}
    leaf_names = {key.rsplit(".", 1)[-1] for key in base}
    targets = config.get("target_modules")
    if isinstance(targets, list):  # a string is a pattern: the tensors are the truth then
        missing = sorted({str(t) for t in targets} - leaf_names - {"all-linear"})
        if missing:
            raise InvalidAdapterError(
                f"the adapter targets modules {base_model} does not have: {', '.join(missing)}"
            )
    for module, (a, b) in sorted(modules.items()):
        if module not in base:
            raise InvalidAdapterError(
                f"the adapter was built for another base model: it adapts {module}, which "
                f"{base_model} does not have ({len(layers)} layers)"
            )
        shape = base[module]
        if len(shape) != 2:
            raise InvalidAdapterError(
                f"the adapter adapts {module}, which is not a linear layer in {base_model}; "
                "vLLM serves LoRA on linear layers only"
            )
        out_features, in_features = shape
        if a[1] != in_features or b[0] != out_features:
            raise InvalidAdapterError(
                f"the adapter was built for another base model: {module} is "
                f"{out_features}x{in_features} in {base_model}, but the adapter's matrices are "
                f"A {a} and B {b}"
            )


def read_peft_config(source: Path) -> dict[str, Any]:
    """The adapter's `adapter_config.json`, after checking it is a LoRA in safetensors."""
    if not source.is_dir():
        raise InvalidAdapterError(f"{source} is not a directory")
    if (source / "adapter_model.bin").exists() and not (source / WEIGHTS).exists():
        raise InvalidAdapterError(
            f"{source} holds pickle weights (adapter_model.bin), which can run code when loaded; "
            "save it with safetensors (PEFT: save_pretrained(..., safe_serialization=True))"
        )
    for file in (CONFIG, WEIGHTS):
        if not (source / file).is_file():
            raise InvalidAdapterError(f"{source} is not a PEFT adapter: {file} is missing")
    try:
        config = json.loads((source / CONFIG).read_text())
    except (ValueError, OSError) as exc:
        raise InvalidAdapterError(f"{source / CONFIG} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidAdapterError(
            f"{source / CONFIG} must hold a JSON object (PEFT's LoraConfig), not: "
            f"{json.dumps(config)[:80]}"
        )
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise InvalidAdapterError(f"{source} is a {config.get('peft_type')} adapter, not LoRA")
    return config


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
