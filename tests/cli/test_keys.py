"""`ragtune keys create/list/revoke`, in process (typer's CliRunner): the key is printed once,
only its digest stored; list never shows it; revoke says what went wrong in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragtune.cli.app import app
from ragtune.serving.tenants.service import KeyStore, keys_path


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("RAGTUNE_API_KEYS", "RAGTUNE_ADMIN_API_KEYS", "RAGTUNE_COLLECTION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAGTUNE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAGTUNE_CONFIG", "none")
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def test_create_list_and_revoke(data_dir: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(
        app,
        ["keys", "create", "--collections", "handbook,faq", "--adapters", "titler",
         "--name", "team a", "--json"],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    shown = json.loads(created.stdout)
    key, key_id = shown["key"], shown["id"]
    assert shown["collections"] == ["handbook", "faq"]
    assert shown["adapters"] == ["titler"]
    assert "sha256" not in shown
    assert KeyStore(keys_path(data_dir)).find(key) is not None
    assert key not in keys_path(data_dir).read_text()

    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
    for shown_value in (key_id, "team a", "handbook, faq"):
        assert shown_value in listed.stdout
    assert key not in listed.stdout
    as_json = json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout)
    assert [(k["id"], k["name"]) for k in as_json] == [(key_id, "team a")]

    revoked = runner.invoke(app, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0, revoked.output
    assert f"API key {key_id} revoked" in revoked.stdout
    assert KeyStore(keys_path(data_dir)).find(key) is None
    assert "no stored API keys" in runner.invoke(app, ["keys", "list"]).stdout


def test_create_prints_the_key_once_with_a_warning(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["keys", "create", "--collections", "handbook"])
    assert result.exit_code == 0, result.output
    (stored,) = KeyStore(keys_path(data_dir)).list()
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("rt_")]
    assert KeyStore(keys_path(data_dir)).find(line.strip()) == stored
    assert "cannot be shown again" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "revoke", "nope"], "no API key has the id 'nope'"),
        (["keys", "create", "--collections", " , "], "at least one collection"),
        (["keys", "create", "--collections", "a/b"], "invalid collection name"),
    ],
)
def test_mistakes_are_domain_errors_with_a_message(
    data_dir: Path, args: list[str], message: str
) -> None:
    # `main` turns these into one line and exit status 2; in process they surface as raised.
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert message in str(result.exception)
