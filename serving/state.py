"""What the API holds while it runs: settings, the store and embedder, the engine client, the
adapter registry and its task profiles, the model's tokenizer. Built in the app's lifespan."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
from pydantic import ValidationError

from ragtune.adapters.registry import AdapterManifest, AdapterRegistry
from ragtune.retrieval.embedder import Embedder, model_id_for
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.search import Retriever
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import VectorStore
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.pool import EnginePool, Replica
from ragtune.serving.errors import InvalidRequestError, ModelNotFoundError, ServingError
from ragtune.serving.prompting import PromptBuilder, Tokenizer
from ragtune.serving.router import AdapterProfile
from ragtune.serving.settings import ApiSettings, EngineSettings, RouterSettings

logger = logging.getLogger("ragtune.serving")


@dataclass
class ServingSettings:
    """Every package's settings, composed in one place."""

    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    router: RouterSettings = field(default_factory=RouterSettings)
    api: ApiSettings = field(default_factory=ApiSettings)


class ServingState:
    def __init__(
        self,
        settings: ServingSettings,
        store: VectorStore,
        embedder: Embedder,
        engines: EnginePool,
        registry: AdapterRegistry,
        tokenizer: Tokenizer | None,
        base_model: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.engines = engines
        self.registry = registry
        self.tokenizer = tokenizer
        self.base_model = base_model
        self.lexical = LexicalIndexes.for_store(settings.retrieval.data_dir, store)
        self._retrievers: dict[str, Retriever] = {}
        self.adapters: dict[str, AdapterManifest] = {}
        self.profiles: list[AdapterProfile] = []
        # Adapter name -> (profile key, version) of the profiles above.
        self._profiles_made: dict[str, tuple[str, int]] = {}
        self._refresh_lock = threading.Lock()
        # Held by every change to the registry this process makes (add, swap, remove) and by
        # the sync with changes made elsewhere, so that they apply one after the other.
        self.swap_lock = asyncio.Lock()
        # Requests in flight per engine name, over all engines: a swapped-out version is
        # unloaded only when its count is back to zero.
        self.in_flight: Counter[str] = Counter()
        self._drained = asyncio.Condition()
        self._context_length: int | None = None

    @property
    def engine(self) -> EngineClient:
        """The first engine (for tools that use one; the chat path picks a replica)."""
        return self.engines.primary

    # -- retrieval -------------------------------------------------------------------------
    def retriever(self, collection: str | None) -> Retriever:
        name = collection or self.settings.retrieval.collection
        retriever = self._retrievers.get(name)
        if retriever is None:
            try:
                settings = RetrievalSettings.model_validate(
                    {**self.settings.retrieval.model_dump(), "collection": name}
                )
            except ValidationError as exc:
                message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise InvalidRequestError(message, param="ragtune.collection") from exc
            target = self.store.collection(name, model_id_for(settings.embedding_model))
            # The API only reads: the lexical index is rebuilt in memory when the collection
            # changes, and written by ingestion.
            retriever = Retriever(target, self.embedder, self.lexical, settings, save_lexical=False)
            self._retrievers[name] = retriever
        return retriever

    # -- adapters --------------------------------------------------------------------------
    def refresh_adapters(self) -> None:
        """Read the registry and build each adapter's task profile: once per version, from the
        vectors stored next to its manifest when this embedder made them from these texts.
        Blocking (it may embed many example prompts): call it from a worker thread."""
        with self._refresh_lock:
            manifests = {m.name: m for m in self.registry.list()}
            known = {p.name: p for p in self.profiles}
            limit = self.settings.api.max_adapter_examples
            profiles, made = [], {}
            for manifest in manifests.values():
                texts = [manifest.task, *manifest.examples[:limit]]
                key = profile_key(self.embedder.model_id, texts)
                existing = known.get(manifest.name)
                before = self._profiles_made.get(manifest.name)
                if existing is not None and before is not None and before[0] == key:
                    if before[1] != manifest.version:
                        # A new version with the same task and examples: its own copy of the
                        # vectors, for the next start.
                        self.registry.save_profile(manifest, key, existing.vectors)
                    profiles.append(existing)
                else:
                    vectors = self._profile(manifest, texts, key)
                    profiles.append(AdapterProfile(manifest.name, vectors))
                made[manifest.name] = (key, manifest.version)
            self.adapters = manifests
            self.profiles = profiles
            self._profiles_made = made

    def _profile(
        self, manifest: AdapterManifest, texts: list[str], key: str
    ) -> np.ndarray[Any, Any]:
        """The stored profile vectors of this version if they were made from these texts by
        this embedder; else embedded now and stored."""
        vectors = self.registry.load_profile(manifest, key)
        if vectors is not None and vectors.shape == profile_shape(texts, self.embedder):
            return vectors
        if len(texts) - 1 < len(manifest.examples):
            logger.warning(
                "adapter %s has %d example prompts; its task profile uses the first %d "
                "(RAGTUNE_MAX_ADAPTER_EXAMPLES)",
                manifest.name,
                len(manifest.examples),
                len(texts) - 1,
            )
        vectors = embed_profile(self.embedder, texts)
        self.registry.save_profile(manifest, key, vectors)
        return vectors

    def adapter(self, name: str) -> AdapterManifest:
        manifest = self.adapters.get(name)
        if manifest is None:
            raise ModelNotFoundError(
                f"no model or adapter named {name!r}: use {self.base_model!r} (the router "
                f"chooses) or an adapter from GET /v1/models",
                model=name,
            )
        return manifest

    def _path(self, manifest: AdapterManifest) -> str:
        return str(self.registry.path(manifest).resolve())

    async def ensure_loaded(
        self, manifest: AdapterManifest, replica: Replica | None = None, *, reload: bool = False
    ) -> str:
        """The engine's name for this adapter version, loading it into `replica` (default: the
        one the pool would send its requests to) if needed."""
        served = manifest.served_name
        target = replica or self.engines.choose(served)
        await self.engines.ensure_loaded(target, served, self._path(manifest), reload=reload)
        return served

    def acquire(self, replica: Replica, served: str) -> None:
        """Count a request on `served` at `replica` (call in the same step as reading the
        alias, so that a hot-swap waits for it)."""
        self.in_flight[served] += 1
        replica.in_flight[served] += 1
        replica.touch(served)

    async def release(self, replica: Replica, served: str) -> None:
        replica.in_flight[served] -= 1
        if replica.in_flight[served] <= 0:
            del replica.in_flight[served]
        self.in_flight[served] -= 1
        if self.in_flight[served] <= 0:
            del self.in_flight[served]
            async with self._drained:
                self._drained.notify_all()

    async def drain(self, served: str, timeout_s: float) -> bool:
        """Wait until no request uses `served`; False when the timeout came first."""

        async def idle() -> None:
            async with self._drained:
                await self._drained.wait_for(lambda: self.in_flight[served] <= 0)

        try:
            await asyncio.wait_for(idle(), timeout_s)
        except TimeoutError:
            return False
        return True

    def loaded_on(self, manifest: AdapterManifest) -> list[str]:
        """URLs of the engines holding this adapter version."""
        return [r.url for r in self.engines.holding(manifest.served_name)]

    def is_loaded(self, manifest: AdapterManifest) -> bool:
        return bool(self.engines.holding(manifest.served_name))

    async def unload(self, manifest: AdapterManifest) -> None:
        await self.engines.unload(manifest.served_name)

    def switch(self, manifest: AdapterManifest) -> None:
        """Point the adapter's name at this version: requests from now on use it."""
        self.adapters[manifest.name] = manifest

    async def sync_registry(self) -> None:
        """Pick up what changed in the registry outside this process (another API replica's
        swap, a `ragtune adapters add` on the shared volume) and unload versions no longer
        current once no request uses them. Not during a swap of this process."""
        async with self.swap_lock:
            await anyio.to_thread.run_sync(self.refresh_adapters)
            for replica in self.engines.replicas:
                stale = [
                    n for n in replica.resident if self._ours(n) is False and not self.in_flight[n]
                ]
                for name in stale:
                    try:
                        await self.engines.unload(name)
                    except ServingError as exc:
                        logger.warning("could not unload stale %s: %s", name, exc)

    def _ours(self, served: str) -> bool | None:
        """True: a current adapter version; False: a stale or removed one of ours; None: a
        name ragtune did not give."""
        name, _, version = served.rpartition("@v")
        if not name or not version.isdigit():
            return None
        manifest = self.adapters.get(name)
        if manifest is None:
            return False if (self.registry.root / name).is_dir() else None
        return manifest.served_name == served

    async def restore_adapters(self) -> None:
        """At start: take over what each engine already holds, then load again the adapters
        that were resident before the restart (their current versions). With no record (a
        first start), the registered adapters go to the first engine, as many as it has slots
        for. Failures are logged; the adapter then loads on first use."""
        remembered = self.engines.remembered()
        for index, replica in enumerate(self.engines.replicas):
            try:
                await self.engines.adopt(replica, self._ours)
            except ServingError as exc:
                logger.warning("engine %s: %s", replica.url, exc)
                continue
            if remembered is None:
                names = list(self.adapters)[: replica.slots] if index == 0 else []
            else:
                names = remembered.get(replica.url, [])[-replica.slots :]
            for name in names:
                manifest = self.adapters.get(name)
                if manifest is None:
                    continue
                try:
                    await self.ensure_loaded(manifest, replica)
                except ServingError as exc:
                    logger.warning("adapter %s not loaded again yet: %s", name, exc)
        self.engines.save()

    # -- model -----------------------------------------------------------------------------
    async def context_length(self) -> int:
        """The served model's context length, as the engine reports it (asked once)."""
        if self._context_length is None:
            for entry in await self.engines.primary.list_models():
                if entry.get("id") == self.base_model and entry.get("max_model_len"):
                    self._context_length = int(entry["max_model_len"])
            if self._context_length is None:
                self._context_length = self.settings.engine.max_model_len
        return self._context_length

    async def prompt_builder(self) -> PromptBuilder:
        if self.tokenizer is None:
            raise ServingError("no tokenizer loaded: this state only routes")
        return PromptBuilder(self.tokenizer, await self.context_length())


PROFILE_FORMAT = "task, examples, their centroid; unit vectors; v1"
"""Part of a stored profile's key: changing how profiles are made invalidates stored ones."""


def profile_key(model_id: str, texts: Sequence[str]) -> str:
    """What a stored profile was made from: the embedding model and the texts (hashed)."""
    digest = hashlib.sha256()
    for part in (PROFILE_FORMAT, model_id, *texts):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return f"{model_id}:{digest.hexdigest()}"


def profile_shape(texts: Sequence[str], embedder: Embedder) -> tuple[int, int]:
    return len(texts) + (1 if len(texts) > 2 else 0), embedder.dimension


def embed_profile(embedder: Embedder, texts: Sequence[str]) -> np.ndarray[Any, Any]:
    """Unit vectors of the texts, plus the examples' centroid when there are several."""
    # In batches, except the texts longer than the model reads: those are truncated like a
    # query (one at a time), as an example prompt may be longer.
    lengths = embedder.count_tokens(texts)
    fits = [i for i, n in enumerate(lengths) if n <= embedder.max_tokens]
    embedded = dict(zip(fits, embedder.embed([texts[i] for i in fits]), strict=True))
    vectors = np.asarray(
        [embedded[i] if i in embedded else embedder.embed_query(t) for i, t in enumerate(texts)],
        np.float32,
    )
    if len(vectors) > 2:
        # The examples' centroid: what they share (the task's phrasing) without what
        # each is about; it matches new requests of the task best.
        vectors = np.vstack([vectors, vectors[1:].mean(axis=0, keepdims=True)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    return vectors


def load_tokenizer(engine: EngineSettings, model_path: str) -> Any:
    """The served model's tokenizer, from its local directory (or the local cache for a name)."""
    from transformers import AutoTokenizer

    source = engine.tokenizer or model_path
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ServingError(
            f"cannot load the tokenizer of {source!r} ({exc}); set RAGTUNE_TOKENIZER to a local "
            "directory holding the served model's tokenizer"
        ) from exc


def tokenizer_source(engine: EngineSettings) -> str:
    from ragtune.serving.engine.models import default_model_dir

    if engine.model:
        return engine.model
    path = default_model_dir(engine.models_dir)
    if not path.is_dir():
        raise ServingError(f"the default model is not prepared ({path}): `ragtune models prepare`")
    return str(path)
