"""`ragtune eval retrieval` end to end on the developers' small set, and `search` options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import ragtune, ragtune_json

pytestmark = pytest.mark.slow


def test_eval_on_the_ingested_small_corpus(
    ingested: tuple[Path, Any], eval_small: Path, tmp_path: Path
) -> None:
    data_dir, _ = ingested
    run_file = tmp_path / "run.json"
    report = ragtune_json(
        "eval", "retrieval", "--qa", eval_small / "qa.json", "--mode", "all",
        "--run-file", run_file, data_dir=data_dir,
    )  # fmt: skip
    assert report["questions"] == 174
    assert report["ceiling"] >= 170
    modes = report["modes"]
    assert set(modes) == {"hybrid", "dense", "lexical"}
    # A sane band around what bench/retrieval.py measures (0.85 / 0.72 for hybrid).
    assert 0.75 <= modes["hybrid"]["recall@5"] <= 0.95
    assert 0.60 <= modes["hybrid"]["mrr@10"] <= 0.85
    assert modes["lexical"]["recall@5"] < modes["hybrid"]["recall@5"]
    for metrics in modes.values():
        assert metrics["recall@1"] <= metrics["recall@5"] <= metrics["recall@10"]
    run = json.loads(run_file.read_text())
    hybrid_runs = run["modes"]["hybrid"]["runs"]
    assert len(hybrid_runs) == 174
    first = hybrid_runs[0]
    assert {"id", "question", "relevant_in_collection", "hits"} <= set(first)
    assert len(first["hits"]) == 10
    assert {"chunk_id", "text", "source", "relevant", "dense_rank", "lexical_rank"} <= set(
        first["hits"][0]
    )
    table = ragtune("eval", "retrieval", "--qa", eval_small / "qa.json", data_dir=data_dir)
    assert table.returncode == 0
    assert "ceiling:" in table.stdout
    assert "hybrid" in table.stdout


def test_eval_with_a_corpus_uses_a_temporary_collection(eval_small: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    faq_qa = [q for q in json.loads((eval_small / "qa.json").read_text())
              if q["source"] == "faq/installed.rst.txt"]  # fmt: skip
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps(faq_qa))
    corpus = eval_small / "corpus" / "faq"
    report = ragtune_json(
        "eval", "retrieval", "--qa", qa, "--corpus", corpus, "--k", "1,3", data_dir=data_dir
    )
    assert report["collection"].startswith("eval-")
    assert report["ceiling"] == report["questions"] == len(faq_qa)
    assert set(report["modes"]["hybrid"]) == {"recall@1", "recall@3", "mrr@10", "ndcg@10"}
    assert report["modes"]["hybrid"]["recall@3"] > 0.5
    # the temporary collection is gone
    result = ragtune("docs", "list", "--collection", report["collection"], data_dir=data_dir)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_bad_eval_input_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "qa.json"
    bad.write_text("{not json")
    result = ragtune("eval", "retrieval", "--qa", bad, data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "not a QA file" in result.stderr
    result = ragtune(
        "eval", "retrieval", "--qa", bad, "--mode", "fuzzy", data_dir=tmp_path / "data"
    )
    assert result.returncode == 2
    assert "--mode" in result.stderr
    conversation = [{"role": "assistant", "content": "Hello! How can I help?"}]
    bad.write_text(json.dumps([{"id": "q1", "messages": conversation, "answer_passage": "a"}]))
    result = ragtune("eval", "retrieval", "--qa", bad, data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "item 0 (id 'q1'): messages hold no user message with text" in result.stderr
    assert "Traceback" not in result.stderr


GOOD_QA = [
    {
        "id": "q1",
        "question": "How many days of leave do I get?",
        "answer_passage": "Employees get 25 days of annual leave per year.",
    }
]


@pytest.mark.parametrize("where", ["missing/run.json", "folder"])
def test_a_run_file_that_cannot_be_written_is_refused_before_any_work(
    tmp_path: Path, where: str
) -> None:
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps(GOOD_QA))
    (tmp_path / "folder").mkdir()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "leave.md").write_text("# Leave\n\nEmployees get 25 days of annual leave per year.\n")
    data_dir = tmp_path / "data"
    result = ragtune(
        "eval", "retrieval", "--qa", qa, "--corpus", corpus, "--run-file", tmp_path / where,
        data_dir=data_dir,
    )  # fmt: skip
    assert result.returncode == 2
    expected = "does not exist; create it first" if "/" in where else "is a folder"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists()  # nothing was ingested


def test_a_corpus_that_gives_no_chunks_is_an_error_naming_each_failed_file(
    tmp_path: Path,
) -> None:
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps(GOOD_QA))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "broken.pdf").write_text("hello")
    (corpus / "empty.md").write_text("")
    result = ragtune("eval", "retrieval", "--qa", qa, "--corpus", corpus, data_dir=tmp_path / "d")
    assert result.returncode == 2
    assert f"failed {corpus / 'broken.pdf'}: corrupt or unreadable PDF" in result.stderr
    assert f"failed {corpus / 'empty.md'}: empty file" in result.stderr
    assert "gave no chunks to evaluate: of its 2 files, 2 failed" in result.stderr
    assert "ceiling" not in result.stdout
    missing = ragtune(
        "eval", "retrieval", "--qa", qa, "--corpus", tmp_path / "gone", data_dir=tmp_path / "d"
    )
    assert missing.returncode == 2
    assert "no such file or folder" in missing.stderr


def test_answers_too_short_to_ever_match_are_named_in_a_warning(tmp_path: Path) -> None:
    qa = tmp_path / "qa.json"
    short = {"id": "short", "question": "Do I get leave?", "answer_passage": "Yes, 25 days."}
    qa.write_text(json.dumps([*GOOD_QA, short]))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "leave.md").write_text("# Leave\n\nEmployees get 25 days of annual leave per year.\n")
    result = ragtune("eval", "retrieval", "--qa", qa, "--corpus", corpus, data_dir=tmp_path / "d")
    assert result.returncode == 0, result.stderr
    assert "warning: 1 answer passage(s) under 5 words (short)" in " ".join(result.stderr.split())
    assert "ceiling: 1/2" in result.stdout


def test_search_modes_and_filters(ingested: tuple[Path, Any]) -> None:
    data_dir, _ = ingested
    question = "How do I make a Python script executable on Unix?"
    for mode in ("dense", "lexical", "hybrid"):
        hits = ragtune_json("search", question, "--mode", mode, "-k", "5", data_dir=data_dir)
        assert len(hits) == 5
        ranks = {"dense": "dense_rank", "lexical": "lexical_rank"}
        if mode in ranks:
            assert all(h[ranks[mode]] == h["rank"] for h in hits)
    filtered = ragtune_json(
        "search", question, "--filter", "source=tutorial/", "-k", "5", data_dir=data_dir
    )
    assert filtered
    assert all("/tutorial/" in h["source"] for h in filtered)
    expanded = ragtune_json("search", question, "--neighbours", "1", "-k", "2", data_dir=data_dir)
    assert all(h["context"] and h["text"] in h["context"] for h in expanded)
    shown = ragtune("search", question, "-k", "2", data_dir=data_dir)
    assert shown.returncode == 0
    assert "dense #" in shown.stdout
    assert "bm25 #" in shown.stdout
    bad = ragtune("search", question, "--filter", "source", data_dir=data_dir)
    assert bad.returncode == 2
    assert "key=value" in bad.stderr


def test_help_shows_examples(tmp_path: Path) -> None:
    for command in (("ingest",), ("search",), ("docs", "list"), ("docs", "rm"),
                    ("eval", "retrieval")):  # fmt: skip
        result = ragtune(*command, "--help", data_dir=tmp_path)
        assert result.returncode == 0
        assert "Example: ragtune" in result.stdout, command


def test_a_typo_in_the_config_file_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "ragtune.toml"
    config.write_text('colection = "handbook"\n')
    result = ragtune("docs", "list", data_dir=tmp_path, RAGTUNE_CONFIG=str(config))
    assert result.returncode == 2
    assert "colection" in result.stderr


def test_settings_come_from_the_config_file(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\nText about owls.\n")
    config = tmp_path / "ragtune.toml"
    config.write_text('collection = "handbook"\n')
    assert ragtune("ingest", docs, data_dir=tmp_path, RAGTUNE_CONFIG=str(config)).returncode == 0
    listed = ragtune_json("docs", "list", "--collection", "handbook", data_dir=tmp_path)
    assert [Path(d["source"]).name for d in listed] == ["a.md"]
