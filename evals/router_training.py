"""Training and measuring the learned router (`ragtune router train`, `ragtune eval route
--outcomes`): from paired outcomes to a small classifier, chosen by cross-validation on the mean
grade of the routes it would pick, and compared with the thresholds, the always-X policies and
the oracle.

What the router learns to predict is the route that answered best. Answers within `tolerance` of
the best count as equally good; among those the case's label (when it has one) wins, then the
thresholds' choice, then the cheaper route (base, rag, adapter, adapter+rag): a near tie says
nothing about which route is better, so it should not teach the router to leave its default.
Each case weighs by how much its routes' grades differ (plus a floor), so the cases where the
choice matters most count most.

Usage:
    trained = train_router(read_outcomes([path]), embedding_model=embedder.model_id)
    trained.model.save(path); trained.candidates      # CV scores of each candidate
    compare_policies(read_outcomes([held_out]), trained.model)
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ragtune.evals.errors import EvalError
from ragtune.serving.learned_router import RouteModel, model_data
from ragtune.serving.outcomes import CaseOutcome
from ragtune.serving.router import ADAPTER_ROUTES, FEATURES, Route

CHEAPEST: tuple[Route, ...] = ("base", "rag", "adapter", "adapter+rag")
TOLERANCE = 0.02
WEIGHT_FLOOR = 0.05
MIN_CASES = 20


def read_as_now(outcomes: Sequence[CaseOutcome]) -> tuple[list[CaseOutcome], int]:
    """The cases whose features the router would compute today (`CaseOutcome.reads_as_now`),
    and how many were left out: follow-ups recorded with an earlier revision of the features.
    EvalError, saying to collect again, when none is left."""
    kept = [case for case in outcomes if case.reads_as_now]
    if outcomes and not kept:
        raise EvalError(
            f"all {len(outcomes)} cases were recorded with an earlier revision of the router's "
            "features (follow-ups recorded before 2026-12-08, whose word overlap read their own "
            "words): collect them again (`ragtune router collect`, or shadow mode)"
        )
    return kept, len(outcomes) - len(kept)


def left_out_note(left_out: int) -> str:
    """What a report says of the cases `read_as_now` left out."""
    return (
        f"left out {left_out} follow-up case(s) recorded with an earlier revision of the "
        "router's features (before 2026-12-08 a follow-up's word overlap read its own words, "
        "not its conversation's query): collect them again (`ragtune router collect`)"
    )


def target(case: CaseOutcome, tolerance: float = TOLERANCE) -> Route:
    """The route the router should have taken for `case` (see the module's docstring)."""
    grades = case.choosable
    best = max(grades.values())
    good = [route for route, grade in grades.items() if grade >= best - tolerance]
    for preferred in (case.expected_route, case.decision):
        if preferred in good:
            return preferred
    return min(good, key=CHEAPEST.index)


def weight(case: CaseOutcome) -> float:
    grades = case.choosable.values()
    return max(grades) - min(grades) + WEIGHT_FLOOR


def allowed(case: CaseOutcome) -> set[Route]:
    """What a router could take for the case: the routes run for it, adapter routes only with
    an adapter the verdict does not advise against (as the serving router allows)."""
    routes = set(case.choosable)
    if case.features.get("verdict_against"):
        routes -= ADAPTER_ROUTES
    return routes or set(case.choosable)


@dataclass(frozen=True)
class Candidate:
    name: str
    kind: str
    make: Callable[[], Any]


def candidates(seed: int) -> list[Candidate]:
    """Small, fast classifiers: logistic regressions (three strengths) and shallow boosted
    trees. scikit-learn is imported only here (training), never by the server."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    def logistic(c: float) -> Callable[[], Any]:
        return lambda: LogisticRegression(C=c, max_iter=5000)

    def boosting(stages: int, depth: int) -> Callable[[], Any]:
        return lambda: GradientBoostingClassifier(
            n_estimators=stages, max_depth=depth, learning_rate=0.1, init="zero",
            subsample=1.0, random_state=seed,
        )  # fmt: skip

    return [
        Candidate("logistic C=0.1", "logistic", logistic(0.1)),
        Candidate("logistic C=1", "logistic", logistic(1.0)),
        Candidate("logistic C=10", "logistic", logistic(10.0)),
        Candidate("boosting 50x2", "boosting", boosting(50, 2)),
        Candidate("boosting 100x3", "boosting", boosting(100, 3)),
    ]


def fit(
    candidate: Candidate,
    x: np.ndarray,
    y: Sequence[Route],
    weights: np.ndarray,
    embedding_model: str,
    trained: dict[str, Any],
) -> RouteModel:
    """One candidate fitted and written out as the server reads it."""
    baseline = x.mean(axis=0)
    classes = sorted(set(y))
    if len(classes) == 1:
        # One route was always best: a model that always says so (a logistic with no slope).
        params = {
            "mean": baseline.tolist(),
            "scale": [1.0] * x.shape[1],
            "coef": [[0.0] * x.shape[1]],
            "intercept": [0.0],
        }
        return RouteModel(
            model_data("logistic", classes, embedding_model, baseline, params, trained)
        )
    if candidate.kind == "logistic":
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale == 0] = 1.0
        classifier = candidate.make()
        classifier.fit((x - mean) / scale, list(y), sample_weight=weights)
        params = {
            "mean": mean.tolist(),
            "scale": scale.tolist(),
            "coef": classifier.coef_.tolist(),
            "intercept": classifier.intercept_.tolist(),
        }
        labels = [str(c) for c in classifier.classes_]
        return RouteModel(
            model_data("logistic", labels, embedding_model, baseline, params, trained)
        )
    classifier = candidate.make()
    classifier.fit(x, list(y), sample_weight=weights)
    stages = []
    for stage in classifier.estimators_:
        trees = []
        for estimator in stage:
            tree = estimator.tree_
            trees.append(
                {
                    "left": tree.children_left.tolist(),
                    "right": tree.children_right.tolist(),
                    "feature": tree.feature.tolist(),
                    "threshold": tree.threshold.tolist(),
                    "value": tree.value[:, 0, 0].tolist(),
                }
            )
        stages.append(trees)
    width = 1 if len(classifier.classes_) == 2 else len(classifier.classes_)
    params = {"init": [0.0] * width, "learning_rate": classifier.learning_rate, "trees": stages}
    labels = [str(c) for c in classifier.classes_]
    return RouteModel(model_data("boosting", labels, embedding_model, baseline, params, trained))


def features_of(cases: Sequence[CaseOutcome]) -> np.ndarray:
    return np.array([[case.features[name] for name in FEATURES] for case in cases], dtype=float)


@dataclass(frozen=True)
class CandidateScore:
    name: str
    mean_grade: float
    """Cross-validated: the mean grade of the routes the candidate picks on held-out folds."""
    label_accuracy: float | None


@dataclass
class TrainedRouter:
    model: RouteModel
    chosen: str
    candidates: list[CandidateScore]
    cases: int
    targets: dict[str, int]
    """How often each route was the one to take."""
    thresholds_grade: float
    """The thresholds' mean grade on the same cases (what the router must beat)."""
    left_out: int = 0
    """Cases left out: recorded with an earlier revision of the features (`read_as_now`)."""


def learned_choice(model: RouteModel, case: CaseOutcome) -> Route:
    choice = model.choose(case.features, allowed(case), explain=0)
    return choice.route if choice is not None else case.decision


def train_router(
    outcomes: Sequence[CaseOutcome],
    *,
    embedding_model: str,
    folds: int = 5,
    seed: int = 0,
    tolerance: float = TOLERANCE,
) -> TrainedRouter:
    """Choose among `candidates` by `folds`-fold cross-validation (mean grade of the chosen
    routes; ties go to the earlier, simpler candidate) and fit the winner on every case whose
    features read as the router computes them now (`read_as_now`)."""
    outcomes, left_out = read_as_now(outcomes)
    if len(outcomes) < MIN_CASES:
        stale = (
            f" ({left_out} more were recorded with an earlier revision of the router's features "
            "and are left out)"
            if left_out
            else ""
        )
        raise EvalError(
            f"{len(outcomes)} cases with outcomes{stale}: a learned router needs at least "
            f"{MIN_CASES} (`ragtune router collect --cases FILE`)"
        )
    x = features_of(outcomes)
    y = [target(case, tolerance) for case in outcomes]
    weights = np.array([weight(case) for case in outcomes])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(outcomes))
    k = max(2, min(folds, len(outcomes)))
    parts = np.array_split(order, k)
    scores = []
    pool = candidates(seed)
    for candidate in pool:
        picked: dict[int, Route] = {}
        for held in parts:
            train = np.setdiff1d(order, held)
            model = fit(
                candidate, x[train], [y[i] for i in train], weights[train], embedding_model, {}
            )
            for i in held:
                picked[int(i)] = learned_choice(model, outcomes[int(i)])
        grades = [_grade(outcomes[i], picked[i]) for i in range(len(outcomes))]
        scores.append(
            CandidateScore(
                candidate.name,
                statistics.fmean(grades),
                _label_accuracy(outcomes, [picked[i] for i in range(len(outcomes))]),
            )
        )
    best = max(range(len(scores)), key=lambda i: (round(scores[i].mean_grade, 6), -i))
    chosen = pool[best]
    trained = {
        "cases": len(outcomes),
        "candidate": chosen.name,
        "cv_mean_grade": round(scores[best].mean_grade, 4),
        "tolerance": tolerance,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    model = fit(chosen, x, y, weights, embedding_model, trained)
    return TrainedRouter(
        model,
        chosen.name,
        scores,
        len(outcomes),
        dict(Counter(y)),
        statistics.fmean(_grade(case, case.decision) for case in outcomes),
        left_out,
    )


def _grade(case: CaseOutcome, route: Route) -> float:
    grade = case.choosable.get(route)
    if grade is None:
        # The route was not run for the case (it could not be taken): what was decided.
        grade = case.grade(case.decision, case.decision_adapter)
    return grade if grade is not None else 0.0


def _label_accuracy(
    cases: Sequence[CaseOutcome], routes: Sequence[Route], *, as_collected: bool = False
) -> float | None:
    """The share of labelled cases whose route is the expected one and, where the label names
    an adapter, whose adapter route serves that adapter: the best-matching one (what a learned
    router or an always-X policy serves), or with `as_collected` the one the router took when
    the case was collected (the thresholds' own)."""
    labelled = [(c, r) for c, r in zip(cases, routes, strict=True) if c.expected_route]
    if not labelled:
        return None

    def right(case: CaseOutcome, route: Route) -> bool:
        if case.expected_route != route:
            return False
        if route not in ADAPTER_ROUTES or case.expected_adapter is None:
            return True
        served = case.decision_adapter if as_collected and route == case.decision else None
        return (served or case.adapter) == case.expected_adapter

    return sum(right(c, r) for c, r in labelled) / len(labelled)


@dataclass(frozen=True)
class PolicyScore:
    policy: str
    mean_grade: float
    label_accuracy: float | None
    routes: dict[str, int]


@dataclass
class PolicyReport:
    cases: int
    labelled: int
    policies: list[PolicyScore]
    left_out: int = 0
    """Cases left out: recorded with an earlier revision of the features (`read_as_now`)."""

    def score(self, policy: str) -> PolicyScore:
        return next(p for p in self.policies if p.policy == policy)

    @property
    def gap_closed(self) -> float | None:
        """The share of the thresholds-to-oracle gap in mean grade the learned router closes."""
        names = {p.policy for p in self.policies}
        if "learned" not in names:
            return None
        thresholds = self.score("thresholds").mean_grade
        gap = self.score("oracle").mean_grade - thresholds
        if gap <= 0:
            return None
        return (self.score("learned").mean_grade - thresholds) / gap

    def to_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "labelled": self.labelled,
            "gap_closed": self.gap_closed,
            "left_out": self.left_out,
            "policies": [vars(p) for p in self.policies],
        }


def compare_policies(outcomes: Sequence[CaseOutcome], model: RouteModel | None) -> PolicyReport:
    """Each policy's route per case and what it earned: the thresholds (as collected), the
    learned router, always rag / adapter / base (where that route was not run for a case, e.g.
    no adapter is registered, the thresholds' route counts), and the oracle (the best route per
    case, any adapter). With a learned router, every policy on the cases whose features read
    as the router computes them now (`read_as_now`): a follow-up recorded before would judge
    it on numbers it is no longer given, and the policies are compared on the same cases.
    Without one, on every case (no other policy reads the features)."""
    left_out = 0
    if model is not None:
        outcomes, left_out = read_as_now(outcomes)
    policies: dict[str, Callable[[CaseOutcome], Route]] = {
        "thresholds": lambda case: case.decision,
    }
    if model is not None:
        policies["learned"] = lambda case: learned_choice(model, case)
    for fixed in ("rag", "adapter", "base"):
        policies[f"always {fixed}"] = lambda case, fixed=fixed: (  # type: ignore[misc]
            fixed if fixed in case.choosable else case.decision
        )
    scores = []
    for name, policy in policies.items():
        routes = [policy(case) for case in outcomes]
        scores.append(
            PolicyScore(
                name,
                statistics.fmean(_grade(c, r) for c, r in zip(outcomes, routes, strict=True)),
                _label_accuracy(outcomes, routes, as_collected=name == "thresholds"),
                dict(Counter(routes)),
            )
        )
    scores.append(
        PolicyScore(
            "oracle",
            statistics.fmean(case.oracle for case in outcomes),
            None,
            dict(Counter(max(c.choosable, key=lambda r: c.choosable[r]) for c in outcomes)),
        )
    )
    labelled = sum(1 for case in outcomes if case.expected_route)
    return PolicyReport(len(outcomes), labelled, scores, left_out)
