"""`ragtune advise`'s logic without an engine: metrics, the format read from references, the
prompt variants and their few-shot choice, failure modes, bootstrap intervals, the verdict, the
break-even and the report files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragtune.adapters.examples import Example
from ragtune.evals.advise import AdviseOptions, check_options, load_task, split_task
from ragtune.evals.decision import Interval, Prices, break_even, decide, paired_bootstrap
from ragtune.evals.errors import AdviceError, ScorerError
from ragtune.evals.failures import copied_share, failure_modes
from ragtune.evals.metrics import load_scorer, read_schema
from ragtune.evals.report import write_report
from ragtune.evals.variants import FormatSpec, ShotPicker, extract_final, prompting_variants
from tests.support.fakes import FakeEmbedder

ABSTRACTS = Path(__file__).resolve().parents[3] / "shared" / "eval" / "abstract2title.jsonl"


def words_as_tokens(text: str) -> int:
    return len(text.split())


def example(prompt: str, answer: str, system: str | None = None) -> Example:
    messages = [{"role": "user", "content": prompt}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return Example(messages, answer)


# -- metrics ----------------------------------------------------------------------------------
def test_built_in_metrics() -> None:
    rouge = load_scorer("rouge-l")
    assert rouge.score("Solar cells in humid air", "solar cells IN humid air.") == 1.0
    assert load_scorer("exact").score("The Title.", "the title") == 1.0
    valid = load_scorer("json-valid")
    assert valid.score('```json\n{"a": 1}\n```', "") == 1.0  # a fenced answer is still JSON
    assert valid.score("{a: 1}", "") == 0.0


def test_json_schema_metric(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "object", "required": ["title"]}))
    scorer = load_scorer("json-schema", read_schema(path))
    assert scorer.score('{"title": "x"}', "") == 1.0
    assert scorer.score('{"name": "x"}', "") == 0.0
    assert scorer.score("not json", "") == 0.0
    path.write_text(json.dumps({"type": "no-such-type"}))
    with pytest.raises(ScorerError, match="not valid"):
        load_scorer("json-schema", read_schema(path))
    with pytest.raises(ScorerError, match="--schema"):
        load_scorer("json-schema")


def test_a_users_scorer_by_import_path() -> None:
    scorer = load_scorer("tests.support.scorers:same_length")
    assert scorer.score("a b", "c d") == 1.0
    assert scorer.score("a", "c d") == 0.0
    with pytest.raises(ScorerError, match="not a number"):
        load_scorer("tests.support.scorers:not_a_number").score("a", "b")
    with pytest.raises(ScorerError, match="cannot import"):
        load_scorer("tests.support.scorers:missing")
    with pytest.raises(ScorerError, match="unknown metric"):
        load_scorer("bleu")


# -- the format and the variants --------------------------------------------------------------
def test_the_format_is_read_from_the_references() -> None:
    titles = FormatSpec.of(["A short title", "Another title of six words"], words_as_tokens)
    assert titles.one_line
    assert titles.max_words == 5
    assert titles.json is None
    assert titles.max_tokens == 16  # 1.5x the longest, at least 16
    assert "one line of at most 5 words" in titles.instructions()
    records = FormatSpec.of(['{"name": "a", "age": 1}', '{"age": 2, "name": "b", "x": 0}'], len)
    assert records.json == "object"
    assert records.fields == ("name", "age")
    assert "the fields name, age" in records.instructions()
    prose = FormatSpec.of(["line one\nline two", "one"], words_as_tokens)
    assert not prose.one_line


def test_few_shot_examples_are_the_most_similar_ones() -> None:
    pool = [
        example("solar cells perovskite efficiency", "Perovskite cells"),
        example("protein folding in yeast", "Yeast proteins"),
        example("graphene transistors at low temperature", "Cold graphene"),
    ]
    picker = ShotPicker(pool, FakeEmbedder())
    asked = example("efficiency of perovskite solar cells in air", "?")
    assert picker.pick(asked, 1) == [pool[0]]
    # Most similar last, next to the question; an example never shows itself.
    assert picker.pick(asked, 2)[-1] == pool[0]
    assert pool[0] not in picker.pick(pool[0], 3)


def test_the_variants_and_their_messages() -> None:
    pool = [example(f"abstract {i}", f"title {i}") for i in range(4)]
    spec = FormatSpec.of([e.answer for e in pool], words_as_tokens)
    picker = ShotPicker(pool, FakeEmbedder())
    names = [v.name for v in prompting_variants(spec, picker, shots=(1, 3, 8), rag=True)]
    # k above the pool's size is not tried; retrieval variants only with a collection.
    assert names == [
        "instruction", "format", "few-shot-1", "few-shot-3", "step-by-step", "rag",
        "rag+few-shot-3",
    ]  # fmt: skip
    assert "rag" not in [v.name for v in prompting_variants(spec, picker)]
    variants = {v.name: v for v in prompting_variants(spec, picker, shots=(3,))}
    asked = example("abstract 9", "title 9", system="You title papers.")
    messages = variants["few-shot-3"].messages(asked)
    # The task's system message first, the format after it, in one system message.
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("You title papers.")
    assert spec.instructions() in messages[0]["content"]
    assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * 3 + ["user"]
    assert messages[-1]["content"] == "abstract 9"
    assert len(variants["few-shot-3"].messages(asked, shots=1)) == 4
    assert variants["instruction"].messages(asked) == asked.messages


def test_a_step_by_step_answer_is_extracted() -> None:
    assert extract_final("First... then...\nAnswer: The title") == "The title"
    assert extract_final("answer: a\nmore\nANSWER: b") == "b"
    assert extract_final("reasoning\n\nlast line\n") == "last line"
    assert extract_final("") == ""


# -- failure modes ----------------------------------------------------------------------------
def test_failure_modes_against_the_reference_format() -> None:
    spec = FormatSpec.of(["A title of six words here", "Another one"], words_as_tokens)
    source = "the doping effect of carbon nanodots in the transport layer was investigated here"
    examples = [example(source, "A title of six words here")] * 5
    answers = [
        "",
        "word " * 20,
        "Line one\nline two",
        "doping effect of carbon nanodots in the transport layer",
        "A fine title",
    ]
    modes = failure_modes(spec, examples, answers)
    assert modes.counts == {
        "empty": 1, "too long": 1, "several lines": 1, "copies the input": 1,
    }  # fmt: skip
    assert modes.share == 0.8
    assert modes.systematic
    assert modes.examples["empty"][0]["reference"] == "A title of six words here"
    # A task whose references copy their input (extraction) does not count copying.
    extraction = [example(source, "doping effect of carbon nanodots in the transport layer")] * 2
    assert "copies the input" not in failure_modes(spec, extraction, answers[3:5]).counts
    assert copied_share("a b", source) == 0.0  # too short to tell


def test_json_failure_modes() -> None:
    spec = FormatSpec.of(['{"title": "a"}', '{"title": "b"}'], len)
    examples = [example("x", '{"title": "a"}')] * 3
    modes = failure_modes(spec, examples, ['{"title": "t"}', '{"name": "t"}', "title: t"])
    assert modes.counts == {"missing field": 1, "invalid JSON": 1}


# -- intervals, verdict, cost -----------------------------------------------------------------
def test_paired_bootstrap() -> None:
    a = [0.2, 0.3, 0.25, 0.4, 0.1] * 6
    better = [x + 0.1 for x in a]
    interval = paired_bootstrap(a, better)
    assert interval.mean == pytest.approx(0.1)
    assert (interval.low, interval.high) == (pytest.approx(0.1), pytest.approx(0.1))
    noisy = paired_bootstrap(a, list(reversed(a)), seed=3)
    assert noisy.low < noisy.mean < noisy.high
    assert paired_bootstrap(a, list(reversed(a)), seed=3) == noisy  # seeded
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([1.0], [])


def verdict(
    gain: Interval | None, *, rag: Interval | None = None, uses_rag: bool = False,
    systematic: bool = False,
) -> str:  # fmt: skip
    return decide(
        metric="rouge-l", best_prompting="few-shot-3", prompting_score=0.3,
        uses_retrieval=uses_rag, retrieval_gain=rag, failure_share=0.5 if systematic else 0.0,
        systematic=systematic, adapter="titler" if gain else None,
        adapter_score=0.3 + gain.mean if gain else None, adapter_gain=gain, margin=0.05,
    ).verdict  # fmt: skip


def test_the_verdict_claims_only_what_the_interval_supports() -> None:
    assert verdict(Interval(0.12, 0.04, 0.2)) == "fine-tune"
    assert verdict(Interval(0.06, -0.01, 0.13)) == "undecided"  # holds 0 and the margin
    assert verdict(Interval(0.01, -0.02, 0.04)) == "prompting"  # excludes the margin
    assert verdict(Interval(0.04, 0.01, 0.07)) == "undecided"  # better, maybe not by 0.05
    helps = Interval(0.1, 0.02, 0.18)
    assert verdict(Interval(0.0, -0.03, 0.03), rag=helps, uses_rag=True) == "retrieval"
    assert verdict(None, rag=Interval(0.0, -0.1, 0.1), uses_rag=True) == "prompting"
    assert verdict(None) == "prompting"
    assert verdict(None, systematic=True) == "undecided"  # measure an adapter to tell


def test_break_even() -> None:
    even = break_even(1400, 400, 3600, Prices(per_1k_tokens=0.001, per_training_hour=2.0))
    # 1000 tokens saved per request = 0.001; 2.0 of training pays back after 2000 requests.
    assert (even.saved_tokens, even.training_cost, even.requests) == (1000, 2.0, 2000)
    assert even.requests_per_hour == 20  # 0.02 per slot-hour
    assert break_even(300, 400, 60, Prices()).requests is None  # it costs tokens: never


# -- task files -------------------------------------------------------------------------------
def test_a_task_needs_enough_examples_for_its_splits(tmp_path: Path) -> None:
    examples = [example(f"q{i}", f"a{i}") for i in range(20)]
    pool, dev, test = split_task(examples, 50, 50, seed=0)
    assert (len(pool), len(dev), len(test)) == (10, 5, 5)
    assert not {e.prompt() for e in dev} & {e.prompt() for e in test}
    with pytest.raises(AdviceError, match="at least 20"):
        split_task(examples[:19], 50, 50, seed=0)


def test_what_the_options_alone_tell_is_refused_before_anything_opens() -> None:
    examples = [example(f"q{i}", f"a{i}") for i in range(20)]
    pool, dev, test = check_options(examples, AdviseOptions(dev=5, test=5))
    assert (len(pool), len(dev), len(test)) == (10, 5, 5)
    refusals = [
        (AdviseOptions(train=True), "--train needs --name"),
        (AdviseOptions(train=True, name="t", adapter="a"), "not both"),
        (AdviseOptions(cost_requests=0), "--cost-requests"),
    ]
    for options, message in refusals:
        with pytest.raises(AdviceError, match=message):
            check_options(examples, options)
    with pytest.raises(AdviceError, match="too few"):
        check_options(examples[:12], AdviseOptions())


def test_a_task_file_uses_one_format(tmp_path: Path) -> None:
    path = tmp_path / "task.jsonl"
    rows = ABSTRACTS.read_text().splitlines()[:3]
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    chat = json.dumps({"messages": turns})
    path.write_text("\n".join([*rows, chat]) + "\n")
    with pytest.raises(AdviceError, match="mixes formats"):
        load_task(path)
    path.write_text("\n".join(rows) + "\n")
    examples, digest = load_task(path)
    assert (len(examples), len(digest)) == (3, 64)


# -- the report -------------------------------------------------------------------------------
def report_dict(curve: bool) -> dict[str, Any]:
    def system(name: str, split: str, value: float) -> dict[str, Any]:
        return {
            "name": name, "description": name, "split": split, "scores": {"rouge-l": value},
            "prompt_tokens": 300.0, "completion_tokens": 20.0, "latency_s": 1.0, "wall_s": 1.0,
        }  # fmt: skip

    return {
        "task": "titles.jsonl <script>",
        "metric": "rouge-l",
        "splits": {"pool": 100, "dev": 50, "test": 50},
        "format": {"instructions": "Reply with the answer only."},
        "notes": [],
        "variants": [system("instruction", "dev", 0.2), system("few-shot-3", "dev", 0.3)],
        "best": "few-shot-3",
        "test": [system("few-shot-3", "test", 0.28), system("titler", "test", 0.35)],
        "failures": {
            "answers": 50,
            "share": 0.3,
            "counts": {"too long": 15},
            "examples": {"too long": [{"input": "i", "answer": "a", "reference": "r"}]},
            "systematic": True,
        },
        "intervals": {
            "adapter - few-shot-3": {
                "rouge-l": {"mean": 0.07, "low": 0.02, "high": 0.12, "level": 0.95}
            }
        },
        "curve": [
            {
                "size": 25,
                "scores": {"rouge-l": 0.3},
                "training_seconds": 60.0,
                "peak_memory_mb": 900.0,
                "steps": 8,
            },
            {
                "size": 100,
                "scores": {"rouge-l": 0.35},
                "training_seconds": 200.0,
                "peak_memory_mb": 950.0,
                "steps": 26,
            },
        ]
        if curve
        else [],
        "smallest_size": 100 if curve else None,
        "cost": {"prices": Prices().to_dict(), "prompting": {"total_tokens": 320.0}},
        "verdict": "fine-tune",
        "verdict_words": "fine-tune",
        "reasons": ["because"],
        "adapter": "titler",
        "parity": None,
        "timing": {"wall_s": 10.0, "request_seconds_sum": 40.0, "concurrency": 8},
    }


@pytest.mark.parametrize("curve", [True, False])
def test_the_report_files(tmp_path: Path, curve: bool) -> None:
    written = write_report(report_dict(curve), tmp_path / "out")
    names = sorted(p.name for p in written)
    expected = ["advice.json", "advice.md", "variants.png"]
    assert names == sorted(expected + (["learning_curve.png"] if curve else []))
    for picture in (p for p in written if p.suffix == ".png"):
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "out" / "advice.md").read_text()
    assert "**Verdict: fine-tune.**" in text
    assert "| few-shot-3 (chosen) | 0.300 |" in text
    assert ("Smallest training set" in text) is curve
    assert json.loads((tmp_path / "out" / "advice.json").read_text())["verdict"] == "fine-tune"
