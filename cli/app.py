"""The `ragtune` command: one entry point, subcommands from each package."""

from __future__ import annotations

import sys
import tomllib
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from ragtune.adapters.errors import AdapterError
from ragtune.cli import advise as advise_cli
from ragtune.cli import ingest as ingest_cli
from ragtune.cli import interrupt
from ragtune.cli import search as retrieval_cli
from ragtune.cli.adapters import adapters_app
from ragtune.cli.engine import engine_app, models_app
from ragtune.cli.eval import eval_app
from ragtune.cli.keys import keys_app
from ragtune.cli.router import router_app
from ragtune.cli.serve import serve
from ragtune.cli.settings import CommandSettings, settings_classes
from ragtune.cli.show import in_markup
from ragtune.cli.tune import tune_app
from ragtune.evals.errors import EvalError
from ragtune.ingest.errors import IngestError
from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.settings import (
    DEFAULT_CONFIG_FILE,
    NO_CONFIG_FILE,
    config_file,
    unknown_config_keys,
)
from ragtune.serving.errors import ServingError

app = typer.Typer(
    name="ragtune",
    help="RAG-first assistant server: index documents, search them, serve answers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(ingest_cli.ingest)
app.add_typer(ingest_cli.docs_app, name="docs")
app.command()(retrieval_cli.search)
app.add_typer(eval_app, name="eval")
app.command()(advise_cli.advise)
app.add_typer(tune_app, name="tune")
app.add_typer(models_app, name="models")
app.add_typer(engine_app, name="engine")
app.command()(serve)
app.add_typer(adapters_app, name="adapters")
app.add_typer(router_app, name="router")
app.add_typer(keys_app, name="keys")

stderr = Console(stderr=True)


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False,
) -> None:
    """RAG-first assistant server: index documents, search them, serve answers.

    Settings come from RAGTUNE_* environment variables or a TOML file (RAGTUNE_CONFIG,
    default ./ragtune.toml).
    """
    # The composition root: the settings tree is read here, once, and every command takes its
    # part from the context.
    path = config_file()
    if path is not None and not path.is_file():
        # Read as no file at all, a mistyped name ran every command on the defaults.
        raise typer.BadParameter(
            f"RAGTUNE_CONFIG names {path}, which is not a file: give the path of a TOML "
            f"config file, `{NO_CONFIG_FILE}` for none, or unset it (./{DEFAULT_CONFIG_FILE} "
            "is read when it exists)"
        )
    try:
        unknown = unknown_config_keys(*settings_classes())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(
            f"the config file {path} is not valid TOML in UTF-8 ({exc}): fix it (save it as "
            "UTF-8), or point RAGTUNE_CONFIG at another file"
        ) from None
    except OSError as exc:
        raise typer.BadParameter(f"the config file {path} cannot be read ({exc})") from None
    if unknown:
        raise typer.BadParameter(f"unknown keys in the config file: {', '.join(unknown)}")
    ctx.obj = CommandSettings()


def main() -> None:
    """Console entry point: domain errors become one line on stderr and exit status 2."""
    interrupt.install()
    try:
        # Without standalone mode click returns the exit code of `typer.Exit` instead.
        code = app(standalone_mode=False)
        if code == 130 or interrupt.requested():  # typer's translation of Ctrl-C, or one lost
            _interrupted()
        sys.exit(code if isinstance(code, int) else 0)
    except (IngestError, RetrievalError, ServingError, AdapterError, EvalError) as exc:
        stderr.print(f"[red]error:[/red] {in_markup(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        stderr.print(f"[red]error:[/red] invalid setting: {in_markup(problems)}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        stderr.print("interrupted: the store is consistent; run the same command again to finish")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:  # click's wrapping of Ctrl-C
        _interrupted()
    except Exception as exc:
        # Usage errors (bad options or values): typer's click raises them with `show()`.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        raise


def _interrupted() -> None:
    stderr.print("interrupted: what was stored is consistent; run the same command again to finish")
    sys.exit(130)
