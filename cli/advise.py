"""`ragtune advise`: should a task be prompted, retrieved or fine-tuned? A thin command over
`evals.advise`: options in, a progress line while it runs, the verdict and its tables out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ragtune.cli.eval import parse_ks
from ragtune.cli.settings import command_settings

stdout = Console()


def advise(
    ctx: typer.Context,
    task: Annotated[
        Path,
        typer.Argument(
            help='The task\'s examples, JSONL: {"instruction", "input", "output"} or '
            '{"messages": [...]} per line (one format throughout).'
        ),
    ],
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="A registered adapter to weigh.")
    ] = None,
    train: Annotated[
        bool,
        typer.Option(
            "--train",
            help="Train adapters on nested subsets (a learning curve); register the largest "
            "as --name.",
        ),
    ] = False,
    name: Annotated[str | None, typer.Option(help="Name of the adapter --train registers.")] = None,
    task_description: Annotated[
        str | None, typer.Option("--task", help="What the trained adapter is for.")
    ] = None,
    collection: Annotated[
        str | None,
        typer.Option(
            help="Collection of the retrieval variants (default: the default one); with "
            "--train, the adapter records it as the collection it was made alongside."
        ),
    ] = None,
    metric: Annotated[
        str,
        typer.Option(
            help="Deciding metric: rouge-l, exact, json-valid, json-schema, or a scorer "
            "package.module:function of (answer, reference) -> 0..1."
        ),
    ] = "rouge-l",
    schema: Annotated[
        Path | None, typer.Option(help="JSON schema of the answers (json-schema metric).")
    ] = None,
    dev: Annotated[int, typer.Option(min=5, help="Dev examples (at most a quarter).")] = 50,
    test: Annotated[int, typer.Option(min=5, help="Test examples (at most a quarter).")] = 50,
    shots: Annotated[str, typer.Option(help="Few-shot counts to try.")] = "1,3,8",
    sizes: Annotated[str, typer.Option(help="Training sizes of the learning curve.")] = "25,50,100",
    concurrency: Annotated[
        int,
        typer.Option(min=1, envvar="RAGTUNE_ADVISE_CONCURRENCY", help="Requests at once."),
    ] = 8,
    cost_requests: Annotated[
        int,
        typer.Option(
            min=1,
            help="Requests of the latency and throughput measurement, per system and "
            "concurrency level (taken from the test split).",
        ),
    ] = 16,
    margin: Annotated[
        float, typer.Option(min=0.0, help="How much better an adapter must be.")
    ] = 0.05,
    reasoning_tokens: Annotated[
        int, typer.Option(min=0, help="Extra answer tokens of the step-by-step variant.")
    ] = 192,
    price_per_1k_tokens: Annotated[float, typer.Option(min=0.0)] = 0.0005,
    price_per_training_hour: Annotated[float, typer.Option(min=0.0)] = 2.0,
    price_per_slot_hour: Annotated[float, typer.Option(min=0.0)] = 0.02,
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    rank: Annotated[int, typer.Option(min=1)] = 8,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 5e-4,
    max_length: Annotated[int, typer.Option(min=16, help="Tokens per example, at most.")] = 512,
    seed: Annotated[int, typer.Option()] = 0,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write advice.md, advice.json and pictures here."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Should this task be prompted, retrieved or fine-tuned? Measured, with a verdict.

    Walks the rule in order on the task's examples (split into few-shot/training, dev and
    test): prompting variants (instruction, format, few-shot by similarity, step by step,
    retrieval) chosen on dev and reported on test with their failure modes; an adapter (named,
    or trained on nested subsets with --train) on the same test split with a bootstrap
    interval; tokens, latency and throughput side by side; the verdict, stored in the
    adapter's manifest, which the router respects. Needs the engine running.

    Example: ragtune advise ../shared/eval/abstract2title.jsonl --train --name titler --report out
    """
    from ragtune.adapters.training import TrainingConfig
    from ragtune.evals.advise import AdviseOptions, advise_on_task
    from ragtune.evals.decision import Prices
    from ragtune.evals.metrics import read_schema

    options = AdviseOptions(
        adapter=adapter, train=train, name=name, task=task_description, collection=collection,
        dev=dev, test=test, shots=tuple(parse_ks(shots)), sizes=tuple(parse_ks(sizes)),
        concurrency=concurrency, cost_requests=cost_requests, seed=seed, margin=margin,
        reasoning_tokens=reasoning_tokens,
        prices=Prices(price_per_1k_tokens, price_per_training_hour, price_per_slot_hour),
        training=TrainingConfig(
            epochs=epochs, rank=rank, alpha=2 * rank, learning_rate=lr, max_length=max_length,
            seed=seed,
        ),
    )  # fmt: skip
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=as_json,
    )
    bars: dict[str, Any] = {}

    def on_answer(stage: str, done: int, total: int) -> None:
        progress.start()
        if stage not in bars:
            bars[stage] = progress.add_task(stage, total=total)
        progress.update(bars[stage], completed=done)

    try:
        result = advise_on_task(
            command_settings(ctx).serving,
            task,
            options,
            metric=metric,
            schema=read_schema(schema) if schema else None,
            progress=on_answer,
        )
    finally:
        progress.stop()
    if report is not None:
        from ragtune.evals.report import write_report

        written = write_report(result, report)
        if not as_json:
            stdout.print(f"report: {', '.join(str(p) for p in written)}")
    if as_json:
        stdout.print_json(json.dumps(result))
        return
    show_advice(result)


def show_advice(result: dict[str, Any]) -> None:
    metric = result["metric"]
    table = Table(title=f"{result['task']}: {metric}")
    for column in ("system", "split", metric, "prompt tokens", "answer tokens", "latency (s)"):
        table.add_column(column, justify="left" if column in ("system", "split") else "right")
    for row in [*result["variants"], *result["test"]]:
        table.add_row(
            Text(row["name"]), row["split"], f"{row['scores'][metric]:.3f}",
            f"{row['prompt_tokens']:.0f}", f"{row['completion_tokens']:.0f}",
            f"{row['latency_s']:.2f}",
        )  # fmt: skip
    stdout.print(table)
    for point in result["curve"]:
        stdout.print(
            f"learning curve: {point['size']} examples -> {point['scores'][metric]:.3f} "
            f"({point['training_seconds']:.0f} s)"
        )
    stdout.print(Text(f"Verdict: {result['verdict_words']}", style="bold"))
    for reason in result["reasons"]:
        stdout.print(Text(f"- {reason}"))
    for note in result["notes"]:
        stdout.print(Text(f"note: {note}"))
