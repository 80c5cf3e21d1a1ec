"""What probes and operators read: `/health` (the process is up), `/ready` (the engine and the
store answer), `/metrics` (Prometheus), and the OpenAPI document when it is not public."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ragtune.retrieval.store import VectorStore
from ragtune.serving.auth import require_admin
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.errors import KeyStoreError
from ragtune.serving.http_errors import RETRY_AFTER_S
from ragtune.serving.observability import Metrics
from ragtune.serving.settings import ApiSettings
from ragtune.serving.tenants.service import KeyStore


async def readiness(
    engines: EnginePool, store: VectorStore
) -> tuple[dict[str, str], dict[str, bool]]:
    """(problems by part, each engine's health): no problems means ready."""
    problems: dict[str, str] = {}
    health = await engines.healthy()
    if not any(health.values()):
        down = ", ".join(health)
        problems["engine"] = f"the engine at {down} does not answer: `ragtune engine start`"
    try:
        await anyio.to_thread.run_sync(store.list_collections)
    except Exception as exc:  # any failure means "not ready"; the reason goes to operators
        problems["store"] = f"the store does not answer: {exc}"
    return problems, health


def health_router(api: ApiSettings, metrics: Metrics) -> APIRouter:
    """The probe and metrics routes of an app with these settings."""
    router = APIRouter()

    @router.get("/health")
    async def health() -> dict[str, str]:
        """The process is up (says nothing about the engine or the store: see /ready)."""
        return {"status": "ok"}

    @router.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics (text format)."""
        if not _metrics_public(api, request.app.state.keys):
            await require_admin(request)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        """Ready to answer: the engine answers /health and the store answers a query; otherwise
        503 with `Retry-After`. With an admin key, the reasons and each engine's state too."""
        components = request.app.state.components
        problems, health = await readiness(components.engines, components.store)
        body: dict[str, object] = {"status": "not ready" if problems else "ready"}
        if request.headers.get("authorization") or api.allow_unauthenticated:
            # Details (URLs, store errors) for operators only; a probe without a key gets the
            # status.
            await require_admin(request)
            body.update(
                {"problems": problems, "engines": health} if problems else {"engines": health}
            )
        if problems:
            return JSONResponse(body, 503, headers={"Retry-After": RETRY_AFTER_S})
        return JSONResponse(body)

    return router


def _metrics_public(api: ApiSettings, keys: KeyStore) -> bool:
    """Whether /metrics answers without a key: as set, else while no tenant key exists (a
    damaged key file counts as keys existing)."""
    if api.metrics_public is not None:
        return api.metrics_public
    try:
        return not keys.list()
    except KeyStoreError:
        return False


private_docs_router = APIRouter(include_in_schema=False)


@private_docs_router.get("/openapi.json", dependencies=[Depends(require_admin)])
async def openapi_document(request: Request) -> JSONResponse:
    """The OpenAPI document, for operators (RAGTUNE_API_DOCS_PUBLIC=true serves it to anyone,
    with /docs and /redoc)."""
    return JSONResponse(request.app.openapi())
