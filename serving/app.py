"""The HTTP API: `create_app(settings)` builds it; its lifespan opens the store, the embedder,
the engine client, the adapter registry and the tokenizer, and closes them at shutdown."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.registry import AdapterRegistry
from ingest.counters import ingest_counters_path
from retrieval.embedder import load_embedder
from retrieval.store import open_store
from serving.admin.routes import router as admin_router
from serving.auth import require_admin, require_chat
from serving.chat.protocol import ModelCard, ModelList
from serving.chat.routes import router as chat_router
from serving.chat.service import ChatService
from serving.engine.client import EngineClient
from serving.engine.launcher import EngineLauncher
from serving.engine.pool import EnginePool
from serving.errors import RequestTooLargeError, ServingError
from serving.http_errors import error_body, install_error_handlers
from serving.observability import Metrics, RequestContext
from serving.ratelimit import RateLimiter
from serving.settings import EngineSettings
from serving.state import ServingSettings, ServingState, load_tokenizer, tokenizer_source

logger = logging.getLogger("ragtune.api")


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    api = settings.api
    if not api.allow_unauthenticated and not (api.keys("chat") or api.keys("admin")):
        raise ServingError(
            "no API keys: set RAGTUNE_API_KEYS (and RAGTUNE_ADMIN_API_KEYS for operators), or "
            "RAGTUNE_ALLOW_UNAUTHENTICATED=true for local use only"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if api.allow_unauthenticated:
            logger.warning(
                "!!! AUTHENTICATION IS OFF (RAGTUNE_ALLOW_UNAUTHENTICATED): anyone who can reach "
                "this port can use the API. For local use only. !!!"
            )
        state = await anyio.to_thread.run_sync(open_state, settings)
        app.state.serving = state
        app.state.chat = ChatService(state)
        metrics: Metrics = app.state.metrics
        state.engines.on_event = lambda event, served: metrics.adapter_events.labels(event).inc()
        health = await state.engines.healthy()
        for url, ok in health.items():
            metrics.engine_up.labels(url).set(ok)
            if not ok:
                logger.warning("the engine at %s is not ready; /ready says why", url)
        if any(health.values()):
            await state.restore_adapters()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch, state, metrics, health, api.registry_check_s)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                await state.engines.aclose()
                state.store.close()

    app = FastAPI(
        title="ragtune",
        summary="RAG-first assistant server with an OpenAI-compatible chat API.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics(ingest_counters_path(settings.retrieval.data_dir))
    app.state.rate_limiter = RateLimiter(api.rate_limit, api.rate_limit_burst or None)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, limit=api.max_request_bytes)
    # Outermost: every response, errors included, gets its request id, metrics and log line.
    app.add_middleware(RequestContext, metrics=app.state.metrics, log_prompts=api.log_prompts)
    app.include_router(chat_router)
    app.include_router(service_router)
    app.include_router(admin_router)
    return app


def open_state(settings: ServingSettings) -> ServingState:
    store = open_store(settings.retrieval, "read")
    try:
        embedder = load_embedder(settings.retrieval)
        tokenizer = load_tokenizer(settings.engine, tokenizer_source(settings.engine))
        state = ServingState(
            settings,
            store,
            embedder,
            engine_pool(settings.engine),
            AdapterRegistry(settings.engine.data_dir / "adapters"),
            tokenizer,
            EngineLauncher(settings.engine).served_model_name(),
        )
        state.refresh_adapters()
    except BaseException:
        store.close()
        raise
    return state


async def watch(
    state: ServingState, metrics: Metrics, health: dict[str, bool], every_s: float
) -> None:
    """In the background: engine health (an engine that comes back gets its adapters again)
    and the adapter registry (changes made by other processes)."""
    while True:
        await anyio.sleep(every_s)
        try:
            now = await state.engines.healthy()
            for url, ok in now.items():
                metrics.engine_up.labels(url).set(ok)
            back = [url for url, ok in now.items() if ok and not health.get(url)]
            health = now
            if back:
                logger.info("engine back at %s: loading its adapters again", ", ".join(back))
                await state.restore_adapters()
            await state.sync_registry()
        except Exception:
            logger.exception("background check failed (tried again in %.0f s)", every_s)


def engine_pool(settings: EngineSettings) -> EnginePool:
    """One client per engine replica; resident adapters remembered across restarts."""
    return EnginePool(
        [EngineClient.from_settings(settings, url) for url in settings.engine_urls],
        settings.max_loras,
        residency_file=settings.engine_dir / "resident-adapters.json",
    )


def serving_state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


State = Annotated[ServingState, Depends(serving_state)]
service_router = APIRouter()


@service_router.get("/health")
async def health() -> dict[str, str]:
    """The process is up (says nothing about the engine or the store: see /ready)."""
    return {"status": "ok"}


@service_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text format)."""
    if not request.app.state.settings.api.metrics_public:
        await require_admin(request)
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@service_router.get("/ready")
async def ready(state: State) -> JSONResponse:
    """Ready to answer: the engine answers /health and the store answers a query. 503 with
    `Retry-After` and the reasons otherwise."""
    problems: dict[str, str] = {}
    health = await state.engines.healthy()
    if not any(health.values()):
        down = ", ".join(health)
        problems["engine"] = f"the engine at {down} does not answer: `ragtune engine start`"
    try:
        await anyio.to_thread.run_sync(state.store.list_collections)
    except Exception as exc:  # any failure means "not ready"; the reason goes to the caller
        problems["store"] = f"the store does not answer: {exc}"
    if problems:
        return JSONResponse(
            {"status": "not ready", "problems": problems, "engines": health},
            503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"status": "ready", "engines": health})


@service_router.get("/v1/models", response_model=ModelList, dependencies=[Depends(require_chat)])
async def list_models(state: State) -> ModelList:
    """The base model (the router chooses the route for it) and every registered adapter."""
    now = int(time.time())
    context = state.settings.engine.max_model_len
    cards = [ModelCard(id=state.base_model, created=now, max_model_len=context)]
    cards += [
        ModelCard(
            id=manifest.name,
            created=now,
            parent=state.base_model,
            root=f"{manifest.name}@v{manifest.version}",
            task=manifest.task,
        )
        for manifest in state.adapters.values()
    ]
    return ModelList(data=cards)


class BodySizeLimit:
    """Refuse bodies over the limit with 413, by Content-Length or while reading."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise RequestTooLargeError(self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return (
            f"the request body is over {self.limit} bytes (RAGTUNE_MAX_REQUEST_BYTES); "
            "send less context per request"
        )

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            error_body(self._message(), "invalid_request_error", None, "request_too_large")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
