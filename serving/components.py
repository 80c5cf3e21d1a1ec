"""The server's parts, built once from the settings: the one factory that the app's lifespan,
the evaluations and the benchmarks use, so that they all answer the way the API does."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio

from ragtune.adapters.registry import AdapterRegistry
from ragtune.retrieval.embedder import Embedder, load_embedder
from ragtune.retrieval.rerank import Reranker, load_reranker
from ragtune.retrieval.store import VectorStore, open_store
from ragtune.serving.admin.service import AdapterAdmin
from ragtune.serving.chat.service import ChatService
from ragtune.serving.embeddings.service import EmbeddingService
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.launcher import EngineLauncher
from ragtune.serving.engine.models import default_model_dir
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.errors import RouteModelError, ServingError
from ragtune.serving.files.catalog import FileCatalog
from ragtune.serving.files.service import FileService
from ragtune.serving.fleet import AdapterFleet, DocumentWatch
from ragtune.serving.grounding import load_grounding_checker
from ragtune.serving.learned_router import RouteModel, load_route_model
from ragtune.serving.models.service import ModelCatalog
from ragtune.serving.prompting import PromptFactory, Tokenizer, load_tokenizer
from ragtune.serving.responses.service import ResponsesService
from ragtune.serving.retrievers import RetrieverCache
from ragtune.serving.settings import EngineSettings, ServingSettings
from ragtune.serving.shadow import ShadowRunner
from ragtune.serving.vector_stores.jobs import IngestJobs
from ragtune.serving.vector_stores.service import VectorStoreService

logger = logging.getLogger("ragtune.serving")


@dataclass
class Components:
    """The server's collaborators, each built once and handed to whoever needs it: the HTTP
    features get their service (`chat`, `responses`, `admin`, `models`, `embeddings`), nothing
    reaches through another.

    Usage:
        with open_components(ServingSettings(), generation=False) as parts:   # routing only
            parts.chat.route(RouteRequest("How do I ...?"))
        parts = open_components(settings)        # the app's lifespan (from a worker thread)
        ...; await parts.aclose()
    """

    settings: ServingSettings
    """What they were built from (for offline tools; the server's parts got theirs)."""
    store: VectorStore
    embedder: Embedder
    retrievers: RetrieverCache
    engines: EnginePool
    registry: AdapterRegistry
    fleet: AdapterFleet
    prompts: PromptFactory | None
    """None when built without generation (nothing is prompted: route evaluation)."""
    chat: ChatService
    admin: AdapterAdmin
    models: ModelCatalog
    embeddings: EmbeddingService
    responses: ResponsesService
    files: FileService
    vector_stores: VectorStoreService
    jobs: IngestJobs
    """Background ingestion of files attached to vector stores (`list_jobs` for operators)."""

    async def aclose(self) -> None:
        """Let shadow runs finish briefly, close the engine clients (in the event loop that used
        them), stop the ingestion jobs (they resume at the next start), then the store."""
        try:
            await anyio.to_thread.run_sync(self.jobs.close)
            self.jobs.catalog.close()
            if self.chat.shadow is not None:
                await self.chat.shadow.aclose()
            await self.engines.aclose()
        finally:
            self.store.close()

    def close(self) -> None:
        """`aclose` outside any event loop (engine clients no loop has used)."""
        anyio.run(self.aclose)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def open_components(
    settings: ServingSettings, *, generation: bool = True, reranker: Reranker | None = None
) -> Components:
    """Open the store (read-only), load the embedding model and, with `generation`, the served
    model's tokenizer; make the engine clients (they connect on first use) and read the adapter
    registry. `reranker`: the configured one, loaded already (`ragtune serve` loads it before
    it serves; loaded here otherwise). Blocking: the app calls it from a worker thread."""
    store = open_store(settings.retrieval, "read")
    try:
        embedder = load_embedder(settings.retrieval)
        tokenizer = load_tokenizer(tokenizer_source(settings.engine)) if generation else None
        launcher = EngineLauncher(settings.engine)
        return assemble(
            settings,
            store=store,
            embedder=embedder,
            engines=engine_pool(settings.engine),
            tokenizer=tokenizer,
            base_model=launcher.served_model_name(),
            base_model_path=launcher.model_path(prepare=False),
            reranker=reranker,
        )
    except BaseException:
        store.close()
        raise


def assemble(
    settings: ServingSettings,
    *,
    store: VectorStore,
    embedder: Embedder,
    engines: EnginePool,
    tokenizer: Tokenizer | None,
    base_model: str,
    base_model_path: str = "",
    reranker: Reranker | None = None,
) -> Components:
    """The parts wired together over an open store, an embedder and engine clients (real ones
    from `open_components`, or fakes in unit tests); the adapters' profiles are read (or
    embedded) here."""
    registry = AdapterRegistry(settings.adapters.adapters_dir)
    fleet = AdapterFleet(
        registry,
        embedder,
        engines,
        base_model,
        max_examples=settings.adapters.max_adapter_examples,
        documents=DocumentWatch(store, embedder.model_id),
    )
    fleet.refresh()
    prompts = None
    if tokenizer is not None:
        configured = settings.engine.max_model_len

        async def context_length() -> int:
            return await engines.context_length(base_model, configured)

        prompts = PromptFactory(tokenizer, context_length)
    reranker = reranker or load_reranker(settings.retrieval)
    retrievers = RetrieverCache(store, embedder, settings.retrieval, reranker=reranker)
    chat = ChatService(
        embedder,
        retrievers,
        fleet,
        engines,
        prompts,
        settings.router,
        max_tokens_limit=settings.api.max_tokens_limit,
        auto_tool_choice=bool(settings.engine.tool_call_parser),
        log_prompts=settings.api.log_prompts,
        route_model=route_model(settings, embedder.model_id),
        shadow=ShadowRunner(settings.router, outcomes_path(settings)),
        grounding=load_grounding_checker(
            settings.grounding, embedder, settings.retrieval.embedding_device
        ),
    )
    admin = AdapterAdmin(
        fleet,
        registry,
        engines,
        max_rank=settings.engine.max_lora_rank,
        base_model_path=base_model_path,
        max_examples=settings.adapters.max_adapter_examples,
    )
    embeddings = EmbeddingService(embedder, max_inputs=settings.api.embedding_max_inputs)
    models = ModelCatalog(fleet, settings.engine.max_model_len, embedder)
    catalog = FileCatalog(settings.retrieval.data_dir / "files")
    jobs = IngestJobs(
        catalog, store, embedder, settings.retrieval, settings.ingest, retrievers.lexical,
        concurrency=settings.files.ingest_concurrency, on_changed=retrievers.forget,
    )  # fmt: skip
    files = FileService(catalog, settings.files, jobs)
    vector_stores = VectorStoreService(
        catalog, store, embedder.model_id, files, jobs, retrievers=retrievers
    )
    return Components(
        settings, store, embedder, retrievers, engines, registry, fleet, prompts, chat, admin,
        models, embeddings, ResponsesService(chat, vector_stores), files, vector_stores, jobs,
    )  # fmt: skip


def route_model_path(settings: ServingSettings) -> Path:
    """Where the learned router is read from and `ragtune router train` writes it."""
    configured = settings.router.router_model
    return configured or settings.retrieval.data_dir / "router" / "model.json"


def outcomes_path(settings: ServingSettings) -> Path:
    """Where paired outcomes are appended by default (`ragtune router collect`, shadow mode)
    and where `ragtune router train` reads them."""
    configured = settings.router.shadow_outcomes
    return configured or settings.retrieval.data_dir / "router" / "outcomes.jsonl"


def route_model(settings: ServingSettings, embedding_model: str) -> RouteModel | None:
    """The learned router when one is configured or stored, else None (the thresholds route).
    A file that cannot be used is logged as a warning and the thresholds route."""
    path = route_model_path(settings)
    if settings.router.router_model is None and not path.exists():
        return None
    try:
        model = load_route_model(path, embedding_model=embedding_model)
    except RouteModelError as exc:
        logger.warning("the learned router is not used, the thresholds route: %s", exc)
        return None
    logger.info("routing with the %s from %s", model.describe(), path)
    return model


def engine_pool(settings: EngineSettings) -> EnginePool:
    """One client per engine replica; resident adapters remembered across restarts."""
    return EnginePool(
        [EngineClient.from_settings(settings, url) for url in settings.engine_urls],
        settings.max_loras,
        residency_file=settings.engine_dir / "resident-adapters.json",
    )


def tokenizer_source(engine: EngineSettings) -> str:
    """Where the served model's tokenizer is read from: the setting, the model's directory, or
    the prepared default model."""
    if engine.tokenizer:
        return engine.tokenizer
    if engine.model:
        return engine.model
    path = default_model_dir(engine.models_dir)
    if not path.is_dir():
        raise ServingError(f"the default model is not prepared ({path}): `ragtune models prepare`")
    return str(path)
