"""`ragtune serve`: the chat API on the embedded defaults (or on what the settings name)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from serving.engine.launcher import EngineLauncher
from serving.state import ServingSettings

stderr = Console(stderr=True)


def serve(
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

    from serving.app import create_app
    from serving.observability import configure_logging

    settings = ServingSettings()
    api = settings.api.model_copy(
        update={k: v for k, v in (("host", host), ("port", port)) if v is not None}
    )
    settings.api = api
    app = create_app(settings)  # refuses to start without keys before starting anything
    launcher = EngineLauncher(settings.engine)
    started_here = False
    if settings.engine.managed and start_engine:
        started_here = not launcher.status().running
        with stderr.status("starting the engine...") as spinner:
            status = launcher.start(
                on_wait=lambda s: spinner.update(f"waiting for the engine ({s:.0f} s)")
            )
        stderr.print(f"engine ready at {status.url} ({status.base_model})")
    import torch

    torch.set_num_threads(api.torch_threads)
    configure_logging(api.log_format, api.log_level)
    stderr.print(f"ragtune API on http://{api.host}:{api.port} (Ctrl-C to stop)")
    try:
        # Logging as configured above (uvicorn's own config off); one line per request comes
        # from ragtune, with its id and route, instead of uvicorn's access log.
        uvicorn.run(
            app,
            host=api.host,
            port=api.port,
            log_config=None,
            log_level=api.log_level.lower(),
            access_log=False,
        )
    finally:
        if started_here:
            # An engine this command started goes with it; one that was running stays.
            launcher.stop()
            stderr.print("engine stopped")
