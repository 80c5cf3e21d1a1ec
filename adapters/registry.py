"""The adapter registry: each adapter is a PEFT LoRA directory plus a manifest, stored under
`<data_dir>/adapters/<name>/v<version>/`, with the task profile the router matches requests to.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from adapters.errors import AdapterNotFoundError, InvalidAdapterError

MANIFEST = "manifest.json"
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class AdapterManifest(BaseModel):
    """What ragtune knows about one version of an adapter."""

    name: str
    version: int = 1
    base_model: str
    rank: int
    alpha: float
    target_modules: list[str]
    task: str
    """One or two sentences: what the adapter is for. The router matches requests against it."""
    examples: list[str] = Field(default_factory=list)
    """Example prompts of the task, also matched by the router."""
    weights_sha256: str
    training_data_sha256: str | None = None
    created: str
    evaluation: dict[str, Any] = Field(default_factory=dict)

    @property
    def served_name(self) -> str:
        """The `model` name the engine serves this version under."""
        return f"{self.name}@v{self.version}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidAdapterError(
            f"invalid adapter name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class AdapterRegistry:
    """Adapters on disk. The newest version of each name is the one in force."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def list(self) -> list[AdapterManifest]:
        manifests = []
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                if entry.is_dir() and _NAME.match(entry.name):
                    latest = self._latest(entry.name)
                    if latest is not None:
                        manifests.append(latest)
        return manifests

    def get(self, name: str) -> AdapterManifest:
        manifest = self._latest(name) if _NAME.match(name) else None
        if manifest is None:
            raise AdapterNotFoundError(
                f"no adapter named {name!r} is registered; `ragtune adapters list` shows them"
            )
        return manifest

    def path(self, manifest: AdapterManifest) -> Path:
        return self.root / manifest.name / f"v{manifest.version}"

    def add(
        self,
        source: Path,
        name: str,
        task: str,
        *,
        base_model: str,
        examples: Sequence[str] = (),
        training_data_sha256: str | None = None,
    ) -> AdapterManifest:
        """Copy a PEFT LoRA directory into the registry as a new adapter (version 1)."""
        check_name(name)
        if self._latest(name) is not None:
            raise InvalidAdapterError(f"an adapter named {name!r} already exists")
        config = read_peft_config(source)
        manifest = AdapterManifest(
            name=name,
            base_model=base_model,
            rank=int(config.get("r", 0)),
            alpha=float(config.get("lora_alpha", 0)),
            target_modules=sorted(_as_list(config.get("target_modules"))),
            task=task.strip(),
            examples=[e.strip() for e in examples if e.strip()],
            weights_sha256=sha256_file(source / WEIGHTS),
            training_data_sha256=training_data_sha256,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        target = self.path(manifest)
        staging = target.with_name(f".{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for file in (CONFIG, WEIGHTS):
            shutil.copy2(source / file, staging / file)
        (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
        staging.rename(target)
        return manifest

    def _latest(self, name: str) -> AdapterManifest | None:
        folder = self.root / name
        versions = sorted(
            (int(p.name[1:]) for p in folder.glob("v*") if p.name[1:].isdigit()), reverse=True
        )
        for version in versions:
            path = folder / f"v{version}" / MANIFEST
            if path.is_file():
                return AdapterManifest.model_validate_json(path.read_text())
        return None


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


def _as_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []
