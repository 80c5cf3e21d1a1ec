"""Training the learned router from paired outcomes and comparing routing policies (no engine:
outcomes made by rule, `tests/support/outcomes.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ragtune.evals.errors import EvalError
from ragtune.evals.outcomes import read_outcomes
from ragtune.evals.router_training import (
    candidates,
    compare_policies,
    features_of,
    fit,
    read_as_now,
    target,
    train_router,
)
from ragtune.serving.learned_router import RouteModel
from ragtune.serving.outcomes import CaseOutcome, RouteOutcome, append_outcomes
from ragtune.serving.router import FEATURES
from tests.support.outcomes import case, outcomes

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def graded(
    grades: dict[str, float], expected: str | None = None, decision: str = "rag"
) -> CaseOutcome:
    return CaseOutcome(
        line=1,
        source="",
        features=dict.fromkeys(FEATURES, 0.0),
        decision=decision,  # type: ignore[arg-type]
        decision_adapter=None,
        adapter="titler",
        outcomes=[
            RouteOutcome(r, "titler" if r.startswith("adapter") else None, g, "rouge-l")  # type: ignore[arg-type]
            for r, g in grades.items()
        ],
        expected_route=expected,  # type: ignore[arg-type]
    )


def test_the_target_is_the_best_route_and_a_near_tie_goes_to_the_label_then_the_decision() -> None:
    assert target(graded({"rag": 0.2, "base": 0.6})) == "base"
    near = {"rag": 0.50, "base": 0.51, "adapter": 0.1}
    assert target(graded(near, expected="rag", decision="base")) == "rag"
    assert target(graded(near, expected=None, decision="rag")) == "rag"
    assert target(graded(near, expected="adapter", decision="adapter")) == "base"  # cheapest


def test_a_learned_router_beats_the_thresholds_where_they_are_wrong_and_keeps_the_labels() -> None:
    train, held_out = outcomes(160, seed=1), outcomes(80, seed=2)
    trained = train_router(train, embedding_model=EMBEDDER, folds=4)
    assert trained.targets["rag"] > trained.targets["base"]
    report = compare_policies(held_out, trained.model)
    learned, thresholds = report.score("learned"), report.score("thresholds")
    oracle = report.score("oracle")
    assert learned.mean_grade > thresholds.mean_grade
    assert learned.mean_grade > report.score("always rag").mean_grade
    assert learned.mean_grade > report.score("always adapter").mean_grade
    assert report.gap_closed is not None
    assert report.gap_closed >= 0.5
    assert learned.label_accuracy is not None
    assert learned.label_accuracy >= 0.95
    # the thresholds send the "worded" quarter to base; their labels say rag
    assert thresholds.label_accuracy is not None
    assert thresholds.label_accuracy < 0.8
    assert oracle.mean_grade >= learned.mean_grade


@pytest.mark.parametrize("candidate", candidates(0), ids=lambda c: c.name)
def test_a_stored_model_answers_as_scikit_learn_does(candidate: object) -> None:
    data = outcomes(120, seed=3)
    x = features_of(data)
    y = [target(c) for c in data]
    model = fit(candidate, x, y, np.ones(len(data)), EMBEDDER, {})  # type: ignore[arg-type]
    reread = RouteModel(json.loads(json.dumps(model.to_dict())))
    fitted = candidate.make()  # type: ignore[attr-defined]
    if candidate.kind == "logistic":  # type: ignore[attr-defined]
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        fitted.fit((x - mean) / scale, y, sample_weight=np.ones(len(data)))
        expected = fitted.predict_proba((x - mean) / scale)
    else:
        fitted.fit(x, y, sample_weight=np.ones(len(data)))
        expected = fitted.predict_proba(x)
    every = range(len(reread.classes))
    ours = np.array([reread.probabilities(row, every) for row in x])
    assert list(reread.classes) == [str(c) for c in fitted.classes_]
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_too_few_cases_are_refused_with_what_to_do() -> None:
    with pytest.raises(EvalError, match=r"at least 20.*router collect"):
        train_router(outcomes(10), embedding_model=EMBEDDER)


def test_one_route_always_best_gives_a_router_that_always_takes_it() -> None:
    import random

    rng = random.Random(0)
    data = [case("rag", rng, i) for i in range(30)]
    trained = train_router(data, embedding_model=EMBEDDER)
    assert trained.targets == {"rag": 30}
    assert {trained.model.choose(c.features, {"rag", "base", "adapter"}).route for c in data} == {
        "rag"
    }  # type: ignore[union-attr]


def test_outcomes_round_trip_and_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    written = outcomes(5)
    assert append_outcomes(path, written) == 5
    assert [c.to_dict() for c in read_outcomes([path])] == [c.to_dict() for c in written]
    with path.open("a") as out:
        out.write('{"format": "ragtune-route-outcome", "version": 1, "line": 9}\n')
    with pytest.raises(EvalError, match=r"outcomes.jsonl, line 6: .*missing"):
        read_outcomes([path])
    other = tmp_path / "other.jsonl"
    other.write_text('{"question": "not an outcome"}\n')
    with pytest.raises(EvalError, match="line 1: not a route outcome"):
        read_outcomes([other])
    with pytest.raises(EvalError, match="router collect"):
        read_outcomes([tmp_path / "missing.jsonl"])


def recorded_before_revisions(case: CaseOutcome, turns: int) -> dict[str, object]:
    """`case` as an outcome line written before 2026-12-08 (no features revision), `turns`
    user turns long."""
    line = case.to_dict()
    del line["features_revision"]
    line["features"]["turns"] = float(turns)
    return line


def test_follow_ups_recorded_with_an_earlier_revision_of_the_features_are_left_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outcomes.jsonl"
    current = outcomes(40, seed=3)
    assert append_outcomes(path, current) == 40
    older = outcomes(12, seed=4)
    with path.open("a") as out:
        for i, old in enumerate(older):
            # every other one a question asked alone, which reads today as it did then
            out.write(json.dumps(recorded_before_revisions(old, 1 if i % 2 else 3)) + "\n")
    read = read_outcomes([path])
    assert [c.features_revision for c in read] == [2] * 40 + [1] * 12
    assert [c.reads_as_now for c in read[40:]] == [False, True] * 6

    kept, left_out = read_as_now(read)
    assert (len(kept), left_out) == (46, 6)
    assert all(c.reads_as_now for c in kept)
    trained = train_router(read, embedding_model=EMBEDDER, folds=3)
    assert (trained.cases, trained.left_out) == (46, 6)
    report = compare_policies(read, trained.model)
    assert (report.cases, report.left_out) == (46, 6)
    assert report.to_dict()["left_out"] == 6

    # only follow-ups from before: nothing to train or judge on, and the error says why
    stale = [CaseOutcome.from_dict(recorded_before_revisions(c, 2)) for c in outcomes(30)]
    for run in (
        lambda: train_router(stale, embedding_model=EMBEDDER),
        lambda: compare_policies(stale, trained.model),
    ):
        with pytest.raises(EvalError, match=r"all 30 cases .*earlier revision.*router collect"):
            run()
    # Without a learned router no policy reads the features: every case is scored.
    assert (compare_policies(stale, None).cases, compare_policies(read, None).left_out) == (30, 0)
    # too few left once they are out: the count says where the others went
    few = outcomes(15, seed=9) + stale[:10]
    with pytest.raises(EvalError, match=r"15 cases with outcomes \(10 more .*left out\)"):
        train_router(few, embedding_model=EMBEDDER)


def test_a_features_revision_this_ragtune_does_not_know_is_named(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    line = outcomes(1)[0].to_dict()
    line["features_revision"] = 3
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(EvalError, match=r"line 1: features of revision 3, .*newer ragtune"):
        read_outcomes([path])
    for revision in (0, "2", True, None):
        line["features_revision"] = revision
        path.write_text(json.dumps(line) + "\n")
        with pytest.raises(EvalError, match=r"line 1: features_revision is .*, not a revision"):
            read_outcomes([path])


def test_policies_are_scored_on_the_grades_of_the_routes_they_pick() -> None:
    cases = [
        graded({"rag": 0.8, "base": 0.2, "adapter": 0.1}, expected="rag", decision="rag"),
        graded({"rag": 0.1, "base": 0.3, "adapter": 0.9}, expected="adapter", decision="base"),
    ]
    report = compare_policies(cases, None)
    assert report.score("thresholds").mean_grade == pytest.approx((0.8 + 0.3) / 2)
    assert report.score("thresholds").label_accuracy == 0.5
    assert report.score("always rag").mean_grade == pytest.approx((0.8 + 0.1) / 2)
    assert report.score("always adapter").mean_grade == pytest.approx((0.1 + 0.9) / 2)
    assert report.score("oracle").mean_grade == pytest.approx((0.8 + 0.9) / 2)
    assert report.gap_closed is None  # no learned router


def test_label_accuracy_counts_an_adapter_route_right_only_with_the_labelled_adapter() -> None:
    def labelled(best: str, taken: str | None) -> CaseOutcome:
        case = graded({"rag": 0.1, "adapter": 0.9}, expected="adapter", decision="adapter")
        case.expected_adapter, case.adapter, case.decision_adapter = "titler", best, taken
        return case

    cases = [labelled("titler", "titler"), labelled("gitsummary", "titler")]
    report = compare_policies(cases, None)
    # the thresholds served what they took; always-adapter serves the best match
    assert report.score("thresholds").label_accuracy == 1.0
    assert report.score("always adapter").label_accuracy == 0.5
    assert report.score("always rag").label_accuracy == 0.0
