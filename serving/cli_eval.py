"""`ragtune eval ...`: commands that measure the product on labelled data."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ingest.cli import RichProgress
from ingest.pipeline import IngestService
from ingest.settings import IngestSettings
from retrieval.embedder import load_embedder, model_id_for
from retrieval.errors import RetrievalError
from retrieval.evaluation import RetrievalReport, Search, evaluate, load_qa
from retrieval.filters import SearchFilter
from retrieval.lexical import LexicalIndexes
from retrieval.search import Retriever, SearchHit, SearchMode
from retrieval.settings import settings_for
from retrieval.store import open_store

eval_app = typer.Typer(help="Measure ragtune on labelled data.", no_args_is_help=True)
stdout = Console()
stderr = Console(stderr=True)


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise typer.BadParameter(f"--k expects numbers like 1,5,10, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise typer.BadParameter("--k values must be positive")
    return ks


@eval_app.command("retrieval")
def eval_retrieval(
    qa: Annotated[
        Path,
        typer.Option("--qa", help="QA file: JSON list of {id, question, answer_passage, source}."),
    ],
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            help="Ingest this folder into a fresh temporary collection first (removed afterwards).",
        ),
    ] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Collection to evaluate.")
    ] = None,
    mode: Annotated[
        str, typer.Option("--mode", help="hybrid, dense, lexical, or all (one row each).")
    ] = "hybrid",
    k: Annotated[str, typer.Option("--k", help="Cut-offs for Recall@k.")] = "1,5,10",
    neighbours: Annotated[
        int, typer.Option("--neighbours", min=0, max=5, help="Judge hits with N neighbours.")
    ] = 0,
    filters: Annotated[
        list[str] | None, typer.Option("--filter", "-f", help="As for `ragtune search`.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    run_file: Annotated[
        Path | None,
        typer.Option("--run-file", help="Write every question's ranked hits here (JSON)."),
    ] = None,
) -> None:
    """Score retrieval on a QA set: Recall@k, MRR@10, nDCG@10 and the ceiling.

    Example: ragtune eval retrieval --qa qa.json --corpus docs/ --mode all --run-file run.json
    """
    ks = parse_ks(k)
    modes = list(SearchMode) if mode == "all" else [_mode(mode)]
    items = load_qa(qa)
    search_filter = SearchFilter.parse(filters or [])
    name = f"eval-{uuid.uuid4().hex[:10]}" if corpus is not None else collection
    settings = settings_for(name)
    with open_store(settings, "write" if corpus is not None else "read") as store:
        model_id = model_id_for(settings.embedding_model)
        indexes = LexicalIndexes.for_store(settings.data_dir, store)
        embedder = load_embedder(settings)
        try:
            if corpus is not None:
                if not corpus.is_dir():
                    raise RetrievalError(f"--corpus {corpus} is not a folder")
                target = store.collection(settings.collection, model_id, create=True)
                service = IngestService(IngestSettings(), target, lambda: embedder, indexes)
                with RichProgress(stderr) as progress:
                    summary = service.run([corpus], progress=progress)
                stderr.print(
                    f"ingested {len(summary.files) - len(summary.failed)} files into temporary "
                    f"collection {settings.collection!r}: {summary.chunks_embedded} chunks, "
                    f"{len(summary.failed)} failed"
                )
            else:
                target = store.collection(settings.collection, model_id)
            retriever = Retriever(target, embedder, indexes, settings)

            def searcher(m: SearchMode) -> Search:
                def run(question: str, depth: int) -> list[SearchHit]:
                    return retriever.search(question, depth, m, search_filter, neighbours)

                return run

            with stderr.status(f"evaluating {len(items)} questions..."):
                report = evaluate(target, items, [(m.value, searcher(m)) for m in modes], ks)
        finally:
            if corpus is not None:
                store.delete_collection(settings.collection)
                indexes.drop(settings.collection)
    if run_file is not None:
        run_file.write_text(json.dumps(report.to_dict(with_runs=True), indent=1))
    if as_json:
        stdout.print_json(json.dumps(report.to_dict()))
    else:
        print_report(report, ks)


def _mode(text: str) -> SearchMode:
    try:
        return SearchMode(text)
    except ValueError:
        raise typer.BadParameter(
            f"--mode must be hybrid, dense, lexical or all, not {text!r}"
        ) from None


def print_report(report: RetrievalReport, ks: list[int]) -> None:
    table = Table(
        title=f"{report.questions} questions · {report.chunks} chunks in {report.collection!r}"
    )
    table.add_column("mode")
    columns = [f"recall@{k}" for k in ks] + ["mrr@10", "ndcg@10"]
    for column in columns:
        table.add_column(column.replace("recall", "R"), justify="right")
    for mode in report.modes:
        table.add_row(mode.mode, *(f"{mode.metrics[c]:.3f}" for c in columns))
    stdout.print(table)
    stdout.print(
        f"ceiling: {report.ceiling}/{report.questions} questions have a relevant chunk in the "
        f"collection ({report.ceiling / report.questions:.3f})"
    )
