"""`ragtune engine start|stop|status`: a real vLLM process started, found again, and stopped."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ragtune.serving.engine.launcher import EngineLauncher, failure_reason, process_alive
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME, default_model_dir
from tests.support.cli import ragtune
from tests.support.servers import ENGINE_PYTHON, free_port


def engine_env(**extra: str) -> dict[str, str]:
    env = {
        "RAGTUNE_ENGINE_PYTHON": str(ENGINE_PYTHON),
        "RAGTUNE_MAX_MODEL_LEN": "2048",
        "RAGTUNE_STARTUP_TIMEOUT_S": "600",
    }
    env.update(extra)
    return env


@pytest.mark.engine
def test_start_is_idempotent_status_reports_and_stop_ends_the_process(
    models_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = engine_env(
        RAGTUNE_MODEL=str(default_model_dir(models_dir)), RAGTUNE_ENGINE_PORT=str(free_port())
    )
    started = ragtune("engine", "start", "--json", data_dir=data_dir, **env)
    assert started.returncode == 0, started.stderr
    first = json.loads(started.stdout)
    try:
        assert first["running"]
        assert first["managed"]
        assert first["base_model"] == DEFAULT_MODEL_NAME
        assert process_alive(first["pid"])
        assert Path(first["log"]).is_file()

        again = json.loads(ragtune("engine", "start", "--json", data_dir=data_dir, **env).stdout)
        assert again["pid"] == first["pid"]  # found the running engine, started nothing

        status = ragtune("engine", "status", data_dir=data_dir, **env)
        assert status.returncode == 0
        assert "ready" in status.stdout
        assert DEFAULT_MODEL_NAME in status.stdout
    finally:
        stopped = ragtune("engine", "stop", data_dir=data_dir, **env)
    assert stopped.returncode == 0, stopped.stderr
    assert "engine stopped" in stopped.stdout
    assert not process_alive(first["pid"])

    after = ragtune("engine", "status", "--json", data_dir=data_dir, **env)
    assert after.returncode == 1
    assert json.loads(after.stdout)["running"] is False
    assert "no engine was running" in ragtune("engine", "stop", data_dir=data_dir, **env).stdout


@pytest.mark.engine
def test_failed_start_prints_the_reason_and_the_log_tail(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    result = ragtune(
        "engine",
        "start",
        data_dir=tmp_path / "data",
        **engine_env(RAGTUNE_MODEL=str(broken), RAGTUNE_ENGINE_PORT=str(free_port())),
    )
    assert result.returncode == 2
    assert "the engine exited while starting" in result.stderr
    assert "last lines of" in result.stderr
    assert "no-such-architecture" in result.stderr
    assert not (tmp_path / "data" / "engine" / "engine.json").exists()


def test_missing_engine_environment_names_the_install_command(tmp_path: Path) -> None:
    result = ragtune(
        "engine",
        "start",
        data_dir=tmp_path / "data",
        RAGTUNE_ENGINE_PYTHON=str(tmp_path / "no-venv" / "bin" / "python"),
        RAGTUNE_MODEL=str(tmp_path),
        RAGTUNE_ENGINE_PORT=str(free_port()),
    )
    assert result.returncode == 2
    assert "scripts/install-engine" in result.stderr


def test_port_taken_by_another_process_is_refused(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = ragtune(
            "engine",
            "start",
            data_dir=tmp_path / "data",
            **engine_env(RAGTUNE_MODEL=str(tmp_path), RAGTUNE_ENGINE_PORT=str(port)),
        )
    assert result.returncode == 2
    assert f"port {port}" in result.stderr
    assert "RAGTUNE_ENGINE_PORT" in result.stderr


@pytest.mark.engine
def test_attached_engine_is_used_and_never_stopped(engine: Any, tmp_path: Path) -> None:
    env = {"RAGTUNE_VLLM_URL": engine.engine_url}
    status = ragtune("engine", "status", "--json", data_dir=tmp_path / "data", **env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["running"] is True
    assert report["managed"] is False
    assert report["base_model"] == DEFAULT_MODEL_NAME

    assert ragtune("engine", "start", data_dir=tmp_path / "data", **env).returncode == 0
    refused = ragtune("engine", "stop", data_dir=tmp_path / "data", **env)
    assert refused.returncode == 2
    assert "will not stop it" in refused.stderr
    assert EngineLauncher(engine).status().running


def test_attached_engine_that_is_down_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = ragtune("engine", "start", data_dir=tmp_path / "data", RAGTUNE_VLLM_URL=url)
    assert result.returncode == 2
    assert f"no vLLM answers at {url}" in result.stderr


def test_failure_reason_picks_the_last_error_line() -> None:
    tail = "\n".join(
        [
            "INFO starting",
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in <module>',
            "ValueError: Unrecognized model in /models/broken",
        ]
    )
    assert failure_reason(tail) == "ValueError: Unrecognized model in /models/broken"
    assert failure_reason("INFO nothing wrong") == "the engine exited without logging an error"


def test_stale_pid_file_never_signals_an_unrelated_process(tmp_path: Path) -> None:
    """The engine died and its pid went to another program: stop must not kill that one."""
    data_dir = tmp_path / "data"
    (data_dir / "engine").mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (data_dir / "engine" / "engine.json").write_text(json.dumps({"pid": bystander.pid}))
        env = {"RAGTUNE_ENGINE_PORT": str(free_port())}
        status = json.loads(ragtune("engine", "status", "--json", data_dir=data_dir, **env).stdout)
        assert status["running"] is False
        assert status["pid"] is None
        assert "no engine was running" in ragtune("engine", "stop", data_dir=data_dir, **env).stdout
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
