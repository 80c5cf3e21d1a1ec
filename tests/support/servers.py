"""Processes the tests run against: free ports, a Chroma server, the settings of a real vLLM
engine started for the tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import ENGINE_API_KEY

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The engine's own environment (scripts/install-engine makes it; scripts/test runs that first).
ENGINE_PYTHON = Path(
    os.environ.get("RAGTUNE_ENGINE_PYTHON") or REPO / ".venv-engine" / "bin" / "python"
)


def content_length(head: bytes) -> int:
    """The content-length of a raw HTTP/1.1 request's or response's head (0 when it has none)."""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ChromaServer:
    """`chroma run` as its own process on loopback; can be stopped and started again on the
    same data and port."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        chroma = shutil.which("chroma", path=str(BIN)) or shutil.which("chroma")
        assert chroma, "the `chroma` command (from the chromadb package) is not installed"
        self.command = chroma
        self.path = path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        log = (self.path / "server.log").open("a")
        self.process = subprocess.Popen(
            [self.command, "run", "--path", str(self.path / "db"), "--host", "127.0.0.1",
             "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2):
                    return self.url
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()
                    pytest.fail(
                        f"chroma run did not start: {(self.path / 'server.log').read_text()}"
                    )
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def engine_settings_for(data_dir: Path, **overrides: Any) -> Any:
    from ragtune.serving.settings import EngineSettings

    if not ENGINE_PYTHON.is_file():
        pytest.fail(
            f"the engine environment is missing ({ENGINE_PYTHON}): run scripts/install-engine"
        )
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "engine_python": ENGINE_PYTHON,
        "engine_port": free_port(),
        # Two slots for two adapters: every slot is taken, the case where vLLM's CPU LoRA path
        # gave base-model rows the last slot's adapter (the plugin's reason to exist).
        "max_loras": 2,
        "max_lora_rank": 16,
        "max_model_len": 2048,
        "dtype": "float32",
        "startup_timeout_s": 600.0,
        # Required by the engine on every call; tests that reach it directly send it too.
        "engine_api_key": ENGINE_API_KEY,
        # The default model's tool-call format (`<tool_call>[...]</tool_call>`): tool_choice
        # "auto" works on the session's engine (APIs attached to it must say so too).
        "tool_call_parser": "xlam",
    }
    values.update(overrides)
    return EngineSettings(**values)
