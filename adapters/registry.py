"""The adapter registry: each adapter is a PEFT LoRA directory plus a manifest, stored under
`<data_dir>/adapters/<name>/v<version>/`, with the task profile the router matches requests to.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from adapters.errors import AdapterNotFoundError, InvalidAdapterError
from adapters.validation import CONFIG, WEIGHTS, as_list, read_peft_config, validate_adapter

MANIFEST = "manifest.json"
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
        max_rank: int | None = None,
        base_model_dir: Path | None = None,
    ) -> AdapterManifest:
        """Validate a PEFT LoRA directory and copy it into the registry as a new adapter
        (version 1). `max_rank` and `base_model_dir` describe the engine it must fit."""
        check_name(name)
        if self._latest(name) is not None:
            raise InvalidAdapterError(
                f"an adapter named {name!r} already exists: choose another name, or publish a "
                "new version of it"
            )
        if max_rank is None:
            config = read_peft_config(source)
        else:
            config = validate_adapter(
                source, max_rank=max_rank, base_model_dir=base_model_dir, base_model=base_model
            )
        manifest = AdapterManifest(
            name=name,
            base_model=base_model,
            rank=int(config.get("r", 0)),
            alpha=float(config.get("lora_alpha", 0)),
            target_modules=sorted(as_list(config.get("target_modules"))),
            task=task.strip(),
            examples=[e.strip() for e in examples if e.strip()],
            weights_sha256=sha256_file(source / WEIGHTS),
            training_data_sha256=training_data_sha256,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self._store(source, manifest)
        return manifest

    def add_version(
        self,
        name: str,
        source: Path,
        *,
        max_rank: int | None = None,
        base_model_dir: Path | None = None,
    ) -> AdapterManifest:
        """Validate `source` and store it as the next version of `name` (same task, examples
        and base model). The previous version stays on disk until removed."""
        previous = self.get(name)
        if max_rank is None:
            config = read_peft_config(source)
        else:
            config = validate_adapter(
                source,
                max_rank=max_rank,
                base_model_dir=base_model_dir,
                base_model=previous.base_model,
            )
        manifest = previous.model_copy(
            update={
                "version": previous.version + 1,
                "rank": int(config.get("r", 0)),
                "alpha": float(config.get("lora_alpha", 0)),
                "target_modules": sorted(as_list(config.get("target_modules"))),
                "weights_sha256": sha256_file(source / WEIGHTS),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "evaluation": {},
            }
        )
        self._store(source, manifest)
        return manifest

    def remove_version(self, manifest: AdapterManifest) -> None:
        shutil.rmtree(self.path(manifest), ignore_errors=True)

    def _store(self, source: Path, manifest: AdapterManifest) -> None:
        target = self.path(manifest)
        staging = target.with_name(f".{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for file in (CONFIG, WEIGHTS):
            shutil.copy2(source / file, staging / file)
        (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
        staging.rename(target)

    def save_evaluation(
        self, manifest: AdapterManifest, results: dict[str, Any]
    ) -> AdapterManifest:
        """Merge results into the manifest's `evaluation` and write it back."""
        updated = manifest.model_copy(update={"evaluation": {**manifest.evaluation, **results}})
        path = self.path(updated) / MANIFEST
        tmp = path.with_suffix(".tmp")
        tmp.write_text(updated.model_dump_json(indent=2) + "\n")
        tmp.replace(path)
        return updated

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
