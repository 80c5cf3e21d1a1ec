"""Paired outcomes: a request, what the router knew when it decided, and several routes' answers
to it, graded. Written by `ragtune router collect` (every applicable route on a case file) and by
shadow mode (live traffic and one route not taken); read by `ragtune router train`.

One JSON object per line (`CaseOutcome.to_dict`), appended; the question and answers only when
asked for (collect keeps them by default, shadow mode only with prompt logging on).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, get_args

from ragtune.serving.router import ADAPTER_ROUTES, FEATURES, FEATURES_REVISION, Route

FORMAT = "ragtune-route-outcome"
VERSION = 1


@dataclass
class RouteOutcome:
    """One route's answer to a case, graded."""

    route: Route
    adapter: str | None
    grade: float
    metric: str
    """What the grade is: a metric's name against the reference, or "grounding"."""
    grounding: float | None = None
    completion_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str | None = None
    answer: str | None = None
    """Kept only when asked (text of the answers)."""


@dataclass
class CaseOutcome:
    """A case, what the router saw when it decided, and every route's graded answer."""

    line: int
    source: str
    features: dict[str, float]
    decision: Route
    """The route the router took (thresholds, or the learned model if one was loaded)."""
    decision_adapter: str | None
    adapter: str | None
    """The best-matching adapter: the one a learned router's adapter routes use."""
    outcomes: list[RouteOutcome]
    expected_route: Route | None = None
    expected_adapter: str | None = None
    origin: str = "collect"
    """collect (a case file) or shadow (live traffic)."""
    question: str | None = None
    history: list[str] = field(default_factory=list)
    features_revision: int = FEATURES_REVISION
    """What the features meant when they were recorded (`FEATURES_REVISION`; a line written
    before it was stored is revision 1)."""

    @property
    def reads_as_now(self) -> bool:
        """Whether the router would compute these features today: a case recorded with an
        earlier revision of them still does when it was one question (only follow-ups and
        long conversations were read otherwise). A router trained or judged on the others
        would learn what the server no longer computes."""
        return self.features_revision == FEATURES_REVISION or (
            self.features_revision == 1 and self.features["turns"] <= 1
        )

    def grade(self, route: Route, adapter: str | None = None) -> float | None:
        """The grade of `route` (its adapter routes with `adapter`, default the best match)."""
        adapter = (adapter or self.adapter) if route in ADAPTER_ROUTES else None
        for outcome in self.outcomes:
            if outcome.route == route and outcome.adapter == adapter:
                return outcome.grade
        return None

    @property
    def choosable(self) -> dict[Route, float]:
        """The routes a router can take for this case (adapter routes with the best match),
        with their grades."""
        grades: dict[Route, float] = {}
        for outcome in self.outcomes:
            if outcome.route in ADAPTER_ROUTES and outcome.adapter != self.adapter:
                continue
            grades[outcome.route] = outcome.grade
        return grades

    @property
    def oracle(self) -> float:
        """The best grade of any route run (any adapter)."""
        return max(o.grade for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        data = {"format": FORMAT, "version": VERSION, **asdict(self)}
        if self.question is None:
            data.pop("question")
            data.pop("history")
        for outcome in data["outcomes"]:
            if outcome["answer"] is None:
                outcome.pop("answer")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseOutcome:
        routes = get_args(Route)
        outcomes = []
        for raw in data["outcomes"]:
            if raw["route"] not in routes:
                raise ValueError(f"unknown route {raw['route']!r}")
            outcomes.append(RouteOutcome(**raw))
        if not outcomes:
            raise ValueError("no route was graded")
        features = {name: float(data["features"][name]) for name in FEATURES}
        revision = data.get("features_revision", 1)
        if type(revision) is not int or revision < 1:
            raise ValueError(
                f"features_revision is {revision!r}, not a revision (a whole number from 1)"
            )
        if revision > FEATURES_REVISION:
            raise ValueError(
                f"features of revision {revision}, which this ragtune does not know (it "
                f"computes revision {FEATURES_REVISION}): a newer ragtune wrote it"
            )
        fields = {k: v for k, v in data.items() if k not in ("format", "version")}
        fields.update(features=features, outcomes=outcomes, features_revision=revision)
        return cls(**fields)


class ReferenceScorer(Protocol):
    @property
    def name(self) -> str: ...

    def score(self, candidate: str, reference: str) -> float: ...


@dataclass(frozen=True)
class Grader:
    """How answers are graded: `scorer` against a reference when the case has one; otherwise
    `unreferenced_grade` (the answer's form, and its grounding where the documents hold
    evidence). `grounding(answer, passages)` -> 0..1, None when nothing is checkable."""

    scorer: ReferenceScorer | None
    grounding: Callable[[str, Sequence[str]], float | None]

    def grade(
        self,
        answer: str,
        reference: str | None,
        passages: Sequence[str],
        *,
        finish_reason: str | None = None,
        evidence: bool = True,
    ) -> tuple[float, str, float | None]:
        """(grade, what it is, grounding score). `passages`: what the case retrieved (the same
        for every route); `evidence`: whether any of them reaches the evidence threshold."""
        grounded = self.grounding(answer, passages) if passages and answer.strip() else None
        if reference and self.scorer is not None:
            if not answer.strip():
                return 0.0, self.scorer.name, grounded
            return self.scorer.score(answer, reference), self.scorer.name, grounded
        grade, metric = unreferenced_grade(answer, finish_reason, grounded, evidence)
        return grade, metric, grounded


def unreferenced_grade(
    answer: str, finish_reason: str | None, grounding: float | None, evidence: bool
) -> tuple[float, str]:
    """An answer without a reference: 0 when empty; its form (1, or 0.5 when it ran into the
    answer bound); where the documents hold evidence for the question, times its grounding in
    the passages (0.5 when no sentence could be checked). Where they hold none, grounding says
    nothing about the answer (every route would be ungrounded), so the form alone counts and
    near ties are left to the labels (`router train`)."""
    if not answer.strip():
        return 0.0, "empty"
    form = 0.5 if finish_reason == "length" else 1.0
    if not evidence:
        return form, "format"
    return form * (0.5 if grounding is None else grounding), "grounding"


def append_outcomes(path: Path, outcomes: Iterable[CaseOutcome]) -> int:
    """Append outcomes to a JSONL file (created with its folder); how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("a", encoding="utf-8") as out:
        for outcome in outcomes:
            out.write(json.dumps(outcome.to_dict(), ensure_ascii=False) + "\n")
            written += 1
    return written
