"""`ragtune serve`: the chat API on the embedded defaults (or on what the settings name)."""

from __future__ import annotations

import dataclasses
import signal
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from ragtune.cli.settings import command_settings
from ragtune.serving.engine.launcher import EngineLauncher

stderr = Console(stderr=True)


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    start_engine: Annotated[
        bool,
        typer.Option(
            "--start-engine/--no-start-engine",
            help="Start the engine if it is not running (ignored with RAGTUNE_VLLM_URL).",
        ),
    ] = True,
) -> None:
    """Serve the OpenAI-compatible chat API.

    Prepares the default model and starts the engine if needed (or attaches to RAGTUNE_VLLM_URL),
    opens the store, and answers on http://HOST:PORT/v1/chat/completions.

    Example: RAGTUNE_API_KEYS=secret ragtune serve --port 8080
    """
    import uvicorn

    from ragtune.retrieval.rerank import Reranker, check_reranker, load_reranker
    from ragtune.serving.app import create_app
    from ragtune.serving.components import Components, open_components
    from ragtune.serving.limits import server_options
    from ragtune.serving.observability import configure_logging
    from ragtune.serving.settings import ServingSettings

    settings = command_settings(ctx).serving
    api = settings.api.model_copy(
        update={k: v for k, v in (("host", host), ("port", port)) if v is not None}
    )
    settings = dataclasses.replace(settings, api=api)
    loaded: list[Reranker | None] = []  # the reranker, once loaded below (None: none set)

    def open_parts(configured: ServingSettings) -> Components:
        return open_components(configured, reranker=loaded[0] if loaded else None)

    # Refuses to start without keys before starting anything.
    app = create_app(settings, open_parts=open_parts)
    check_reranker(settings.retrieval)  # so is a reranker that is none, by its folder and config
    launcher = EngineLauncher(settings.engine)
    started_here = False
    # SIGTERM ends this command the way Ctrl-C does, through `finally`: uvicorn handles it, then
    # raises it again once shut down, and Python's default action would end the process there
    # without stopping the engine.
    signal.signal(signal.SIGTERM, exit_on_signal)
    try:
        if settings.engine.managed and start_engine:
            started_here = not launcher.status().running
            with stderr.status("starting the engine...") as spinner:
                # Tied: an engine started here ends when this process does, even killed.
                status = launcher.start(
                    on_wait=lambda s: spinner.update(f"waiting for the engine ({s:.0f} s)"),
                    tied=True,
                )
            stderr.print(f"engine ready at {status.url} ({status.base_model})")
        # What only loading the reranker finds (a tokenizer not its own, a head without weights)
        # stops the command here, the engine it started with it, with one line: in the app's
        # startup it was a logged traceback. After the engine, as the embedding model: an
        # engine on the same GPU measures its free memory before them.
        loaded.append(load_reranker(settings.retrieval))
        import torch

        torch.set_num_threads(api.torch_threads)
        configure_logging(api.log_format, api.log_level)
        stderr.print(f"ragtune API on http://{api.host}:{api.port} (Ctrl-C to stop)")
        # Logging as configured above (uvicorn's own config off); one line per request comes
        # from ragtune, with its id and route, instead of uvicorn's access log. On Ctrl-C or
        # SIGTERM, requests in flight get RAGTUNE_SHUTDOWN_TIMEOUT_S, then are cancelled.
        uvicorn.run(
            app,
            host=api.host,
            port=api.port,
            log_config=None,
            log_level=api.log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=api.shutdown_timeout_s,
            **server_options(api),
        )
    finally:
        if started_here:
            # An engine this command started goes with it; one that was running stays.
            launcher.stop()
            stderr.print("engine stopped")


def exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
