"""Processes the tests run against: free ports, a Chroma server, the settings of a real vLLM
engine started for the tests."""

from __future__ import annotations

import functools
import os
import random
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


@functools.cache
def _unassigned_ports() -> range:
    """Ports the kernel never hands out by itself: outside its ephemeral range
    (`ip_local_port_range`, read once a run), the larger side of it, above the well-known and
    common ones."""
    try:
        fields = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        low, high = int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        low, high = 32768, 60999
    below, above = range(10_000, low), range(high + 1, 65_536)
    return below if len(below) >= len(above) else above


_HANDED: set[int] = set()
_PICK = random.SystemRandom()  # unaffected by a test plugin seeding `random` for each test


def free_port() -> int:
    """A loopback port nothing listens on, never the same twice in one run. Not one the kernel
    picks for port 0: it hands out that range to every socket bound to port 0 and every
    outgoing connection, and a starting vLLM opens many (a test's port for `ragtune serve`,
    free when chosen, was taken by one in the minute the engine took to start)."""
    ports = _unassigned_ports()
    for _ in range(200) if len(ports) > 1_000 else ():
        port = _PICK.choice(ports)
        if port in _HANDED:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED.add(port)
        return port
    with socket.socket() as s:  # no range of our own: the kernel's choice
        s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        _HANDED.add(chosen)
        return chosen


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
