"""Route evaluation: replay labelled requests through the router (retrieval and adapter matching,
no engine), measure how often it picks the expected route, and suggest thresholds from the scores.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ragtune.retrieval.calibration import pseudo_queries
from ragtune.retrieval.conversation import user_turns
from ragtune.retrieval.search import SearchMode
from ragtune.serving.chat.protocol import ChatMessage
from ragtune.serving.components import Components, open_components
from ragtune.serving.errors import InvalidRequestError, RouteCasesError
from ragtune.serving.router import ROUTES, Route, RouteRequest
from ragtune.serving.settings import ServingSettings

CASES_FORMAT = (
    'one JSON object per line: {"question": "..."} or {"messages": [...]}, with "expected_route" '
    '(rag, adapter, adapter+rag or base) and optionally "expected_adapter" and "source"'
)


class _CaseLine(BaseModel):
    """One line of a case file, as written."""

    model_config = ConfigDict(extra="forbid")
    question: str | None = None
    messages: list[ChatMessage] | None = None
    expected_route: Route | None = None
    expected_adapter: str | None = None
    source: str = ""
    reference: str | None = None
    """A reference answer (`ragtune router collect` grades answers against it)."""

    @model_validator(mode="after")
    def _one_request(self) -> Self:
        if (self.question is None) == (self.messages is None):
            raise ValueError('give either "question" or "messages", not both or neither')
        if not self.turns():
            raise ValueError("the request has no text (no user message with text)")
        for index, message in enumerate(self.messages or []):
            try:  # what the server refuses is no case to route (an image part, say)
                message.check(index, "base")
            except InvalidRequestError as exc:
                raise ValueError(str(exc)) from None
        if self.expected_adapter is not None and not (self.expected_route or "").startswith(
            "adapter"
        ):
            raise ValueError(
                f'"expected_adapter" goes with the adapter routes, not {self.expected_route!r}'
            )
        return self

    def turns(self) -> list[str]:
        """What the router reads: the question, or the user messages with text, oldest first."""
        if self.question is not None:
            return [self.question] if self.question.strip() else []
        return user_turns((m.role, m.text()) for m in self.messages or [])


@dataclass(frozen=True)
class RouteCase:
    line: int
    question: str
    """The question, or the conversation's last user message with text."""
    expected_route: Route | None
    """None only in a case file read with `labelled=False` (`ragtune router collect`)."""
    expected_adapter: str | None = None
    source: str = ""
    history: tuple[str, ...] = ()
    """The conversation's earlier user messages with text, oldest first."""
    messages: tuple[ChatMessage, ...] = ()
    """The request as a client would send it (the conversation, or the question alone)."""
    reference: str | None = None

    @property
    def label(self) -> Route:
        """The expected route of a labelled case (route evaluation reads only those)."""
        if self.expected_route is None:
            raise RouteCasesError(f"line {self.line} says no expected_route")
        return self.expected_route

    def chat_messages(self) -> list[ChatMessage]:
        return list(self.messages) or [ChatMessage(role="user", content=self.question)]


def load_cases(path: Path, *, labelled: bool = True) -> list[RouteCase]:
    """The cases of a JSONL file; the first bad line is an error that names it. With
    `labelled`, every case must say its expected route."""
    try:
        # utf-8-sig: a byte-order mark (as some Windows editors save) is read past.
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise RouteCasesError(f"no such case file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RouteCasesError(f"cannot read the case file {path}: {exc}") from None
    cases = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RouteCasesError(
                f"{path}, line {number}: not valid JSON ({exc.msg}, column {exc.colno}); "
                f"expected {CASES_FORMAT}"
            ) from None
        if not isinstance(raw, dict):
            raise RouteCasesError(
                f"{path}, line {number}: not a JSON object; expected {CASES_FORMAT}"
            )
        try:
            parsed = _CaseLine.model_validate(raw)
        except ValidationError as exc:
            raise RouteCasesError(f"{path}, line {number}: {_problems(exc)}") from None
        if labelled and parsed.expected_route is None:
            raise RouteCasesError(
                f'{path}, line {number}: "expected_route" is missing; expected {CASES_FORMAT}'
            )
        *history, question = parsed.turns()
        cases.append(
            RouteCase(
                number,
                question,
                parsed.expected_route,
                parsed.expected_adapter,
                parsed.source,
                tuple(history),
                tuple(parsed.messages or ()),
                parsed.reference,
            )
        )
    if not cases:
        raise RouteCasesError(f"{path} holds no cases; expected {CASES_FORMAT}")
    return cases


def _problems(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


@dataclass(frozen=True)
class CaseResult:
    case: RouteCase
    route: Route
    adapter: str | None
    reason: str
    scores: dict[str, float]

    @property
    def route_correct(self) -> bool:
        return self.route == self.case.expected_route

    @property
    def correct(self) -> bool:
        expected_adapter = self.case.expected_adapter
        return self.route_correct and expected_adapter in (None, self.adapter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.case.line,
            "source": self.case.source,
            "question": self.case.question,
            **({"history": list(self.case.history)} if self.case.history else {}),
            "expected_route": self.case.expected_route,
            "expected_adapter": self.case.expected_adapter,
            "route": self.route,
            "adapter": self.adapter,
            "correct": self.correct,
            "reason": self.reason,
            "scores": self.scores,
        }


@dataclass(frozen=True)
class ThresholdSuggestion:
    """A threshold that separates the cases that should pass it from those that should not,
    judged by balanced accuracy (the mean of both sides' hit rates, so the larger side does not
    decide alone)."""

    setting: str
    score: str
    """The decision score the threshold applies to."""
    current: float
    positives: int
    """Cases that should reach the threshold."""
    negatives: int
    """Cases that should stay below it."""
    lowest_positive: float | None
    highest_negative: float | None
    """With `lowest_positive`: how much room the cases leave around a threshold."""
    current_accuracy: float | None
    suggested: float | None
    """None when one side has no cases (nothing to separate)."""
    accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "current": self.current,
            "current_balanced_accuracy": self.current_accuracy,
            "suggested": self.suggested,
            "balanced_accuracy": self.accuracy,
            "positives": self.positives,
            "negatives": self.negatives,
            "lowest_positive": self.lowest_positive,
            "highest_negative": self.highest_negative,
        }


@dataclass
class RouteReport:
    collection: str
    results: list[CaseResult]
    confusion: dict[Route, dict[Route, int]]
    """Expected route -> chosen route -> cases."""
    thresholds: list[ThresholdSuggestion] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return len(self.results)

    @property
    def accuracy(self) -> float:
        """Cases with the expected route and, where one is named, the expected adapter."""
        return sum(r.correct for r in self.results) / self.cases

    @property
    def route_accuracy(self) -> float:
        return sum(r.route_correct for r in self.results) / self.cases

    @property
    def misrouted(self) -> list[CaseResult]:
        return [r for r in self.results if not r.correct]

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "cases": self.cases,
            "accuracy": self.accuracy,
            "route_accuracy": self.route_accuracy,
            "routes": list(ROUTES),
            "confusion": self.confusion,
            "thresholds": {t.setting: t.to_dict() for t in self.thresholds},
            "results": [r.to_dict() for r in self.results],
        }


def balanced_accuracy(
    positives: Sequence[float], negatives: Sequence[float], threshold: float
) -> float:
    """Mean of the share of positives at or above `threshold` and of negatives below it (the
    router's comparisons are `>=`)."""
    hits = sum(s >= threshold for s in positives) / len(positives)
    rejections = sum(s < threshold for s in negatives) / len(negatives)
    return (hits + rejections) / 2


def suggest_threshold(
    positives: Sequence[float], negatives: Sequence[float]
) -> tuple[float, float] | None:
    """(threshold, balanced accuracy) that best separates `positives` (should reach it) from
    `negatives`: the midpoint between two neighbouring scores; among equals, the widest gap
    (the most room either way), then the lowest. None when a side is empty or every score is
    the same."""
    if not positives or not negatives:
        return None
    scores = sorted({*positives, *negatives})
    best: tuple[float, float, float] | None = None  # (accuracy, gap, -threshold)
    for low, high in itertools.pairwise(scores):
        threshold = (low + high) / 2
        key = (balanced_accuracy(positives, negatives, threshold), high - low, -threshold)
        if best is None or key > best:
            best = key
    if best is None:
        return None
    return -best[2], best[0]


def _suggestion(
    results: Sequence[CaseResult],
    setting: str,
    score: str,
    current: float,
    positive: Callable[[RouteCase], bool],
    negative: Callable[[RouteCase], bool],
) -> ThresholdSuggestion:
    pos = [r.scores[score] for r in results if positive(r.case)]
    neg = [r.scores[score] for r in results if negative(r.case)]
    return _suggested(setting, score, current, pos, neg)


def evaluate_routes(
    components: Components,
    cases: Sequence[RouteCase],
    *,
    collection: str | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
) -> RouteReport:
    """Route every case as a chat request would be routed (no adapter named, no route forced),
    by the server's own chat service (`open_components(settings, generation=False)`)."""
    registered = components.fleet.names()
    unknown = [c for c in cases if c.expected_adapter and c.expected_adapter not in registered]
    if unknown:
        raise RouteCasesError(
            f"line {unknown[0].line} expects adapter {unknown[0].expected_adapter!r}, which is "
            f"not registered (registered: {', '.join(sorted(registered)) or 'none'})"
        )
    results = []
    for case in cases:
        request = RouteRequest(case.question, history=case.history, collection=collection)
        plan = components.chat.route(request).plan
        result = CaseResult(case, plan.route, plan.adapter, plan.reason, plan.scores)
        results.append(result)
        if on_case is not None:
            on_case(result)

    confusion: dict[Route, dict[Route, int]] = {e: dict.fromkeys(ROUTES, 0) for e in ROUTES}
    for result in results:
        confusion[result.case.label][result.route] += 1
    router = components.settings.router
    thresholds = [
        # Documents should count as evidence for the RAG routes, and not when the base model
        # answers (adapter cases may or may not have evidence: left out).
        _suggestion(
            results,
            "evidence_threshold",
            "evidence_top",
            router.evidence_threshold,
            lambda c: c.expected_route in ("rag", "adapter+rag"),
            lambda c: c.expected_route == "base",
        ),
        _suggestion(
            results,
            "adapter_threshold",
            "adapter_match",
            router.adapter_threshold,
            lambda c: c.label.startswith("adapter"),
            lambda c: not c.label.startswith("adapter"),
        ),
    ]
    return RouteReport(
        collection or components.retrievers.default_collection, results, confusion, thresholds
    )


GENERAL_QUESTIONS = (
    "What is a good recipe for banana bread?",
    "How do I train my dog to stop barking at night?",
    "Which planets can be seen without a telescope?",
    "What should I pack for a week of hiking in the mountains?",
    "Can you write a short poem about autumn leaves?",
    "How do I remove rust from a bicycle chain?",
    "What are the rules of chess castling?",
    "Suggest a name for a small bakery by the sea.",
    "How much sleep does a teenager need?",
    "What is the tallest mountain in Africa?",
    "Give me ideas for a ten-year-old's birthday party.",
    "How do I keep basil alive on a windowsill?",
    "What is the plot of Pride and Prejudice in two sentences?",
    "Which wine goes well with grilled salmon?",
    "How do I say thank you in Japanese?",
    "What is a fun board game for four adults?",
    "How can I stop procrastinating on weekends?",
    "What is the difference between a crocodile and an alligator?",
    "Write a limerick about a sleepy owl.",
    "What are good exercises for a stiff neck?",
    "Good evening! What's new with you?",
    "How many minutes should I steep green tea?",
    "Which city has the oldest metro system?",
    "What's a polite way to decline a wedding invitation?",
)
"""Requests no organisation's documents or adapters are meant for: the negatives of the
zero-config threshold suggestion (`suggest_from_collection`)."""


def suggest_from_collection(
    components: Components, collection: str | None = None, *, queries: int = 200, seed: int = 0
) -> list[ThresholdSuggestion]:
    """Thresholds for a fresh deployment, from the collection and the adapters themselves (no
    labels): the evidence threshold separates pseudo-queries drawn from the collection's chunks
    (a sentence of a chunk, thinned; its best similarity to another chunk, the source left out
    as a real question does not quote its answer) from general questions and the adapters'
    example prompts; the adapter threshold separates each adapter's example prompts (matched
    against its task and its other examples, leaving each one out) from the pseudo-queries and
    the general questions."""
    retriever = components.retrievers.get(collection)
    drawn = pseudo_queries(retriever.collection, retriever.lexical(), queries, seed)
    if len(drawn) < 20:
        raise RouteCasesError(
            f"collection {retriever.collection.name!r} gives only {len(drawn)} pseudo-queries "
            "(chunks with sentences of 6 words or more): ingest more documents, or label cases "
            "(`ragtune eval route --cases FILE`)"
        )
    examples = [(m.name, [m.task, *m.examples[:50]]) for m in components.registry.list()]
    prompts = [text for _, texts in examples for text in texts[1:]]

    def top_evidence(texts: Sequence[str], skip: Sequence[str | None]) -> list[float]:
        vectors = retriever.embedder.embed_queries(list(texts))
        best = []
        for text, vector, source in zip(texts, vectors, skip, strict=True):
            hits = retriever.search(text, 6, SearchMode("dense"), vector=vector)
            scores = [h.similarity for h in hits if h.chunk_id != source]
            best.append(max(scores, default=0.0))
        return best

    inside = top_evidence([q.text for q in drawn], [q.chunk_id for q in drawn])
    outside = top_evidence(
        [*GENERAL_QUESTIONS, *prompts], [None] * (len(GENERAL_QUESTIONS) + len(prompts))
    )
    router = components.settings.router
    suggestions = [
        _suggested("evidence_threshold", "evidence_top", router.evidence_threshold, inside, outside)
    ]
    if examples:
        own = []
        for _, texts in examples:
            vectors = np.asarray(components.embedder.embed_queries(texts))
            similarity = vectors @ vectors.T
            for i in range(1, len(texts)):
                others = np.delete(similarity[i], i)
                own.append(float(others.max()))
        strangers = [
            components.fleet.matches(v)[0][1]
            for v in components.embedder.embed_queries(
                [*GENERAL_QUESTIONS, *(q.text for q in drawn)]
            )
        ]
        suggestions.append(
            _suggested(
                "adapter_threshold", "adapter_match", router.adapter_threshold, own, strangers
            )
        )
    return suggestions


def suggest_for_deployment(
    settings: ServingSettings, collection: str | None = None, *, queries: int = 200
) -> list[ThresholdSuggestion]:
    """`ragtune eval route --suggest`: `suggest_from_collection` on the server's own parts (no
    engine)."""
    with open_components(settings, generation=False) as components:
        return suggest_from_collection(components, collection, queries=queries)


def _suggested(
    setting: str, score: str, current: float, positives: Sequence[float], negatives: Sequence[float]
) -> ThresholdSuggestion:
    suggested = suggest_threshold(positives, negatives)
    return ThresholdSuggestion(
        setting=setting,
        score=score,
        current=current,
        positives=len(positives),
        negatives=len(negatives),
        lowest_positive=min(positives, default=None),
        highest_negative=max(negatives, default=None),
        current_accuracy=balanced_accuracy(positives, negatives, current)
        if positives and negatives
        else None,
        suggested=suggested[0] if suggested else None,
        accuracy=suggested[1] if suggested else None,
    )


class RouteReporter(Protocol):
    """Told how a route evaluation advances (the CLI draws progress from it)."""

    def loading(self) -> AbstractContextManager[object]:
        """Held while the store, the embedding model and the adapters' profiles load."""
        ...

    def routing(self, cases: int) -> AbstractContextManager[Callable[[CaseResult], None]]:
        """Held while the cases are routed; what it gives is told each case's result."""
        ...


class _Quiet:
    def loading(self) -> AbstractContextManager[object]:
        return nullcontext()

    def routing(self, cases: int) -> AbstractContextManager[Callable[[CaseResult], None]]:
        return nullcontext(lambda _: None)


def evaluate_case_file(
    settings: ServingSettings,
    cases_file: Path,
    *,
    collection: str | None = None,
    reporter: RouteReporter | None = None,
) -> RouteReport:
    """`ragtune eval route`: the cases of a JSONL file routed by the router the server would
    build from `settings` (retrieval and adapter matching; no engine)."""
    cases = load_cases(cases_file)
    reporter = reporter or _Quiet()
    with ExitStack() as stack:
        with reporter.loading():
            # Routing only: no tokenizer, and engine clients that are never called.
            components = stack.enter_context(open_components(settings, generation=False))
        on_case = stack.enter_context(reporter.routing(len(cases)))
        return evaluate_routes(components, cases, collection=collection, on_case=on_case)
