"""The reranking stage: after fusion, the best `rerank_depth` candidates are scored again,
question and passage together, and reordered by that score.

Pluggable: any sentence-transformers `CrossEncoder` by local path or by a name already in the
local Hugging Face cache (`RAGTUNE_RERANKER`); nothing is ever downloaded. None ships by
default: no cross-encoder installs from PyPI with its weights, and no model-free reranker
measured here paid for itself on all three developers' sets (the README, "A reranking stage";
`bench/rerank_explore.py`). A model that is not a cross-encoder (a bi-encoder such as the
embedding model, or anything without a sequence-classification head) is refused when loaded,
not used with a head of random weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.settings import RetrievalSettings


class RerankerError(RetrievalError):
    """The configured reranker cannot be loaded or used."""


class Reranker(Protocol):
    """Scores (question, passage) pairs; higher is more relevant."""

    name: str

    def score(self, question: str, passages: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class CrossEncoderSetting:
    """A setting that names a local sentence-transformers CrossEncoder (the reranker, or the
    grounding check's NLI model): finding its folder, refusing what is not a cross-encoder, and
    loading it, with messages that name the setting. Nothing is ever downloaded."""

    env: str
    """The setting's variable, e.g. RAGTUNE_RERANKER."""
    role: str
    """What the model is for, as messages name it: "reranker"."""
    unset: str
    """What leaving the setting empty means: "no reranking"."""
    example: str
    """A kind of model that fits: "one trained on MS MARCO"."""
    error: type[Exception]

    def folder(self, name: str) -> Path:
        """The local folder of a model named by path or by a name in the local HF cache."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = Path(name).expanduser()
        if path.is_dir():
            return path
        if path.exists() or name.startswith((".", "/", "~")):
            raise self.error(
                f"{self.role} {name!r}: no such folder. Set {self.env} to a local "
                f"sentence-transformers CrossEncoder folder, or leave it empty for {self.unset}."
            )
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(name, local_files_only=True))
        except Exception:
            raise self.error(
                f"{self.role} {name!r} is neither a local folder nor in the local Hugging Face "
                f"cache (nothing is downloaded). Set {self.env} to a local CrossEncoder folder, "
                f"or leave it empty for {self.unset}."
            ) from None

    def config(self, folder: Path, name: str) -> dict[str, Any]:
        """The model's config.json, once it is known to have a sequence-classification head:
        a model that is not a cross-encoder is refused before anything is loaded."""
        try:
            config: dict[str, Any] = json.loads((folder / "config.json").read_text("utf-8"))
        except (OSError, ValueError):
            raise self.error(
                f"{self.role} {name!r} has no readable config.json: it is not a model folder"
            ) from None
        architectures = config.get("architectures") or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise self.error(
                f"{self.role} {name!r} is not a cross-encoder (its architecture is "
                f"{', '.join(architectures) or 'not stated'}; a cross-encoder has a sequence "
                "classification head). A bi-encoder such as the embedding model cannot do this: "
                f"use a CrossEncoder ({self.example}) or none."
            )
        return config

    def load(self, folder: Path, name: str, device: str) -> Any:
        """The CrossEncoder in `folder` (checked with `config` first)."""
        from sentence_transformers import CrossEncoder

        try:
            return CrossEncoder(str(folder), device=device, local_files_only=True)
        except Exception as exc:
            raise self.error(
                f"cannot load {self.role} {name!r} ({type(exc).__name__}: {exc})"
            ) from None


RERANKER = CrossEncoderSetting(
    "RAGTUNE_RERANKER", "reranker", "no reranking", "e.g. one trained on MS MARCO", RerankerError
)


def check_cross_encoder(folder: Path, name: str) -> None:
    """Refuse a model that is not a cross-encoder with one relevance score, before anything is
    loaded."""
    config = RERANKER.config(folder, name)
    if int(config.get("num_labels", len(config.get("id2label") or {0: ""}))) != 1:
        raise RerankerError(
            f"reranker {name!r} classifies into several labels; a reranker needs one "
            "relevance score (num_labels 1)"
        )


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder, loaded from disk."""

    def __init__(self, name: str, device: str = "cpu", batch_size: int = 32) -> None:
        folder = RERANKER.folder(name)
        check_cross_encoder(folder, name)
        self._model = RERANKER.load(folder, name, device)
        self.name = name
        self.batch_size = batch_size

    def score(self, question: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        scores = self._model.predict(
            [(question, p) for p in passages], batch_size=self.batch_size, show_progress_bar=False
        )
        return [float(s) for s in scores]


def load_reranker(settings: RetrievalSettings) -> Reranker | None:
    """The configured reranker (`RAGTUNE_RERANKER`), or None for no reranking stage."""
    if not settings.reranker:
        return None
    return CrossEncoderReranker(settings.reranker, settings.embedding_device)
