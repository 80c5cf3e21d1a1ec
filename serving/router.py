"""The per-request router: retrieval-augmented prompting by default, a LoRA adapter when the
request clearly matches an adapter's task, both when it also has strong evidence in the documents,
the plain base model when neither applies.

Every routing rule is here and nowhere else: whether retrieval runs, a forced route against a
named adapter, which passages count as evidence, how many tokens the answer may take, what a
learned router (`serving.learned_router`, `ragtune router train`) may decide, from which
features (`FEATURES`), and what a stale adapter gets. Pure and
deterministic: the inputs are what the chat service already computed (the conversation's query is
embedded once, for retrieval and adapter matching alike), so a decision takes microseconds.

Usage:
    request = RouteRequest(question, adapter=None, answer=AnswerBound.of(None, limit=0))
    hits = search(...) if request.searches_documents else []
    plan = plan_route(settings, request, hits, adapter_matches(profiles, vector))
    plan.route, plan.adapter, plan.evidence, plan.answer.reserve(context_length, ...)
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ragtune.retrieval.search import SearchHit
from ragtune.serving.errors import InvalidRequestError, RouteRequestError
from ragtune.serving.settings import RouterSettings

Route = Literal["rag", "adapter", "adapter+rag", "base"]
ROUTES: tuple[Route, ...] = ("rag", "adapter", "adapter+rag", "base")
DOCUMENT_ROUTES: frozenset[Route] = frozenset({"rag", "adapter+rag"})
ADAPTER_ROUTES: frozenset[Route] = frozenset({"adapter", "adapter+rag"})
ADVISED_AGAINST: dict[str, str] = {
    "prompting": "prompting is enough",
    "retrieval": "retrieval is the fix",
}
"""`ragtune advise` verdicts (as stored in an adapter's manifest) under which the router does
not choose the adapter by itself, with how a reason says them."""


@dataclass(frozen=True)
class AnswerBound:
    """How many tokens the answer may take: what the client asked (`max_tokens` or
    `max_completion_tokens`, one number), else the server's default; within the server's limit
    and what the prompt leaves of the context. Never unbounded: an answer running to the end of
    the context takes minutes on a CPU."""

    asked: int | None = None
    limit: int = 0
    """RAGTUNE_MAX_TOKENS_LIMIT; 0: what the context allows."""
    default: int = 512
    """RAGTUNE_DEFAULT_MAX_TOKENS: the bound of a request that sets none (and the room a RAG
    prompt keeps for its answer then)."""

    @classmethod
    def of(
        cls, asked: int | None, *, limit: int = 0, default: int = 512, param: str = "max_tokens"
    ) -> AnswerBound:
        """The bound of a request; InvalidRequestError (naming `param`) above the limit."""
        if limit and asked and asked > limit:
            raise InvalidRequestError(
                f"max_tokens {asked} is above this server's limit of {limit} "
                "(RAGTUNE_MAX_TOKENS_LIMIT); ask for fewer",
                param=param,
            )
        return cls(asked, limit, default)

    def reserve(self, context_length: int, with_documents: bool) -> int:
        """Tokens kept free for the answer while the prompt is built: what the client asked;
        else, beside documents, a default share of the context (the passages fill the rest);
        else one token (the conversation alone just has to fit)."""
        if self.asked:
            return self.asked
        return min(self.default, context_length // 2) if with_documents else 1

    def engine_max_tokens(self, context_length: int, prompt_tokens: int) -> int:
        """The engine's `max_tokens`: what the client asked (already checked against the limit
        and, with the prompt, against the context); else the default, within the limit and
        what the prompt leaves of the context (at least 1: the prompt was checked to fit)."""
        if self.asked:
            return self.asked
        bound = min(self.default, self.limit) if self.limit else self.default
        return max(1, min(bound, context_length - prompt_tokens))


@dataclass(frozen=True)
class RouteRequest:
    """What one request asks of the router."""

    question: str
    """What the request asks: the last user message with text."""
    history: tuple[str, ...] = ()
    """The earlier user messages with text, oldest first: retrieval and adapter matching read
    them with the question (`retrieval.conversation`), so that a follow-up finds its topic."""
    route: Route | None = None
    """A route the client forced (`ragtune.route`)."""
    adapter: str | None = None
    """The adapter the client named as `model` (None: the base model, the router chooses)."""
    collection: str | None = None
    """The collection the client named (None: the default), the first of several."""
    also_searched: tuple[str, ...] = ()
    """The other collections the client named to be searched with `collection`."""
    filters: Mapping[str, str] | None = None
    max_passages: int | None = None
    """At most this many of the passages, the first in retrieval order (a `file_search`
    tool's `max_num_results`; None: all that the server's own bound, RAGTUNE_RAG_TOP_K, lets
    through). The router decides on every passage found all the same."""
    min_score: float = 0.0
    """Passages less similar to the question (dense similarity) are not given to the model,
    besides those below the evidence threshold (a `file_search` tool's `score_threshold`)."""
    answer: AnswerBound = field(default_factory=AnswerBound)

    @property
    def collections(self) -> tuple[str, ...]:
        """Every collection the client named, in its order (none: the default)."""
        return () if self.collection is None else (self.collection, *self.also_searched)

    @property
    def turns(self) -> tuple[str, ...]:
        """The user messages the retrieval query is built from, oldest first."""
        return (*self.history, self.question)

    @property
    def searches_documents(self) -> bool:
        """Retrieval runs unless the client forced a route that uses no documents."""
        return self.route not in ("adapter", "base")

    @property
    def requires_documents(self) -> bool:
        """A missing collection is the client's error when it named one or forced RAG;
        otherwise it means nothing was ingested yet (no evidence)."""
        return self.collection is not None or self.route == "rag"

    @property
    def named_adapter(self) -> str | None:
        """The adapter the request uses whatever the scores: none when the forced route uses
        no adapter (a named one is then ignored)."""
        return self.adapter if self.route not in ("rag", "base") else None


@dataclass(frozen=True)
class RoutePlan:
    """The router's answer for one request: everything the prompt and the engine call need."""

    route: Route
    adapter: str | None
    reason: str
    scores: dict[str, float] = field(default_factory=dict)
    evidence: tuple[SearchHit, ...] = ()
    """The passages that count as evidence (dense similarity at the threshold), in retrieval
    order; empty on the routes that use no documents. The prompt keeps as many as fit."""
    answer: AnswerBound = field(default_factory=AnswerBound)
    features: dict[str, float] = field(default_factory=dict)
    """What the router knew when it decided (`FEATURES`): recorded with outcomes to train a
    learned router; not sent to clients."""

    @property
    def uses_documents(self) -> bool:
        return self.route in DOCUMENT_ROUTES


@dataclass(frozen=True)
class Evidence:
    """How well the documents answer the question: the dense similarities of the hits, best
    first (cosine, -1..1)."""

    scores: tuple[float, ...] = ()

    @classmethod
    def of(cls, hits: Sequence[SearchHit]) -> Evidence:
        dense = (h.dense_score for h in hits if h.dense_score is not None)
        return cls(tuple(sorted(dense, reverse=True)))

    @property
    def top(self) -> float:
        return self.scores[0] if self.scores else 0.0

    @property
    def margin(self) -> float:
        return self.scores[0] - self.scores[1] if len(self.scores) > 1 else self.top

    def passing(self, threshold: float) -> int:
        return sum(1 for s in self.scores if s >= threshold)


FEATURES: tuple[str, ...] = (
    "evidence_top",
    "evidence_second",
    "evidence_margin",
    "evidence_mean",
    "evidence_passing",
    "lexical_overlap",
    "adapter_match",
    "adapter_margin",
    "question_words",
    "turns",
    "verdict_against",
    "verdict_finetune",
    "adapter_stale",
)
"""What a learned router reads (`decision_features`): the schema a router file is trained on."""

FEATURES_REVISION = 2
"""What the numbers of `FEATURES` mean, as outcomes record them and a router file is trained on
them: 1 until 2026-12-08; 2 since, when `lexical_overlap` reads a follow-up's conversation query
(its own words before; and `turns` counts at most `MOST_TURNS_COUNTED`, since 2026-12-07; a
line or file written between that change and this revision, on 2026-12-08, has no revision and
reads as 1). A question asked alone reads the same in both: only a case of several user turns
was recorded otherwise (`CaseOutcome.reads_as_now`)."""

MOST_TURNS_COUNTED = 16
"""The `turns` feature counts at most this many user turns: a conversation of hundreds (a
client's padding, a long chat) was a number no router file was trained near, which a logistic
router's linear score could let decide the route alone."""

_WORD = re.compile(r"[a-z0-9_]{3,}")


def decision_features(
    request: RouteRequest,
    evidence: Evidence,
    hits: Sequence[SearchHit],
    matches: Sequence[tuple[str, float]],
    advice: Mapping[str, str],
    settings: RouterSettings,
    *,
    stale_evidence: bool = False,
    query: str | None = None,
) -> dict[str, float]:
    """The numbers the router has when it decides, by name (`FEATURES`): evidence (dense
    similarities of the hits, how many reach the threshold, how many of the words the best
    passage was found for it holds), the best adapter's match and lead, the question's length
    and turn, the best adapter's `ragtune advise` verdict and staleness. `query`: the text the
    best passage was retrieved for (`retrieval.conversation`: a follow-up read with the turn
    whose topic it continues); None: the question. A follow-up's own words ("And how do I turn
    that off?") are rarely its passage's, so its overlap read weak evidence where the passage
    answered the conversation."""
    scores = evidence.scores
    words = set(_WORD.findall((query or request.question).lower()))
    top_text = hits[0].text.lower() if hits else ""
    overlap = sum(1 for w in words if w in top_text) / len(words) if words and hits else 0.0
    best_name, best = matches[0] if matches else (None, 0.0)
    runner_up = matches[1][1] if len(matches) > 1 else 0.0
    verdict = advice.get(best_name) if best_name is not None else None
    return {
        "evidence_top": evidence.top,
        "evidence_second": scores[1] if len(scores) > 1 else 0.0,
        "evidence_margin": evidence.margin,
        "evidence_mean": sum(scores) / len(scores) if scores else 0.0,
        "evidence_passing": float(evidence.passing(settings.evidence_threshold)),
        "lexical_overlap": overlap,
        "adapter_match": best,
        "adapter_margin": best - runner_up,
        "question_words": math.log1p(len(request.question.split())),
        "turns": float(min(len(request.turns), MOST_TURNS_COUNTED)),
        "verdict_against": 1.0 if verdict in ADVISED_AGAINST else 0.0,
        "verdict_finetune": 1.0 if verdict == "fine-tune" else 0.0,
        "adapter_stale": 1.0 if stale_evidence else 0.0,
    }


class RouteChooser(Protocol):
    """A learned router (`serving.learned_router.RouteModel`) as the plan sees it."""

    def choose(
        self, features: Mapping[str, float], allowed: Collection[Route], explain: int = 2
    ) -> LearnedChoice | None: ...

    def describe(self) -> str: ...


class LearnedChoice(Protocol):
    @property
    def route(self) -> Route: ...
    @property
    def probability(self) -> float: ...
    @property
    def top_features(self) -> tuple[str, ...]: ...


def plan_route(
    settings: RouterSettings,
    request: RouteRequest,
    hits: Sequence[SearchHit],
    matches: Sequence[tuple[str, float]],
    advice: Mapping[str, str] | None = None,
    stale: Mapping[str, frozenset[str]] | None = None,
    *,
    model: RouteChooser | None = None,
    query: str | None = None,
) -> RoutePlan:
    """Choose the route for one request. `hits` are the retrieved passages (none when the
    request does not search documents), `matches` each adapter's similarity to the question,
    best first; `advice` the `ragtune advise` verdict of each adapter that has one; `stale` the
    ids of the documents changed since each stale adapter was trained (`doc_id`s); `model` a
    learned router, which replaces the thresholds where the request leaves the choice open;
    `query` the text the first of `hits` was retrieved for (None: the question)."""
    advice = advice or {}
    changed = _changed_evidence(settings, hits, stale or {})
    best_name = matches[0][0] if matches else None
    evidence = Evidence.of(hits)
    features = decision_features(
        request,
        evidence,
        hits,
        matches,
        advice,
        settings,
        stale_evidence=best_name in changed,
        query=query,
    )
    route, adapter, reason, scores = _decide(settings, request, evidence, matches, advice, changed)
    if model is not None and request.route is None and request.named_adapter is None:
        route, adapter, reason = _learned(
            settings, model, features, matches, advice, changed, (route, adapter, reason)
        )
    passages: tuple[SearchHit, ...] = ()
    if route in DOCUMENT_ROUTES:
        threshold = max(settings.evidence_threshold, request.min_score)
        passages = tuple(h for h in hits if h.similarity >= threshold)
        passages = passages[: request.max_passages]  # None: all
    return RoutePlan(route, adapter, reason, scores, passages, request.answer, features)


def _learned(
    settings: RouterSettings,
    model: RouteChooser,
    features: Mapping[str, float],
    matches: Sequence[tuple[str, float]],
    advice: Mapping[str, str],
    changed: Mapping[str, str],
    thresholds: tuple[Route, str | None, str],
) -> tuple[Route, str | None, str]:
    """The learned router's choice among the routes this request may take: adapter routes
    only with an adapter to use (the best match) that `ragtune advise` did not advise against,
    the base model only when `base_route` is auto; a stale adapter whose evidence changed gets
    the fresh passages (adapter+rag), as with the thresholds. Where the model knows none of the
    allowed routes, the thresholds' plan stands."""
    route, adapter, reason = thresholds
    best_name = matches[0][0] if matches else None
    allowed: set[Route] = {"rag"}
    if settings.base_route == "auto":
        allowed.add("base")
    if best_name is not None and advice.get(best_name) not in ADVISED_AGAINST:
        allowed |= ADAPTER_ROUTES
    choice = model.choose(features, allowed)
    if choice is None:
        return route, adapter, reason
    chosen = choice.route
    named = best_name if chosen in ADAPTER_ROUTES else None
    weighed = ", ".join(f"{name} {features[name]:.2f}" for name in choice.top_features)
    because = f"; {weighed} weigh most" if weighed else ""
    target = f" with adapter {named!r}" if named else ""
    learned = (
        f"The {model.describe()} chose {chosen}{target} (p={choice.probability:.2f}{because}). "
        f"The thresholds would have taken {route}."
    )
    if chosen == "adapter" and named is not None and named in changed:
        chosen = "adapter+rag"
        learned += f" But {_stale_evidence(named, changed)}"
    return chosen, named, learned


def _changed_evidence(
    settings: RouterSettings, hits: Sequence[SearchHit], stale: Mapping[str, frozenset[str]]
) -> dict[str, str]:
    """Stale adapter -> the documents (as readers see them) that hold evidence for this request
    and changed since it was trained; only the adapters with such evidence."""
    evidence = [h for h in hits if h.similarity >= settings.evidence_threshold]
    changed = {}
    for adapter, documents in stale.items():
        inside = (h for h in evidence if h.metadata.get("doc_id") in documents)
        names = list(dict.fromkeys(h.document or h.source for h in inside))
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            changed[adapter] = ", ".join(names[:3]) + more
    return changed


def _decide(
    settings: RouterSettings,
    request: RouteRequest,
    evidence: Evidence,
    matches: Sequence[tuple[str, float]],
    advice: Mapping[str, str],
    changed: Mapping[str, str],
) -> tuple[Route, str | None, str, dict[str, float]]:
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
    named = request.named_adapter

    forced = request.route
    if forced is not None:
        if forced not in ADAPTER_ROUTES:
            return forced, None, f"The request asked for the {forced} route.", scores
        adapter = named or best_name
        if adapter is None:
            raise RouteRequestError(
                f"route {forced!r} was asked for, but no adapter is registered; name one "
                "as `model` or register one (`ragtune adapters add`)"
            )
        return forced, adapter, f"The request asked for the {forced} route.", scores

    if named is not None:
        if strong:
            return (
                "adapter+rag",
                named,
                f"The request named adapter {named!r} and the documents hold strong "
                f"evidence (top similarity {evidence.top:.2f}).",
                scores,
            )
        if named in changed:
            # The client chose the adapter: it answers, with the passages it never saw.
            return (
                "adapter+rag",
                named,
                f"The request named adapter {named!r}; {_stale_evidence(named, changed)}",
                scores,
            )
        return "adapter", named, f"The request named adapter {named!r}.", scores

    declined = ""
    if clear_match and best_name is not None and advice.get(best_name) in ADVISED_AGAINST:
        # The task's own evaluation found the adapter does not pay: the router leaves it
        # (a request that names it still gets it).
        declined = (
            f"The request matches adapter {best_name!r}'s task ({best:.2f}), but `ragtune "
            f"advise` found {ADVISED_AGAINST[advice[best_name]]} for that task, so it is used "
            "only when named. "
        )
        clear_match = False

    if clear_match and best_name is not None:
        if strong:
            return (
                "adapter+rag",
                best_name,
                f"The request matches adapter {best_name!r}'s task ({best:.2f}) and the "
                f"documents hold strong evidence ({evidence.top:.2f}).",
                scores,
            )
        if best_name in changed:
            return (
                "adapter+rag",
                best_name,
                f"The request matches adapter {best_name!r}'s task ({best:.2f}); "
                f"{_stale_evidence(best_name, changed)}",
                scores,
            )
        return (
            "adapter",
            best_name,
            f"The request matches adapter {best_name!r}'s task ({best:.2f}).",
            scores,
        )

    if passing:
        reason = (
            f"{declined}{passing} passage(s) reach the evidence threshold (top similarity "
            f"{evidence.top:.2f}); answering from the documents."
        )
        return "rag", None, reason, scores
    if settings.base_route == "explicit":
        reason = (
            f"{declined}No passage reaches the evidence threshold (top {evidence.top:.2f}); "
            "the model is told the documents do not cover the question."
        )
        return "rag", None, reason, scores
    if declined:
        return (
            "base",
            None,
            f"{declined}No passage reaches the evidence threshold (top "
            f"{evidence.top:.2f}); answering with the base model.",
            scores,
        )
    return (
        "base",
        None,
        f"Neither the documents (top similarity {evidence.top:.2f}) nor any adapter's task "
        f"({best:.2f}) match the request; answering with the base model.",
        scores,
    )


def _stale_evidence(adapter: str, changed: Mapping[str, str]) -> str:
    return (
        f"adapter {adapter!r} was trained on an earlier revision of the documents, and the "
        f"evidence lies in changed document(s) {changed[adapter]}: answering with the adapter "
        "and the fresh passages."
    )
