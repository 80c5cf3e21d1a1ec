"""`ragtune tune embedder`: a collection re-embedded with a model tuned on its own chunks, under a
new model identity that every reader follows; a dry run, an interrupted or refused run change
nothing; --revert goes back."""

from __future__ import annotations

import json
from pathlib import Path

from ragtune.retrieval.embedder import TUNED_PREFIX, collection_embedder, load_embedder
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import open_store
from ragtune.serving.retrievers import RetrieverCache
from tests.support.cli import ragtune, ragtune_json

QUICK = ("--steps", "2", "--batch-size", "4", "--held-out", "20")


def stored(data_dir: Path, name: str) -> tuple[str, dict[str, str], str]:
    """(embedding model, chunk id -> text, the collection's calibration) as stored."""
    settings = RetrievalSettings(data_dir=data_dir)
    with open_store(settings, "read") as store:
        collection = store.collection(name, "sentence-transformers/all-MiniLM-L6-v2")
        chunks = {c.id: c.text or "" for c in collection.scan(with_text=True)}
        names = [info.name for info in store.list_collections()]
        assert names == [name]  # no staging copy shows (or is left)
        return collection.embedding_model, chunks, str(collection.metadata().get("calibration"))


def test_tune_embedder_adopts_a_tuned_model_every_reader_follows(
    faq_docs: Path, tmp_path: Path
) -> None:
    data_dir = faq_docs  # the small corpus's FAQ in the collection faq-docs
    assert (
        ragtune("tune", "retrieval", "-c", "faq-docs", "--store", data_dir=data_dir).returncode == 0
    )
    model, chunks, calibration = stored(data_dir, "faq-docs")
    assert model == "sentence-transformers/all-MiniLM-L6-v2"
    assert calibration != "None"

    dry = ragtune_json("tune", "embedder", "-c", "faq-docs", *QUICK, "--dry-run", data_dir=data_dir)
    assert dry["adopted"] is False
    assert dry["pseudo_queries"]["held_out"] == 20
    assert stored(data_dir, "faq-docs") == (model, chunks, calibration)
    assert not (data_dir / "embedders").exists() or not any((data_dir / "embedders").iterdir())

    tuned = ragtune_json("tune", "embedder", "-c", "faq-docs", *QUICK, "--force", data_dir=data_dir)
    assert tuned["adopted"] is True
    assert tuned["model"].startswith(TUNED_PREFIX + "faq-docs-")
    assert tuned["training"]["steps"] == 2
    new_model, new_chunks, new_calibration = stored(data_dir, "faq-docs")
    assert new_model == tuned["model"]
    assert new_chunks == chunks  # the same chunks, re-embedded
    assert new_calibration == "None"  # measured with the old vectors: dropped
    folder = data_dir / "embedders" / tuned["model"].removeprefix(TUNED_PREFIX)
    manifest = json.loads((folder / "ragtune-embedder.json").read_text())
    assert manifest["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["collection"] == "faq-docs"

    # The CLI's search, ingestion and the server's retrievers read it with the tuned model.
    hits = ragtune_json("search", "Why is Python slow?", "-c", "faq-docs", data_dir=data_dir)
    assert hits
    assert all(hit["metadata"]["embedding_model"] == new_model for hit in hits)
    defaults = RetrievalSettings()
    assert hits[0]["fusion"]["from"] == "tuned defaults"  # BM25 weighs less beside it
    assert hits[0]["fusion"]["lexical_weight"] == defaults.tuned_lexical_weight
    listed = ragtune("docs", "list", "-c", "faq-docs", data_dir=data_dir)
    assert "defaults for a tuned embedder" in " ".join(listed.stdout.split())
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "llamas.md").write_text("# Llamas\nLlamas grow wool that is spun into yarn.\n")
    assert ragtune("ingest", extra, "-c", "faq-docs", data_dir=data_dir).returncode == 0
    hits = ragtune_json("search", "llama wool yarn", "-c", "faq-docs", data_dir=data_dir)
    assert hits[0]["metadata"]["display_source"].endswith("llamas.md")
    settings = RetrievalSettings(data_dir=data_dir, collection="faq-docs")
    with open_store(settings, "read") as store:
        collection = store.collection("faq-docs", "sentence-transformers/all-MiniLM-L6-v2")
        embedder = collection_embedder(collection, settings)
        assert embedder.model_id == new_model
        retrievers = RetrieverCache(store, load_embedder(settings), settings)
        assert retrievers.embedder_for("faq-docs").model_id == new_model
        found = retrievers.search(
            "llama wool yarn", embedder.embed_query("llama wool yarn"), k=1, collection="faq-docs"
        )
        assert str(found[0].metadata["display_source"]).endswith("llamas.md")
        assert LexicalIndexes.for_store(data_dir, store).current(collection, save=False)

    reverted = ragtune_json("tune", "embedder", "-c", "faq-docs", "--revert", data_dir=data_dir)
    assert reverted["reverted"] is True
    model_after, chunks_after, _ = stored(data_dir, "faq-docs")
    assert model_after == model
    assert set(chunks) <= set(chunks_after)
    assert not folder.exists()
    hits = ragtune_json("search", "Why is Python slow?", "-c", "faq-docs", data_dir=data_dir)
    assert hits[0]["fusion"]["from"] == "defaults"
    assert hits[0]["fusion"]["lexical_weight"] == defaults.lexical_weight
    again = ragtune_json("tune", "embedder", "-c", "faq-docs", "--revert", data_dir=data_dir)
    assert again["reverted"] is False


def test_tune_embedder_refuses_bad_input_and_changes_nothing(
    faq_docs: Path, tmp_path: Path
) -> None:
    data_dir = faq_docs  # the small corpus's FAQ in the collection faq-docs
    missing = ragtune("tune", "embedder", "-c", "nothing-here", *QUICK, data_dir=data_dir)
    assert missing.returncode == 2
    assert "nothing-here" in missing.stderr
    before = stored(data_dir, "faq-docs")
    bad = tmp_path / "dev.json"
    bad.write_text("{not json")
    refused = ragtune(
        "tune", "embedder", "-c", "faq-docs", *QUICK, "--dev-set", bad, data_dir=data_dir
    )
    assert refused.returncode == 2
    assert "not a QA file" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert stored(data_dir, "faq-docs") == before

    # A tuned model whose folder is gone: searching says what to do; --revert still works.
    tuned = ragtune_json("tune", "embedder", "-c", "faq-docs", *QUICK, "--force", data_dir=data_dir)
    folder = data_dir / "embedders" / tuned["model"].removeprefix(TUNED_PREFIX)
    for path in sorted(folder.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    folder.rmdir()
    lost = ragtune("search", "Why is Python slow?", "-c", "faq-docs", data_dir=data_dir)
    assert lost.returncode == 2
    assert "--revert" in lost.stderr
    assert "Traceback" not in lost.stderr
    reverted = ragtune_json("tune", "embedder", "-c", "faq-docs", "--revert", data_dir=data_dir)
    assert reverted["reverted"] is True
    assert stored(data_dir, "faq-docs")[1] == before[1]
