"""Paired outcomes, what the learned router is trained on (`ragtune router collect`): each case
run through every route that could serve it (rag, base, and per matching adapter adapter and
adapter+rag), by the server's own chat service, each answer graded, stored beside the features
the router had when it decided.

Grades: against the case's reference answer when it has one (ROUGE-L, or the metric asked for);
otherwise its form (finished, or cut by the answer bound) and, where the documents hold evidence
for the question, how well it is supported by the passages retrieved for the case (the same
passages for every route, so that the routes compare); an empty answer is 0
(`serving.outcomes.unreferenced_grade`).

Usage:
    outcomes = await collect_outcomes(components, cases, grader, collection="default")
    append_outcomes(path, outcomes)
    read_outcomes(path)                                 # every line checked, bad ones named
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio

from ragtune.evals.errors import EvalError
from ragtune.evals.metrics import load_scorer
from ragtune.evals.routes import RouteCase, load_cases
from ragtune.serving.chat.protocol import ChatCompletionRequest, RagtuneOptions
from ragtune.serving.components import Components, open_components
from ragtune.serving.errors import AdapterSlotsBusyError
from ragtune.serving.outcomes import (
    FORMAT,
    VERSION,
    CaseOutcome,
    Grader,
    RouteOutcome,
    append_outcomes,
)
from ragtune.serving.router import Route, RouteRequest
from ragtune.serving.settings import ServingSettings

MAX_ADAPTERS = 3
"""Adapters tried per case: the best match, and others that reach the adapter threshold."""
SLOT_WAIT_S = 900.0
"""How long an answer waits for a LoRA slot when every slot of the engine holds another
adapter that is answering (more adapters in the cases than the engine's --max-loras)."""

T = TypeVar("T")


async def when_a_slot_is_free(
    call: Callable[[], Awaitable[T]], *, wait_s: float = SLOT_WAIT_S, first_pause_s: float = 0.5
) -> T:
    """`call()`, tried again with growing pauses (to 5 s) while the engine's LoRA slots are all
    busy with other adapters, for at most `wait_s`; then the engine's error, with what to do."""
    waited, pause = 0.0, first_pause_s
    while True:
        try:
            return await call()
        except AdapterSlotsBusyError as busy:
            if waited >= wait_s:
                raise EvalError(
                    f"{busy} (waited {waited:.0f} s). Start the engine with --max-loras at "
                    "least the number of adapters the cases use, or lower --concurrency"
                ) from busy
            await anyio.sleep(pause)
            waited += pause
            pause = min(pause * 2, 5.0)


def applicable_routes(
    components: Components, matches: Sequence[tuple[str, float]]
) -> list[tuple[Route, str | None]]:
    """The routes a case is run through: rag, base (unless the base model is only taken when
    asked for) and, for the best-matching adapter and up to two more that reach the adapter
    threshold, adapter and adapter+rag."""
    settings = components.settings.router
    routes: list[tuple[Route, str | None]] = [("rag", None)]
    if settings.base_route == "auto":
        routes.append(("base", None))
    adapters = [name for i, (name, score) in enumerate(matches) if i == 0 or
                score >= settings.adapter_threshold][:MAX_ADAPTERS]  # fmt: skip
    for name in adapters:
        routes += [("adapter", name), ("adapter+rag", name)]
    return routes


async def collect_outcomes(
    components: Components,
    cases: Sequence[RouteCase],
    grader: Grader,
    *,
    collection: str | None = None,
    max_tokens: int = 128,
    concurrency: int = 4,
    keep_text: bool = True,
    on_case: Callable[[CaseOutcome], None] | None = None,
) -> list[CaseOutcome]:
    """Every case through every applicable route, greedy, at most `concurrency` requests at
    once; outcomes in case order."""
    known = components.fleet.names()
    for case in cases:
        if case.expected_adapter and case.expected_adapter not in known:
            raise EvalError(
                f"line {case.line} expects adapter {case.expected_adapter!r}, which is not "
                f"registered (registered: {', '.join(sorted(known)) or 'none'})"
            )
    limiter = anyio.CapacityLimiter(concurrency)
    results: list[CaseOutcome | None] = [None] * len(cases)

    async def one(index: int, case: RouteCase) -> None:
        request = RouteRequest(case.question, history=case.history, collection=collection)
        routed = await anyio.to_thread.run_sync(components.chat.route, request)
        passages = [hit.text for hit in routed.hits]
        routes = applicable_routes(components, routed.matches)
        outcomes: list[RouteOutcome | None] = [None] * len(routes)

        async def answer(slot: int, route: Route, adapter: str | None) -> None:
            async with limiter:
                outcomes[slot] = await _answer(
                    components, case, route, adapter, grader, passages,
                    collection=collection, max_tokens=max_tokens, keep_text=keep_text,
                    evidence=routed.plan.features.get("evidence_passing", 0.0) > 0,
                )  # fmt: skip

        async with anyio.create_task_group() as group:
            for slot, (route, adapter) in enumerate(routes):
                group.start_soon(answer, slot, route, adapter)
        plan = routed.plan
        outcome = CaseOutcome(
            line=case.line,
            source=case.source,
            features=dict(plan.features),
            decision=plan.route,
            decision_adapter=plan.adapter,
            adapter=routed.matches[0][0] if routed.matches else None,
            outcomes=[o for o in outcomes if o is not None],
            expected_route=case.expected_route,
            expected_adapter=case.expected_adapter,
            question=case.question if keep_text else None,
            history=list(case.history) if keep_text else [],
        )
        results[index] = outcome
        if on_case is not None:
            on_case(outcome)

    async with anyio.create_task_group() as group:
        for index, case in enumerate(cases):
            group.start_soon(one, index, case)
    return [r for r in results if r is not None]


async def _answer(
    components: Components,
    case: RouteCase,
    route: Route,
    adapter: str | None,
    grader: Grader,
    passages: Sequence[str],
    *,
    collection: str | None,
    max_tokens: int,
    keep_text: bool,
    evidence: bool,
) -> RouteOutcome:
    chat = components.chat
    request = ChatCompletionRequest(
        model=adapter or chat.base_model,
        messages=case.chat_messages(),
        temperature=0,
        max_tokens=max_tokens,
        ragtune=RagtuneOptions(route=route, collection=collection),
    )

    async def complete() -> tuple[dict[str, Any], float]:
        started = time.perf_counter()  # the attempt that answered, not the wait for a slot
        response = await chat.complete(await chat.prepare(request))
        return response, time.perf_counter() - started

    response, seconds = await when_a_slot_is_free(complete)
    choice = response["choices"][0]
    text = choice["message"].get("content") or ""
    grade, metric, grounded = await anyio.to_thread.run_sync(
        functools.partial(
            grader.grade, text, case.reference, passages,
            finish_reason=choice.get("finish_reason"), evidence=evidence,
        )
    )  # fmt: skip
    usage = response.get("usage") or {}
    return RouteOutcome(
        route=route,
        adapter=adapter,
        grade=round(grade, 4),
        metric=metric,
        grounding=None if grounded is None else round(grounded, 4),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        seconds=round(seconds, 3),
        finish_reason=choice.get("finish_reason"),
        answer=text if keep_text else None,
    )


def read_outcomes(paths: Sequence[Path]) -> list[CaseOutcome]:
    """The outcomes of JSONL files (`router collect`, shadow mode); a bad line is an error that
    names its file and line."""
    outcomes = []
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise EvalError(
                f"no outcomes file {path}: collect some with `ragtune router collect`"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise EvalError(f"cannot read the outcomes file {path}: {exc}") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict) or raw.get("format") != FORMAT:
                    raise ValueError("not a route outcome (`ragtune router collect` writes them)")
                if raw.get("version") != VERSION:
                    raise ValueError(
                        f"outcome format version {raw.get('version')!r}, not {VERSION}"
                    )
                outcomes.append(CaseOutcome.from_dict(cast(dict[str, Any], raw)))
            except (ValueError, KeyError, TypeError) as exc:
                problem = str(exc) if not isinstance(exc, KeyError) else f"{exc} is missing"
                raise EvalError(f"{path}, line {number}: {problem}") from None
    if not outcomes:
        raise EvalError(f"no outcomes in {', '.join(map(str, paths))}")
    return outcomes


def collect_case_file(
    settings: ServingSettings,
    cases_file: Path,
    out: Path,
    *,
    collection: str | None = None,
    metric: str = "rouge-l",
    max_tokens: int = 128,
    concurrency: int = 4,
    keep_text: bool = True,
    on_case: Callable[[CaseOutcome], None] | None = None,
) -> list[CaseOutcome]:
    """`ragtune router collect`: the cases of a JSONL file (labels optional) run through every
    applicable route on the running engine, graded, appended to `out` as they finish (an
    interrupted run keeps what it collected)."""
    cases = load_cases(cases_file, labelled=False)
    scorer = load_scorer(metric)
    components = open_components(settings)

    async def run() -> list[CaseOutcome]:
        # Closed in this event loop: the engine clients belong to it.
        async with components:
            checker = components.chat.grounding
            if checker is None:
                raise EvalError(
                    "grounding is off (RAGTUNE_GROUNDING=off): router collect grades answers "
                    "without a reference by their grounding; turn it on"
                )

            def written(outcome: CaseOutcome) -> None:
                append_outcomes(out, [outcome])
                if on_case is not None:
                    on_case(outcome)

            return await collect_outcomes(
                components, cases, Grader(scorer, checker.score),
                collection=collection, max_tokens=max_tokens, concurrency=concurrency,
                keep_text=keep_text, on_case=written,
            )  # fmt: skip

    return anyio.run(run)
