"""`ragtune eval ...`: commands that measure the product on labelled data."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Annotated, cast, get_args

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ragtune.cli.ingest import RichProgress, failed_line
from ragtune.cli.settings import command_settings
from ragtune.cli.show import data, in_markup
from ragtune.evals.retrieval import evaluate_retrieval
from ragtune.evals.routes import (
    CaseResult,
    RouteReport,
    ThresholdSuggestion,
    evaluate_case_file,
    suggest_for_deployment,
)
from ragtune.ingest.pipeline import FileStatus, IngestSummary
from ragtune.retrieval.embedder import model_id_for
from ragtune.retrieval.evaluation import NGRAM, RetrievalReport, load_qa, too_short
from ragtune.retrieval.filters import SearchFilter
from ragtune.retrieval.search import SearchMode
from ragtune.serving.components import route_model_path
from ragtune.serving.learned_router import load_route_model
from ragtune.serving.router import ROUTES
from ragtune.serving.settings import ServingSettings

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
    ctx: typer.Context,
    qa: Annotated[
        Path,
        typer.Option(
            "--qa",
            help="QA file: JSON list of {id, question or messages, answer_passage, source}.",
        ),
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
    """Score retrieval on a QA set: Recall@k, MRR@10, nDCG@10 and the ceiling. An item may
    give a conversation (`messages`) instead of a question: it is searched as the server
    searches one (a follow-up together with the user's messages before it).

    Example: ragtune eval retrieval --qa qa.json --corpus docs/ --mode all --run-file run.json
    """
    ks = parse_ks(k)
    modes = list(SearchMode) if mode == "all" else [_mode(mode)]
    if corpus is not None and not corpus.exists():
        raise typer.BadParameter(f"no such file or folder: {corpus}", param_hint="--corpus")
    if run_file is not None:
        check_writable(run_file, "--run-file")  # before the evaluation, not after its work
    items = load_qa(qa)
    short = too_short(items)
    if short:
        shown = ", ".join(short[:10]) + (f" and {len(short) - 10} more" if len(short) > 10 else "")
        stderr.print(
            f"warning: {len(short)} answer passage(s) under {NGRAM} words ({in_markup(shown)}): "
            f"the rule matches word {NGRAM}-grams (words: runs of a-z, 0-9 and _), so nothing can "
            "be found relevant to them and they score 0; give the passages that answer them or "
            "leave them out",
            soft_wrap=True,
        )
    settings = command_settings(ctx)
    report = evaluate_retrieval(
        settings.retrieval_for(None if corpus is not None else collection),
        settings.ingest,
        items,
        modes,
        ks,
        search_filter=SearchFilter.parse(filters or []),
        neighbours=neighbours,
        corpus=corpus,
        reporter=RetrievalProgress(),
        weighting=settings.serving.router.turn_weighting(),
    )
    if run_file is not None:
        run_file.write_text(json.dumps(report.to_dict(with_runs=True), indent=1))
    if as_json:
        stdout.print_json(json.dumps(report.to_dict()))
    else:
        print_report(report, ks)


def check_writable(path: Path, option: str) -> None:
    """A usage error unless `path` can be written as a file: its folder exists, it is no
    folder, and it may be written."""
    folder = path.parent
    if path.is_dir():
        problem = f"{path} is a folder; give a file's path, e.g. {path / 'run.json'}"
    elif not folder.is_dir():
        problem = (
            f"the folder {folder} does not exist; create it first (mkdir -p {folder}) or give "
            "a path in an existing folder"
        )
    elif not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        problem = f"{path} cannot be written (permission denied); give a path you can write to"
    else:
        return
    raise typer.BadParameter(problem, param_hint=option)


class RetrievalProgress:
    """Draws an evaluation on stderr: the corpus ingestion, then a spinner while scoring."""

    def ingesting(self) -> RichProgress:
        return RichProgress(stderr)

    def ingested(self, summary: IngestSummary) -> None:
        failed, skipped = len(summary.failed), summary.count(FileStatus.SKIPPED)
        stderr.print(
            f"ingested {summary.read} files into temporary "
            f"collection {summary.collection!r}: {summary.chunks_embedded} chunks, "
            f"{failed} failed"
            + (f", {skipped} skipped (not a type ragtune reads)" if skipped else "")
        )
        for result in summary.failed:  # as `ragtune ingest` lists them
            stderr.print(failed_line(result))

    def scoring(self, questions: int) -> AbstractContextManager[object]:
        return stderr.status(f"evaluating {questions} questions...")


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


@eval_app.command("route")
def eval_route(
    ctx: typer.Context,
    cases_file: Annotated[
        Path | None,
        typer.Option(
            "--cases",
            help='Labelled requests, JSONL: {"question" or "messages", "expected_route", '
            '"expected_adapter"?} per line.',
        ),
    ] = None,
    outcomes: Annotated[
        list[Path] | None,
        typer.Option(
            "--outcomes",
            help="Held-out paired outcomes (`ragtune router collect`): compare the learned "
            "router, the thresholds, always-X and the oracle by mean grade and label accuracy.",
        ),
    ] = None,
    router_model: Annotated[
        Path | None,
        typer.Option("--router-model", help="Learned router to compare (default: the server's)."),
    ] = None,
    suggest: Annotated[
        bool,
        typer.Option(
            "--suggest",
            help="No labels: propose thresholds from the collection itself (pseudo-queries from "
            "its chunks, the adapters' examples, general questions).",
        ),
    ] = False,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Collection to retrieve from.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Replay labelled requests through the router (no engine needed): accuracy, a confusion
    matrix, the misrouted requests, and thresholds that would separate the cases best. With
    --outcomes: the routing policies compared on graded answers.

    Example: ragtune eval route --cases route_cases.jsonl --collection handbook
    Example: ragtune eval route --outcomes held-out-outcomes.jsonl
    Example: ragtune eval route --suggest --collection handbook
    """
    if sum(x is not None for x in (cases_file, outcomes)) + suggest != 1:
        raise typer.BadParameter(
            "give one of --cases (labelled requests), --outcomes (graded routes) or --suggest"
        )
    if suggest:
        suggestions = suggest_for_deployment(command_settings(ctx).serving, collection)
        if as_json:
            stdout.print_json(json.dumps({t.setting: t.to_dict() for t in suggestions}))
        else:
            print_thresholds(suggestions, "thresholds from the collection (no labels)")
        return
    if outcomes is not None:
        policy_report(command_settings(ctx).serving, outcomes, router_model, as_json)
        return
    assert cases_file is not None
    report = evaluate_case_file(
        command_settings(ctx).serving,
        cases_file,
        collection=collection,
        reporter=RouteProgress(),
    )
    if as_json:
        stdout.print_json(json.dumps(report.to_dict()))
    else:
        print_route_report(report)


def print_thresholds(suggestions: list[ThresholdSuggestion], title: str) -> None:
    thresholds = Table(title=title)
    thresholds.add_column("setting")
    thresholds.add_column("applies to")
    for column in ("current", "accuracy", "suggested", "accuracy"):
        thresholds.add_column(column, justify="right")
    thresholds.add_column("should reach it: n, lowest", justify="right")
    thresholds.add_column("stay below it: n, highest", justify="right")
    for t in suggestions:
        thresholds.add_row(
            t.setting,
            t.score,
            f"{t.current:.3f}",
            _maybe(t.current_accuracy),
            _maybe(t.suggested),
            _maybe(t.accuracy),
            f"{t.positives}, {_maybe(t.lowest_positive)}",
            f"{t.negatives}, {_maybe(t.highest_negative)}",
        )
    stdout.print(thresholds)


def policy_report(
    settings: ServingSettings, files: list[Path], router_model: Path | None, as_json: bool
) -> None:
    from ragtune.evals.outcomes import read_outcomes
    from ragtune.evals.router_training import compare_policies, left_out_note

    path = router_model or route_model_path(settings)
    model = None
    if router_model is not None or path.exists():
        model = load_route_model(
            path, embedding_model=model_id_for(settings.retrieval.embedding_model)
        )
    report = compare_policies(read_outcomes(files), model)
    if as_json:
        stdout.print_json(json.dumps(report.to_dict()))
        return
    table = Table(title=f"routing policies on {report.cases} cases ({report.labelled} labelled)")
    table.add_column("policy")
    table.add_column("mean grade", justify="right")
    table.add_column("label accuracy", justify="right")
    table.add_column("routes")
    for score in report.policies:
        accuracy = "-" if score.label_accuracy is None else f"{score.label_accuracy:.3f}"
        routes = ", ".join(f"{r} {n}" for r, n in sorted(score.routes.items()))
        table.add_row(score.policy, f"{score.mean_grade:.3f}", accuracy, routes)
    stdout.print(table)
    if model is None:
        stdout.print(f"no learned router at {path}: `ragtune router train`")
    elif report.gap_closed is not None:
        stdout.print(
            f"the learned router closes {report.gap_closed:.0%} of the gap between the "
            "thresholds and the oracle"
        )
    if report.left_out:
        stdout.print(left_out_note(report.left_out))


class RouteProgress:
    """Draws a route evaluation on stderr: a spinner while loading, then a bar of the cases."""

    def loading(self) -> AbstractContextManager[object]:
        return stderr.status("loading the store, the embedding model and the adapters...")

    def routing(self, cases: int) -> AbstractContextManager[Callable[[CaseResult], None]]:
        return case_bar("route", cases)


@contextmanager
def case_bar(label: str, total: int | None) -> Iterator[Callable[[object], None]]:
    """A bar of cases on stderr (drawn on a terminal only); what it gives counts one case."""
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cases"),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda _: progress.advance(task)


def print_route_report(report: RouteReport) -> None:
    table = Table(title=f"routes: {report.cases} cases · collection {report.collection!r}")
    table.add_column("expected \\ chosen")
    for route in ROUTES:
        table.add_column(route, justify="right")
    table.add_column("cases", justify="right")
    for expected in ROUTES:
        row = report.confusion[expected]
        cells = [
            f"[green]{n}[/green]" if chosen == expected else (f"[red]{n}[/red]" if n else "0")
            for chosen, n in row.items()
        ]
        table.add_row(expected, *cells, str(sum(row.values())))
    stdout.print(table)
    correct = report.cases - len(report.misrouted)
    stdout.print(
        f"accuracy: {report.accuracy:.3f} ({correct}/{report.cases} cases got the expected route "
        f"and adapter; the route alone: {report.route_accuracy:.3f})"
    )

    print_thresholds(report.thresholds, "thresholds (balanced accuracy on the cases)")

    misrouted = report.misrouted
    if not misrouted:
        stdout.print("no misrouted cases")
        return
    cases = Table(title=f"{len(misrouted)} misrouted cases")
    cases.add_column("line", justify="right")
    cases.add_column("question")
    cases.add_column("expected")
    cases.add_column("got")
    cases.add_column("reason")
    for result in misrouted:
        cases.add_row(
            str(result.case.line),
            data(_shorten(result.case.question, 80)),
            data(_route_label(result.case.label, result.case.expected_adapter)),
            data(_route_label(result.route, result.adapter)),
            data(result.reason),
        )
    stdout.print(cases)


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _route_label(route: str, adapter: str | None) -> str:
    return f"{route} ({adapter})" if adapter else route


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@eval_app.command("compare")
def eval_compare(
    ctx: typer.Context,
    task: Annotated[
        Path,
        typer.Option(
            "--task",
            help="Examples of the task (JSONL), unseen by the adapter: e.g. its heldout.jsonl.",
        ),
    ],
    adapter: Annotated[str | None, typer.Option("--adapter", help="Adapter to compare.")] = None,
    metric: Annotated[str, typer.Option(help="rouge-l, exact or json-valid.")] = "rouge-l",
    shots: Annotated[int, typer.Option(min=0, help="Examples used as few-shot examples.")] = 3,
    max_examples: Annotated[int | None, typer.Option(min=1)] = None,
    max_tokens: Annotated[int, typer.Option(min=1)] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Prompting vs few-shot vs RAG vs the adapter on a task: does the adapter earn its place?

    Runs every example through the base model with the task's instruction, the same with
    few-shot examples, RAG over the collection, and the adapter; prints the task metric, mean
    latency and answer length of each and a recommendation, and stores the result in the
    adapter's manifest (`ragtune adapters show`). Needs the engine running.

    Example: ragtune eval compare --task .ragtune/adapters/titler/v1/heldout.jsonl --adapter titler
    """
    from ragtune.evals.compare import Metric, compare_on_task

    if metric not in get_args(Metric):
        raise typer.BadParameter("--metric is one of rouge-l, exact, json-valid")
    report = compare_on_task(
        command_settings(ctx).serving,
        task,
        adapter,
        metric=cast(Metric, metric),
        shots=shots,
        max_examples=max_examples,
        max_tokens=max_tokens,
    )
    if as_json:
        stdout.print_json(json.dumps(report.to_dict()))
        return
    table = Table(title=f"{report.metric} on {report.examples} examples ({report.shots} shots)")
    for column in ("approach", report.metric, "mean latency (s)", "tokens per answer"):
        table.add_column(column, justify="left" if column == "approach" else "right")
    for result in report.systems:
        table.add_row(
            result.system, f"{result.metric:.3f}", f"{result.latency_s:.2f}",
            f"{result.completion_tokens:.1f}",
        )  # fmt: skip
    stdout.print(table)
    stdout.print(report.recommendation)
