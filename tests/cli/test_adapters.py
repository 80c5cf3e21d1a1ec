"""`ragtune adapters list/show/train` on adapters trained alongside a collection: whether its
documents changed since, read from a real embedded Chroma store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.adapters.provenance import CollectionSnapshot
from ragtune.adapters.registry import MANIFEST, AdapterManifest, AdapterRegistry
from ragtune.adapters.settings import AdapterSettings
from ragtune.retrieval.embedder import model_id_for
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord, Collection, open_store
from tests.support.cli import ragtune
from tests.support.servers import free_port

LATER = "2025-03-01T12:00:00+00:00"


def document(collection: Collection, doc: str, version: str, ingested_at: str) -> None:
    metadata: dict[str, str | int | float | bool] = {
        "source": f"/srv/docs/{doc}.md",
        "doc_id": doc,
        "doc_hash": version,
        "ingested_at": ingested_at,
    }
    collection.add([ChunkRecord(f"{doc}-0", f"{doc} text", metadata, [1.0, 0.0, 0.0])])


def register(data_dir: Path, name: str, recorded: CollectionSnapshot | None) -> None:
    manifest = AdapterManifest(
        name=name, base_model="base", rank=8, alpha=16, target_modules=["q_proj"],
        task=f"The {name} task.", weights_sha256="0" * 64, training_collection=recorded,
        created="2025-01-01T00:00:00Z",
    )  # fmt: skip
    folder = AdapterRegistry(AdapterSettings(data_dir=data_dir).adapters_dir).path(manifest)
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(manifest.model_dump_json())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """titler trained alongside `handbook`, whose refunds document changed since; coder
    trained alongside none."""
    data_dir = tmp_path / "data"
    settings = RetrievalSettings(data_dir=data_dir)
    with open_store(settings, "write") as store:
        handbook = store.collection("handbook", model_id_for(settings.embedding_model), create=True)
        document(handbook, "refunds", "v1", "2025-01-01T00:00:00+00:00")
        document(handbook, "hours", "v1", "2025-01-01T00:00:00+00:00")
        register(data_dir, "titler", CollectionSnapshot.of(handbook))
        register(data_dir, "coder", None)
        document(handbook, "refunds", "v2", LATER)
    return data_dir


def cli(data_dir: Path, *args: str | Path) -> str:
    # No engine answers there: `list` says so instead of waiting for one.
    result = ragtune(*args, data_dir=data_dir, RAGTUNE_VLLM_URL=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_list_marks_the_adapter_whose_documents_changed(data_dir: Path) -> None:
    rows = {row["name"]: row for row in json.loads(cli(data_dir, "adapters", "list", "--json"))}
    assert (rows["titler"]["stale"], rows["titler"]["changed_documents"]) == (True, 1)
    assert (rows["coder"]["stale"], rows["coder"]["changed_documents"]) == (False, 0)
    table = cli(data_dir, "adapters", "list")
    assert "stale" in table
    titler = next(line for line in table.splitlines() if "titler" in line)
    assert "yes (1 document)" in titler


def test_show_names_the_changed_documents_and_since_when(data_dir: Path) -> None:
    shown = cli(data_dir, "adapters", "show", "titler")
    assert "handbook at revision" in shown
    assert "2 documents" in shown
    assert "yes: 1 changed in 'handbook' since training (2 documents then)" in shown
    assert f"- changed /srv/docs/refunds.md (ingested {LATER})" in shown
    assert "stale" not in cli(data_dir, "adapters", "show", "coder")


def test_training_alongside_a_missing_collection_is_refused_before_any_work(
    data_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "titles.jsonl"
    data.write_text(json.dumps({"instruction": "Title:", "input": "x", "output": "y"}) + "\n")
    result = ragtune(
        "adapters", "train", data, "--name", "new", "--task", "Titles.",
        "--collection", "no-such-collection", data_dir=data_dir,
    )  # fmt: skip
    assert result.returncode == 2  # a domain error: one line, no traceback
    assert "error: collection 'no-such-collection' does not exist" in result.stderr
    assert not (AdapterSettings(data_dir=data_dir).adapters_dir / "new").exists()
