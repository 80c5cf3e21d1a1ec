"""Checks an adapter must pass before anything offers it to vLLM: a LoRA in safetensors, of a rank
the engine accepts, built for the served base model (every module it adapts exists there, with
the same shapes). Reads tensor names and shapes only, never the weights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from adapters.errors import InvalidAdapterError

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
# PEFT names a LoRA tensor base_model.model.<module path>.lora_A[.<adapter>].weight
_LORA_TENSOR = re.compile(
    r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])(\.[^.]+)?\.weight$"
)


def _shapes(path: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    try:
        with safe_open(str(path), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                shapes[key] = list(handle.get_slice(key).get_shape())
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise InvalidAdapterError(f"cannot read {path}: {exc}") from exc
    return shapes


def base_model_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Module path -> weight shape [out, in] of every weight in a local HF model directory."""
    shapes: dict[str, list[int]] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        for key, shape in _shapes(file).items():
            if key.endswith(".weight"):
                shapes[key.removesuffix(".weight")] = shape
    return shapes


def validate_adapter(
    source: Path, *, max_rank: int, base_model_dir: Path | None, base_model: str
) -> dict[str, Any]:
    """The adapter's PEFT config, once every check passed; InvalidAdapterError otherwise."""
    for file in (CONFIG, WEIGHTS):
        if (source / file).is_symlink():
            raise InvalidAdapterError(
                f"{source / file} is a symbolic link; copy the real file into the adapter directory"
            )
    config = read_peft_config(source)
    rank = int(config.get("r") or 0)
    if rank < 1:
        raise InvalidAdapterError(f"{source / CONFIG} gives no LoRA rank (r)")
    if rank > max_rank:
        raise InvalidAdapterError(
            f"the adapter's rank {rank} is above the engine's --max-lora-rank {max_rank}: train "
            f"it with rank <= {max_rank}, or raise RAGTUNE_MAX_LORA_RANK and restart the engine"
        )
    modules: dict[str, dict[str, list[int]]] = {}
    for key, shape in _shapes(source / WEIGHTS).items():
        match = _LORA_TENSOR.match(key)
        if match:
            modules.setdefault(match["module"], {})[match["part"]] = shape
    if not modules:
        raise InvalidAdapterError(f"{source / WEIGHTS} holds no LoRA tensors")
    if base_model_dir is None or not base_model_dir.is_dir():
        return config  # a remote model: the engine checks shapes when it loads the adapter

    base = base_model_shapes(base_model_dir)
    layers = {int(m) for key in base for m in re.findall(r"\.layers\.(\d+)\.", key)}
    leaf_names = {key.rsplit(".", 1)[-1] for key in base}
    missing_targets = sorted(
        set(as_list(config.get("target_modules"))) - leaf_names - {"all-linear"}
    )
    if missing_targets:
        raise InvalidAdapterError(
            f"the adapter targets modules {base_model} does not have: {', '.join(missing_targets)}"
        )
    for module, parts in sorted(modules.items()):
        if module not in base:
            raise InvalidAdapterError(
                f"the adapter was built for another base model: it adapts {module}, which "
                f"{base_model} does not have ({len(layers)} layers)"
            )
        out_features, in_features = base[module][0], base[module][-1]
        a, b = parts.get("A"), parts.get("B")
        if a is None or b is None or a[-1] != in_features or b[0] != out_features:
            raise InvalidAdapterError(
                f"the adapter was built for another base model: {module} is "
                f"{out_features}x{in_features} in {base_model}, but the adapter's matrices are "
                f"A {a} and B {b}"
            )
    return config


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
        config: dict[str, Any] = json.loads((source / CONFIG).read_text())
    except ValueError as exc:
        raise InvalidAdapterError(f"{source / CONFIG} is not valid JSON: {exc}") from exc
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise InvalidAdapterError(f"{source} is a {config.get('peft_type')} adapter, not LoRA")
    return config


def as_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []
