"""`ragtune serve` stops in bounded time and takes the engine it started with it: Ctrl-C with a
long whole request in flight ends within RAGTUNE_SHUTDOWN_TIMEOUT_S (the request is answered
503 and cancelled, the engine stopped), and a `ragtune serve` killed outright leaves no engine
running on its port. Real processes: `ragtune serve`, its vLLM and vLLM's own children; the
watchdog alone, around stand-in processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragtune.serving.engine.launcher import ORPHAN_GRACE_S, WATCHDOG
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from tests.support.cli import ENGINE_API_KEY, serve_process
from tests.support.processes import (
    group_members,
    own_engine_env,
    port_open,
    reaped_group,
    wait_until,
)
from tests.support.servers import free_port

CHAT = "shutdown-key"
SHUTDOWN_TIMEOUT_S = 3
# Stopping vLLM (SIGTERM to its group, then SIGKILL after 30 s at most) on a busy CPU.
ENGINE_STOP_S = 30.0


def engine_pgid(data_dir: Path) -> int | None:
    """The engine's process group (its leader's pid, from the pid file), once it has one."""
    try:
        pid: int = json.loads((data_dir / "engine" / "engine.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None
    return pid


def requests_running(engine_port: int) -> float:
    response = httpx.get(
        f"http://127.0.0.1:{engine_port}/metrics",
        headers={"Authorization": f"Bearer {ENGINE_API_KEY}"},
        timeout=10,
    )
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        if family.name == "vllm:num_requests_running"
        for sample in family.samples
    )


def watched(engine_code: str, grace_s: float) -> tuple[subprocess.Popen[bytes], int]:
    """The watchdog around `python -c engine_code` as the launcher starts it (its own session),
    and the write end of its lifeline, held here as `ragtune serve` holds it."""
    watch_end, lifeline = os.pipe()
    engine = [sys.executable, "-c", engine_code]
    watchdog = subprocess.Popen(
        [sys.executable, "-I", str(WATCHDOG), str(watch_end), str(grace_s), "--", *engine],
        start_new_session=True,
        pass_fds=(watch_end,),
    )
    os.close(watch_end)
    return watchdog, lifeline


def test_the_watchdog_ends_the_whole_group_once_its_starter_is_gone() -> None:
    # An engine that ignores SIGTERM and has a child of its own, as vLLM has.
    stubborn = (
        "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen(['sleep', '300']); time.sleep(300)"
    )
    watchdog, lifeline = watched(stubborn, grace_s=1.0)
    with reaped_group(lambda: watchdog.pid):
        assert wait_until(lambda: len(group_members(watchdog.pid)) == 3, 30)
        os.close(lifeline)  # what the kernel does when `ragtune serve` dies, SIGKILL included
        assert wait_until(lambda: not group_members(watchdog.pid), 1.0 + 10)
    watchdog.wait(timeout=10)


def test_a_stopped_engine_ends_its_watchdog_with_its_status() -> None:
    watchdog, lifeline = watched("import time; time.sleep(300)", grace_s=1.0)
    try:
        with reaped_group(lambda: watchdog.pid):
            assert wait_until(lambda: len(group_members(watchdog.pid)) == 2, 30)
            os.killpg(watchdog.pid, signal.SIGTERM)  # `ragtune engine stop`
            # The watchdog outlived the signal and reports the engine's end, as a shell would.
            assert watchdog.wait(timeout=10) == 128 + signal.SIGTERM
            assert not group_members(watchdog.pid)
    finally:
        os.close(lifeline)


@pytest.mark.engine
def test_ctrl_c_with_a_whole_request_in_flight_ends_in_bounded_time(
    models_dir: Path, tmp_path: Path
) -> None:
    data_dir, engine_port = tmp_path / "data", free_port()
    env = own_engine_env(
        models_dir,
        engine_port,
        RAGTUNE_API_KEYS=CHAT,
        RAGTUNE_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S),
    )
    answers: list[Any] = []
    with (
        reaped_group(lambda: engine_pgid(data_dir)),
        serve_process(data_dir, free_port(), ready_timeout_s=600, **env) as (process, url),
    ):
        pgid = engine_pgid(data_dir)
        assert pgid is not None
        assert group_members(pgid)

        def long_request() -> None:
            body = {
                "model": DEFAULT_MODEL_NAME,
                "messages": [{"role": "user", "content": "Write a very long story."}],
                "ragtune": {"route": "base"},
                "max_tokens": 1800,  # minutes of generation on this CPU
                "ignore_eos": True,
            }
            try:
                answers.append(
                    httpx.post(
                        f"{url}/v1/chat/completions",
                        json=body,
                        headers={"Authorization": f"Bearer {CHAT}"},
                        timeout=600,
                    )
                )
            except httpx.HTTPError as exc:
                answers.append(exc)

        client = threading.Thread(target=long_request, daemon=True)
        client.start()
        assert wait_until(lambda: requests_running(engine_port) >= 1, 60)

        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        process.wait(timeout=SHUTDOWN_TIMEOUT_S + ENGINE_STOP_S + 30)
        took = time.monotonic() - interrupted
        client.join(timeout=10)
        # The engine this `ragtune serve` started went with it (checked before the clean-up).
        assert not group_members(pgid)
        assert not port_open(engine_port)

    assert took < SHUTDOWN_TIMEOUT_S + ENGINE_STOP_S
    # The request was cancelled and answered, not left to generate 1,800 tokens first.
    (answer,) = answers
    assert isinstance(answer, httpx.Response), answer
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "server_shutting_down"
    assert answer.headers["retry-after"]
    log = (data_dir.parent / f"serve-{url.rsplit(':', 1)[1]}.log").read_text()
    assert "engine stopped" in log
    assert "Traceback" not in log


@pytest.mark.engine
def test_a_killed_serve_leaves_no_engine_running(models_dir: Path, tmp_path: Path) -> None:
    data_dir, engine_port = tmp_path / "data", free_port()
    env = own_engine_env(models_dir, engine_port, RAGTUNE_API_KEYS=CHAT)
    with (
        reaped_group(lambda: engine_pgid(data_dir)),
        serve_process(data_dir, free_port(), ready_timeout_s=600, **env) as (process, _),
    ):
        pgid = engine_pgid(data_dir)
        assert pgid is not None
        # The engine and the processes vLLM started (engine core, workers) share its group.
        assert len(group_members(pgid)) >= 3
        process.kill()  # SIGKILL: no handler, no `finally` runs in `ragtune serve`
        process.wait()
        gone = wait_until(lambda: not group_members(pgid), ORPHAN_GRACE_S + 20)
        assert gone, f"left running: {group_members(pgid)}"
        assert not port_open(engine_port)
