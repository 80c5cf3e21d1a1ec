"""`ragtune router ...`: teach the router from outcomes (collect paired outcomes, train)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ragtune.cli.eval import case_bar
from ragtune.cli.settings import command_settings
from ragtune.evals.outcomes import collect_case_file, read_outcomes
from ragtune.evals.router_training import TrainedRouter, left_out_note, train_router
from ragtune.retrieval.embedder import model_id_for
from ragtune.serving.components import outcomes_path, route_model_path

router_app = typer.Typer(
    help="Teach the router which route answers best: collect outcomes, train.",
    no_args_is_help=True,
)
stdout = Console()
stderr = Console(stderr=True)


@router_app.command("collect")
def collect(
    ctx: typer.Context,
    cases_file: Annotated[
        Path,
        typer.Option(
            "--cases",
            help='JSONL: {"question" or "messages", "reference"?, "expected_route"?, '
            '"expected_adapter"?, "source"?} per line.',
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Outcomes file to append to (default <data_dir>/router/outcomes.jsonl)."),
    ] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Collection to retrieve from.")
    ] = None,
    metric: Annotated[
        str,
        typer.Option(
            help="How answers are graded against a reference: rouge-l, exact, or "
            "package.module:function."
        ),
    ] = "rouge-l",
    max_tokens: Annotated[int, typer.Option(min=1, help="Answer bound of each request.")] = 128,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests at once.")] = 4,
    keep_text: Annotated[
        bool, typer.Option(help="Store the questions and answers with the grades.")
    ] = True,
) -> None:
    """Run each case through every route that could serve it (rag, base, and adapter /
    adapter+rag per matching adapter) on the running engine, grade every answer (against the
    case's reference, else by its grounding in the retrieved passages) and append the paired
    outcomes, with the features the router saw, for `ragtune router train`.

    Example: ragtune router collect --cases cases.jsonl --collection handbook
    """
    settings = command_settings(ctx).serving
    target = out or outcomes_path(settings)
    with case_bar("collect", None) as advance:
        outcomes = collect_case_file(
            settings, cases_file, target,
            collection=collection, metric=metric, max_tokens=max_tokens,
            concurrency=concurrency, keep_text=keep_text, on_case=advance,
        )  # fmt: skip
    table = Table(title=f"{len(outcomes)} cases collected -> {target}")
    table.add_column("route")
    table.add_column("answers", justify="right")
    table.add_column("mean grade", justify="right")
    table.add_column("best on", justify="right")
    grades: dict[str, list[float]] = {}
    best: dict[str, int] = {}
    for case in outcomes:
        for outcome in case.outcomes:
            grades.setdefault(outcome.route, []).append(outcome.grade)
        winner = max(case.outcomes, key=lambda o: o.grade)
        best[winner.route] = best.get(winner.route, 0) + 1
    for route, values in grades.items():
        table.add_row(
            route, str(len(values)), f"{sum(values) / len(values):.3f}", str(best.get(route, 0))
        )
    stdout.print(table)


@router_app.command("train")
def train(
    ctx: typer.Context,
    outcomes: Annotated[
        list[Path] | None,
        typer.Option(
            "--outcomes", help="Outcome files (default <data_dir>/router/outcomes.jsonl)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the router (default RAGTUNE_ROUTER_MODEL, else "
            "<data_dir>/router/model.json, which the server reads at start)."
        ),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the folds and the trees.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Fit a small classifier (logistic regression or boosted trees, chosen by cross-validated
    mean grade) from the router's features to the route that answered best, and store it; the
    server routes with it from its next start (the thresholds remain the fallback).

    Example: ragtune router train && ragtune eval route --outcomes held-out.jsonl
    """
    settings = command_settings(ctx).serving
    files = outcomes or [outcomes_path(settings)]
    trained = train_router(
        read_outcomes(files),
        embedding_model=model_id_for(settings.retrieval.embedding_model),
        folds=folds,
        seed=seed,
    )
    target = out or route_model_path(settings)
    trained.model.save(target)
    if as_json:
        stdout.print_json(json.dumps(_train_dict(trained, target)))
        return
    table = Table(title=f"router candidates ({folds}-fold cross-validation, {trained.cases} cases)")
    table.add_column("candidate")
    table.add_column("mean grade", justify="right")
    table.add_column("label accuracy", justify="right")
    for score in trained.candidates:
        chosen = " (chosen)" if score.name == trained.chosen else ""
        accuracy = "-" if score.label_accuracy is None else f"{score.label_accuracy:.3f}"
        table.add_row(score.name + chosen, f"{score.mean_grade:.3f}", accuracy)
    stdout.print(table)
    targets = ", ".join(f"{route} {n}" for route, n in sorted(trained.targets.items()))
    stdout.print(
        f"best route per case: {targets}; the thresholds' mean grade on the same cases: "
        f"{trained.thresholds_grade:.3f}\nwrote {target} (the server reads it at start)"
    )
    if trained.left_out:
        stdout.print(left_out_note(trained.left_out))


def _train_dict(trained: TrainedRouter, path: Path) -> dict[str, object]:
    return {
        "path": str(path),
        "chosen": trained.chosen,
        "cases": trained.cases,
        "targets": trained.targets,
        "thresholds_mean_grade": trained.thresholds_grade,
        "left_out": trained.left_out,
        "candidates": [vars(score) for score in trained.candidates],
    }
