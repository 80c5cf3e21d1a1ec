"""`ragtune tune retrieval`: a collection calibrates its own fusion; searches and `docs list`
show what is in force; bad input changes nothing stored."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import ragtune, ragtune_json


def test_tune_retrieval_stores_a_calibration_searches_use(faq_docs: Path) -> None:
    data_dir = faq_docs  # the small corpus's FAQ in the collection faq-docs

    def fusion() -> dict[str, object]:
        hits = ragtune_json(
            "search", "Why is Python slow?", "-c", "faq-docs", "-k", "2", data_dir=data_dir
        )
        assert len(hits) == 2
        assert hits[0]["fusion"] == hits[1]["fusion"]
        return hits[0]["fusion"]

    assert fusion()["from"] == "defaults"
    listed = ragtune("docs", "list", "-c", "faq-docs", data_dir=data_dir)
    assert "shipped defaults" in listed.stdout

    dry = ragtune_json("tune", "retrieval", "-c", "faq-docs", "--dry-run", data_dir=data_dir)
    assert dry["stored"] is False
    assert dry["calibration"]["pseudo_queries"] >= 20
    assert fusion()["from"] == "defaults"  # a dry run stores nothing

    tuned = ragtune_json(
        "tune", "retrieval", "-c", "faq-docs", "--queries", "80", data_dir=data_dir
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

    reset = ragtune("tune", "retrieval", "-c", "faq-docs", "--reset", data_dir=data_dir)
    assert reset.returncode == 0, reset.stderr
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
