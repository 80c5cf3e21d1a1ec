"""`ragtune tune retrieval`: a collection calibrates its own fusion; searches and `docs list`
show what is in force; bad input changes nothing stored."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ragtune.retrieval.calibration import CALIBRATION_KEY
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import open_store
from tests.support.cli import ragtune, ragtune_json

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def test_tune_retrieval_stores_a_calibration_searches_use_when_asked(faq_docs: Path) -> None:
    data_dir = faq_docs  # the small corpus's FAQ in the collection faq-docs

    def fusion() -> dict[str, object]:
        hits = ragtune_json(
            "search", "Why is Python slow?", "-c", "faq-docs", "-k", "2", data_dir=data_dir
        )
        assert len(hits) == 2
        assert hits[0]["fusion"] == hits[1]["fusion"]
        return hits[0]["fusion"]

    def listed_fusion() -> str:
        """What `docs list` says of the fusion in force (it reads what searches read, and
        does not load the embedding model: a quarter of a search's time)."""
        listed = ragtune("docs", "list", "-c", "faq-docs", data_dir=data_dir)
        assert listed.returncode == 0, listed.stderr
        return listed.stdout

    assert fusion()["from"] == "defaults"
    listed = ragtune("docs", "list", "-c", "faq-docs", data_dir=data_dir)
    assert "shipped defaults" in listed.stdout

    dry = ragtune_json("tune", "retrieval", "-c", "faq-docs", "--dry-run", data_dir=data_dir)
    assert dry["stored"] is False
    assert dry["calibration"]["pseudo_queries"] >= 20
    assert "search fusion: shipped defaults (" in listed_fusion()  # a dry run stores nothing

    shown = ragtune("tune", "retrieval", "-c", "faq-docs", "--queries", "80", data_dir=data_dir)
    assert shown.returncode == 0, shown.stderr
    assert "(nothing stored)" in shown.stdout
    assert "Not stored" in shown.stdout
    assert "RAGTUNE_LEXICAL_WEIGHT=" in shown.stdout  # how to try it without storing it
    assert "search fusion: shipped defaults (" in listed_fusion()  # measuring alone stores nothing
    both = ragtune("tune", "retrieval", "-c", "faq-docs", "--store", "--dry-run", data_dir=data_dir)
    assert both.returncode == 2
    assert "contradict" in both.stderr

    tuned = ragtune_json(
        "tune", "retrieval", "-c", "faq-docs", "--queries", "80", "--store", data_dir=data_dir
    )
    chosen = tuned["calibration"]
    assert tuned["stored"] is True
    assert chosen["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert chosen["mrr"] >= chosen["default_mrr"]
    in_force = fusion()
    assert in_force["from"] == "calibration"
    assert (in_force["lexical_weight"], in_force["rrf_k"]) == (
        chosen["lexical_weight"],
        chosen["rrf_k"],
    )
    listed = ragtune("docs", "list", "-c", "faq-docs", data_dir=data_dir)
    assert in_force["method"] == chosen["fusion"]
    if chosen["fusion"] == "rrf":
        assert f"RRF, lexical weight {chosen['lexical_weight']}, rrf_k" in listed.stdout
    else:
        assert f"score fusion, lexical weight {chosen['lexical_weight']}" in listed.stdout
    assert "calibrated" in listed.stdout
    # An explicit setting still wins, and says so.
    hits = ragtune_json(
        "search", "Why is Python slow?", "-c", "faq-docs", data_dir=data_dir, RAGTUNE_RRF_K="33"
    )
    assert hits[0]["fusion"]["from"] == "settings"
    assert hits[0]["fusion"]["rrf_k"] == 33
    listed = ragtune("docs", "list", "-c", "faq-docs", data_dir=data_dir, RAGTUNE_RRF_K="33")
    assert "as configured" in listed.stdout
    assert "calibrated" not in listed.stdout
    # The listing names every weight in force (a dense weight under BM25's was left out).
    listed = ragtune(
        "docs", "list", "-c", "faq-docs", data_dir=data_dir, RAGTUNE_DENSE_WEIGHT="0.5"
    )
    assert "dense weight 0.5, lexical weight" in listed.stdout

    dry = ragtune("tune", "retrieval", "-c", "faq-docs", "--reset", "--dry-run", data_dir=data_dir)
    assert dry.returncode == 0, dry.stderr
    assert "would search with the shipped defaults (score fusion, lexical weight" in dry.stdout
    assert "search fusion: calibrated," in listed_fusion()
    dry_json = ("tune", "retrieval", "-c", "faq-docs", "--reset", "--dry-run")
    assert ragtune_json(*dry_json, data_dir=data_dir) == {"collection": "faq-docs", "reset": False}
    assert "search fusion: calibrated," in listed_fusion()
    reset = ragtune_json(
        "tune", "retrieval", "-c", "faq-docs", "--reset", "--json", data_dir=data_dir
    )
    assert reset == {"collection": "faq-docs", "reset": True}
    assert fusion()["from"] == "defaults"


def test_tune_retrieval_refuses_what_it_cannot_calibrate(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    missing = ragtune("tune", "retrieval", "-c", "nothing-here", data_dir=data_dir)
    assert missing.returncode == 2
    assert "nothing-here" in missing.stderr
    small = tmp_path / "small"
    small.mkdir()
    (small / "note.md").write_text("# Note\nA single short note about llamas and their wool.\n")
    assert ragtune("ingest", small, "-c", "tiny-docs", data_dir=data_dir).returncode == 0
    refused = ragtune("tune", "retrieval", "-c", "tiny-docs", data_dir=data_dir)
    assert refused.returncode == 2
    assert "20 are needed" in refused.stderr
    assert "Traceback" not in refused.stderr
    listed = ragtune("docs", "list", "-c", "tiny-docs", data_dir=data_dir)
    assert "shipped defaults" in listed.stdout  # nothing stored
    # Over a calibration searches refuse (another model's), which stays stored: the way out.
    other = {"lexical_weight": 1.0, "rrf_k": 5, "embedding_model": "other-model"}
    store_raw_calibration(data_dir, "tiny-docs", json.dumps(other))
    refused = ragtune("tune", "retrieval", "-c", "tiny-docs", "--store", data_dir=data_dir)
    assert refused.returncode == 2
    assert "20 are needed" in refused.stderr
    assert "ragtune tune retrieval --collection tiny-docs --reset" in refused.stderr


def test_reset_and_store_contradict_each_other(tmp_path: Path) -> None:
    both = ragtune(
        "tune", "retrieval", "-c", "any", "--reset", "--store", data_dir=tmp_path / "data"
    )
    assert both.returncode == 2
    assert "--reset and --store contradict each other" in both.stderr
    assert not (tmp_path / "data").exists()  # refused before the store is opened


def store_raw_calibration(data_dir: Path, collection: str, text: str) -> None:
    """Write a calibration as something else would (an older ragtune, another model, a hand)."""
    with open_store(RetrievalSettings(data_dir=data_dir), "write") as store:
        store.collection(collection, MODEL).set_metadata_value(CALIBRATION_KEY, text)


def test_a_calibration_searches_refuse_is_replaced_by_the_command_they_advise(
    faq_docs: Path,
) -> None:
    data_dir = faq_docs
    other = {"lexical_weight": 1.0, "rrf_k": 5, "embedding_model": "other-model"}
    store_raw_calibration(data_dir, "faq-docs", json.dumps(other))

    def search() -> subprocess.CompletedProcess[str]:
        return ragtune("search", "Why is Python slow?", "-c", "faq-docs", data_dir=data_dir)

    refused = search()
    assert refused.returncode == 2
    assert "other-model" in refused.stderr
    assert "ragtune tune retrieval --collection faq-docs --store" in refused.stderr
    assert "--reset" in refused.stderr  # the other way out

    # The listing shows the problem instead of failing.
    listed = ragtune("docs", "list", "-c", "faq-docs", data_dir=data_dir)
    assert listed.returncode == 0, listed.stderr
    assert "documents in 'faq-docs'" in listed.stdout
    assert "other-model" in listed.stdout
    listed = ragtune("docs", "list", "-c", "faq-docs", "--json", data_dir=data_dir)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)
    assert "other-model" in listed.stderr

    dry = ragtune_json("tune", "retrieval", "-c", "faq-docs", "--dry-run", data_dir=data_dir)
    assert dry["stored"] is False
    assert "other-model" in dry["ignored_calibration"]
    assert search().returncode == 2  # a dry run leaves it stored
    # What it shows says searches fail now, and that the comparison needs it gone first.
    shown = ragtune("tune", "retrieval", "-c", "faq-docs", data_dir=data_dir)
    assert shown.returncode == 0, shown.stderr
    assert "before: a refused calibration, searches failing" in shown.stdout
    assert "ragtune tune retrieval --collection faq-docs --reset first" in shown.stdout

    tuned = ragtune("tune", "retrieval", "-c", "faq-docs", "--store", data_dir=data_dir)
    assert tuned.returncode == 0, tuned.stderr
    assert "other-model" in tuned.stderr
    assert "ignored" in tuned.stderr
    hits = ragtune_json("search", "Why is Python slow?", "-c", "faq-docs", data_dir=data_dir)
    assert hits[0]["fusion"]["from"] == "calibration"


def test_tune_retrieval_says_when_explicit_settings_win_over_it(faq_docs: Path) -> None:
    data_dir = faq_docs
    explicit = {"RAGTUNE_LEXICAL_WEIGHT": "0.6"}
    told = ragtune(
        "tune", "retrieval", "-c", "faq-docs", "--dry-run", data_dir=data_dir, **explicit
    )
    assert told.returncode == 0, told.stderr
    assert "the settings in force" in told.stdout
    assert "the defaults" not in told.stdout
    assert "searches would not use it" in told.stdout
    assert "lexical_weight" in told.stdout
    assert "before: settings (score fusion, lexical weight 0.6)" in told.stdout
    as_json = ragtune_json(
        "tune", "retrieval", "-c", "faq-docs", "--dry-run", data_dir=data_dir, **explicit
    )
    assert as_json["overridden_by"] == ["lexical_weight"]


def test_fusion_settings_that_cannot_fuse_are_refused_before_any_search(faq_docs: Path) -> None:
    refused = ragtune(
        "search",
        "Why is Python slow?",
        "-c",
        "faq-docs",
        data_dir=faq_docs,
        RAGTUNE_FUSION="rrf",
        RAGTUNE_RRF_K="-1",
    )
    assert refused.returncode == 2
    assert "rrf_k" in refused.stderr
    assert "Traceback" not in refused.stderr
    # BM25 alone is a setting: tune retrieval measures against it.
    dry = ragtune_json(
        "tune",
        "retrieval",
        "-c",
        "faq-docs",
        "--dry-run",
        data_dir=faq_docs,
        RAGTUNE_DENSE_WEIGHT="0",
    )
    assert 0.0 <= dry["calibration"]["default_mrr"] <= 1.0
