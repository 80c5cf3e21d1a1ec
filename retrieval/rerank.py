"""The reranking stage: after fusion, the best `rerank_depth` candidates are scored again,
question and passage together, and reordered by that score.

Pluggable: any sentence-transformers `CrossEncoder` by local path or by a name already in the
local Hugging Face cache (`RAGTUNE_RERANKER`); nothing is ever downloaded. None ships by
default: no cross-encoder installs from PyPI with its weights, and no model-free reranker
measured here paid for itself on both developers' sets (see the README, "Measuring
retrieval"). A model that is not a cross-encoder (a bi-encoder such as the embedding model, or
anything without a sequence-classification head) is refused when loaded, not used with a head
of random weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.settings import RetrievalSettings


class RerankerError(RetrievalError):
    """The configured reranker cannot be loaded or used."""


class Reranker(Protocol):
    """Scores (question, passage) pairs; higher is more relevant."""

    name: str

    def score(self, question: str, passages: Sequence[str]) -> list[float]: ...


def _model_dir(name: str) -> Path:
    """The local folder of a reranker named by path or by a name in the local HF cache."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name.startswith((".", "/", "~")):
        raise RerankerError(
            f"reranker {name!r}: no such folder. Set RAGTUNE_RERANKER to a local "
            "sentence-transformers CrossEncoder folder, or leave it empty for no reranking."
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        raise RerankerError(
            f"reranker {name!r} is neither a local folder nor in the local Hugging Face cache "
            "(nothing is downloaded). Set RAGTUNE_RERANKER to a local CrossEncoder folder, or "
            "leave it empty for no reranking."
        ) from None


def check_cross_encoder(folder: Path, name: str) -> None:
    """Refuse a model that is not a cross-encoder, before anything is loaded."""
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RerankerError(
            f"reranker {name!r} has no readable config.json: it is not a model folder"
        ) from None
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise RerankerError(
            f"reranker {name!r} is not a cross-encoder (its architecture is "
            f"{', '.join(architectures) or 'not stated'}; a cross-encoder has a sequence "
            "classification head). A bi-encoder such as the embedding model cannot rerank: "
            "use a CrossEncoder (e.g. one trained on MS MARCO) or no reranker."
        )
    if int(config.get("num_labels", len(config.get("id2label") or {0: ""}))) != 1:
        raise RerankerError(
            f"reranker {name!r} classifies into several labels; a reranker needs one "
            "relevance score (num_labels 1)"
        )


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder, loaded from disk."""

    def __init__(self, name: str, device: str = "cpu", batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        folder = _model_dir(name)
        check_cross_encoder(folder, name)
        from sentence_transformers import CrossEncoder

        try:
            self._model = CrossEncoder(str(folder), device=device, local_files_only=True)
        except Exception as exc:
            raise RerankerError(
                f"cannot load reranker {name!r} ({type(exc).__name__}: {exc})"
            ) from None
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
