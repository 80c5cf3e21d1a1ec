"""Operator actions on adapters while the API keeps answering: add, load, unload, hot-swap,
remove (an adapter, or one old version). No HTTP here.

Each action is atomic as seen by clients and by the other actions: they run one at a time
(`AdapterFleet.swap_lock`), and an adapter version the engine refuses to load is taken back out
of the registry, so a refused add leaves the name free and a refused swap the old version serving.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio

from ragtune.adapters.errors import AdapterBusyError, AdapterNotFoundError, InvalidAdapterError
from ragtune.adapters.registry import AdapterManifest, AdapterRegistry
from ragtune.serving.admin.protocol import AdapterDetail, AdapterStatus
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.errors import (
    AdapterLoadError,
    EngineError,
    EngineNotRunningError,
    EngineTimeoutError,
    ServingError,
)
from ragtune.serving.fleet import AdapterFleet

logger = logging.getLogger("ragtune.admin")
DRAIN_TIMEOUT_S = 300.0


class AdapterAdmin:
    """The operator's adapter actions.

    Usage: `await admin.add(name, path, task, examples)`, `await admin.swap(name, path)`,
    `admin.status(admin.current(name))`. `max_rank` and `base_model_path` describe the engine an
    adapter must fit (validated before the engine sees it); `max_examples` bounds its example
    prompts."""

    def __init__(
        self,
        fleet: AdapterFleet,
        registry: AdapterRegistry,
        engines: EnginePool,
        *,
        max_rank: int,
        base_model_path: str,
        max_examples: int,
    ) -> None:
        self.fleet = fleet
        self.registry = registry
        self.engines = engines
        self.max_rank = max_rank
        self.base_model_path = base_model_path
        self.max_examples = max_examples

    def _model_dir(self) -> Path | None:
        path = Path(self.base_model_path)
        return path if path.is_dir() else None

    def listed(self) -> list[AdapterStatus]:
        """Every registered adapter's version in force, with its state on the engines and
        whether it is stale. Blocking (it may read collections): call it from a worker
        thread."""
        return [self.status(m) for m in self.fleet.manifests()]

    def current(self, name: str) -> AdapterManifest:
        """The version of `name` in force; AdapterNotFoundError (404) if none is registered."""
        manifest = self.fleet.get(name)
        if manifest is None:
            shown = name if len(name) <= 80 else f"{name[:80]}..."
            raise AdapterNotFoundError(
                f"no adapter named {shown!r} is registered; GET /admin/adapters lists them"
            )
        return manifest

    def status(self, manifest: AdapterManifest) -> AdapterStatus:
        loaded_on = self.fleet.loaded_on(manifest)
        recorded = manifest.training_collection
        staleness = self.fleet.staleness(manifest)
        return AdapterStatus(
            name=manifest.name,
            version=manifest.version,
            served_name=manifest.served_name,
            loaded=bool(loaded_on),
            loaded_on=loaded_on,
            in_flight=self.fleet.in_flight(manifest),
            task=manifest.task,
            rank=manifest.rank,
            training_collection=recorded.name if recorded else None,
            stale=staleness.stale if staleness else (None if recorded else False),
            changed_documents=len(staleness.changes) if staleness else 0,
        )

    def detail(self, name: str) -> AdapterDetail:
        """One adapter's status, manifest, stored versions and the documents changed since it
        was trained. Blocking (it may read the collection): call it from a worker thread."""
        manifest = self.current(name)
        staleness = self.fleet.staleness(manifest)
        return AdapterDetail(
            **self.status(manifest).model_dump(),
            manifest=manifest.model_dump(mode="json"),
            versions=self.versions(name),
            changes=list(staleness.changes) if staleness else [],
        )

    def versions(self, name: str) -> list[int]:
        return [m.version for m in self.registry.versions(name)]

    async def add(self, name: str, path: str, task: str, examples: list[str]) -> AdapterStatus:
        """Validate, register and load a new adapter; nothing stays registered if any step
        fails. Its task profile is embedded off the event loop."""
        fleet = self.fleet
        async with fleet.swap_lock:
            manifest = await anyio.to_thread.run_sync(
                lambda: self.registry.add(
                    server_path(path),
                    name,
                    task,
                    base_model=fleet.base_model,
                    examples=examples,
                    max_rank=self.max_rank,
                    base_model_dir=self._model_dir(),
                    max_examples=self.max_examples,
                )
            )
            try:
                await fleet.load(manifest)
                await anyio.to_thread.run_sync(fleet.refresh)
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await self._forget(manifest)
                    refusal = await self._refusal(exc, "so it was not registered")
                if refusal is None:
                    raise
                raise refusal from exc
        return self.status(manifest)

    async def swap(self, name: str, path: str) -> AdapterStatus:
        """Load the new version under its own engine name, point the alias at it, wait for the
        requests still on the old version, then unload that. A failed load changes nothing."""
        fleet = self.fleet
        async with fleet.swap_lock:
            old = self.current(name)
            new = await anyio.to_thread.run_sync(
                lambda: self.registry.add_version(
                    name,
                    server_path(path),
                    max_rank=self.max_rank,
                    base_model_dir=self._model_dir(),
                )
            )
            # On every engine holding the old version (one, if none does), so that the traffic
            # moves over without a cold load. The swap holds the old version meanwhile: loading
            # the new one must not evict it.
            replicas = fleet.holders(old) or [fleet.target(new)]
            holds = [fleet.hold(old, replica) for replica in replicas]
            try:
                for replica in replicas:
                    await fleet.load(new, replica)
                fleet.switch(new)
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    self.engines.on_event("swap_failed", new.served_name)
                    await self._forget(new)
                    refusal = await self._refusal(exc, f"v{old.version} keeps serving")
                if refusal is None:
                    raise
                raise refusal from exc
            finally:
                with anyio.CancelScope(shield=True):
                    for hold in holds:
                        await self.engines.release(hold)
            if not await fleet.drain(old, DRAIN_TIMEOUT_S):
                logger.warning(
                    "requests on %s still running after %.0f s; unloading it anyway",
                    old.served_name,
                    DRAIN_TIMEOUT_S,
                )
            await fleet.unload(old)
            self.engines.on_event("swap", new.served_name)
            return self.status(new)

    async def _forget(self, failed: AdapterManifest) -> None:
        """Undo a version that could not be loaded (a previous version keeps serving)."""
        try:
            await self.fleet.unload(failed)
        except ServingError as exc:
            logger.warning("could not unload the failed version %s: %s", failed.served_name, exc)
        await anyio.to_thread.run_sync(self.registry.withdraw, failed)

    async def _refusal(self, exc: BaseException, outcome: str) -> InvalidAdapterError | None:
        """A 400 naming the problem when the engine refused the adapter itself; None when the
        failure is not the adapter's (the engine is down or busy: the error stands)."""
        if isinstance(exc, AdapterLoadError):
            return InvalidAdapterError(f"the engine refused the adapter, {outcome}: {exc}")
        engine_down = (EngineNotRunningError, EngineTimeoutError)
        # vLLM answers 500 to an adapter it fails to load; if it still answers /health, the
        # adapter was the problem, not the engine.
        if (
            isinstance(exc, EngineError)
            and not isinstance(exc, engine_down)
            and any((await self.engines.healthy()).values())
        ):
            return InvalidAdapterError(f"the engine could not load the adapter, {outcome}: {exc}")
        return None

    async def load(self, name: str) -> AdapterStatus:
        async with self.fleet.swap_lock:
            manifest = self.current(name)
            await self.fleet.load(manifest)
            return self.status(manifest)

    async def unload(self, name: str) -> AdapterStatus:
        async with self.fleet.swap_lock:
            manifest = self.current(name)
            self._refuse_if_busy(manifest)
            await self.fleet.unload(manifest)
            return self.status(manifest)

    async def remove(self, name: str) -> None:
        """Unload and delete the adapter, every version."""
        async with self.fleet.swap_lock:
            manifest = self.current(name)
            versions = await anyio.to_thread.run_sync(self.registry.versions, name)
            for version in versions or [manifest]:
                self._refuse_if_busy(version)
            for version in versions or [manifest]:
                await self.fleet.unload(version)
            await anyio.to_thread.run_sync(self.registry.remove, name)
            await anyio.to_thread.run_sync(self.fleet.refresh)

    async def remove_version(self, name: str, version: int) -> None:
        """Delete one old version of the adapter (never the one in force)."""
        async with self.fleet.swap_lock:
            self.current(name)
            old = next((m for m in self.registry.versions(name) if m.version == version), None)
            if old is not None:
                self._refuse_if_busy(old)
            # The registry refuses the version in force and one that does not exist.
            removed = await anyio.to_thread.run_sync(self.registry.remove_version, name, version)
            await self.fleet.unload(removed)

    def _refuse_if_busy(self, manifest: AdapterManifest) -> None:
        busy = self.fleet.in_flight(manifest)
        if busy:
            raise AdapterBusyError(
                f"adapter {manifest.name!r} v{manifest.version} is answering {busy} "
                "request(s); try again when they are done"
            )


def server_path(path: str) -> Path:
    """The adapter directory a request names (read by the server)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidAdapterError("the adapter path is not valid UTF-8 text") from None
    return Path(path)
