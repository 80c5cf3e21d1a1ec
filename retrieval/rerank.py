"""The reranking stage: after fusion, the best `rerank_depth` candidates are scored again,
question and passage together, and reordered by that score.

Pluggable: any sentence-transformers `CrossEncoder` by local path or by a name already in the
local Hugging Face cache (`RAGTUNE_RERANKER`); nothing is ever downloaded. None ships by
default: no cross-encoder installs from PyPI with its weights, and no model-free reranker
measured here paid for itself on all three developers' sets (the README, "A reranking stage";
`bench/rerank_explore.py`). A model that is not a cross-encoder (a bi-encoder such as the
embedding model, or anything without a sequence-classification head whose weights are in its
checkpoint) is refused when loaded, not used with a head of random weights; so is one without
its own tokenizer, found by scoring one probe pair at load rather than by meaningless scores or
a failure per query.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.settings import RetrievalSettings


class RerankerError(RetrievalError):
    """The configured reranker cannot be loaded or used."""


class Reranker(Protocol):
    """Scores (question, passage) pairs; higher is more relevant."""

    name: str

    def score(self, question: str, passages: Sequence[str]) -> list[float]: ...


PROBE = ("what is copper used for", "Copper is a metal used in electrical wiring.")
"""The pair every cross-encoder scores once at load: plain English words any real tokenizer
knows."""


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
            what = "a file, not a model folder" if path.exists() else "no such folder"
            raise self.error(
                f"{self.role} {name!r}: {what}. Set {self.env} to a local "
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
                f"{self.role} {name!r} has no readable config.json: it is not a model folder. "
                f"Set {self.env} to a local CrossEncoder folder, or leave it empty for "
                f"{self.unset}."
            ) from None
        if not isinstance(config, dict):
            raise self.error(
                f"{self.role} {name!r}: its config.json is not a JSON object: it is not a model "
                f"folder. Set {self.env} to a local CrossEncoder folder, or leave it empty for "
                f"{self.unset}."
            )
        stated = config.get("architectures")
        architectures = (
            [a for a in stated if isinstance(a, str)] if isinstance(stated, list) else []
        )
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise self.error(
                f"{self.role} {name!r} is not a cross-encoder (its architecture is "
                f"{', '.join(architectures) or 'not stated'}; a cross-encoder has a sequence "
                "classification head). A bi-encoder such as the embedding model cannot do this: "
                f"use a CrossEncoder ({self.example}) or none."
            )
        return config

    def load(self, folder: Path, name: str, device: str) -> Any:
        """The CrossEncoder in `folder` (checked with `config` first), once it has scored the
        probe pair. Without tokenizer files transformers builds an empty one that turns every
        word into [UNK] (flat, meaningless scores), and another model's tokenizer gives ids past
        the model's embedding table (an IndexError per query): both are refused here."""
        from sentence_transformers import CrossEncoder

        try:
            model = CrossEncoder(str(folder), device=device, local_files_only=True)
        except Exception as exc:
            raise self.error(
                f"cannot load {self.role} {name!r} ({type(exc).__name__}: {exc})"
            ) from None
        untrained = untrained_head(getattr(model, "model", None), folder)
        if untrained:
            raise self.error(
                f"{self.role} {name!r} is not a cross-encoder: its checkpoint holds no weights "
                f"for its classification head ({', '.join(untrained)}), which transformers would "
                "fill with random ones (scores would be noise). A bi-encoder such as the "
                "embedding model, with its config.json changed to a sequence-classification "
                f"architecture, cannot do this: use a CrossEncoder ({self.example}) or none."
            )
        fix = (
            f"Point {self.env} at a cross-encoder folder holding its own tokenizer "
            f"(tokenizer.json, or vocab.txt with tokenizer_config.json), or leave it empty for "
            f"{self.unset}."
        )
        tokenizer = model.tokenizer
        vocab_size = getattr(model.config, "vocab_size", None)
        if isinstance(vocab_size, int) and len(tokenizer) > vocab_size:
            raise self.error(
                f"{self.role} {name!r}: its tokenizer has {len(tokenizer)} tokens but the model "
                f"only {vocab_size}: the tokenizer is another model's. {fix}"
            )
        ids = tokenizer(*PROBE)["input_ids"]
        if all(i in tokenizer.all_special_ids for i in ids):
            raise self.error(
                f"{self.role} {name!r}: its tokenizer knows none of the words of a plain English "
                f"sentence (each becomes {tokenizer.unk_token}): the folder has no tokenizer of "
                f"its own. {fix}"
            )
        if isinstance(vocab_size, int) and len(tokenizer) < vocab_size // 2:
            # A model's table is at most padded a little past its tokenizer (to a multiple of
            # 64 or 128, a few hundred reserved ids); a tokenizer of a smaller family (a 5,000
            # token BPE over BERT's 30,522) gives ids the model reads as other words.
            raise self.error(
                f"{self.role} {name!r}: its tokenizer has {len(tokenizer)} tokens but the model "
                f"{vocab_size}, more than twice as many: the tokenizer is another model's. {fix}"
            )
        try:
            scores = np.asarray(model.predict([PROBE], show_progress_bar=False))
        except Exception as exc:
            raise self.error(
                f"{self.role} {name!r} cannot score a (question, passage) pair "
                f"({type(exc).__name__}: {exc}). {fix}"
            ) from None
        if scores.size != model.num_labels or not np.isfinite(scores).all():
            raise self.error(
                f"{self.role} {name!r} scores a (question, passage) pair as {scores.tolist()}, "
                f"not as finite numbers, one per label: its weights are unusable. Use a "
                f"CrossEncoder ({self.example}) or none."
            )
        return model


def untrained_head(model: Any, folder: Path) -> list[str]:
    """The weights of a loaded transformers model's task head (all but its base model's) that
    its checkpoint does not hold: transformers initialises those at random, with no more than a
    warning. Read from the checkpoint's key names, without loading a tensor again; empty when
    the checkpoint is in a form not read here."""
    stored = checkpoint_keys(folder)
    if stored is None or model is None:
        return []
    base = getattr(model, "base_model_prefix", "")
    # Parameters, not the state dict: buffers (position ids) may be left out of a checkpoint.
    head = [
        key for key, _ in model.named_parameters() if not base or not key.startswith(f"{base}.")
    ]
    return [key for key in head if key not in stored]


def checkpoint_keys(folder: Path) -> set[str] | None:
    """The names of the weights a model folder's checkpoint holds, from the first file
    transformers would load (safetensors before PyTorch, one file before shards), or None when
    there is none readable here."""
    try:
        if (folder / "model.safetensors").is_file():
            from safetensors import safe_open

            with safe_open(str(folder / "model.safetensors"), "pt") as weights:
                return set(weights.keys())
        if (folder / "model.safetensors.index.json").is_file():
            return _sharded_keys(folder / "model.safetensors.index.json")
        if (folder / "pytorch_model.bin").is_file():
            import torch

            # On the meta device and memory-mapped: the names, no tensor read.
            state = torch.load(
                folder / "pytorch_model.bin", map_location="meta", weights_only=True, mmap=True
            )
            return set(state)
        if (folder / "pytorch_model.bin.index.json").is_file():
            return _sharded_keys(folder / "pytorch_model.bin.index.json")
    except Exception:  # transformers read it; what cannot be read here is not judged
        return None
    return None


def _sharded_keys(index: Path) -> set[str]:
    return set(json.loads(index.read_text("utf-8"))["weight_map"])


RERANKER = CrossEncoderSetting(
    "RAGTUNE_RERANKER", "reranker", "no reranking", "e.g. one trained on MS MARCO", RerankerError
)


def check_cross_encoder(folder: Path, name: str) -> None:
    """Refuse a model that is not a cross-encoder with one relevance score, before anything is
    loaded."""
    config = RERANKER.config(folder, name)
    labels = config.get("id2label")
    if labels is not None and not isinstance(labels, dict):
        # transformers reads it as a mapping (a list failed at load: "'list' object has no
        # attribute 'items'").
        raise RerankerError(
            f"reranker {name!r}: its config.json's id2label is not an object of label ids to "
            'names ({"0": "LABEL_0"}); a reranker has one relevance score. Fix its config or '
            "use a CrossEncoder (e.g. one trained on MS MARCO)."
        )
    if "num_labels" not in config and not (isinstance(labels, dict | list) and labels):
        raise RerankerError(
            f"reranker {name!r}: its config.json states no number of labels (no num_labels, no "
            "id2label), which transformers reads as 2; a reranker has one relevance score. Set "
            '"num_labels": 1 if its head gives one, or use a CrossEncoder (e.g. one trained on '
            "MS MARCO)."
        )
    counted = len(labels) if isinstance(labels, dict | list) and labels else 1
    num_labels = config.get("num_labels", counted)
    if not isinstance(num_labels, int) or isinstance(num_labels, bool):
        raise RerankerError(
            f"reranker {name!r}: its config.json gives num_labels as {num_labels!r}, not a "
            "number; a reranker has one relevance score (num_labels 1). Use a CrossEncoder "
            "(e.g. one trained on MS MARCO) or none."
        )
    if num_labels != 1:
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
        if self._model.num_labels != 1:  # what `check_cross_encoder` read otherwise
            raise RerankerError(
                f"reranker {name!r} gives {self._model.num_labels} scores per (question, "
                "passage) pair; a reranker needs one relevance score (num_labels 1 in its "
                "config.json)"
            )
        self.name = name
        self.batch_size = batch_size

    def score(self, question: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        scores = self._model.predict(
            [(question, p) for p in passages], batch_size=self.batch_size, show_progress_bar=False
        )
        return [float(s) for s in scores]


def check_reranker(settings: RetrievalSettings) -> None:
    """The configured reranker's folder and config, checked without loading it (no memory of
    any device taken): what a server refuses before it starts an engine; `load_reranker`
    checks the rest."""
    if settings.reranker:
        check_cross_encoder(RERANKER.folder(settings.reranker), settings.reranker)


def load_reranker(settings: RetrievalSettings) -> Reranker | None:
    """The configured reranker (`RAGTUNE_RERANKER`), or None for no reranking stage."""
    if not settings.reranker:
        return None
    return CrossEncoderReranker(settings.reranker, settings.embedding_device)
