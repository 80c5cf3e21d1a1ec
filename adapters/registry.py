"""The adapter registry: each adapter is a PEFT LoRA directory plus a manifest, stored under
`<data_dir>/adapters/<name>/v<version>/` (`adapters.settings` says where), with the task profile
the router matches requests to. Also the one spelling of a version's engine name, `name@vN`.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ragtune.adapters.errors import AdapterConflictError, AdapterNotFoundError, InvalidAdapterError
from ragtune.adapters.provenance import CollectionSnapshot
from ragtune.adapters.validation import CONFIG, WEIGHTS, validate_adapter

logger = logging.getLogger("ragtune.adapters")
MANIFEST = "manifest.json"
PROFILE = "profile.safetensors"
"""The adapter's task profile vectors, next to its manifest, keyed by what they were made from."""
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_SERVED = re.compile(r"^(?P<name>.+)@v(?P<version>[0-9]+)$")
# JSON may carry lone UTF-16 surrogates; no file or response can hold them.
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    """SHA-256 of the task file ragtune trained it on (None: not trained by ragtune)."""
    training_collection: CollectionSnapshot | None = None
    """The collection it was made alongside, as it was when training began: its revision and
    every document's version. Once they differ from the collection now, the adapter is stale
    (`adapters.provenance`)."""
    created: str
    evaluation: dict[str, Any] = Field(default_factory=dict)

    @property
    def verdict(self) -> str | None:
        """The verdict of the last `ragtune advise` on this adapter's task (prompting,
        retrieval, fine-tune, undecided), if one was run."""
        advice = self.evaluation.get("advise")
        verdict = advice.get("verdict") if isinstance(advice, dict) else None
        return verdict if isinstance(verdict, str) else None

    @property
    def served_name(self) -> str:
        """The `model` name the engine serves this version under."""
        return served_name(self.name, self.version)


def served_name(name: str, version: int) -> str:
    """The engine's name for one version of an adapter: each version loads under its own name,
    so that a hot-swap can load the new one while the old one still answers."""
    return f"{name}@v{version}"


def parse_served_name(served: str) -> tuple[str, int] | None:
    """(adapter name, version) of an engine name `served_name` made; None for any other name
    (the base model, or an adapter someone else loaded)."""
    match = _SERVED.match(served)
    if match is None:
        return None
    return match["name"], int(match["version"])


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
    """Adapters on disk. The newest version of each name is the one in force.

    Every change is one rename, so that several processes (API replicas, the CLI) sharing the
    directory see an adapter version either whole or not at all, and of two changes racing for
    the same name or version exactly one wins (the other gets AdapterConflictError).
    """

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

    def versions(self, name: str) -> builtins.list[AdapterManifest]:
        """Every stored version of `name`, oldest first (the last one is in force)."""
        if not _NAME.match(name):
            return []
        found = (self._read(name, v) for v in sorted(self._version_numbers(name)))
        return [m for m in found if m is not None]

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
        training_collection: CollectionSnapshot | None = None,
        max_rank: int | None = None,
        base_model_dir: Path | None = None,
        max_examples: int | None = None,
    ) -> AdapterManifest:
        """Validate a PEFT LoRA directory and copy it into the registry as a new adapter
        (version 1). `max_rank` and `base_model_dir` describe the engine it must fit;
        `max_examples` is the most example prompts accepted (None: no limit)."""
        check_name(name)
        if self._latest(name) is not None:
            raise _exists(name)
        prompts = [e.strip() for e in examples if e.strip()]
        for text in (task, *prompts):
            if _SURROGATE.search(text):
                raise InvalidAdapterError(
                    f"the task or an example prompt is not valid Unicode text (a lone "
                    f"surrogate in {text[:60]!r}); send UTF-8 text"
                )
        if max_examples is not None and len(prompts) > max_examples:
            raise InvalidAdapterError(
                f"{len(prompts)} example prompts are more than the {max_examples} allowed "
                "(RAGTUNE_MAX_ADAPTER_EXAMPLES): keep the most typical prompts of the task (the "
                "router matches requests against each), or raise the limit"
            )
        spec = validate_adapter(
            source, max_rank=max_rank, base_model_dir=base_model_dir, base_model=base_model
        )
        manifest = AdapterManifest(
            name=name,
            base_model=base_model,
            rank=spec.rank,
            alpha=spec.alpha,
            target_modules=spec.target_modules,
            task=task.strip(),
            examples=prompts,
            weights_sha256=sha256_file(source / WEIGHTS),
            training_data_sha256=training_data_sha256,
            training_collection=training_collection,
            created=_now(),
        )
        self._store(source, manifest, new_name=True)
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
        and base model; what it was trained on is not known). The previous version stays on
        disk until removed."""
        previous = self.get(name)
        spec = validate_adapter(
            source,
            max_rank=max_rank,
            base_model_dir=base_model_dir,
            base_model=previous.base_model,
        )
        manifest = previous.model_copy(
            update={
                "version": previous.version + 1,
                "rank": spec.rank,
                "alpha": spec.alpha,
                "target_modules": spec.target_modules,
                "weights_sha256": sha256_file(source / WEIGHTS),
                "training_data_sha256": None,
                "training_collection": None,
                "created": _now(),
                "evaluation": {},
            }
        )
        self._store(source, manifest, new_name=False)
        return manifest

    def remove(self, name: str) -> AdapterManifest:
        """Delete the adapter, every version; the version that was in force is returned."""
        manifest = self.get(name)
        self._discard(self.root / name, missing=_not_found(name))
        return manifest

    def remove_version(self, name: str, version: int) -> AdapterManifest:
        """Delete one old version of `name`; the version in force cannot be (remove the
        adapter, or publish a newer version first)."""
        current = self.get(name)
        if version == current.version:
            raise AdapterConflictError(
                f"v{version} is the version of {name!r} in force: publish a newer version "
                f"first (`ragtune adapters swap`), or remove the adapter with every version "
                f"(`ragtune adapters rm {name}`)"
            )
        manifest = self._read(name, version) if version > 0 else None
        if manifest is None:
            listed = ", ".join(f"v{m.version}" for m in self.versions(name))
            raise AdapterNotFoundError(
                f"adapter {name!r} has no version {version} (it has {listed})"
            )
        self._discard(self.path(manifest), missing=_not_found(name, version))
        return manifest

    def withdraw(self, manifest: AdapterManifest) -> None:
        """Take back a version just stored (the engine refused it): its number and, for a
        first version, its name are free again."""
        shutil.rmtree(self.path(manifest), ignore_errors=True)
        folder = self.root / manifest.name
        if not self._version_numbers(manifest.name):
            for leftover in folder.glob(f".{PROFILE}.*"):
                leftover.unlink(missing_ok=True)
            # Not when another add is staging there (or it is gone already).
            with contextlib.suppress(OSError):
                folder.rmdir()

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

    # -- task profiles ---------------------------------------------------------------------
    def load_profile(self, manifest: AdapterManifest, key: str) -> np.ndarray[Any, Any] | None:
        """The profile vectors stored for this version, if they were made under `key` (the
        embedding model and the texts); None when absent, stale or unreadable."""
        from safetensors import SafetensorError, safe_open

        path = self.path(manifest) / PROFILE
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "np") as handle:
                if (handle.metadata() or {}).get("key") != key:
                    return None
                vectors: np.ndarray[Any, Any] = handle.get_tensor("vectors")
        except (OSError, SafetensorError, KeyError) as exc:
            logger.warning("ignoring %s (%s): the profile is computed again", path, exc)
            return None
        return vectors

    def save_profile(
        self, manifest: AdapterManifest, key: str, vectors: np.ndarray[Any, Any]
    ) -> None:
        """Store the profile vectors next to the manifest (written whole, then renamed)."""
        from safetensors.numpy import save_file

        path = self.path(manifest) / PROFILE
        tmp = path.with_name(f".{PROFILE}.{uuid.uuid4().hex}")
        try:
            save_file({"vectors": np.ascontiguousarray(vectors)}, str(tmp), {"key": key})
            os.replace(tmp, path)
        except OSError as exc:  # a read-only or vanished volume: computed again next time
            tmp.unlink(missing_ok=True)
            logger.warning("cannot store the task profile of %s: %s", manifest.served_name, exc)

    # -- storage ---------------------------------------------------------------------------
    def _store(self, source: Path, manifest: AdapterManifest, *, new_name: bool) -> None:
        """Copy the adapter into a private staging folder, then rename it into place: the
        rename fails if another process stored the same version first."""
        folder = self.root / manifest.name
        target = self.path(manifest)
        if new_name:
            folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".staging-{target.name}-{uuid.uuid4().hex}"
        try:
            staging.mkdir()
        except FileNotFoundError as exc:
            # The adapter was removed meanwhile (add_version), or its fresh folder was.
            raise (
                AdapterConflictError(
                    f"adapter {manifest.name!r} was removed while it was being added; try again"
                )
                if new_name
                else _not_found(manifest.name)
            ) from exc
        try:
            for file in (CONFIG, WEIGHTS):
                shutil.copy2(source / file, staging / file)
            (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
            os.rename(staging, target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                if new_name:
                    raise _exists(manifest.name) from exc
                raise AdapterConflictError(
                    f"v{manifest.version} of {manifest.name!r} was stored by another operation "
                    "at the same time; try again"
                ) from exc
            if isinstance(exc, FileNotFoundError) and not folder.is_dir():
                raise _not_found(manifest.name) from exc
            raise

    def _discard(self, path: Path, *, missing: AdapterNotFoundError) -> None:
        """Move `path` out of sight in one rename, then delete it: of two removals racing,
        one wins and the other finds nothing."""
        trash = path.with_name(f".removed-{path.name}-{uuid.uuid4().hex}")
        try:
            os.rename(path, trash)
        except FileNotFoundError as exc:
            raise missing from exc
        shutil.rmtree(trash, ignore_errors=True)

    def _version_numbers(self, name: str) -> builtins.list[int]:
        try:
            entries = [entry.name for entry in os.scandir(self.root / name)]
        except (FileNotFoundError, NotADirectoryError):  # absent, or removed meanwhile
            return []
        return [int(e[1:]) for e in entries if e.startswith("v") and e[1:].isdigit()]

    def _read(self, name: str, version: int) -> AdapterManifest | None:
        try:
            text = (self.root / name / f"v{version}" / MANIFEST).read_text()
        except (FileNotFoundError, NotADirectoryError):  # absent, or removed meanwhile
            return None
        return AdapterManifest.model_validate_json(text)

    def _latest(self, name: str) -> AdapterManifest | None:
        for version in sorted(self._version_numbers(name), reverse=True):
            manifest = self._read(name, version)
            if manifest is not None:
                return manifest
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _exists(name: str) -> AdapterConflictError:
    return AdapterConflictError(
        f"an adapter named {name!r} already exists: choose another name, or publish a new "
        "version of it (`ragtune adapters swap`)"
    )


def _not_found(name: str, version: int | None = None) -> AdapterNotFoundError:
    if version is None:
        return AdapterNotFoundError(f"no adapter named {name!r} is registered")
    return AdapterNotFoundError(f"adapter {name!r} has no version {version}")
