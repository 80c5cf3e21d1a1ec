"""`ragtune search`: ranked chunks with their sources, in a terminal or as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from retrieval.embedder import load_embedder, model_id_for
from retrieval.search import SearchService
from retrieval.settings import RetrievalSettings
from retrieval.store import open_store

stdout = Console()


def search(
    question: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many hits.")] = 5,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Collection to search.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Search a collection and show the best chunks with their sources.

    Example: ragtune search "How do I read a file line by line?" -k 3
    """
    settings = (
        RetrievalSettings() if collection is None else RetrievalSettings(collection=collection)
    )
    with open_store(settings, "read") as store:
        target = store.collection(settings.collection, model_id_for(settings.embedding_model))
        hits = SearchService(target, load_embedder(settings)).search(question, k)
    if as_json:
        stdout.print_json(json.dumps([asdict(h) for h in hits]))
        return
    if not hits:
        stdout.print(f"no results in collection {settings.collection!r}")
    for hit in hits:
        where = hit.source + (f" · {hit.section}" if hit.section else "")
        stdout.print(
            Panel(
                hit.text,
                title=f"[{hit.rank}] {where}",
                subtitle=f"score {hit.score:.3f} · {hit.chunk_id}",
                title_align="left",
            )
        )
