"""`ragtune keys ...`: tenants' API keys, each seeing only its collections and adapters
(operators; on the data directory's key file, which a running server reads again when it
changes)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ragtune.cli.settings import command_settings
from ragtune.serving.tenants.service import KeyStore, StoredKey, keys_path

keys_app = typer.Typer(
    help="Tenants' API keys: create, list, revoke. Each key sees only its collections and "
    "adapters.",
    no_args_is_help=True,
)
stdout = Console()
stderr = Console(stderr=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _store(ctx: typer.Context) -> KeyStore:
    return KeyStore(keys_path(command_settings(ctx).serving.retrieval.data_dir))


def _names(value: str | None) -> list[str]:
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def _shown(stored: StoredKey) -> dict[str, object]:
    """A key as listed: everything stored but its digest."""
    return {k: v for k, v in asdict(stored).items() if k != "sha256"}


@keys_app.command()
def create(
    ctx: typer.Context,
    collections: Annotated[
        str,
        typer.Option(
            "--collections",
            help="Collections the key may search, comma-separated; the first is its default.",
        ),
    ],
    adapters: Annotated[
        str | None,
        typer.Option("--adapters", help="Adapters the key may use, comma-separated."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A label: who the key is for.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create a tenant's API key (chat scope) and print it, this once: only its digest is
    stored. A running server accepts it at once.

    Example: ragtune keys create --collections handbook,faq --adapters titler --name "team a"
    """
    created = _store(ctx).create(_names(collections), _names(adapters), name)
    if as_json:
        stdout.print_json(json.dumps({**_shown(created.stored), "key": created.key}))
        return
    stored = created.stored
    stdout.print(f"API key {stored.id} created for collections {', '.join(stored.collections)}")
    if stored.adapters:
        stdout.print(f"adapters: {', '.join(stored.adapters)}")
    stdout.print(created.key, highlight=False, soft_wrap=True)
    stderr.print("Keep it now: it is not stored and cannot be shown again.")


@keys_app.command("list")
def list_keys(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the stored keys: id, label, collections, adapters, created (never the keys).

    Example: ragtune keys list
    """
    keys = _store(ctx).list()
    if as_json:
        stdout.print_json(json.dumps([_shown(stored) for stored in keys]))
        return
    if not keys:
        stdout.print("no stored API keys (`ragtune keys create --collections NAME`)")
        return
    table = Table("id", "name", "collections", "adapters", "created")
    for stored in keys:
        table.add_row(
            stored.id,
            Text(stored.name),  # a label, not markup
            ", ".join(stored.collections),
            ", ".join(stored.adapters) or "-",
            stored.created,
        )
    stdout.print(table)


@keys_app.command()
def revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (`keys list`).")],
) -> None:
    """Revoke a key: a running server refuses it from its next request on.

    Example: ragtune keys revoke 3f9a1c2b7d4e
    """
    stored = _store(ctx).revoke(key_id)
    stdout.print(f"API key {stored.id} revoked")
