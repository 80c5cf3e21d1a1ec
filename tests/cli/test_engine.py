"""The engine's Python is found from any folder: the setting, then beside the installation, then
the per-user location `scripts/install-engine` fills; when missing, the error says where it
looked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from ragtune.cli import engine as engine_cli
from ragtune.serving.engine import launcher
from ragtune.serving.engine.launcher import engine_venvs, find_engine_python, user_engine_venv
from ragtune.serving.errors import EngineStartError
from ragtune.serving.settings import EngineSettings
from tests.support.cli import RAGTUNE, env_for
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]


def fake_python(path: Path, exit_code: int) -> Path:
    """An executable named like a Python that answers every call with `exit_code`."""
    path.parent.mkdir(parents=True)
    path.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    path.chmod(0o755)
    return path


def test_the_places_looked_at_do_not_depend_on_the_working_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    places = engine_venvs()
    assert all(p.is_absolute() and not p.is_relative_to(tmp_path / "work") for p in places)
    # Beside the installation first: the checkout an editable install runs from.
    assert places[0] == REPO / ".venv-engine"
    assert places[-1] == tmp_path / "share" / "ragtune" / "engine-venv"

    monkeypatch.delenv("XDG_DATA_HOME")
    assert user_engine_venv() == Path.home() / ".local" / "share" / "ragtune" / "engine-venv"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/share")  # not absolute: ignored, as XDG says
    assert user_engine_venv() == Path.home() / ".local" / "share" / "ragtune" / "engine-venv"


def test_the_setting_wins_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    python = fake_python(tmp_path / "elsewhere" / "bin" / "python", 0)
    assert find_engine_python(EngineSettings(engine_python=python)) == python

    missing = tmp_path / "nowhere" / "python"
    with pytest.raises(EngineStartError, match="RAGTUNE_ENGINE_PYTHON") as raised:
        find_engine_python(EngineSettings(engine_python=missing))
    assert str(missing) in str(raised.value)
    assert "scripts/install-engine" in str(raised.value)


def test_the_per_user_location_serves_when_nothing_is_beside_the_installation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # As for a ragtune installed from a wheel: no engine environment beside it.
    monkeypatch.setattr(launcher, "ENGINE_VENV", ".venv-engine-absent")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    monkeypatch.chdir(tmp_path)
    settings = EngineSettings()

    with pytest.raises(EngineStartError, match="the engine environment is missing") as raised:
        find_engine_python(settings)
    message = str(raised.value)
    for place in engine_venvs():
        assert str(place / "bin" / "python") in message  # every place looked at
    assert "scripts/install-engine" in message

    python = fake_python(tmp_path / "share" / "ragtune" / "engine-venv" / "bin" / "python", 0)
    assert find_engine_python(settings) == python


def test_engine_commands_work_from_any_folder(tmp_path: Path) -> None:
    """`ragtune engine ...` outside the checkout: status answers, and a start resolves the
    engine's Python without the working folder (here the one it finds refuses the probe)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data_dir = tmp_path / "data"

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RAGTUNE, "engine", *args],
            cwd=elsewhere,
            env=env_for(data_dir, RAGTUNE_ENGINE_PORT=str(free_port()), **env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    status = run("status", "--json")
    assert status.returncode == 1, status.stderr  # not running, and said so
    assert json.loads(status.stdout)["running"] is False

    without_vllm = fake_python(tmp_path / "engine-venv" / "bin" / "python", 3)
    started = run("start", RAGTUNE_ENGINE_PYTHON=str(without_vllm))
    assert started.returncode == 2
    assert f"{without_vllm} lacks vLLM" in started.stderr
    assert "Traceback" not in started.stderr

    started = run("start", RAGTUNE_ENGINE_PYTHON=str(tmp_path / "missing" / "python"))
    assert started.returncode == 2
    assert "the engine environment is missing: RAGTUNE_ENGINE_PYTHON is" in started.stderr
    assert not (elsewhere / ".ragtune").exists()  # nothing written in the working folder


def test_engine_status_shows_the_engines_words_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's log lines and errors hold brackets ("[rank0]", "[/x]"): they are no markup."""
    console = Console(record=True, width=200)
    monkeypatch.setattr(engine_cli, "stdout", console)
    status = launcher.EngineStatus(
        url="http://127.0.0.1:8011",
        managed=True,
        running=False,
        log="/srv/engine[1]/vllm.log",
        detail="[rank0]: CUDA error [/x] out of memory",
    )
    engine_cli.show_status(status, as_json=False)
    shown = console.export_text()
    assert "[rank0]: CUDA error [/x] out of memory" in shown
    assert "/srv/engine[1]/vllm.log" in shown
