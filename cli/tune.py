"""`ragtune tune ...`: choose a collection's retrieval settings from its own documents."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from ragtune.cli.settings import command_settings
from ragtune.retrieval.calibration import calibrate, store_calibration, stored_calibration
from ragtune.retrieval.embedder import load_embedder, model_id_for
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.store import open_store

stdout = Console()
stderr = Console(stderr=True)

tune_app = typer.Typer(
    help="Choose a collection's retrieval settings from its own documents.", no_args_is_help=True
)


@tune_app.command("retrieval")
def tune_retrieval(
    ctx: typer.Context,
    collection: Annotated[
        str | None,
        typer.Option(
            "--collection", "-c", help="Collection to calibrate [default: RAGTUNE_COLLECTION]"
        ),
    ] = None,
    queries: Annotated[
        int, typer.Option("--queries", min=20, max=5000, help="Pseudo-queries to draw.")
    ] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draw.")] = 0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Measure and show; store nothing.")
    ] = False,
    reset: Annotated[
        bool, typer.Option("--reset", help="Remove the stored calibration (back to defaults).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Calibrate fusion (BM25 weight, rrf_k) for one collection, with no labels: sentences of
    its own chunks are the queries, their neighbouring chunks the answers. Stored with the
    collection and used by every search of it (settings given explicitly still win).

    Example: ragtune tune retrieval --collection handbook
    """
    settings = command_settings(ctx).retrieval_for(collection)
    with open_store(settings, "read" if dry_run else "write") as store:
        target = store.collection(settings.collection, model_id_for(settings.embedding_model))
        if reset:
            if dry_run:
                stdout.print(f"{target.name}: would go back to the shipped defaults [dry run]")
            else:
                store_calibration(target, None)
                stdout.print(f"collection {target.name!r} searches with the shipped defaults")
            return
        before = stored_calibration(target)
        lexical = LexicalIndexes.for_store(settings.data_dir, store).current(
            target, save=not dry_run
        )
        with stderr.status(f"calibrating {target.name!r} on {queries} pseudo-queries..."):
            result = calibrate(target, lexical, load_embedder(settings), settings, queries, seed)
        if not dry_run:
            store_calibration(target, result)
    if as_json:
        stdout.print_json(
            json.dumps(
                {"collection": target.name, "stored": not dry_run, "calibration": result.summary()}
            )
        )
        return
    was = (
        f"lexical weight {before.lexical_weight}, rrf_k {before.rrf_k}"
        if before
        else f"defaults (lexical weight {settings.lexical_weight}, rrf_k {settings.rrf_k})"
    )
    stdout.print(
        f"{target.name}: lexical weight {result.lexical_weight}, rrf_k {result.rrf_k} "
        f"(MRR@10 on {result.pseudo_queries} pseudo-queries {result.mrr:.3f}; the defaults "
        f"{result.default_mrr:.3f}; before: {was}; {result.seconds:.1f} s)"
        + ("" if not dry_run else " [dry run: nothing stored]")
    )
