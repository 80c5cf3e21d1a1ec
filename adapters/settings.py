"""Settings of the adapter registry (env prefix `RAGTUNE_`): where adapters live, and how many
example prompts one may be registered with.

The registry's folder is derived here and nowhere else, so that the API, the CLI and the
evaluations agree on it (and a shared volume holds it for every API replica)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ragtune.retrieval.settings import RagtuneSettings

ADAPTERS_FOLDER = "adapters"


def adapters_dir(data_dir: Path) -> Path:
    """The adapter registry's folder inside a data directory."""
    return data_dir / ADAPTERS_FOLDER


class AdapterSettings(RagtuneSettings):
    """Where the registry lives and what it admits.

    Usage: `AdapterRegistry(AdapterSettings().adapters_dir)`, or `adapters_dir(data_dir)` when
    only a data directory is at hand (both read the same rule)."""

    data_dir: Path = Path(".ragtune")
    """Holds the registry under adapters/ (shared with the store and the engine's files)."""
    max_adapter_examples: int = Field(default=500, ge=0)
    """Most example prompts an adapter may be registered with (`adapters add`, over HTTP or
    not): more is refused with 400. The router embeds each once per adapter version (stored
    next to the manifest) and matches every request against them. A manifest written with
    more (e.g. before the limit was lowered) is profiled from its first ones."""

    @property
    def adapters_dir(self) -> Path:
        return adapters_dir(self.data_dir)
