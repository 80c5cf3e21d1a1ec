"""`ragtune ingest` and `ragtune docs ...`: thin commands over the ingestion service."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ragtune.cli.interrupt import stop_if_interrupted
from ragtune.cli.settings import command_settings
from ragtune.cli.show import data, in_markup
from ragtune.ingest.counters import record_run
from ragtune.ingest.documents import list_documents, remove_documents
from ragtune.ingest.pipeline import FileResult, FileStatus, IngestService, IngestSummary, parse_meta
from ragtune.retrieval.calibration import (
    Calibration,
    describe_fusion,
    fusion_in_force,
    read_calibration,
)
from ragtune.retrieval.embedder import collection_embedder, model_id_for
from ragtune.retrieval.errors import CollectionNotFoundError
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import Collection, EmptyCollection, open_store

stdout = Console()
stderr = Console(stderr=True)

CollectionOption = Annotated[
    str | None,
    typer.Option("--collection", "-c", help="Collection to use \\[default: RAGTUNE_COLLECTION]"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


class RichProgress:
    """Draws the run on stderr: files done, chunks embedded."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files · {task.fields[chunks]} chunks embedded"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._task = self._progress.add_task("ingest", total=None, chunks=0)
        self._chunks = 0

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, total_files: int) -> None:
        self._progress.update(self._task, total=total_files)

    def file_done(self, result: FileResult) -> None:
        self._progress.advance(self._task)
        stop_if_interrupted()  # each step stored is consistent: a Ctrl-C lost on its way stops here

    def embedded(self, chunks: int) -> None:
        self._chunks += chunks
        self._progress.update(self._task, chunks=self._chunks)
        stop_if_interrupted()


def ingest(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(help="Files or folders (read recursively).")],
    collection: CollectionOption = None,
    meta: Annotated[
        list[str] | None,
        typer.Option("--meta", "-m", help="key=value stored on every chunk (repeatable)."),
    ] = None,
    sync: Annotated[
        bool,
        typer.Option(
            "--sync",
            help="Remove documents whose files were deleted under PATHS (a PATH that is gone "
            "is a failure: its documents are kept).",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would change; write nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Index documents (.txt .md .rst .rst.txt .html .htm .pdf .docx) into a collection.

    Unchanged files are skipped without embedding; changed files are replaced; with --sync,
    documents whose files were deleted are removed. Exit status 1 if any file failed.

    Example: ragtune ingest docs/ handbook.pdf --collection handbook --meta team=support
    """
    if any(not given.strip() for given in paths):
        # Read as a path, "" is the current folder: a shell variable left unset would ingest
        # (and with --sync, prune) everything under it.
        raise typer.BadParameter(
            "an empty PATH names no file: give files or folders; for the current folder, give '.'",
            param_hint="PATHS",
        )
    pairs = parse_meta(meta or [])
    tree = command_settings(ctx)
    settings = tree.retrieval_for(collection)
    target: Collection
    with open_store(settings, "read" if dry_run else "write") as store:
        model_id = model_id_for(settings.embedding_model)
        if dry_run:
            try:
                target = store.collection(settings.collection, model_id)
            except CollectionNotFoundError:
                target = EmptyCollection(settings.collection, model_id)
        else:
            target = store.collection(settings.collection, model_id, create=True)
        service = IngestService(
            tree.ingest,
            target,
            lambda: collection_embedder(target, settings),
            LexicalIndexes.for_store(settings.data_dir, store),
        )
        with RichProgress(stderr) as progress:
            summary = service.run(
                [Path(p) for p in paths], pairs, sync=sync, dry_run=dry_run, progress=progress
            )
    if not dry_run:
        record_run(settings.data_dir, summary)
    if as_json:
        stdout.print_json(json.dumps(summary.to_dict()))
    else:
        print_summary(summary)
    if summary.failed:
        raise typer.Exit(1)


def print_summary(summary: IngestSummary) -> None:
    title = f"{'Dry run: ' if summary.dry_run else ''}collection {summary.collection!r}"
    table = Table(title=title, show_header=True)
    for status in FileStatus:
        table.add_column(status.value, justify="right")
    table.add_row(*(str(summary.count(status)) for status in FileStatus))
    stdout.print(table)
    verb = "to embed" if summary.dry_run else "embedded"
    stdout.print(
        f"chunks: {summary.chunks_embedded} {verb}, {summary.chunks_reused} reused, "
        f"{summary.chunks_deleted} removed · {summary.seconds:.1f}s"
    )
    for result in summary.files:
        if result.status == FileStatus.FAILED:
            stdout.print(failed_line(result))
        elif result.status == FileStatus.REMOVED:
            stdout.print(f"[yellow]removed[/yellow] {in_markup(result.source)}")


def failed_line(result: FileResult) -> str:
    """How a file that failed is listed, with its reason (as markup)."""
    return f"[red]failed[/red] {in_markup(f'{result.source}: {result.reason}')}"


docs_app = typer.Typer(help="List and remove ingested documents.", no_args_is_help=True)


@docs_app.command("list")
def docs_list(
    ctx: typer.Context, collection: CollectionOption = None, as_json: JsonOption = False
) -> None:
    """List the documents in a collection.

    Example: ragtune docs list --collection handbook
    """
    settings = command_settings(ctx).retrieval_for(collection)
    with open_store(settings, "read") as store:
        target = store.collection(settings.collection, model_id_for(settings.embedding_model))
        documents = list_documents(target)
        # A refused calibration is shown, not raised: the documents are listed all the same.
        calibration, refused = read_calibration(target)
        fusion, source = fusion_in_force(target, settings, calibration)
    problem = _refused_calibration(target.name, refused) if refused else None
    if as_json:
        stdout.print_json(json.dumps([asdict(d) for d in documents]))
        if problem:
            stderr.print(problem, soft_wrap=True)
        return
    table = Table(
        title=f"{len(documents)} documents in {settings.collection!r}",
        caption=problem or _fusion_caption(calibration, fusion, source),
    )
    for column in ("source", "title", "type", "chunks", "ingested", "meta"):
        table.add_column(column, overflow="fold")
    for d in documents:
        meta = " ".join(f"{k}={v}" for k, v in d.meta.items())
        cells = (d.source, d.title, d.file_type, str(d.chunks), d.ingested_at, meta)
        table.add_row(*(data(cell) for cell in cells))  # documents' names are data, not markup
    stdout.print(table)


def _refused_calibration(name: str, refused: str) -> str:
    return (
        f"search fusion: none, its searches fail: collection {name!r} {in_markup(refused)}; "
        f"recalibrate it: ragtune tune retrieval --collection {name} --store (or --reset for "
        "the shipped defaults)"
    )


def _fusion_caption(calibration: Calibration | None, fusion: RetrievalSettings, source: str) -> str:
    if source == "settings":
        described = describe_fusion(
            fusion.fusion, fusion.lexical_weight, fusion.rrf_k, fusion.dense_weight
        )
        return f"search fusion: as configured, {described}"
    if source == "tuned defaults":
        return (
            f"search fusion: shipped defaults for a tuned embedder, BM25 weight "
            f"{fusion.lexical_weight} (to measure a calibration: ragtune tune retrieval)"
        )
    if calibration is None:
        return "search fusion: shipped defaults (to measure a calibration: ragtune tune retrieval)"
    return (
        f"search fusion: calibrated, {calibration.describe()} ({calibration.pseudo_queries} "
        f"pseudo-queries, MRR@10 {calibration.mrr:.3f} vs defaults "
        f"{calibration.default_mrr:.3f})"
    )


@docs_app.command("rm")
def docs_rm(
    ctx: typer.Context,
    sources: Annotated[list[str], typer.Argument(help="Document paths (or a folder, or ids).")],
    collection: CollectionOption = None,
) -> None:
    """Remove documents and every chunk of them from a collection.

    Example: ragtune docs rm docs/old-handbook.md
    """
    settings = command_settings(ctx).retrieval_for(collection)
    with open_store(settings, "write") as store:
        target = store.collection(settings.collection, model_id_for(settings.embedding_model))
        removed = remove_documents(target, sources)
        LexicalIndexes.for_store(settings.data_dir, store).current(target, save=True)
    for d in removed:
        stdout.print(f"removed {in_markup(d.source)} ({d.chunks} chunks)")
