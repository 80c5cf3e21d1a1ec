"""The routing plan, table-driven: every rule of the router on numbers chosen by hand (no
retrieval, no embedding, no engine)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ragtune.retrieval.search import SearchHit
from ragtune.serving.errors import InvalidRequestError, RouteRequestError
from ragtune.serving.router import (
    MOST_TURNS_COUNTED,
    AnswerBound,
    Route,
    RouteRequest,
    plan_route,
)
from ragtune.serving.settings import RouterSettings

SETTINGS = RouterSettings(
    evidence_threshold=0.4,
    strong_evidence_threshold=0.6,
    adapter_threshold=0.35,
    adapter_margin=0.05,
)
EXPLICIT = SETTINGS.model_copy(update={"base_route": "explicit"})
STRONG, WEAK, NONE = (0.7, 0.5, 0.2), (0.5, 0.3), (0.3, 0.1)
"""Dense similarities of the retrieved passages: strong evidence, evidence, none passing."""
CLEAR = [("titler", 0.6), ("coder", 0.3)]
CLOSE = [("titler", 0.6), ("coder", 0.58)]
LOW = [("titler", 0.2), ("coder", 0.1)]


def hits(*scores: float) -> list[SearchHit]:
    return [
        SearchHit(
            rank=n,
            chunk_id=f"c{n}",
            text=f"passage {n}",
            source="doc.md",
            section="",
            score=1.0 / n,
            metadata={},
            dense_score=score,
        )
        for n, score in enumerate(scores, start=1)
    ]


@pytest.mark.parametrize(
    ("dense", "matches", "route", "adapter", "settings"),
    [
        # No adapter matches: the documents decide.
        (STRONG, LOW, "rag", None, SETTINGS),
        (WEAK, LOW, "rag", None, SETTINGS),
        (NONE, LOW, "base", None, SETTINGS),
        ((), [], "base", None, SETTINGS),
        # base_route explicit: RAG (the model is told the documents do not cover it).
        (NONE, LOW, "rag", None, EXPLICIT),
        ((), [], "rag", None, EXPLICIT),
        # A clear match: the adapter, with the documents when their evidence is strong.
        (NONE, CLEAR, "adapter", "titler", SETTINGS),
        (WEAK, CLEAR, "adapter", "titler", SETTINGS),
        (STRONG, CLEAR, "adapter+rag", "titler", SETTINGS),
        # Two adapters too close to tell apart: no adapter.
        (WEAK, CLOSE, "rag", None, SETTINGS),
        (NONE, CLOSE, "base", None, SETTINGS),
    ],
)
def test_the_router_chooses(
    dense: Sequence[float],
    matches: list[tuple[str, float]],
    route: Route,
    adapter: str | None,
    settings: RouterSettings,
) -> None:
    plan = plan_route(settings, RouteRequest("q"), hits(*dense), matches)
    assert (plan.route, plan.adapter) == (route, adapter)
    assert plan.reason
    assert plan.scores["evidence_top"] == (max(dense) if dense else 0.0)


@pytest.mark.parametrize(
    ("forced", "named", "matches", "route", "adapter"),
    [
        # A forced route without an adapter ignores a named one.
        ("rag", "coder", CLEAR, "rag", None),
        ("base", "coder", CLEAR, "base", None),
        # A forced adapter route takes the named adapter, else the best match (clear or not).
        ("adapter", "coder", CLEAR, "adapter", "coder"),
        ("adapter", None, LOW, "adapter", "titler"),
        ("adapter+rag", None, CLOSE, "adapter+rag", "titler"),
        # A named adapter without a forced route: the adapter, whatever the matches say.
        (None, "coder", CLEAR, "adapter", "coder"),
        (None, "coder", LOW, "adapter", "coder"),
    ],
)
def test_what_the_request_asks_for_wins(
    forced: Route | None,
    named: str | None,
    matches: list[tuple[str, float]],
    route: Route,
    adapter: str | None,
) -> None:
    request = RouteRequest("q", route=forced, adapter=named)
    plan = plan_route(SETTINGS, request, hits(*WEAK), matches)
    assert (plan.route, plan.adapter) == (route, adapter)
    if forced is not None:
        assert plan.reason == f"The request asked for the {forced} route."


def test_a_named_adapter_gets_the_documents_when_their_evidence_is_strong() -> None:
    plan = plan_route(SETTINGS, RouteRequest("q", adapter="coder"), hits(*STRONG), LOW)
    assert (plan.route, plan.adapter) == ("adapter+rag", "coder")


def test_a_forced_adapter_route_needs_an_adapter() -> None:
    with pytest.raises(RouteRequestError, match="no adapter is registered"):
        plan_route(SETTINGS, RouteRequest("q", route="adapter"), hits(*STRONG), [])


@pytest.mark.parametrize(
    ("forced", "searches", "requires"),
    [
        (None, True, False),
        ("rag", True, True),
        ("adapter+rag", True, False),
        ("adapter", False, False),
        ("base", False, False),
    ],
)
def test_whether_retrieval_runs(forced: Route | None, searches: bool, requires: bool) -> None:
    request = RouteRequest("q", route=forced)
    assert request.searches_documents is searches
    assert request.requires_documents is requires
    # A collection the client names must exist, whatever the route.
    assert RouteRequest("q", route=forced, collection="handbook").requires_documents


@pytest.mark.parametrize(
    ("dense", "matches", "evidence"),
    [
        (STRONG, LOW, ["c1", "c2"]),  # rag: the passages at the threshold, in retrieval order
        ((0.2, 0.45, 0.41, 0.39), LOW, ["c2", "c3"]),
        (STRONG, CLEAR, ["c1", "c2"]),  # adapter+rag
        (WEAK, CLEAR, []),  # adapter: no documents in the prompt
        (NONE, LOW, []),  # base
    ],
)
def test_only_passages_at_the_threshold_count_as_evidence(
    dense: Sequence[float], matches: list[tuple[str, float]], evidence: list[str]
) -> None:
    plan = plan_route(SETTINGS, RouteRequest("q"), hits(*dense), matches)
    assert [h.chunk_id for h in plan.evidence] == evidence
    assert plan.uses_documents is (plan.route in ("rag", "adapter+rag"))


def test_weak_evidence_with_an_explicit_base_route_is_rag_without_passages() -> None:
    plan = plan_route(EXPLICIT, RouteRequest("q"), hits(*NONE), LOW)
    assert plan.route == "rag"
    assert plan.evidence == ()
    assert "do not cover" in plan.reason


def test_the_plan_is_deterministic() -> None:
    request = RouteRequest("q")
    first = plan_route(SETTINGS, request, hits(*WEAK), CLOSE)
    assert all(plan_route(SETTINGS, request, hits(*WEAK), CLOSE) == first for _ in range(10))


@pytest.mark.parametrize(
    ("asked", "limit", "with_documents", "reserve", "engine"),
    [
        # What the client asked, for both.
        (100, 0, True, 100, 100),
        (100, 200, False, 100, 100),
        # Nothing asked: beside documents, the default share (at most half the context)...
        (None, 0, True, 512, 512),
        # ...the conversation alone just has to fit; the engine gets the default (never an
        # unbounded answer), within the limit if any, within what the prompt leaves.
        (None, 0, False, 1, 512),
        (None, 300, False, 1, 300),
        (None, 1000, False, 1, 512),
    ],
)
def test_the_answer_bound(
    asked: int | None, limit: int, with_documents: bool, reserve: int, engine: int
) -> None:
    bound = AnswerBound.of(asked, limit=limit, default=512)
    assert bound.reserve(4096, with_documents) == reserve
    assert bound.engine_max_tokens(4096, prompt_tokens=1000) == engine


def test_the_answer_bound_keeps_room_for_the_prompt() -> None:
    assert AnswerBound.of(None, default=512).reserve(600, with_documents=True) == 300
    assert AnswerBound.of(None, limit=300).engine_max_tokens(1000, prompt_tokens=900) == 100
    assert AnswerBound.of(None, default=512).engine_max_tokens(1000, prompt_tokens=900) == 100


def test_an_answer_bound_over_the_limit_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="above this server's limit of 64") as caught:
        AnswerBound.of(65, limit=64, param="max_completion_tokens")
    assert caught.value.param == "max_completion_tokens"


def test_the_plan_carries_the_answer_bound() -> None:
    bound = AnswerBound.of(32, limit=64)
    plan = plan_route(SETTINGS, RouteRequest("q", answer=bound), hits(*WEAK), LOW)
    assert plan.answer == bound


@pytest.mark.parametrize(
    ("verdict", "dense", "route", "adapter"),
    [
        # `ragtune advise` found the adapter does not pay: the router leaves it.
        ("prompting", WEAK, "rag", None),
        ("prompting", NONE, "base", None),
        ("retrieval", STRONG, "rag", None),
        # Verdicts that do not advise against it: chosen as before.
        ("fine-tune", NONE, "adapter", "titler"),
        ("undecided", STRONG, "adapter+rag", "titler"),
    ],
)
def test_the_router_respects_an_adapters_advice(
    verdict: str, dense: Sequence[float], route: Route, adapter: str | None
) -> None:
    plan = plan_route(SETTINGS, RouteRequest("q"), hits(*dense), CLEAR, {"titler": verdict})
    assert (plan.route, plan.adapter) == (route, adapter)
    if adapter is None:
        assert "ragtune advise" in plan.reason
        assert "'titler'" in plan.reason
    # Named, it is served whatever the advice.
    named = plan_route(
        SETTINGS, RouteRequest("q", adapter="titler"), hits(*dense), CLEAR, {"titler": verdict}
    )
    assert named.adapter == "titler"


def hits_in(*passages: tuple[str, float]) -> list[SearchHit]:
    """Retrieved passages as (document id, dense similarity)."""
    return [
        SearchHit(
            rank=n,
            chunk_id=f"c{n}",
            text=f"passage {n}",
            source=f"/srv/{doc}.md",
            section="",
            score=1.0 / n,
            metadata={"doc_id": doc},
            dense_score=score,
            document=f"{doc}.md",
        )
        for n, (doc, score) in enumerate(passages, start=1)
    ]


STALE = {"titler": frozenset({"changed"})}
"""titler was trained alongside an earlier version of the document `changed`."""


@pytest.mark.parametrize(
    ("passages", "matches", "named", "forced", "route", "adapter"),
    [
        # Evidence in a changed document: the stale adapter answers with the fresh passages.
        ((("changed", 0.5),), CLEAR, None, None, "adapter+rag", "titler"),
        ((("same", 0.5), ("changed", 0.45)), CLEAR, None, None, "adapter+rag", "titler"),
        # ...named, whatever the match (the client chose it).
        ((("changed", 0.5),), LOW, "titler", None, "adapter+rag", "titler"),
        # The changed document holds no evidence (below the threshold, or not retrieved).
        ((("same", 0.5), ("changed", 0.3)), CLEAR, None, None, "adapter", "titler"),
        ((("same", 0.5),), CLEAR, None, None, "adapter", "titler"),
        # Another adapter than the stale one.
        ((("changed", 0.5),), [("coder", 0.6), ("titler", 0.3)], None, None, "adapter", "coder"),
        ((("changed", 0.5),), LOW, "coder", None, "adapter", "coder"),
        # No clear match: the documents answer, as without staleness.
        ((("changed", 0.5),), CLOSE, None, None, "rag", None),
        # A forced route wins.
        ((("changed", 0.5),), CLEAR, None, "adapter", "adapter", "titler"),
    ],
)
def test_a_stale_adapter_gets_the_fresh_passages_when_the_evidence_changed(
    passages: tuple[tuple[str, float], ...],
    matches: list[tuple[str, float]],
    named: str | None,
    forced: Route | None,
    route: Route,
    adapter: str | None,
) -> None:
    request = RouteRequest("q", adapter=named, route=forced)
    plan = plan_route(SETTINGS, request, hits_in(*passages), matches, None, STALE)
    assert (plan.route, plan.adapter) == (route, adapter)
    without = plan_route(SETTINGS, request, hits_in(*passages), matches)
    stale_changed_it = (plan.route, plan.adapter) != (without.route, without.adapter)
    assert stale_changed_it is ("earlier revision" in plan.reason)
    if stale_changed_it:
        assert plan.reason.endswith(
            "adapter 'titler' was trained on an earlier revision of the documents, and the "
            "evidence lies in changed document(s) changed.md: answering with the adapter and "
            "the fresh passages."
        )
        assert [h.chunk_id for h in plan.evidence] == [
            h.chunk_id for h in hits_in(*passages) if (h.dense_score or 0.0) >= 0.4
        ]


def test_strong_evidence_keeps_its_reason_for_a_stale_adapter() -> None:
    plan = plan_route(SETTINGS, RouteRequest("q"), hits_in(("changed", 0.7)), CLEAR, None, STALE)
    assert (plan.route, plan.adapter) == ("adapter+rag", "titler")
    assert "strong evidence" in plan.reason


def test_the_turns_a_router_reads_are_bounded() -> None:
    """A learned router reads how many user turns the conversation has: hundreds (a client's
    padding, a long chat) were a number no router file is trained near, which its linear
    score could let decide alone. The count stops at `MOST_TURNS_COUNTED`."""
    for history, counted in [((), 1), (("a?",) * 4, 5), (("a?",) * 500, MOST_TURNS_COUNTED)]:
        request = RouteRequest("and b?", history=history)
        plan = plan_route(SETTINGS, request, hits(*WEAK), LOW)
        assert plan.features["turns"] == float(counted)
