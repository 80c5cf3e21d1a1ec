"""What the operator console shows and does, over the same services as the admin and chat
APIs: adapters (versions, residency per engine, advise verdicts, staleness) and their load,
unload and swap; collections, their documents and ingestion jobs; recent traffic charted; the
chat playground. No HTTP here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ragtune.retrieval.store import StoredDocument, VectorStore
from ragtune.serving.admin.service import AdapterAdmin
from ragtune.serving.chat.protocol import ChatCompletionRequest, RagtuneInfo
from ragtune.serving.chat.service import ChatService
from ragtune.serving.components import Components
from ragtune.serving.console.history import MetricsHistory, TrafficWindow
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.errors import InvalidRequestError
from ragtune.serving.files.service import FileService
from ragtune.serving.fleet import AdapterFleet
from ragtune.serving.tenants.principal import OPERATOR
from ragtune.serving.vector_stores.protocol import CreateVectorStoreRequest
from ragtune.serving.vector_stores.service import VectorStoreService

DOCUMENTS_SHOWN = 500
"""A collection's documents listed at most (the count says how many there are)."""
# One colour per route, the same in every chart (SVG fill attributes: no inline styles).
ROUTE_COLOURS = {
    "rag": "#2f6fb3",
    "adapter": "#c0602b",
    "adapter+rag": "#7a4fb0",
    "base": "#5b8a3a",
    "none": "#888888",
}
OTHER_COLOUR = "#444444"


@dataclass(frozen=True)
class Residency:
    engine: str
    """The engine replica's URL."""
    loaded: bool


@dataclass(frozen=True)
class AdapterRow:
    name: str
    version: int
    versions: list[int]
    served_name: str
    task: str
    rank: int
    residency: list[Residency]
    in_flight: int
    verdict: str | None
    """`ragtune advise`'s verdict on the adapter's task (manifest `evaluation.advise`)."""
    training_collection: str | None
    stale: bool | None
    """None: the collection it was trained alongside cannot be read now."""
    changed_documents: int

    @property
    def loaded(self) -> bool:
        return any(r.loaded for r in self.residency)


@dataclass(frozen=True)
class IngestionJob:
    """One background ingestion (a file attached to a vector store) and its progress."""

    id: str
    collection: str
    file: str
    status: str
    """in_progress, completed or failed."""
    chunks_done: int
    chunks_total: int
    error: str | None = None


@dataclass(frozen=True)
class CollectionRow:
    name: str
    chunks: int
    embedding_model: str | None
    jobs: list[IngestionJob] = field(default_factory=list)


@dataclass(frozen=True)
class DocumentList:
    collection: str
    documents: list[StoredDocument]
    total: int
    """Documents in the collection (more than listed when over DOCUMENTS_SHOWN)."""


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str


@dataclass(frozen=True)
class TrafficChart:
    """A window of traffic drawn as SVG geometry: chat requests per interval stacked by route,
    and the p50/p95 latency per interval as polylines (points strings)."""

    window: TrafficWindow
    width: int
    height: int
    bars: list[Bar]
    peak_requests: float
    p50_points: str
    p95_points: str
    peak_latency_s: float
    legend: list[tuple[str, str]]
    """(route, colour) of the routes in the window."""


@dataclass(frozen=True)
class ConsoleAnswer:
    """A playground answer with how ragtune answered it."""

    question: str
    text: str
    info: RagtuneInfo


def no_jobs() -> list[IngestionJob]:
    return []


def ingestion_jobs(components: Components) -> list[IngestionJob]:
    """The server's background ingestion jobs (files attached to vector stores), newest first.
    Blocking: reads the job catalog."""
    return [
        IngestionJob(
            id=job.file_id,
            collection=job.vector_store,
            file=job.filename,
            status=job.status,
            chunks_done=job.chunks_done,
            chunks_total=job.chunks_total,
            error=job.error,
        )
        for job in reversed(components.jobs.list_jobs())
    ]


def chart(window: TrafficWindow, width: int = 600, height: int = 160) -> TrafficChart:
    """The window's intervals, oldest left, in a `width` x `height` box."""
    intervals = window.intervals
    slots = max(len(intervals), 1)
    step = width / slots
    peak = max((sum(i.routes.values()) for i in intervals), default=0.0)
    scale = peak or 1.0
    bars: list[Bar] = []
    routes_seen: dict[str, str] = {}
    for n, interval in enumerate(intervals):
        top = float(height)
        for route, count in sorted(interval.routes.items()):
            colour = ROUTE_COLOURS.get(route, OTHER_COLOUR)
            routes_seen[route] = colour
            tall = height * count / scale
            top -= tall
            bars.append(Bar(n * step, top, max(step - 1, 1), tall, colour, f"{route}: {count:g}"))
    latency_peak = max(
        (v for i in intervals for v in (i.p50_s, i.p95_s) if v is not None), default=0.0
    )

    def points(values: Sequence[float | None]) -> str:
        scale = latency_peak or 1.0
        return " ".join(
            f"{(n + 0.5) * step:.1f},{height - height * v / scale:.1f}"
            for n, v in enumerate(values)
            if v is not None
        )

    return TrafficChart(
        window=window,
        width=width,
        height=height,
        bars=bars,
        peak_requests=peak,
        p50_points=points([i.p50_s for i in intervals]),
        p95_points=points([i.p95_s for i in intervals]),
        peak_latency_s=latency_peak,
        legend=sorted(routes_seen.items()),
    )


class ConsoleService:
    """The console's reads and actions.

    Usage:
        console = ConsoleService(admin, fleet, engines, store, embedding_model, chat, history)
        console.adapters(); console.collections(); console.documents("handbook")   # blocking
        await console.swap("titler", "/srv/adapters/titler-v2")
        await console.ask("How are invoices refunded?")
    """

    def __init__(
        self,
        admin: AdapterAdmin,
        fleet: AdapterFleet,
        engines: EnginePool,
        store: VectorStore,
        embedding_model: str,
        chat: ChatService,
        history: MetricsHistory,
        *,
        jobs: Callable[[], list[IngestionJob]] = no_jobs,
        files: FileService | None = None,
        vector_stores: VectorStoreService | None = None,
    ) -> None:
        self.admin = admin
        self.fleet = fleet
        self.engines = engines
        self.store = store
        self.embedding_model = embedding_model
        self.chat = chat
        self.history = history
        self.jobs = jobs
        self.files = files
        self.vector_stores = vector_stores
        """Where uploads go (None: the console takes none)."""

    # -- adapters ---------------------------------------------------------------------------
    def adapters(self) -> list[AdapterRow]:
        """Every adapter's version in force, by name. Blocking (staleness may read a
        collection, versions read the registry): call it from a worker thread."""
        engines = [replica.url for replica in self.engines.replicas]
        rows = []
        for status in sorted(self.admin.listed(), key=lambda s: s.name):
            manifest = self.fleet.get(status.name)
            rows.append(
                AdapterRow(
                    name=status.name,
                    version=status.version,
                    versions=self.admin.versions(status.name),
                    served_name=status.served_name,
                    task=status.task,
                    rank=status.rank,
                    residency=[Residency(url, url in status.loaded_on) for url in engines],
                    in_flight=status.in_flight,
                    verdict=manifest.verdict if manifest is not None else None,
                    training_collection=status.training_collection,
                    stale=status.stale,
                    changed_documents=status.changed_documents,
                )
            )
        return rows

    async def load(self, name: str) -> None:
        await self.admin.load(name)

    async def unload(self, name: str) -> None:
        await self.admin.unload(name)

    async def swap(self, name: str, path: str) -> int:
        """Hot-swap to the adapter directory at `path` (server-side); the new version."""
        return (await self.admin.swap(name, path)).version

    # -- collections ------------------------------------------------------------------------
    def collections(self) -> list[CollectionRow]:
        """Every collection with its size in chunks and its ingestion jobs. Blocking."""
        jobs = self.jobs()
        return [
            CollectionRow(
                info.name,
                info.count,
                info.embedding_model,
                [job for job in jobs if job.collection == info.name],
            )
            for info in sorted(self.store.list_collections(), key=lambda c: c.name)
        ]

    def unassigned_jobs(self) -> list[IngestionJob]:
        """Jobs whose collection does not exist (yet): a first file still being ingested."""
        names = {info.name for info in self.store.list_collections()}
        return [job for job in self.jobs() if job.collection not in names]

    def upload(self, collection: str, filename: str | None, data: BinaryIO) -> str:
        """Store an uploaded document and queue its ingestion into `collection` (created when
        missing), as the operator, through the same services as `/v1/files` and
        `/v1/vector_stores`; the file's name as stored. Blocking."""
        if self.files is None or self.vector_stores is None:
            raise InvalidRequestError("this server takes no uploads")
        stored = self.files.create(OPERATOR, filename, "assistants", data)
        try:
            self.vector_stores.create(
                OPERATOR, CreateVectorStoreRequest(name=collection, file_ids=[stored.id])
            )
        except BaseException:
            self.files.delete(OPERATOR, stored.id)  # nothing half-made stays behind
            raise
        return stored.filename

    def documents(self, collection: str) -> DocumentList:
        """The collection's documents (by source, at most DOCUMENTS_SHOWN). Blocking: reads
        every chunk's metadata."""
        found = self.store.collection(collection, self.embedding_model).documents()
        return DocumentList(collection, found[:DOCUMENTS_SHOWN], len(found))

    # -- traffic ----------------------------------------------------------------------------
    def traffic(self, seconds: float) -> TrafficChart:
        return chart(self.history.window(seconds))

    # -- playground -------------------------------------------------------------------------
    async def ask(self, question: str, collection: str | None = None) -> ConsoleAnswer:
        """Answer `question` as `/v1/chat/completions` would with the base model as `model`
        (the router chooses), optionally over another collection."""
        body: dict[str, Any] = {
            "model": self.chat.base_model,
            "messages": [{"role": "user", "content": question}],
        }
        if collection:
            body["ragtune"] = {"collection": collection}
        request = ChatCompletionRequest.model_validate(body)
        response = await self.chat.complete(await self.chat.prepare(request))
        choices = response.get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content") or ""
        return ConsoleAnswer(question, text, RagtuneInfo.model_validate(response["ragtune"]))


def console_service(components: Components, history: MetricsHistory) -> ConsoleService:
    """The console over the server's parts (the app's lifespan builds it once)."""
    return ConsoleService(
        components.admin,
        components.fleet,
        components.engines,
        components.store,
        components.embedder.model_id,
        components.chat,
        history,
        jobs=lambda: ingestion_jobs(components),
        files=components.files,
        vector_stores=components.vector_stores,
    )
