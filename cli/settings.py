"""The settings tree of one `ragtune` command: every package's settings, read once from the
RAGTUNE_* variables and the config file by the root command (cli/app.py) and handed to the
subcommand through typer's context. Commands take their part of it; none reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_type_hints

import typer
from pydantic_settings import BaseSettings

from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.serving.settings import ServingSettings


@dataclass(frozen=True)
class CommandSettings:
    """What the server runs on (`serving`: retrieval, engine, adapters, router, API), and how
    files are ingested."""

    serving: ServingSettings = field(default_factory=ServingSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)

    def retrieval_for(self, collection: str | None) -> RetrievalSettings:
        """The retrieval settings with the collection a command names (if any) in force; the
        name is checked as the setting is (an invalid one is a ValidationError)."""
        retrieval = self.serving.retrieval
        if collection is None:
            return retrieval
        return retrieval.for_collection(collection)


def settings_classes() -> list[type[BaseSettings]]:
    """Every settings class of the tree: the keys a config file may hold."""
    return list(dict.fromkeys([*get_type_hints(ServingSettings).values(), IngestSettings]))


def command_settings(ctx: typer.Context) -> CommandSettings:
    """The tree the root command built (built here when a command runs without it)."""
    return ctx.ensure_object(CommandSettings)
