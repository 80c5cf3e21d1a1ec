"""Run the installed `ragtune` command as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

RAGTUNE = str(Path(sys.executable).parent / "ragtune")
# The key of the engines tests start (the session's `engine` fixture included), and what every
# `ragtune` command run here sends them; RAGTUNE_ENGINE_API_KEY="" lets ragtune generate one.
ENGINE_API_KEY = "ragtune-tests-engine-key"


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
    env.update(
        RAGTUNE_DATA_DIR=str(data_dir),
        RAGTUNE_CONFIG="none",  # no ragtune.toml from the working directory
        RAGTUNE_ENGINE_API_KEY=ENGINE_API_KEY,
        HF_HUB_OFFLINE="1",
        ANONYMIZED_TELEMETRY="False",
        COLUMNS="200",
    )
    env.update(extra)
    return env


def ragtune(
    *args: str | Path, data_dir: Path, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAGTUNE, *map(str, args)],
        env=env_for(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ragtune_json(*args: str | Path, data_dir: Path, **env: str) -> Any:
    result = ragtune(*args, "--json", data_dir=data_dir, **env)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


@contextmanager
def ragtune_serve(
    data_dir: Path, port: int, *, wait_ready: bool = True, **env: str
) -> Iterator[str]:
    """`ragtune serve` as its own process (as in production) until the block ends; yields its
    URL once GET /ready answers 200 (once GET /health does, without `wait_ready`)."""
    with serve_process(data_dir, port, wait_ready=wait_ready, **env) as (_, url):
        yield url


@contextmanager
def serve_process(
    data_dir: Path,
    port: int,
    *,
    wait_ready: bool = True,
    ready_timeout_s: float = 120.0,
    **env: str,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`ragtune_serve`, yielding the process too (to signal it) and waiting `ready_timeout_s`
    (longer when it starts its own engine). Its output goes to `<data_dir>/../serve-<port>.log`."""
    probe = "/ready" if wait_ready else "/health"
    log_path = data_dir.parent / f"serve-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [RAGTUNE, "serve", "--port", str(port)],
            env=env_for(data_dir, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + ready_timeout_s
        try:
            while True:
                try:
                    if httpx.get(f"{url}{probe}", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ragtune serve did not get ready:\n{log_path.read_text()}")
                time.sleep(0.3)
            yield process, url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
