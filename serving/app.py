"""The HTTP API: `create_app(settings)` builds it; its lifespan opens the store, the embedder,
the engine client, the adapter registry and the tokenizer, and closes them at shutdown."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ragtune.adapters.registry import AdapterRegistry
from ragtune.ingest.counters import ingest_counters_path
from ragtune.retrieval.embedder import load_embedder
from ragtune.retrieval.store import open_store
from ragtune.serving.admin.routes import router as admin_router
from ragtune.serving.auth import require_admin, require_chat
from ragtune.serving.chat.protocol import ModelCard, ModelList
from ragtune.serving.chat.routes import router as chat_router
from ragtune.serving.chat.service import ChatService
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.launcher import EngineLauncher
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.errors import ServingError
from ragtune.serving.http_errors import install_error_handlers
from ragtune.serving.limits import RequestLimits
from ragtune.serving.middleware import BodySizeLimit, HeadAsGet
from ragtune.serving.observability import Metrics, RequestContext
from ragtune.serving.ratelimit import RateLimiter
from ragtune.serving.settings import EngineSettings
from ragtune.serving.shutdown import AnswerCancelledRequests
from ragtune.serving.state import ServingSettings, ServingState, load_tokenizer, tokenizer_source

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

    public_docs = api.api_docs_public
    app = FastAPI(
        title="ragtune",
        summary="RAG-first assistant server with an OpenAI-compatible chat API.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if public_docs else None,
        redoc_url="/redoc" if public_docs else None,
        openapi_url="/openapi.json" if public_docs else None,
    )
    app.state.settings = settings
    app.state.metrics = Metrics(ingest_counters_path(settings.retrieval.data_dir))
    app.state.rate_limiter = RateLimiter(api.rate_limit, api.rate_limit_burst or None)
    app.state.auth_failures = RateLimiter(api.auth_failure_limit, api.auth_failure_burst or None)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, limit=api.max_request_bytes)
    app.add_middleware(HeadAsGet)
    # Outside the body size limit, which reads the body through it.
    app.add_middleware(
        RequestLimits,
        max_header_count=api.max_header_count,
        max_header_bytes=api.max_header_bytes,
        body_timeout_s=api.body_timeout_s,
    )
    app.add_middleware(AnswerCancelledRequests)
    # Outermost: every response, errors included, gets its request id, metrics and log line.
    app.add_middleware(RequestContext, metrics=app.state.metrics, log_prompts=api.log_prompts)
    app.include_router(chat_router)
    app.include_router(service_router)
    app.include_router(admin_router)
    if not public_docs:
        app.include_router(private_docs_router)
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
async def ready(request: Request, state: State) -> JSONResponse:
    """Ready to answer: the engine answers /health and the store answers a query; otherwise
    503 with `Retry-After`. With an admin key, the reasons and each engine's state too."""
    problems: dict[str, str] = {}
    health = await state.engines.healthy()
    if not any(health.values()):
        down = ", ".join(health)
        problems["engine"] = f"the engine at {down} does not answer: `ragtune engine start`"
    try:
        await anyio.to_thread.run_sync(state.store.list_collections)
    except Exception as exc:  # any failure means "not ready"; the reason goes to operators
        problems["store"] = f"the store does not answer: {exc}"
    body: dict[str, object] = {"status": "not ready" if problems else "ready"}
    if request.headers.get("authorization") or request.app.state.settings.api.allow_unauthenticated:
        # Details (URLs, store errors) for operators only; a probe without a key gets the status.
        await require_admin(request)
        body.update({"problems": problems, "engines": health} if problems else {"engines": health})
    if problems:
        return JSONResponse(body, 503, headers={"Retry-After": "5"})
    return JSONResponse(body)


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


private_docs_router = APIRouter(include_in_schema=False)


@private_docs_router.get("/openapi.json", dependencies=[Depends(require_admin)])
async def openapi_document(request: Request) -> JSONResponse:
    """The OpenAPI document, for operators (RAGTUNE_API_DOCS_PUBLIC=true serves it to anyone,
    with /docs and /redoc)."""
    return JSONResponse(request.app.openapi())
