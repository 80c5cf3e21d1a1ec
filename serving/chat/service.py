"""The chat logic: embed the question once, retrieve, route, prompt, generate. No HTTP here."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from adapters.registry import AdapterManifest
from retrieval.filters import SearchFilter
from retrieval.search import SearchHit, SearchMode
from serving.chat.protocol import (
    ChatCompletionRequest,
    ErrorDetail,
    ErrorResponse,
    RagtuneInfo,
    SourceInfo,
)
from serving.errors import ModelNotFoundError, ServingError
from serving.prompting import PromptPlan
from serving.router import Evidence, Route, RouteDecision, adapter_matches, decide
from serving.state import ServingState

logger = logging.getLogger("ragtune.chat")

# Sampling fields passed to the engine as the client sent them.
_FORWARDED = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
    "frequency_penalty", "presence_penalty", "user",
)  # fmt: skip


@dataclass(frozen=True)
class Routed:
    decision: RouteDecision
    hits: list[SearchHit]


@dataclass(frozen=True)
class PreparedChat:
    decision: RouteDecision
    info: RagtuneInfo
    engine_request: dict[str, Any]
    model: str
    """The name the client used, echoed in responses."""
    adapter: AdapterManifest | None = None
    """The adapter version this request uses; counted in flight until it ends."""


class ChatService:
    def __init__(self, state: ServingState) -> None:
        self.state = state

    async def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        state = self.state
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
        manifest = None
        if decision.adapter:
            # Read the alias and count the request in one step (no await between): a hot-swap
            # then waits for this request before unloading the version it uses.
            manifest = state.adapter(decision.adapter)
            state.acquire(manifest.served_name)
        try:
            return await self._prepare_prompt(request, decision, hits, manifest)
        except BaseException:
            if manifest is not None:
                await state.release(manifest.served_name)
            raise

    async def _prepare_prompt(
        self,
        request: ChatCompletionRequest,
        decision: RouteDecision,
        hits: list[SearchHit],
        manifest: AdapterManifest | None,
    ) -> PreparedChat:
        state = self.state
        builder = await state.prompt_builder()
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        for message in messages:
            if isinstance(message.get("content"), list):
                message["content"] = "\n".join(
                    part.get("text") or "" for part in message["content"]
                )
        asked = request.max_tokens or request.max_completion_tokens
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
            engine_model = await state.ensure_loaded(manifest)
        body = self._engine_request(request, plan, engine_model)
        info = RagtuneInfo(
            route=decision.route,
            adapter=decision.adapter,
            adapter_version=manifest.version if manifest else None,
            reason=decision.reason,
            scores=decision.scores,
            sources=[
                SourceInfo(
                    number=n,
                    document=hit.source,
                    section=hit.section,
                    chunk_id=hit.chunk_id,
                    score=round(hit.dense_score or 0.0, 4),
                )
                for n, hit in enumerate(plan.passages, start=1)
            ],
        )
        return PreparedChat(decision, info, body, request.model, manifest)

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
        vector = state.embedder.embed_query(question)
        hits: list[SearchHit] = []
        if forced_route not in ("adapter", "base"):
            hits = state.retriever(collection).search(
                question,
                state.settings.router.rag_top_k,
                SearchMode(state.settings.retrieval.search_mode),
                SearchFilter.from_mapping(filters) if filters else None,
                vector=vector,
            )
        dense = sorted((h.dense_score for h in hits if h.dense_score is not None), reverse=True)
        matches = adapter_matches(state.profiles, np.asarray(vector, dtype=np.float32))
        decision = decide(
            state.settings.router,
            Evidence(tuple(dense)),
            matches,
            requested_adapter=requested_adapter,
            forced_route=forced_route,
        )
        return Routed(decision, hits)

    @staticmethod
    def _engine_request(
        request: ChatCompletionRequest, plan: PromptPlan, engine_model: str
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        unknown = request.unknown_fields()
        if unknown:
            logger.info("fields passed on to the engine unread: %s", sorted(unknown))
            body.update(unknown)
        for name in _FORWARDED:
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        body["model"] = engine_model
        body["messages"] = plan.messages
        if request.stream_options is not None:
            body["stream_options"] = request.stream_options.model_dump()
        return body

    async def finish(self, prepared: PreparedChat) -> None:
        """The request is over: a hot-swap may now unload the version it used."""
        if prepared.adapter is not None:
            await self.state.release(prepared.adapter.served_name)

    async def complete(self, prepared: PreparedChat) -> dict[str, Any]:
        try:
            response = await self._with_reload(prepared)
        finally:
            await self.finish(prepared)
        response["model"] = prepared.model
        response["ragtune"] = prepared.info.model_dump()
        return response

    async def _with_reload(self, prepared: PreparedChat) -> dict[str, Any]:
        try:
            return await self.state.engine.chat_completion(prepared.engine_request)
        except ModelNotFoundError:
            if prepared.decision.adapter is None:
                raise
            # The engine restarted and lost its adapters: load this one again, once.
            await self._reload(prepared)
            return await self.state.engine.chat_completion(prepared.engine_request)

    async def _reload(self, prepared: PreparedChat) -> None:
        assert prepared.adapter is not None
        await self.state.ensure_loaded(prepared.adapter, reload=True)

    async def open_stream(self, prepared: PreparedChat) -> AsyncIterator[str]:
        """SSE events: the engine's chunks, the first one carrying `ragtune`, then [DONE].

        The first chunk is awaited here, before any byte goes out, so that an error the engine
        reports at once (unknown model, context too long, engine down) still gets its HTTP
        status; an error after that arrives as an error event, then [DONE].
        """
        chunks = self.state.engine.stream_chat_completion(prepared.engine_request)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await self.finish(prepared)
            raise
        return self._events(prepared, first, chunks)

    async def _events(
        self,
        prepared: PreparedChat,
        first: dict[str, Any] | None,
        rest: AsyncIterator[dict[str, Any]],
    ) -> AsyncIterator[str]:
        try:
            if first is not None:
                first["model"] = prepared.model
                first["ragtune"] = prepared.info.model_dump()
                yield _event(first)
                async for chunk in rest:
                    chunk["model"] = prepared.model
                    yield _event(chunk)
        except ServingError as exc:
            logger.warning("stream ended by an engine error: %s", exc)
            error = ErrorDetail(message=str(exc), type="server_error", code="engine_stream_error")
            yield _event(ErrorResponse(error=error).model_dump())
        finally:
            await self.finish(prepared)
        yield "data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
