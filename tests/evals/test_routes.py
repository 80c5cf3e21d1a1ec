"""`ragtune eval route` on real material: Python FAQ questions over the ingested Python docs,
abstract -> title prompts for a registered "titler" adapter, and small talk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragtune.adapters.registry import AdapterRegistry
from ragtune.adapters.settings import AdapterSettings
from ragtune.evals.routes import balanced_accuracy, evaluate_routes, load_cases, suggest_threshold
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord
from ragtune.serving.components import assemble
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.errors import RouteCasesError
from ragtune.serving.settings import EngineSettings, RouterSettings, ServingSettings
from tests.support.cli import ragtune
from tests.support.fakes import FakeEmbedder, InMemoryStore
from tests.support.serving import copy_of

REPO = Path(__file__).resolve().parents[2]
CASES = REPO / "tests" / "data" / "route_cases.jsonl"
ABSTRACTS = REPO.parent / "shared" / "eval" / "abstract2title.jsonl"
TITLER_TASK = "Write the title of a scientific article from its abstract."


@pytest.fixture(scope="module")
def routed_data_dir(
    ingested: tuple[Path, Any],
    lora_adapters: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A copy of the ingested data dir with a "titler" adapter registered (rows 0-19 of
    abstract2title as its example prompts; the case file uses rows 100-129)."""
    source, _ = ingested
    data_dir = copy_of(source, tmp_path_factory, "route-eval")
    rows = [json.loads(line) for line in ABSTRACTS.read_text(encoding="utf-8").splitlines()[:20]]
    AdapterRegistry(data_dir / "adapters").add(
        lora_adapters["alpha"],
        "titler",
        TITLER_TASK,
        base_model="SmolLM2-135M-Instruct",
        examples=[f"{row['instruction']} {row['input']}" for row in rows],
    )
    return data_dir


@pytest.fixture(scope="module")
def report(routed_data_dir: Path) -> dict[str, Any]:
    result = ragtune("eval", "route", "--cases", CASES, "--json", data_dir=routed_data_dir)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.mark.slow
def test_default_thresholds_route_the_real_cases(report: dict[str, Any]) -> None:
    cases = len(CASES.read_text(encoding="utf-8").splitlines())
    assert report["cases"] == cases
    assert report["route_accuracy"] >= 0.9, [r for r in report["results"] if not r["correct"]]
    assert report["accuracy"] >= 0.9
    confusion = report["confusion"]
    assert set(confusion) == set(report["routes"]) == {"rag", "adapter", "adapter+rag", "base"}
    assert sum(n for row in confusion.values() for n in row.values()) == cases
    # Every chosen adapter is the one registered.
    assert {r["adapter"] for r in report["results"] if r["adapter"]} <= {"titler"}
    first = report["results"][0]
    assert {"line", "source", "question", "route", "reason", "scores"} <= set(first)
    assert {"evidence_top", "adapter_match"} <= set(first["scores"])


@pytest.mark.slow
def test_thresholds_are_suggested_from_the_scores(report: dict[str, Any]) -> None:
    thresholds = report["thresholds"]
    assert set(thresholds) == {"evidence_threshold", "adapter_threshold"}
    evidence, adapter = thresholds["evidence_threshold"], thresholds["adapter_threshold"]
    assert evidence["current"] == RouterSettings().evidence_threshold
    assert (evidence["positives"], evidence["negatives"]) == (30, 20)
    assert (adapter["positives"], adapter["negatives"]) == (30, 50)
    for suggestion in (evidence, adapter):
        assert 0 < suggestion["suggested"] < 1
        # The suggestion lies between the closest cases of either side.
        assert suggestion["highest_negative"] < suggestion["suggested"]
        assert suggestion["suggested"] < suggestion["lowest_positive"]
        assert suggestion["balanced_accuracy"] >= suggestion["current_balanced_accuracy"]


@pytest.mark.slow
def test_the_table_shows_the_matrix_and_the_misrouted(routed_data_dir: Path) -> None:
    # A threshold above most abstracts' match: those cases are misrouted, and listed.
    result = ragtune(
        "eval", "route", "--cases", CASES, data_dir=routed_data_dir,
        RAGTUNE_ADAPTER_THRESHOLD="0.8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "expected \\ chosen" in result.stdout
    assert "accuracy:" in result.stdout
    assert "evidence_threshold" in result.stdout
    assert "0.800" in result.stdout  # the threshold in force
    assert "misrouted cases" in result.stdout
    assert "please write an title based on this abstract" in result.stdout
    assert "adapter (titler)" in result.stdout


def test_a_bad_case_file_names_the_line(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"question": "How?", "expected_route": "rag"}\n{"question": "Why?",\n')
    result = ragtune("eval", "route", "--cases", cases, data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "line 2" in result.stderr
    assert "not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr

    cases.write_text(
        '{"question": "How?", "expected_route": "rag"}\n\n'
        '{"question": "Why?", "expected_route": "documents"}\n'
    )
    result = ragtune("eval", "route", "--cases", cases, data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "line 3" in result.stderr
    assert "expected_route" in result.stderr

    result = ragtune("eval", "route", "--cases", tmp_path / "none.jsonl", data_dir=tmp_path)
    assert result.returncode == 2
    assert "no such case file" in result.stderr


def test_a_case_the_server_would_refuse_is_refused_naming_its_line(tmp_path: Path) -> None:
    """A conversation with an image part, or a tool result without its call's id, is a 400 at
    the server; as a case it was routed on its text, a score for a request no client can send."""
    image = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
    ]
    bad = [
        {"messages": [{"role": "user", "content": image}], "expected_route": "rag"},
        {"messages": [{"role": "user", "content": "Weather?"}, {"role": "tool", "content": "18"},
                      {"role": "user", "content": "And tomorrow?"}], "expected_route": "base"},
    ]  # fmt: skip
    for case, says in zip(bad, ("'image_url' part", "tool_call_id"), strict=True):
        cases = tmp_path / "cases.jsonl"
        cases.write_text('{"question": "How?", "expected_route": "rag"}\n' + json.dumps(case))
        with pytest.raises(RouteCasesError, match=f"line 2.*{says}"):
            load_cases(cases)


def test_a_case_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # As Windows editors save UTF-8: the mark is not part of the first line's JSON.
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"question": "How?", "expected_route": "rag"}\n', encoding="utf-8-sig")
    assert [(c.question, c.label) for c in load_cases(cases)] == [("How?", "rag")]


def test_help_shows_an_example(tmp_path: Path) -> None:
    result = ragtune("eval", "route", "--help", data_dir=tmp_path)
    assert result.returncode == 0
    assert "Example: ragtune eval route" in result.stdout


def test_suggested_threshold_separates_hand_made_scores() -> None:
    # Separable: the midpoint of the gap between the sides.
    assert suggest_threshold([0.5, 0.6, 0.7], [0.1, 0.2, 0.3]) == pytest.approx((0.4, 1.0))
    # Overlapping: 0.475 keeps every negative out and 3 of 4 positives in (0.875); 0.25 would
    # let one negative in to keep every positive (0.833).
    positives, negatives = [0.3, 0.6, 0.7, 0.8], [0.1, 0.2, 0.35]
    threshold, accuracy = suggest_threshold(positives, negatives) or (0.0, 0.0)
    assert threshold == pytest.approx(0.475)
    assert accuracy == pytest.approx(0.875)
    assert balanced_accuracy(positives, negatives, 0.25) == pytest.approx(5 / 6)
    # Nothing to separate.
    assert suggest_threshold([0.5], []) is None
    assert suggest_threshold([0.5], [0.5]) is None


def test_a_follow_up_case_is_routed_with_the_conversation(tmp_path: Path) -> None:
    """Conversations are routed as the chat path routes them: a follow-up that says nothing of
    its topic finds the documents of the question before it (fake embedder and store)."""
    question = "Within how many days are invoices refunded after a refund request?"
    follow_up = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "Within thirty days."},
        {"role": "user", "content": "And how do I turn that off?"},
    ]
    cases_file = tmp_path / "cases.jsonl"
    cases_file.write_text(
        json.dumps({"messages": follow_up, "expected_route": "rag"})
        + "\n"
        + json.dumps({"question": "Good morning!", "expected_route": "base"})
        + "\n"
    )
    cases = load_cases(cases_file)
    assert [(c.question, c.history) for c in cases] == [
        ("And how do I turn that off?", (question,)),
        ("Good morning!", ()),
    ]

    settings = ServingSettings(
        retrieval=RetrievalSettings(data_dir=tmp_path),
        engine=EngineSettings(data_dir=tmp_path),
        adapters=AdapterSettings(data_dir=tmp_path),
    )
    embedder, store = FakeEmbedder(), InMemoryStore()
    passage = "Invoices are refunded within thirty days of the refund request."
    store.collection("default", embedder.model_id, create=True).add(
        [ChunkRecord("refunds", passage, {"source": "refunds.md"}, embedder.embed([passage])[0])]
    )
    engines = EnginePool([EngineClient("http://127.0.0.1:9")], slots=1)  # never called
    parts = assemble(
        settings, store=store, embedder=embedder, engines=engines, tokenizer=None,
        base_model="base-model",
    )  # fmt: skip
    report = evaluate_routes(parts, cases)
    assert [(r.route, r.correct) for r in report.results] == [("rag", True), ("base", True)]
    assert report.to_dict()["results"][0]["history"] == [question]


@pytest.mark.slow
def test_thresholds_suggested_without_labels_route_the_labelled_cases(
    routed_data_dir: Path, report: dict[str, Any]
) -> None:
    result = ragtune("eval", "route", "--suggest", "--json", data_dir=routed_data_dir)
    assert result.returncode == 0, result.stderr
    suggested = json.loads(result.stdout)
    assert set(suggested) == {"evidence_threshold", "adapter_threshold"}
    evidence = suggested["evidence_threshold"]
    assert evidence["positives"] >= 150  # pseudo-queries from the chunks
    assert evidence["negatives"] >= 20 + 20  # general questions + the titler's examples
    # Judged on the labelled cases the suggestion never saw.
    results = report["results"]
    rag = [r["scores"]["evidence_top"] for r in results if r["expected_route"] == "rag"]
    base = [r["scores"]["evidence_top"] for r in results if r["expected_route"] == "base"]
    assert balanced_accuracy(rag, base, evidence["suggested"]) >= 0.9
    adapter = suggested["adapter_threshold"]
    titles = [r["scores"]["adapter_match"] for r in results if r["expected_route"] == "adapter"]
    others = [r["scores"]["adapter_match"] for r in results if r["expected_route"] != "adapter"]
    assert balanced_accuracy(titles, others, adapter["suggested"]) >= 0.9


def test_suggest_needs_a_collection_with_text(tmp_path: Path) -> None:
    result = ragtune("eval", "route", "--suggest", data_dir=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "ingest" in result.stderr
