"""The chat logic: embed the question once, retrieve, route, prompt, generate. No HTTP here."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import numpy as np

from ragtune.adapters.registry import AdapterManifest
from ragtune.retrieval.errors import CollectionNotFoundError
from ragtune.retrieval.filters import SearchFilter
from ragtune.retrieval.search import SearchHit, SearchMode
from ragtune.serving import observability
from ragtune.serving.chat.protocol import (
    ENGINE_FIELDS,
    REFUSED_FIELDS,
    ChatCompletionRequest,
    ErrorDetail,
    ErrorResponse,
    RagtuneInfo,
    SourceInfo,
)
from ragtune.serving.engine.pool import Replica
from ragtune.serving.errors import (
    EngineNotRunningError,
    InvalidRequestError,
    ModelNotFoundError,
    ServingError,
    shorten,
)
from ragtune.serving.prompting import PromptPlan
from ragtune.serving.router import Evidence, Route, RouteDecision, adapter_matches, decide
from ragtune.serving.state import ServingState

logger = logging.getLogger("ragtune.chat")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Routed:
    decision: RouteDecision
    hits: list[SearchHit]
    timings: dict[str, float]
    """Seconds: "retrieval" (query embedding + search), "routing" (the decision)."""


@dataclass
class PreparedChat:
    decision: RouteDecision
    info: RagtuneInfo
    engine_request: dict[str, Any]
    model: str
    """The name the client used, echoed in responses."""
    replica: Replica
    """The engine this request is sent to."""
    adapter: AdapterManifest | None = None
    """The adapter version this request uses; counted in flight until it ends."""
    client_wants_usage: bool = False
    """The stream's client asked for the usage chunk (`stream_options.include_usage`)."""


class ChatService:
    def __init__(self, state: ServingState) -> None:
        self.state = state

    async def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        state = self.state
        request.check_values()
        refused = sorted(REFUSED_FIELDS & set(request.unknown_fields()))
        if refused:
            raise InvalidRequestError(
                f"{refused[0]} is an engine control this server does not accept (it would "
                "expose or change the prompt ragtune builds); remove it",
                param=refused[0],
            )
        if not request.model.strip():
            raise InvalidRequestError(
                f"model is empty: use {state.base_model!r} (the router chooses) or an "
                "adapter's name from GET /v1/models",
                param="model",
            )
        limit = state.settings.api.max_tokens_limit
        asked = request.answer_bound()
        if limit and asked and asked > limit:
            raise InvalidRequestError(
                f"max_tokens {asked} is above this server's limit of {limit} "
                "(RAGTUNE_MAX_TOKENS_LIMIT); ask for fewer",
                param="max_completion_tokens" if request.max_completion_tokens else "max_tokens",
            )
        options = request.ragtune
        requested_adapter = None if request.model == state.base_model else request.model
        if requested_adapter:
            state.adapter(requested_adapter)  # an unknown name is a 404 before any work
        forced = options.route if options else None
        if forced in ("rag", "base"):
            requested_adapter = None  # the route asked for uses no adapter

        question = request.question()
        routed = await anyio.to_thread.run_sync(
            functools.partial(
                self.route,
                question,
                collection=options.collection if options else None,
                filters=options.filters if options else None,
                requested_adapter=requested_adapter,
                forced_route=forced,
            )
        )
        decision, hits = routed.decision, routed.hits
        record = observability.current()
        if record is not None:
            for name, seconds in routed.timings.items():
                record.time(name, seconds)
            record.route, record.adapter, record.reason = (
                decision.route, decision.adapter, decision.reason,
            )  # fmt: skip
            record.stream = request.stream
            if state.settings.api.log_prompts:
                record.question = question
        manifest = state.adapter(decision.adapter) if decision.adapter else None
        served = manifest.served_name if manifest else state.base_model
        # Read the alias, choose the engine and count the request in one step (no await
        # between): a hot-swap then waits for this request before unloading its version.
        replica = state.engines.choose(manifest.served_name if manifest else None)
        state.acquire(replica, served)
        try:
            return await self._prepare_prompt(request, decision, hits, manifest, replica)
        except BaseException:
            await state.release(replica, served)
            raise

    async def _prepare_prompt(
        self,
        request: ChatCompletionRequest,
        decision: RouteDecision,
        hits: list[SearchHit],
        manifest: AdapterManifest | None,
        replica: Replica,
    ) -> PreparedChat:
        state = self.state
        builder = await state.prompt_builder()
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        for message in messages:
            if isinstance(message.get("content"), list):
                message["content"] = "\n".join(
                    part.get("text") or "" for part in message["content"]
                )
            # Chat templates expect every message to have text (an assistant turn that only
            # called tools has none).
            message.setdefault("content", "")
        asked = request.answer_bound()
        if decision.uses_retrieval:
            # Room kept for the answer: what the request asks for, else a default share.
            reserve = asked or min(state.settings.router.answer_tokens, builder.context_length // 2)
            threshold = state.settings.router.evidence_threshold
            passages = [h for h in hits if (h.dense_score or 0.0) >= threshold]
            plan = builder.rag(messages, passages, reserve)
        else:
            plan = builder.plain(messages, asked or 1)

        engine_model = state.base_model
        if manifest is not None:
            engine_model = await state.ensure_loaded(manifest, replica)
        body = self._engine_request(request, plan, engine_model)
        limit = state.settings.api.max_tokens_limit
        if asked:
            body["max_tokens"] = asked  # one field only: the engine honours what was checked
        elif limit:
            body["max_tokens"] = min(limit, builder.context_length - plan.prompt_tokens)
        info = RagtuneInfo(
            route=decision.route,
            adapter=decision.adapter,
            adapter_version=manifest.version if manifest else None,
            reason=decision.reason,
            scores=decision.scores,
            sources=[
                SourceInfo(
                    number=n,
                    document=hit.document,
                    document_id=str(hit.metadata.get("doc_id", "")),
                    section=hit.section,
                    chunk_id=hit.chunk_id,
                    score=round(hit.dense_score or 0.0, 4),
                )
                for n, hit in enumerate(plan.passages, start=1)
            ],
        )
        wants_usage = bool(request.stream_options and request.stream_options.include_usage)
        return PreparedChat(
            decision, info, body, request.model, replica, manifest, client_wants_usage=wants_usage
        )

    def route(
        self,
        question: str,
        *,
        collection: str | None = None,
        filters: Mapping[str, str] | None = None,
        requested_adapter: str | None = None,
        forced_route: Route | None = None,
    ) -> Routed:
        """Embed the question once, retrieve, match adapters, decide (no engine involved)."""
        state = self.state
        started = time.perf_counter()
        vector = state.embedder.embed_query(question)
        hits: list[SearchHit] = []
        if forced_route not in ("adapter", "base"):
            try:
                hits = state.retriever(collection).search(
                    question,
                    state.settings.router.rag_top_k,
                    SearchMode(state.settings.retrieval.search_mode),
                    SearchFilter.from_mapping(filters) if filters else None,
                    vector=vector,
                )
            except CollectionNotFoundError:
                if collection is not None or forced_route == "rag":
                    raise  # asked for by name, or retrieval was required: the client's error
                # Nothing ingested yet: no evidence (adapters and the base model still serve).
                logger.info("the default collection does not exist yet: no documents")
        retrieved = time.perf_counter()
        dense = sorted((h.dense_score for h in hits if h.dense_score is not None), reverse=True)
        matches = adapter_matches(state.profiles, np.asarray(vector, dtype=np.float32))
        decision = decide(
            state.settings.router,
            Evidence(tuple(dense)),
            matches,
            requested_adapter=requested_adapter,
            forced_route=forced_route,
        )
        timings = {"retrieval": retrieved - started, "routing": time.perf_counter() - retrieved}
        return Routed(decision, hits, timings)

    @staticmethod
    def _engine_request(
        request: ChatCompletionRequest, plan: PromptPlan, engine_model: str
    ) -> dict[str, Any]:
        fields = request.model_dump(exclude_none=True)
        body = {name: value for name, value in fields.items() if name in ENGINE_FIELDS}
        dropped = sorted(set(request.unknown_fields()) - ENGINE_FIELDS)
        if dropped:
            shown = [shorten(name, 40) for name in dropped[:10]]
            logger.info("request fields ignored (not forwarded to the engine): %s", shown)
        body["model"] = engine_model
        body["messages"] = plan.messages
        if request.stream:
            # Always asked of the engine, for the token metrics; passed on only if requested.
            given = request.stream_options.model_dump() if request.stream_options else {}
            body["stream_options"] = {**given, "include_usage": True}
        return body

    async def finish(self, prepared: PreparedChat) -> None:
        """The request is over: a hot-swap may now unload the version it used."""
        await self.state.release(prepared.replica, prepared.engine_request["model"])

    async def complete(self, prepared: PreparedChat) -> dict[str, Any]:
        try:
            response = await self._call(prepared, self._whole)
        finally:
            await self.finish(prepared)
        response["model"] = prepared.model
        response["ragtune"] = prepared.info.model_dump()
        return response

    async def _whole(self, prepared: PreparedChat) -> dict[str, Any]:
        started = time.perf_counter()
        response = await prepared.replica.client.chat_completion(prepared.engine_request)
        record = observability.current()
        if record is not None:
            record.time("generation", time.perf_counter() - started)
            _count_tokens(record, response.get("usage"))
        return response

    async def _call(
        self, prepared: PreparedChat, call: Callable[[PreparedChat], Awaitable[_T]]
    ) -> _T:
        """`call(prepared)`, recovering once from what a replica may do between requests: an
        engine that restarted and lost its adapters (load again, retry), or a replica that went
        away (the request moves to another, when there is one). Nothing had reached the client
        yet, so retrying is safe."""
        try:
            return await call(prepared)
        except ModelNotFoundError:
            if prepared.adapter is None:
                raise
            await self.state.ensure_loaded(prepared.adapter, prepared.replica, reload=True)
            return await call(prepared)
        except EngineNotRunningError:
            if len(self.state.engines.replicas) == 1:
                raise
            prepared.replica.mark_down()
            await self._move(prepared)
            return await call(prepared)

    async def _move(self, prepared: PreparedChat) -> None:
        """Send the request to another replica (counted there before it is released here)."""
        state = self.state
        served = prepared.engine_request["model"]
        old = prepared.replica
        replica = state.engines.choose(served if prepared.adapter else None, exclude=old)
        state.acquire(replica, served)
        prepared.replica = replica
        await state.release(old, served)
        logger.warning(
            "engine %s refused the connection; request moved to %s", old.url, replica.url
        )
        if prepared.adapter is not None:
            await state.ensure_loaded(prepared.adapter, replica)

    async def open_stream(self, prepared: PreparedChat) -> AsyncIterator[str]:
        """SSE events: the engine's chunks, the first one carrying `ragtune`, then [DONE].

        The first chunk is awaited here, before any byte goes out, so that an error the engine
        reports at once (unknown model, context too long, engine down) still gets its HTTP
        status; an error after that arrives as an error event, then [DONE].
        """
        holder: dict[str, AsyncIterator[dict[str, Any]]] = {}

        started = time.perf_counter()

        async def first_chunk(attempt: PreparedChat) -> dict[str, Any] | None:
            chunks = attempt.replica.client.stream_chat_completion(attempt.engine_request)
            holder["chunks"] = chunks
            try:
                return await anext(chunks)
            except StopAsyncIteration:
                return None

        try:
            first = await self._call(prepared, first_chunk)
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
        try:
            if first is not None:
                first["model"] = prepared.model
                first["ragtune"] = prepared.info.model_dump()
                yield _event(first)
                async for chunk in rest:
                    if chunk.get("usage") and record is not None:
                        _count_tokens(record, chunk["usage"])
                    if not chunk.get("choices") and chunk.get("usage") and not usage_wanted:
                        continue
                    if not usage_wanted:
                        chunk.pop("usage", None)
                    chunk["model"] = prepared.model
                    yield _event(chunk)
        except ServingError as exc:
            logger.warning("stream ended by an engine error: %s", exc)
            if record is not None:
                record.error = str(exc)
            error = ErrorDetail(message=str(exc), type="server_error", code="engine_stream_error")
            yield _event(ErrorResponse(error=error).model_dump())
        finally:
            if record is not None:
                record.time("generation", time.perf_counter() - started)
            await self.finish(prepared)
        yield "data: [DONE]\n\n"


def _count_tokens(record: observability.RequestRecord, usage: Any) -> None:
    if isinstance(usage, dict):
        record.prompt_tokens = usage.get("prompt_tokens")
        record.completion_tokens = usage.get("completion_tokens")


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
