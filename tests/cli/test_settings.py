"""The settings tree the root command reads once and hands to every command."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ragtune.adapters.settings import AdapterSettings
from ragtune.cli.settings import CommandSettings, settings_classes
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.serving.settings import (
    ApiSettings,
    EngineSettings,
    FileSettings,
    GroundingSettings,
    RouterSettings,
)
from tests.support.cli import ragtune


def test_the_tree_holds_every_package_settings() -> None:
    assert set(settings_classes()) == {
        RetrievalSettings, IngestSettings, EngineSettings, AdapterSettings, RouterSettings,
        ApiSettings, GroundingSettings, FileSettings,
    }  # fmt: skip


def test_a_collection_named_on_the_command_line_is_checked_like_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAGTUNE_DATA_DIR", str(tmp_path))
    tree = CommandSettings()
    assert tree.retrieval_for(None) is tree.serving.retrieval
    named = tree.retrieval_for("handbook")
    assert (named.collection, named.data_dir) == ("handbook", tmp_path)
    for invalid in ("x", "a..b", "1.2.3.4"):  # the last two: the vector store's rule too
        with pytest.raises(ValidationError, match="invalid collection name"):
            tree.retrieval_for(invalid)
    assert tree.retrieval_for("a.b.c").collection == "a.b.c"
    # ragtune's own copies of a collection being rebuilt: hidden, and dropped by a rebuild.
    for reserved in ("handbook.ragtune-staging", "handbook.ragtune-replaced.v2"):
        with pytest.raises(ValidationError, match="kept for ragtune's copies"):
            tree.retrieval_for(reserved)


def test_every_package_may_be_configured_in_the_file(tmp_path: Path) -> None:
    config = tmp_path / "ragtune.toml"
    config.write_text("max_adapter_examples = 10\nchunk_overlap_tokens = 8\nrag_top_k = 3\n")
    result = ragtune("adapters", "list", "--json", data_dir=tmp_path, RAGTUNE_CONFIG=str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_config_file_that_is_missing_or_not_toml_is_an_error_not_the_defaults(
    tmp_path: Path,
) -> None:
    missing = ragtune(
        "adapters", "list", data_dir=tmp_path, RAGTUNE_CONFIG=str(tmp_path / "ragtun.toml")
    )
    assert missing.returncode == 2
    assert "ragtun.toml, which is not a file" in missing.stderr
    broken = tmp_path / "ragtune.toml"
    broken.write_text("rag_top_k = [\n")
    refused = ragtune("adapters", "list", data_dir=tmp_path, RAGTUNE_CONFIG=str(broken))
    assert refused.returncode == 2
    assert "is not valid TOML" in refused.stderr
    assert "Traceback" not in refused.stderr
    broken.write_text("rag_top_k = 3\n", encoding="utf-16")  # what PowerShell's > writes
    refused = ragtune("adapters", "list", data_dir=tmp_path, RAGTUNE_CONFIG=str(broken))
    assert refused.returncode == 2
    assert "save it as UTF-8" in refused.stderr
    assert "Traceback" not in refused.stderr
    # `none` reads no file, not even ./ragtune.toml (what the tests and benches run with).
    assert ragtune("adapters", "list", data_dir=tmp_path, RAGTUNE_CONFIG="none").returncode == 0
