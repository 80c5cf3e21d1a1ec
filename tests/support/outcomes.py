"""Paired outcomes made by rule, for the learned router's unit tests: four kinds of case whose
best route follows from the features, one of which the thresholds get wrong (the documents hold
the answer in the question's own words, but the dense similarity stays under the threshold)."""

from __future__ import annotations

import random

from ragtune.serving.outcomes import CaseOutcome, RouteOutcome
from ragtune.serving.router import FEATURES, Route

EVIDENCE_THRESHOLD = 0.37
ADAPTER_THRESHOLD = 0.35
KINDS = ("rag", "adapter", "base", "worded")
"""worded: evidence under the threshold but the passage holds the question's words; RAG
answers best, the thresholds take base."""

GRADES: dict[str, dict[Route, float]] = {
    "rag": {"rag": 0.6, "base": 0.2, "adapter": 0.1, "adapter+rag": 0.3},
    "adapter": {"rag": 0.2, "base": 0.2, "adapter": 0.55, "adapter+rag": 0.45},
    "base": {"rag": 0.3, "base": 0.5, "adapter": 0.1, "adapter+rag": 0.15},
    "worded": {"rag": 0.6, "base": 0.25, "adapter": 0.1, "adapter+rag": 0.3},
}


def thresholds(features: dict[str, float]) -> Route:
    """What a threshold router takes on these features."""
    if features["adapter_match"] >= ADAPTER_THRESHOLD:
        return "adapter"
    if features["evidence_top"] >= EVIDENCE_THRESHOLD:
        return "rag"
    return "base"


def case(kind: str, rng: random.Random, line: int, labelled: bool = True) -> CaseOutcome:
    def u(low: float, high: float) -> float:
        return rng.uniform(low, high)

    features = dict.fromkeys(FEATURES, 0.0)
    evidence = {"rag": u(0.45, 0.8), "adapter": u(0.05, 0.3), "base": u(0.05, 0.35)}.get(
        kind, u(0.27, 0.36)
    )
    overlap = {"worded": u(0.7, 1.0), "rag": u(0.4, 1.0)}.get(kind, u(0.0, 0.35))
    match = u(0.45, 0.75) if kind == "adapter" else u(0.0, 0.3)
    features.update(
        evidence_top=evidence,
        evidence_second=evidence - u(0.0, 0.05),
        evidence_margin=u(0.0, 0.05),
        evidence_mean=evidence - u(0.05, 0.1),
        evidence_passing=float(evidence >= EVIDENCE_THRESHOLD),
        lexical_overlap=overlap,
        adapter_match=match,
        adapter_margin=match - u(0.0, 0.1),
        question_words=u(1.5, 3.5),
        turns=1.0,
    )
    noise = {route: grade + u(-0.03, 0.03) for route, grade in GRADES[kind].items()}
    decided = thresholds(features)
    expected: Route = "rag" if kind == "worded" else kind  # type: ignore[assignment]
    return CaseOutcome(
        line=line,
        source=kind,
        features=features,
        decision=decided,
        decision_adapter="titler" if decided == "adapter" else None,
        adapter="titler",
        outcomes=[
            RouteOutcome(
                route, "titler" if route.startswith("adapter") else None, round(grade, 4), "rouge-l"
            )
            for route, grade in noise.items()
        ],
        expected_route=expected if labelled else None,
    )


def outcomes(n: int, seed: int = 0) -> list[CaseOutcome]:
    rng = random.Random(seed)
    return [case(KINDS[i % len(KINDS)], rng, i + 1) for i in range(n)]
