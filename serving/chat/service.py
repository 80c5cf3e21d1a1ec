"""The chat logic: route (build the conversation's query and embed it once, retrieve, match
adapters, plan), prompt, generate, respond. No HTTP here."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from ragtune.adapters.registry import AdapterManifest
from ragtune.retrieval.conversation import (
    Closest,
    ConversationQuery,
    UnknownWords,
    conversation_query,
)
from ragtune.retrieval.embedder import Embedder
from ragtune.retrieval.errors import CollectionNotFoundError, StoreUnavailableError
from ragtune.retrieval.search import SearchHit
from ragtune.serving import observability
from ragtune.serving.chat import shapes
from ragtune.serving.chat.protocol import (
    ENGINE_FIELDS,
    REFUSED_FIELDS,
    ChatCompletionRequest,
    NamedToolChoice,
    RagtuneInfo,
    RagtuneOptions,
    SourceInfo,
)
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.pool import EnginePool, Lease
from ragtune.serving.errors import InvalidRequestError, ServingError, shorten
from ragtune.serving.fleet import AdapterFleet
from ragtune.serving.grounding import GroundingChecker, GroundingInfo
from ragtune.serving.http_errors import stream_error
from ragtune.serving.outcomes import CaseOutcome, Grader, RouteOutcome
from ragtune.serving.prompting import PromptBuilder, PromptFactory, PromptPlan
from ragtune.serving.protocol import SSE_DONE, sse_event
from ragtune.serving.retrievers import RetrieverCache, evidence_first, merge_ranked
from ragtune.serving.router import (
    AnswerBound,
    Route,
    RouteChooser,
    RoutePlan,
    RouteRequest,
    plan_route,
)
from ragtune.serving.settings import RouterSettings
from ragtune.serving.shadow import ShadowRunner, route_not_taken
from ragtune.serving.tenants.principal import OPERATOR, Principal

logger = logging.getLogger("ragtune.chat")
T = TypeVar("T")


@dataclass(frozen=True)
class Routed:
    plan: RoutePlan
    timings: dict[str, float]
    """Seconds: "retrieval" (query embedding + search), "routing" (matching + the plan);
    when documents were searched, "retrieval_<stage>" for "query" (the conversation's query
    built and embedded) and each stage of `retrieval.search.STAGES` that ran."""
    hits: tuple[SearchHit, ...] = ()
    """Every passage retrieved (the plan's evidence is those that count)."""
    matches: tuple[tuple[str, float], ...] = ()
    """Each adapter's similarity to the request, best first."""
    queries: tuple[str, ...] = ()
    """The texts the documents were searched with (`ConversationQuery.text`), one per
    embedding model searched; none when nothing was."""


@dataclass(frozen=True)
class ShadowCase:
    """A live request sampled for shadow mode: what the route not taken is run and graded on."""

    request: ChatCompletionRequest
    asked: RouteRequest
    plan: RoutePlan
    route: Route
    adapter: str | None
    """The route not taken, and its adapter."""
    best_adapter: str | None
    passages: tuple[str, ...]
    """Every passage retrieved for the request: both answers are graded against them."""
    principal: Principal = OPERATOR
    """Who the live request acted for: the route not taken sees what it saw, no more."""


@dataclass
class PreparedChat:
    """A request routed and prompted, counted on the engine replica it goes to until `finish`."""

    plan: RoutePlan
    info: RagtuneInfo
    engine_request: dict[str, Any]
    model: str
    """The name the client used, echoed in responses."""
    lease: Lease
    """The engine model (base or adapter version) and replica this request uses."""
    client_wants_usage: bool = False
    """The stream's client asked for the usage chunk (`stream_options.include_usage`)."""
    passages: tuple[str, ...] = ()
    """The texts of the passages the prompt gave the model as [1], [2]... (on the routes that
    use documents): what the answer is checked against."""
    shadow: ShadowCase | None = None
    """Sampled for shadow mode: once answered, the route not taken runs in the background."""
    queries: tuple[str, ...] = ()
    """What the documents were searched with (`Routed.queries`)."""


class ChatService:
    """Chat completions, whole or streamed, over the server's parts.

    Usage:
        service = ChatService(embedder, retrievers, fleet, engines, prompts, router_settings)
        prepared = await service.prepare(request)       # checked, routed, prompted, counted
        answer = await service.complete(prepared)       # or: await service.open_stream(...)
    `route` alone (no engine, no prompt) is what route evaluation replays; with `prompts`
    None the service only routes.
    """

    def __init__(
        self,
        embedder: Embedder,
        retrievers: RetrieverCache,
        fleet: AdapterFleet,
        engines: EnginePool,
        prompts: PromptFactory | None,
        settings: RouterSettings,
        *,
        max_tokens_limit: int = 0,
        auto_tool_choice: bool = False,
        log_prompts: bool = False,
        route_model: RouteChooser | None = None,
        grounding: GroundingChecker | None = None,
        shadow: ShadowRunner | None = None,
    ) -> None:
        self.embedder = embedder
        self.retrievers = retrievers
        self.fleet = fleet
        self.engines = engines
        self.prompts = prompts
        self.settings = settings
        self.weighting = settings.turn_weighting()
        """How the user's earlier messages count in the retrieval query."""
        self.max_tokens_limit = max_tokens_limit
        self.auto_tool_choice = auto_tool_choice
        """The engine parses the model's own tool calls (RAGTUNE_TOOL_CALL_PARSER is set):
        tool_choice "auto" is possible."""
        self.log_prompts = log_prompts
        self.route_model = route_model
        """A learned router (`ragtune router train`); None: the thresholds route."""
        self.grounding = grounding
        """Checks answers given passages against them (`ragtune.grounding`); None: off."""
        self.shadow = shadow
        """Shadow mode (`RAGTUNE_SHADOW_RATE`); None or rate 0: off."""

    @property
    def base_model(self) -> str:
        """The `model` name of the base model (the router chooses the route for it)."""
        return self.fleet.base_model

    async def prepare(
        self,
        request: ChatCompletionRequest,
        principal: Principal = OPERATOR,
        *,
        own_turns: int | None = None,
    ) -> PreparedChat:
        """Route -> prompt: everything but the engine call, for `principal` (the collections
        searched and adapters considered are those it sees). The request is counted in flight
        on its replica from here until `finish` (which `complete` and the stream call).
        `own_turns`: as `read` says (never a client's: `ragtune advise`'s few-shot prompts)."""
        ask = self.read(request, principal, own_turns=own_turns)
        routed = await anyio.to_thread.run_sync(self.route, ask, principal)
        plan = routed.plan
        self._record(request, ask, routed)
        # Read the alias, choose the engine and count the request in one step (no await
        # between): a hot-swap then waits for this request before unloading its version.
        manifest, lease = self.fleet.lease(plan.adapter)
        try:
            builder = await self._builder()
            prompt = builder.for_plan(request.conversation(), plan, request.engine_tools())
        except BaseException:
            await self.engines.release(lease)
            raise
        max_tokens = plan.answer.engine_max_tokens(builder.context_length, prompt.prompt_tokens)
        return PreparedChat(
            plan,
            _info(plan, manifest, prompt),
            _engine_request(request, prompt, lease.served, max_tokens),
            request.model,
            lease,
            client_wants_usage=bool(
                request.stream_options and request.stream_options.include_usage
            ),
            passages=tuple(hit.text for hit in prompt.passages) if plan.uses_documents else (),
            shadow=self._shadow_case(request, ask, routed, principal),
            queries=routed.queries,
        )

    def read(
        self,
        request: ChatCompletionRequest,
        principal: Principal = OPERATOR,
        *,
        own_turns: int | None = None,
    ) -> RouteRequest:
        """The request as the router reads it, once checked: values no engine can take, fields
        it does not forward, content the model cannot read, tools and formats, the answer bound,
        a named adapter (an unknown one is a 404 before any work) and collection. An adapter or
        collection `principal` may not see is refused exactly as one that does not exist, so
        that a tenant learns nothing of another's. `own_turns`: how many of the last user turns
        are the conversation the router reads (None: all), for a prompt whose earlier user
        turns are worked examples (`ragtune advise`'s few-shot variants): another example's
        input is no follow-up's topic, and must not be what its passages are retrieved for."""
        request.check_values()
        request.check_content(auto_tool_choice=self.auto_tool_choice)
        refused = sorted(REFUSED_FIELDS & set(request.unknown_fields()))
        if refused:
            raise InvalidRequestError(
                f"{refused[0]} is an engine control this server does not accept (it would "
                "expose or change the prompt ragtune builds); remove it",
                param=refused[0],
            )
        if not request.model.strip():
            raise InvalidRequestError(
                f"model is empty: use {self.base_model!r} (the router chooses) or an "
                "adapter's name from GET /v1/models",
                param="model",
            )
        answer = AnswerBound.of(
            request.answer_bound(),
            limit=self.max_tokens_limit,
            default=self.settings.default_max_tokens,
            param="max_completion_tokens" if request.max_completion_tokens else "max_tokens",
        )
        adapter = None if request.model == self.base_model else request.model
        if adapter is not None:
            self.fleet.manifest(adapter, principal)
        options = request.ragtune
        collections = options.searched() if options else ()
        for collection in collections:
            if not principal.sees_collection(collection):
                raise CollectionNotFoundError(
                    f"collection {shorten(collection)!r} does not exist", collection=collection
                )
        *history, question = request.user_turns()
        if own_turns is not None:
            history = history[max(0, len(history) - (own_turns - 1)) :]
        return RouteRequest(
            question,
            history=tuple(history),
            route=options.route if options else None,
            adapter=adapter,
            collection=collections[0] if collections else None,
            also_searched=collections[1:],
            filters=options.filters if options else None,
            max_passages=request.search_scope.max_results,
            min_score=request.search_scope.min_score,
            answer=answer,
        )

    def route(self, request: RouteRequest, principal: Principal = OPERATOR) -> Routed:
        """Build the conversation's query and embed it once, retrieve, match adapters, plan (no
        engine involved), over what `principal` sees (`read` checked a named collection and
        adapter). Blocking: the chat path runs it in a worker thread."""
        started = time.perf_counter()
        collections = _searched_collections(request, principal, self.retrievers.default_collection)
        searched = collections if request.searches_documents else ()
        query, queries = self._queries(request, searched, collections)
        stages = {"query": time.perf_counter() - started}
        hits = []
        top_k, threshold = self.settings.rag_top_k, self.settings.evidence_threshold
        # A reranker may put passages below the evidence threshold first: each collection is
        # then searched as deep as it reranks, and its evidence comes first (evidence_first).
        depth = self.retrievers.depth(top_k)
        if searched:
            found = [
                self.retrievers.search(
                    queries[name].text,
                    queries[name].vector,
                    k=depth,
                    collection=name,
                    filters=request.filters,
                    required=request.requires_documents,
                    timings=stages,
                    model=queries[name].model,
                    embed=queries[name].vector_of,
                )
                for name in searched
            ]
            if depth > top_k:
                found = [evidence_first(each, top_k, threshold) for each in found]
            hits = merge_ranked(found, top_k, threshold)
        # Adapters are matched with the shared embedder's vector of the (first) query.
        matching = query.vector_of(self.embedder)
        retrieved = time.perf_counter()
        # Only the adapters the principal sees compete: another tenant's never wins a request,
        # and its name never appears in a reason.
        matches = [m for m in self.fleet.matches(matching) if principal.sees_adapter(m[0])]
        advice = {
            name: manifest.verdict
            for name, _ in matches
            if (manifest := self.fleet.get(name)) is not None and manifest.verdict
        }
        # Adapters trained on an earlier version of the documents searched (`stale` in
        # /admin/adapters): the router gives them the fresh passages.
        stale: dict[str, frozenset[str]] = {}
        for collection in searched if hits else ():
            for name, documents in self.fleet.stale_documents(collection).items():
                if principal.sees_adapter(name):
                    stale[name] = stale.get(name, frozenset()) | documents
        # The text the first passage was found for: a follow-up's is read with its topic.
        top = queries.get(hits[0].collection) if hits else None
        plan = plan_route(
            self.settings,
            request,
            hits,
            matches,
            advice,
            stale,
            model=self.route_model,
            query=top.text if top is not None else None,
        )
        timings = {"retrieval": retrieved - started, "routing": time.perf_counter() - retrieved}
        if searched:
            # Retrieval by stage: the conversation's query built and embedded, then each
            # search's stages (`retrieval.search.STAGES`), summed over the collections searched.
            timings.update({f"retrieval_{stage}": seconds for stage, seconds in stages.items()})
        texts = tuple(dict.fromkeys(queries[name].text for name in searched))
        return Routed(plan, timings, tuple(hits), tuple(matches), texts)

    def _queries(
        self, request: RouteRequest, searched: Sequence[str], collections: Sequence[str]
    ) -> tuple[ConversationQuery, dict[str, ConversationQuery]]:
        """The conversation's query (`retrieval.conversation`): the first collection's (the
        shared embedder's when nothing is searched), and each searched collection's. The
        collections searched with one embedder share one query, built with all of them telling
        a follow-up from a new question; a collection re-embedded with a model tuned for it
        (`ragtune tune embedder`) is searched with that model's. A route that searches nothing
        (`adapter`, `base` asked for) still reads a follow-up with its topic, told by the
        `collections` it would have searched, so that an adapter is matched to the
        conversation as the automatic route matches it."""
        if not searched:
            return self._unsearched_query(request, collections), {}
        return self._refreshed(searched, lambda: self._build_queries(request, searched))

    def _refreshed(self, names: Sequence[str], build: Callable[[], T]) -> T:
        """`build()`; once more when it fails on a collection among `names` that another
        process deleted or rebuilt since this server last looked (`RetrieverCache`), on what
        is there now."""
        try:
            return build()
        except (CollectionNotFoundError, StoreUnavailableError):
            raise
        except Exception:
            if not [name for name in names if self.retrievers.refresh(name)]:
                raise
            return build()

    def _build_queries(
        self, request: RouteRequest, searched: Sequence[str]
    ) -> tuple[ConversationQuery, dict[str, ConversationQuery]]:
        groups: dict[int, tuple[Embedder, list[str]]] = {}
        for name in searched:
            embedder = self.retrievers.embedder_for(name)
            groups.setdefault(id(embedder), (embedder, []))[1].append(name)
        queries: dict[str, ConversationQuery] = {}
        # Words no collection searched uses give a message a topic of its own.
        unknown = self._unknown(request, searched)
        for embedder, names in groups.values():
            # The documents tell a follow-up from a new question (one turn needs no telling).
            closest = (
                self._closest(names, request.filters, embedder.model_id)
                if request.history
                else None
            )
            query = conversation_query(request.turns, embedder, closest, self.weighting, unknown)
            queries.update(dict.fromkeys(names, query))
        return queries[searched[0]], queries

    def _unsearched_query(
        self, request: RouteRequest, collections: Sequence[str]
    ) -> ConversationQuery:
        """The query of a request that searches no documents: the one a search of
        `collections` would build (`_build_queries`: each collection told by its own model, a
        collection re-embedded with a model tuned for it included), which adapters are matched
        with through the shared embedder (`ConversationQuery.vector_of`). The documents only
        tell a follow-up from a new question here: when they cannot (a store down, a
        collection gone), the last turn is read alone rather than the request failed; a
        collection replaced meanwhile is opened again, once, as for a search (`_refreshed`).
        (Until 2026-12-08 they were asked with the shared embedder's vector, which a tuned
        collection cannot compare: a forced adapter or base route read its follow-up alone
        there, while the automatic route read it with its topic.)"""

        def told() -> ConversationQuery:
            return self._build_queries(request, collections)[0]

        if not request.history or not collections:
            return conversation_query(request.turns, self.embedder, None, self.weighting)
        try:
            return self._refreshed(collections, told)
        except (CollectionNotFoundError, StoreUnavailableError) as exc:
            logger.warning("a follow-up was read alone: the documents could not tell (%s)", exc)
            return conversation_query(request.turns, self.embedder, None, self.weighting)

    def _closest(
        self, names: Sequence[str], filters: Mapping[str, str] | None, model: str
    ) -> Closest | None:
        """How close a vector of `model` comes to the chunks of any of the collections (None
        when none of them exists yet, or is embedded with that model)."""
        found = [
            c for name in names if (c := self.retrievers.closest(name, filters, model)) is not None
        ]
        if len(found) <= 1:
            return found[0] if found else None
        return lambda vector: max(closest(vector) for closest in found)

    def _unknown(self, request: RouteRequest, names: Sequence[str]) -> UnknownWords | None:
        """The words no collection among `names` uses, when the request has earlier messages
        to tell apart and the rule is on (`own_topic_words`): no index is read otherwise."""
        if not request.history or not self.weighting.own_topic_words:
            return None
        return self.retrievers.unknown_words(names)

    async def _builder(self) -> PromptBuilder:
        if self.prompts is None:
            raise ServingError("no tokenizer loaded: this chat service only routes")
        return await self.prompts.builder()

    def _record(self, request: ChatCompletionRequest, ask: RouteRequest, routed: Routed) -> None:
        record = observability.current()
        if record is None:
            return
        for name, seconds in routed.timings.items():
            record.time(name, seconds)
        plan = routed.plan
        record.route, record.adapter, record.reason = plan.route, plan.adapter, plan.reason
        record.stream = request.stream
        if self.log_prompts:
            record.question = ask.question

    async def finish(self, prepared: PreparedChat) -> None:
        """The request is over: a hot-swap may now unload the version it used."""
        await self.engines.release(prepared.lease)

    async def complete(self, prepared: PreparedChat) -> dict[str, Any]:
        """The whole answer, with `ragtune` (route, reason, scores, sources, and the answer's
        grounding when it was given passages)."""
        try:
            response = await self.engines.call(
                prepared.lease, functools.partial(_whole, prepared.engine_request)
            )
        finally:
            await self.finish(prepared)
        response = shapes.completion(response)
        response["model"] = prepared.model
        choices = response.get("choices") or [{}]
        answer = (choices[0].get("message") or {}).get("content") or ""
        grounding = await self._ground(prepared, answer, observability.current())
        response["ragtune"] = prepared.info.model_copy(update={"grounding": grounding}).wire()
        self._start_shadow(prepared, answer, choices[0].get("finish_reason"))
        return response

    async def open_stream(self, prepared: PreparedChat) -> AsyncIterator[str]:
        """SSE events: the engine's chunks, the first one carrying `ragtune`; when the answer was
        given passages, a chunk without choices carrying `ragtune.grounding` once it is complete
        (before the usage chunk, which stays last); then [DONE].

        The first chunk is awaited here, before any byte goes out, so that an error the engine
        reports at once (context too long, engine down) still gets its HTTP status; an error
        after that arrives as an error event, then [DONE].
        """
        holder: dict[str, AsyncIterator[dict[str, Any]]] = {}
        started = time.perf_counter()

        async def first_chunk(client: EngineClient) -> dict[str, Any] | None:
            chunks = client.stream_chat_completion(prepared.engine_request)
            holder["chunks"] = chunks
            try:
                return await anext(chunks)
            except StopAsyncIteration:
                return None

        try:
            first = await self.engines.call(prepared.lease, first_chunk)
        except BaseException:
            await self.finish(prepared)
            raise
        record = observability.current()
        if record is not None:
            record.time("first_token", time.perf_counter() - record.started)
        return self._events(prepared, first, holder["chunks"], started, record)

    async def _events(
        self,
        prepared: PreparedChat,
        first: dict[str, Any] | None,
        rest: AsyncIterator[dict[str, Any]],
        started: float,
        record: observability.RequestRecord | None,
    ) -> AsyncIterator[str]:
        # The engine always reports usage (for the metrics); the client gets the usage chunk
        # only when it asked for it.
        usage_wanted = bool(prepared.client_wants_usage)
        answer: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] | None = None  # the usage chunk, held back to go last
        complete = False
        try:
            if first is not None:
                first = shapes.chunk(first, usage_wanted=usage_wanted)
                first["model"] = prepared.model
                first["ragtune"] = prepared.info.wire()
                answer.extend(_content(first))
                yield sse_event(first)
                async for chunk in rest:
                    if chunk.get("usage") and record is not None:
                        _count_tokens(record, chunk["usage"])
                    shaped = shapes.chunk(chunk, usage_wanted=usage_wanted)
                    shaped["model"] = prepared.model
                    if not chunk.get("choices") and chunk.get("usage"):
                        usage = shaped if usage_wanted else None
                        continue
                    answer.extend(_content(shaped))
                    finish = _finish_reason(shaped) or finish
                    yield sse_event(shaped)
                complete = True
        except ServingError as exc:
            logger.warning("stream ended by an engine error: %s", exc)
            if record is not None:
                record.error = str(exc)
            yield sse_event(stream_error(exc))
        finally:
            if record is not None:
                record.time("generation", time.perf_counter() - started)
            await self.finish(prepared)
        if complete and first is not None:
            self._start_shadow(prepared, "".join(answer), finish)
            grounding = await self._ground(prepared, "".join(answer), record)
            if grounding is not None:
                closing: dict[str, Any] = {
                    **{key: first[key] for key in ("id", "object", "created") if key in first},
                    "model": prepared.model,
                    "choices": [],
                    "ragtune": {"grounding": grounding.model_dump()},
                }
                yield sse_event(closing)
            if usage is not None:
                yield sse_event(usage)
        yield SSE_DONE

    def _shadow_case(
        self,
        request: ChatCompletionRequest,
        ask: RouteRequest,
        routed: Routed,
        principal: Principal = OPERATOR,
    ) -> ShadowCase | None:
        """A shadow run for this request, if the router chose its route and it is sampled."""
        if self.shadow is None or not self.shadow.enabled:
            return None
        if ask.route is not None or ask.named_adapter is not None or (request.n or 1) > 1:
            return None
        other = route_not_taken(routed.plan, routed.matches, self.settings.base_route)
        if other is None or not self.shadow.sampled():
            return None
        best = routed.matches[0][0] if routed.matches else None
        passages = tuple(hit.text for hit in routed.hits)
        return ShadowCase(request, ask, routed.plan, *other, best, passages, principal)

    def _start_shadow(self, prepared: PreparedChat, answer: str, finish: str | None) -> None:
        """Run the route not taken in the background and append the paired outcome."""
        case, runner = prepared.shadow, self.shadow
        if case is None or runner is None:
            return

        async def run() -> CaseOutcome:
            asked = case.asked
            request = case.request.model_copy(
                update={
                    "model": case.adapter or self.base_model,
                    "stream": False,
                    "stream_options": None,
                    "ragtune": RagtuneOptions(
                        route=case.route,
                        collections=list(asked.collections) or None,
                        filters=asked.filters,
                    ),
                }
            )
            response = await self.complete(await self.prepare(request, case.principal))
            choice = response["choices"][0]
            other = (
                (choice.get("message") or {}).get("content") or "",
                choice.get("finish_reason"),
            )
            return await anyio.to_thread.run_sync(self._paired, case, (answer, finish), other)

        runner.start(run)

    def _paired(
        self, case: ShadowCase, live: tuple[str, str | None], other: tuple[str, str | None]
    ) -> CaseOutcome:
        """The live answer and the route not taken's, graded alike: (text, finish reason)."""
        grader = Grader(None, self.grounding.score if self.grounding else _ungrounded)
        keep = self.log_prompts
        outcomes = []
        evidence = case.plan.features.get("evidence_passing", 0.0) > 0
        for route, adapter, (text, finish) in (
            (case.plan.route, case.plan.adapter, live),
            (case.route, case.adapter, other),
        ):
            grade, metric, grounding = grader.grade(
                text, None, case.passages, finish_reason=finish, evidence=evidence
            )
            outcomes.append(
                RouteOutcome(
                    route,
                    adapter,
                    round(grade, 4),
                    metric,
                    None if grounding is None else round(grounding, 4),
                    answer=text if keep else None,
                )
            )
        return CaseOutcome(
            line=0,
            source="shadow",
            features=dict(case.plan.features),
            decision=case.plan.route,
            decision_adapter=case.plan.adapter,
            adapter=case.best_adapter,
            outcomes=outcomes,
            origin="shadow",
            question=case.asked.question if keep else None,
            history=list(case.asked.history) if keep else [],
        )

    async def _ground(
        self, prepared: PreparedChat, answer: str, record: observability.RequestRecord | None
    ) -> GroundingInfo | None:
        """How well the passages support the answer: None when the check is off, the answer
        was given no passages, or it has no sentence to check. Recorded for the metrics."""
        if self.grounding is None or not prepared.passages or not answer.strip():
            return None
        started = time.perf_counter()
        # Embedding (or NLI) work: off the event loop.
        grounding = await anyio.to_thread.run_sync(self.grounding.check, answer, prepared.passages)
        if record is not None:
            record.time("grounding", time.perf_counter() - started)
            if grounding is not None:
                record.grounding = round(grounding.score, 4)
                record.unsupported_sentences = len(grounding.unsupported)
        return None if grounding is None else grounding.to_info()


def _searched_collections(
    request: RouteRequest, principal: Principal, default: str
) -> tuple[str, ...]:
    """The collections a request searches: those it named, else the principal's default (the
    server's, `default`, for a principal that sees every collection; none for one that sees
    none)."""
    if request.collections:
        return request.collections
    if principal.default_collection is not None:
        return (principal.default_collection,)
    if principal.collections is None:
        return (default,)
    first = min(principal.collections, default=None)
    return () if first is None else (first,)


async def _whole(body: dict[str, Any], client: EngineClient) -> dict[str, Any]:
    started = time.perf_counter()
    response = await client.chat_completion(body)
    record = observability.current()
    if record is not None:
        record.time("generation", time.perf_counter() - started)
        _count_tokens(record, response.get("usage"))
    return response


def _engine_request(
    request: ChatCompletionRequest, prompt: PromptPlan, engine_model: str, max_tokens: int
) -> dict[str, Any]:
    """The body sent to the engine: the prompt ragtune built, the engine's name for the model,
    the sampling fields the client may set (others logged and dropped), the checked tools and
    response format, and the answer bound."""
    fields = request.model_dump(exclude_none=True)
    body = {name: value for name, value in fields.items() if name in ENGINE_FIELDS}
    dropped = sorted(set(request.unknown_fields()) - ENGINE_FIELDS)
    if dropped:
        shown = [shorten(name, 40) for name in dropped[:10]]
        logger.info("request fields ignored (not forwarded to the engine): %s", shown)
    body["model"] = engine_model
    body["messages"] = prompt.messages
    body["max_tokens"] = max_tokens  # one field only: the engine honours what was checked
    tools = request.engine_tools()
    if tools:
        body["tools"] = tools
        if isinstance(request.tool_choice, NamedToolChoice):
            body["tool_choice"] = {
                "type": "function",
                "function": {"name": request.tool_choice.function.name},
            }
        elif request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.response_format is not None:
        body["response_format"] = request.response_format.for_engine()
    if request.stream:
        # Always asked of the engine, for the token metrics; passed on only if requested.
        given = request.stream_options.model_dump() if request.stream_options else {}
        body["stream_options"] = {**given, "include_usage": True}
    return body


def _info(plan: RoutePlan, manifest: AdapterManifest | None, prompt: PromptPlan) -> RagtuneInfo:
    """The `ragtune` field: the route and why, and the passages the answer may cite as [n]."""
    return RagtuneInfo(
        route=plan.route,
        adapter=plan.adapter,
        adapter_version=manifest.version if manifest else None,
        reason=plan.reason,
        scores=plan.scores,
        sources=[
            SourceInfo(
                number=n,
                document=hit.document,
                document_id=str(hit.metadata.get("doc_id", "")),
                section=hit.section,
                chunk_id=hit.chunk_id,
                score=round(hit.similarity, 4),
                collection=hit.collection,
            )
            for n, hit in enumerate(prompt.passages, start=1)
        ],
    )


def _ungrounded(answer: str, passages: Sequence[str]) -> float | None:
    """Grounding off: nothing is checked."""
    return None


def _finish_reason(chunk: dict[str, Any]) -> str | None:
    """The first choice's finish reason in a streamed chunk (None until the last one)."""
    for choice in chunk.get("choices") or ():
        if choice.get("index", 0) == 0 and choice.get("finish_reason"):
            return str(choice["finish_reason"])
    return None


def _content(chunk: dict[str, Any]) -> list[str]:
    """The answer's text in a streamed chunk."""
    return [
        content
        for choice in chunk.get("choices") or ()
        if choice.get("index", 0) == 0 and (content := (choice.get("delta") or {}).get("content"))
    ]


def _count_tokens(record: observability.RequestRecord, usage: Any) -> None:
    if isinstance(usage, dict):
        record.prompt_tokens = usage.get("prompt_tokens")
        record.completion_tokens = usage.get("completion_tokens")
