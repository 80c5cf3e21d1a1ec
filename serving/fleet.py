"""The adapters this server answers with: the version of each in force (its alias), their task
profiles for the router, whether the documents each was trained alongside changed since, which
engine holds which, and the requests on each version."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np

from ragtune.adapters.provenance import CollectionSnapshot, Staleness, staleness
from ragtune.adapters.registry import AdapterManifest, AdapterRegistry, parse_served_name
from ragtune.retrieval.embedder import Embedder, Vector
from ragtune.retrieval.errors import CollectionNotFoundError, RetrievalError
from ragtune.retrieval.store import VectorStore
from ragtune.serving.engine.pool import EnginePool, Lease, Replica
from ragtune.serving.errors import ModelNotFoundError, ServingError
from ragtune.serving.profiles import (
    AdapterProfile,
    adapter_matches,
    embed_profile,
    profile_key,
    profile_shape,
)
from ragtune.serving.tenants.principal import OPERATOR, Principal

logger = logging.getLogger("ragtune.serving")


class DocumentWatch:
    """The collections adapters were trained alongside, as they are now: each read again (its
    chunks' metadata) only when its revision changed, and the revision checked at most once
    per `every_s`, so that routing a request reads nothing from the store.

    Usage:
        watch = DocumentWatch(store, embedder.model_id)
        watch.current("handbook")    # CollectionSnapshot; None when it cannot be read now
    """

    def __init__(self, store: VectorStore, embedding_model: str, every_s: float = 1.0) -> None:
        self.store = store
        self.embedding_model = embedding_model
        self.every_s = every_s
        # Collection -> (when checked, what was found). One lock: one scan per revision.
        self._known: dict[str, tuple[float, CollectionSnapshot | None]] = {}
        self._lock = threading.Lock()

    def current(self, name: str) -> CollectionSnapshot | None:
        """Collection `name` now (empty when it no longer exists); None when the store cannot
        tell (unreachable, or the collection holds another embedding model's vectors)."""
        with self._lock:
            now = time.monotonic()
            known = self._known.get(name)
            if known is not None and now - known[0] < self.every_s:
                return known[1]
            snapshot = known[1] if known is not None else None
            try:
                collection = self.store.collection(name, self.embedding_model)
                if snapshot is None or snapshot.revision != collection.revision():
                    snapshot = CollectionSnapshot.of(collection)
            except CollectionNotFoundError:
                if snapshot is None or snapshot.documents:
                    snapshot = CollectionSnapshot(name=name)
            except RetrievalError as exc:
                if known is None or known[1] is not None:
                    logger.warning("cannot tell whether %r changed: %s", name, exc)
                snapshot = None
            self._known[name] = (now, snapshot)
            return snapshot


class AdapterFleet:
    """The registered adapters as the server sees them, over every engine replica.

    Usage:
        fleet = AdapterFleet(registry, embedder, engines, base_model, max_examples=500)
        fleet.refresh()                           # blocking (embeds profiles): a worker thread
        fleet.matches(vector)                     # [(adapter, similarity)], best first
        manifest, lease = fleet.lease("titler")   # the version in force, counted on a replica
        ...                                       # engines.call(lease, ...); engines.release
        await fleet.load(new); fleet.switch(new); await fleet.drain(old, 300); await
        fleet.unload(old)                         # a hot-swap (serving.admin does it)

    An adapter's name is an alias for its version in force; each version is served by the
    engine under its own name (`name@vN`), so a new one loads while the old one still answers.
    Requests are counted by the engine pool, per replica; the fleet reads that count.
    """

    def __init__(
        self,
        registry: AdapterRegistry,
        embedder: Embedder,
        engines: EnginePool,
        base_model: str,
        *,
        max_examples: int = 500,
        documents: DocumentWatch | None = None,
    ) -> None:
        self.registry = registry
        self.embedder = embedder
        self.engines = engines
        self.base_model = base_model
        self.max_examples = max_examples
        """Example prompts a profile is made from (a manifest may hold more)."""
        self.documents = documents
        """The collections adapters were trained alongside (None: staleness is not checked)."""
        # Engine name -> (the snapshot compared with, the result).
        self._staleness: dict[str, tuple[CollectionSnapshot, Staleness]] = {}
        self._manifests: dict[str, AdapterManifest] = {}
        self._profiles: list[AdapterProfile] = []
        # Adapter name -> (profile key, version) of the profiles above.
        self._profiles_made: dict[str, tuple[str, int]] = {}
        self._refresh_lock = threading.Lock()
        self.swap_lock = asyncio.Lock()
        """Held by every change to the registry this process makes (add, swap, remove) and by
        the sync with changes made elsewhere, so that they apply one after the other."""

    # -- what is registered ----------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._manifests)

    def manifests(self) -> list[AdapterManifest]:
        """The version in force of every adapter."""
        return list(self._manifests.values())

    def get(self, name: str) -> AdapterManifest | None:
        return self._manifests.get(name)

    def manifest(self, name: str, principal: Principal = OPERATOR) -> AdapterManifest:
        """The version in force of the adapter a client named; ModelNotFoundError (404) if
        there is none, or `principal` may not see it (the same error: a tenant cannot tell
        another's adapter from no adapter)."""
        manifest = self._manifests.get(name)
        if manifest is None or not principal.sees_adapter(name):
            raise ModelNotFoundError(
                f"no model or adapter named {name!r}: use {self.base_model!r} (the router "
                f"chooses) or an adapter from GET /v1/models",
                model=name,
            )
        return manifest

    @property
    def profiles(self) -> list[AdapterProfile]:
        return self._profiles

    def matches(self, vector: Vector) -> list[tuple[str, float]]:
        """Every adapter's similarity to a question's vector, best first."""
        return adapter_matches(self._profiles, np.asarray(vector, dtype=np.float32))

    def staleness(self, manifest: AdapterManifest) -> Staleness | None:
        """What changed in the collection this version was trained alongside since then; None
        when it recorded none, or the collection cannot be read now."""
        recorded = manifest.training_collection
        if recorded is None or self.documents is None:
            return None
        now = self.documents.current(recorded.name)
        if now is None:
            return None
        cached = self._staleness.get(manifest.served_name)
        if cached is not None and cached[0] is now:
            return cached[1]
        result = staleness(recorded, now)
        self._staleness[manifest.served_name] = (now, result)
        return result

    def stale_documents(self, collection: str) -> dict[str, frozenset[str]]:
        """Adapter name -> the ids of the documents changed (or removed, or added) since it
        was trained alongside `collection`; only the adapters that are stale there."""
        stale = {}
        for manifest in list(self._manifests.values()):
            recorded = manifest.training_collection
            if recorded is None or recorded.name != collection:
                continue
            result = self.staleness(manifest)
            if result is not None and result.stale:
                stale[manifest.name] = result.changed_ids
        return stale

    def refresh(self) -> None:
        """Read the registry and build each adapter's task profile: once per version, from the
        vectors stored next to its manifest when this embedder made them from these texts.
        Blocking (it may embed many example prompts): call it from a worker thread."""
        with self._refresh_lock:
            manifests = {m.name: m for m in self.registry.list()}
            known = {p.name: p for p in self._profiles}
            profiles, made = [], {}
            for manifest in manifests.values():
                texts = [manifest.task, *manifest.examples[: self.max_examples]]
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
            self._manifests = manifests
            self._profiles = profiles
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

    def switch(self, manifest: AdapterManifest) -> None:
        """Point the adapter's name at this version: requests from now on use it."""
        self._manifests[manifest.name] = manifest

    # -- on the engines --------------------------------------------------------------------
    def lease(self, adapter: str | None) -> tuple[AdapterManifest | None, Lease]:
        """The version in force of `adapter` (None: the base model), counted as in flight on
        the replica its request goes to. Reading the alias and counting are one step (no
        await): a hot-swap then waits for this request before unloading its version."""
        if adapter is None:
            return None, self.engines.lease(self.base_model)
        manifest = self.manifest(adapter)
        return manifest, self.engines.lease(manifest.served_name, self._path(manifest))

    def hold(self, manifest: AdapterManifest, replica: Replica) -> Lease:
        """Count an operator's hold on `manifest` at `replica` (a hot-swap keeps the old
        version from being evicted while the new one loads)."""
        return self.engines.lease(manifest.served_name, self._path(manifest), replica)

    def in_flight(self, manifest: AdapterManifest) -> int:
        return self.engines.in_flight(manifest.served_name)

    async def drain(self, manifest: AdapterManifest, timeout_s: float) -> bool:
        """Wait until no request uses this version; False when the timeout came first."""
        return await self.engines.drain(manifest.served_name, timeout_s)

    def holders(self, manifest: AdapterManifest) -> list[Replica]:
        """The replicas holding this adapter version."""
        return self.engines.holding(manifest.served_name)

    def loaded_on(self, manifest: AdapterManifest) -> list[str]:
        """URLs of the engines holding this adapter version."""
        return [r.url for r in self.holders(manifest)]

    def target(self, manifest: AdapterManifest) -> Replica:
        """The replica a request on this version would go to now."""
        return self.engines.choose(manifest.served_name)

    async def load(self, manifest: AdapterManifest, replica: Replica | None = None) -> None:
        """Make this version resident on `replica` (default: where its requests would go)."""
        target = replica or self.target(manifest)
        await self.engines.ensure_loaded(target, manifest.served_name, self._path(manifest))

    async def unload(self, manifest: AdapterManifest) -> None:
        """Unload this version from every engine holding it."""
        await self.engines.unload(manifest.served_name)

    def _path(self, manifest: AdapterManifest) -> str:
        return str(self.registry.path(manifest).resolve())

    # -- in step with the registry and the engines -----------------------------------------
    async def sync_registry(self) -> None:
        """Pick up what changed in the registry outside this process (another API replica's
        swap, a `ragtune adapters add` on the shared volume) and unload versions no longer
        current once no request uses them. Not during a swap of this process."""
        async with self.swap_lock:
            await anyio.to_thread.run_sync(self.refresh)
            for replica in self.engines.replicas:
                stale = [
                    name
                    for name in replica.resident
                    if self._ours(name) is False and not self.engines.in_flight(name)
                ]
                for name in stale:
                    try:
                        await self.engines.unload(name)
                    except ServingError as exc:
                        logger.warning("could not unload stale %s: %s", name, exc)

    def _ours(self, served: str) -> bool | None:
        """True: a current adapter version; False: a stale or removed one of ours; None: a
        name ragtune did not give."""
        parsed = parse_served_name(served)
        if parsed is None:
            return None
        manifest = self._manifests.get(parsed[0])
        if manifest is None:
            return False if (self.registry.root / parsed[0]).is_dir() else None
        return manifest.served_name == served

    async def restore(self) -> None:
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
                names = self.names()[: replica.slots] if index == 0 else []
            else:
                names = remembered.get(replica.url, [])[-replica.slots :]
            for name in names:
                manifest = self._manifests.get(name)
                if manifest is None:
                    continue
                try:
                    await self.load(manifest, replica)
                except ServingError as exc:
                    logger.warning("adapter %s not loaded again yet: %s", name, exc)
        self.engines.save()

    async def follow(
        self,
        every_s: float,
        health: dict[str, bool],
        on_health: Callable[[dict[str, bool]], None],
    ) -> None:
        """Runs for the server's life: every `every_s`, each engine's health (reported to
        `on_health`; an engine that comes back gets its adapters again) and the registry
        (changes made by other processes). `health` is what the start found."""
        while True:
            await anyio.sleep(every_s)
            try:
                now = await self.engines.healthy()
                on_health(now)
                back = [url for url, ok in now.items() if ok and not health.get(url)]
                health = now
                if back:
                    logger.info("engine back at %s: loading its adapters again", ", ".join(back))
                    await self.restore()
                await self.sync_registry()
            except Exception:
                logger.exception("background check failed (tried again in %.0f s)", every_s)
