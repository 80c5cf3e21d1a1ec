"""`ragtune serve` with an engine of its own, and what is left of that engine's processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ragtune.serving.engine.models import default_model_dir
from tests.support.servers import ENGINE_PYTHON


def own_engine_env(models_dir: Path, engine_port: int, **extra: str) -> dict[str, str]:
    """Settings for a `ragtune serve` that starts its own engine (no RAGTUNE_VLLM_URL)."""
    return {
        "RAGTUNE_ENGINE_PYTHON": str(ENGINE_PYTHON),
        "RAGTUNE_ENGINE_PORT": str(engine_port),
        "RAGTUNE_MODEL": str(default_model_dir(models_dir)),
        "RAGTUNE_MAX_MODEL_LEN": "2048",
        "RAGTUNE_STARTUP_TIMEOUT_S": "600",
        **extra,
    }


def group_members(pgid: int) -> list[int]:
    """Live processes (zombies excluded) in process group `pgid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(group) == pgid and state != "Z":
                members.append(int(stat.parent.name))
    return members


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@contextmanager
def reaped_group(pgid_of: Callable[[], int | None]) -> Iterator[None]:
    """Whatever the test leaves of an engine's process group is killed at the end, so that a
    failing test does not leave an engine running."""
    try:
        yield
    finally:
        pgid = pgid_of()
        if pgid is not None and group_members(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
