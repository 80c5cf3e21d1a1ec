"""The HTTP API: `create_app(settings)` builds it; its lifespan opens the server's parts
(`components.open_components`: store, embedder, engine clients, adapter registry, tokenizer) and
closes them at shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from ragtune.ingest.counters import ingest_counters_path
from ragtune.serving.admin.routes import router as admin_router
from ragtune.serving.auth import Authenticator
from ragtune.serving.chat.routes import router as chat_router
from ragtune.serving.components import Components, open_components
from ragtune.serving.console.history import MetricsHistory
from ragtune.serving.console.routes import UPLOAD_PATH as CONSOLE_UPLOAD_PATH
from ragtune.serving.console.routes import router as console_router
from ragtune.serving.console.service import console_service
from ragtune.serving.console.sessions import ConsoleSessions
from ragtune.serving.embeddings.routes import router as embeddings_router
from ragtune.serving.errors import ServingError
from ragtune.serving.files.routes import UPLOAD_PATH
from ragtune.serving.files.routes import router as files_router
from ragtune.serving.health import health_router, private_docs_router
from ragtune.serving.http_errors import install_error_handlers
from ragtune.serving.middleware import (
    AnswerCancelledRequests,
    BodySizeLimit,
    HeadAsGet,
    RequestContext,
    RequestLimits,
)
from ragtune.serving.models.routes import router as models_router
from ragtune.serving.observability import Metrics
from ragtune.serving.responses.routes import router as responses_router
from ragtune.serving.settings import ServingSettings
from ragtune.serving.tenants.routes import router as keys_router
from ragtune.serving.tenants.service import KeyStore, keys_path
from ragtune.serving.vector_stores.routes import router as vector_stores_router

logger = logging.getLogger("ragtune.api")
MULTIPART_SLACK = 64 * 1024
"""Bytes an upload's body may carry beyond the file: the multipart boundaries and fields."""


def create_app(
    settings: ServingSettings | None = None,
    *,
    open_parts: Callable[[ServingSettings], Components] = open_components,
) -> FastAPI:
    """The app over `settings`; `open_parts` opens the server's parts in the lifespan (fakes at
    the edges in tests and benchmarks that run no engine)."""
    settings = settings or ServingSettings()
    api = settings.api
    keys = KeyStore(keys_path(settings.retrieval.data_dir))
    # A damaged keys file stops the start here (KeyStoreError names it), not every request.
    stored = keys.list()
    if not api.allow_unauthenticated and not (api.keys("chat") or api.keys("admin") or stored):
        raise ServingError(
            "no API keys: set RAGTUNE_API_KEYS (and RAGTUNE_ADMIN_API_KEYS for operators), "
            "create tenants' keys (`ragtune keys create`), or "
            "RAGTUNE_ALLOW_UNAUTHENTICATED=true for local use only"
        )
    metrics = Metrics(ingest_counters_path(settings.retrieval.data_dir))
    history = MetricsHistory(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if api.allow_unauthenticated:
            logger.warning(
                "!!! AUTHENTICATION IS OFF (RAGTUNE_ALLOW_UNAUTHENTICATED): anyone who can reach "
                "this port can use the API. For local use only. !!!"
            )
        components = await anyio.to_thread.run_sync(open_parts, settings)
        app.state.components = components
        app.state.console = console_service(components, history)
        try:
            health = await start(components, metrics)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(history.run)
                tasks.start_soon(
                    components.fleet.follow,
                    api.registry_check_s,
                    health,
                    lambda now: report_health(metrics, now),
                )
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            await components.aclose()

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
    app.state.keys = keys
    app.state.auth = Authenticator(api, metrics.rate_limited.inc, keys)
    app.state.console_sessions = ConsoleSessions(api.console_session_s)
    install_error_handlers(app)
    # Innermost first. The body size limit reads the body through the request limits' deadline.
    # Uploads only: the file's limit, and room for the multipart form around it.
    upload_limit = settings.files.max_upload_bytes + MULTIPART_SLACK
    uploads = {UPLOAD_PATH: upload_limit, CONSOLE_UPLOAD_PATH: upload_limit}
    app.add_middleware(
        BodySizeLimit,
        limit=api.max_request_bytes,
        uploads=uploads,
        open_uploads=api.allow_unauthenticated,
        max_uploads=settings.files.max_concurrent_uploads,
    )
    app.add_middleware(HeadAsGet)
    app.add_middleware(
        RequestLimits,
        max_header_count=api.max_header_count,
        max_header_bytes=api.max_header_bytes,
        body_timeout_s=api.body_timeout_s,
        upload_timeouts=dict.fromkeys(uploads, settings.files.upload_timeout_s),
    )
    app.add_middleware(AnswerCancelledRequests)
    # Outermost: every response, errors included, gets its request id, metrics and log line.
    app.add_middleware(RequestContext, metrics=metrics, log_prompts=api.log_prompts)
    app.include_router(chat_router)
    app.include_router(responses_router)
    app.include_router(health_router(api, metrics))
    app.include_router(models_router)
    app.include_router(embeddings_router)
    app.include_router(files_router)
    app.include_router(vector_stores_router)
    app.include_router(admin_router)
    app.include_router(keys_router)
    app.include_router(console_router)
    if not public_docs:
        app.include_router(private_docs_router)
    return app


async def start(components: Components, metrics: Metrics) -> dict[str, bool]:
    """Engine events counted in the metrics; each engine's health reported; the adapters that
    were resident loaded again where an engine answers. The health found is returned."""
    components.engines.on_event = lambda event, served: metrics.adapter_events.labels(event).inc()
    if components.chat.shadow is not None:
        components.chat.shadow.on_event = lambda event: metrics.shadow_runs.labels(event).inc()
    health = await components.engines.healthy()
    report_health(metrics, health)
    for url, ok in health.items():
        if not ok:
            logger.warning("the engine at %s is not ready; /ready says why", url)
    if any(health.values()):
        await components.fleet.restore()
    # Ingestion jobs a stopped server left in progress: made safe, then resumed.
    await anyio.to_thread.run_sync(components.jobs.start)
    return health


def report_health(metrics: Metrics, health: dict[str, bool]) -> None:
    for url, ok in health.items():
        metrics.engine_up.labels(url).set(ok)
