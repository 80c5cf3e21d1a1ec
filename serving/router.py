"""The per-request router: retrieval-augmented prompting by default, a LoRA adapter when the
request clearly matches an adapter's task, both when it also has strong evidence in the documents,
the plain base model when neither applies. Pure and deterministic: the inputs are numbers the
service has already computed (the question is embedded once, for retrieval and matching alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from ragtune.serving.errors import RouteRequestError
from ragtune.serving.settings import RouterSettings

Route = Literal["rag", "adapter", "adapter+rag", "base"]
ROUTES: tuple[Route, ...] = ("rag", "adapter", "adapter+rag", "base")
Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AdapterProfile:
    """An adapter's task, as unit vectors: its task description and each example prompt."""

    name: str
    vectors: Matrix

    def match(self, question: Matrix) -> float:
        return float(np.max(self.vectors @ question)) if len(self.vectors) else 0.0


@dataclass(frozen=True)
class Evidence:
    """How well the documents answer the question: the dense similarities of the hits, best
    first (cosine, -1..1)."""

    scores: tuple[float, ...] = ()

    @property
    def top(self) -> float:
        return self.scores[0] if self.scores else 0.0

    @property
    def margin(self) -> float:
        return self.scores[0] - self.scores[1] if len(self.scores) > 1 else self.top

    def passing(self, threshold: float) -> int:
        return sum(1 for s in self.scores if s >= threshold)


@dataclass(frozen=True)
class RouteDecision:
    route: Route
    adapter: str | None
    reason: str
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def uses_retrieval(self) -> bool:
        return self.route in ("rag", "adapter+rag")


def adapter_matches(
    profiles: Sequence[AdapterProfile], question: Matrix
) -> list[tuple[str, float]]:
    """(adapter, similarity) for every profile, best first."""
    matches = [(p.name, p.match(question)) for p in profiles]
    return sorted(matches, key=lambda m: (-m[1], m[0]))


def decide(
    settings: RouterSettings,
    evidence: Evidence,
    matches: Sequence[tuple[str, float]],
    *,
    requested_adapter: str | None = None,
    forced_route: Route | None = None,
) -> RouteDecision:
    """Choose the route for one request."""
    best_name, best = matches[0] if matches else (None, 0.0)
    runner_up = matches[1][1] if len(matches) > 1 else 0.0
    passing = evidence.passing(settings.evidence_threshold)
    scores = {
        "evidence_top": round(evidence.top, 4),
        "evidence_margin": round(evidence.margin, 4),
        "evidence_passing": float(passing),
        "adapter_match": round(best, 4),
        "adapter_margin": round(best - runner_up, 4),
    }
    strong = evidence.top >= settings.strong_evidence_threshold
    clear_match = (
        best_name is not None
        and best >= settings.adapter_threshold
        and best - runner_up >= settings.adapter_margin
    )

    if forced_route is not None:
        adapter = requested_adapter or (best_name if forced_route.startswith("adapter") else None)
        if forced_route.startswith("adapter") and adapter is None:
            raise RouteRequestError(
                f"route {forced_route!r} was asked for, but no adapter is registered; name one "
                "as `model` or register one (`ragtune adapters add`)"
            )
        return RouteDecision(
            forced_route,
            adapter if forced_route.startswith("adapter") else None,
            f"The request asked for the {forced_route} route.",
            scores,
        )

    if requested_adapter is not None:
        if strong:
            return RouteDecision(
                "adapter+rag",
                requested_adapter,
                f"The request named adapter {requested_adapter!r} and the documents hold strong "
                f"evidence (top similarity {evidence.top:.2f}).",
                scores,
            )
        return RouteDecision(
            "adapter",
            requested_adapter,
            f"The request named adapter {requested_adapter!r}.",
            scores,
        )

    if clear_match:
        if strong:
            return RouteDecision(
                "adapter+rag",
                best_name,
                f"The request matches adapter {best_name!r}'s task ({best:.2f}) and the documents "
                f"hold strong evidence ({evidence.top:.2f}).",
                scores,
            )
        return RouteDecision(
            "adapter",
            best_name,
            f"The request matches adapter {best_name!r}'s task ({best:.2f}).",
            scores,
        )

    if passing or settings.base_route == "explicit":
        if passing:
            reason = (
                f"{passing} passage(s) reach the evidence threshold (top similarity "
                f"{evidence.top:.2f}); answering from the documents."
            )
        else:
            reason = (
                f"No passage reaches the evidence threshold (top {evidence.top:.2f}); the model "
                "is told the documents do not cover the question."
            )
        return RouteDecision("rag", None, reason, scores)

    return RouteDecision(
        "base",
        None,
        f"Neither the documents (top similarity {evidence.top:.2f}) nor any adapter's task "
        f"({best:.2f}) match the request; answering with the base model.",
        scores,
    )
