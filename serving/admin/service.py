"""Operator actions on adapters while the API keeps answering: add, load, unload, hot-swap,
remove (an adapter, or one old version). No HTTP here.

Each action is atomic as seen by clients and by the other actions: they run one at a time
(`state.swap_lock`), and an adapter version the engine refuses to load is taken back out of
the registry, so a refused add leaves the name free and a refused swap the old version serving.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio

from ragtune.adapters.errors import AdapterBusyError, AdapterNotFoundError, InvalidAdapterError
from ragtune.adapters.registry import AdapterManifest
from ragtune.serving.admin.protocol import AdapterStatus
from ragtune.serving.engine.launcher import EngineLauncher
from ragtune.serving.errors import (
    AdapterLoadError,
    EngineError,
    EngineNotRunningError,
    EngineTimeoutError,
    ServingError,
)
from ragtune.serving.state import ServingState

logger = logging.getLogger("ragtune.admin")
DRAIN_TIMEOUT_S = 300.0


class AdapterAdmin:
    def __init__(self, state: ServingState) -> None:
        self.state = state

    def _model_dir(self) -> Path | None:
        path = Path(EngineLauncher(self.state.settings.engine).model_path(prepare=False))
        return path if path.is_dir() else None

    def current(self, name: str) -> AdapterManifest:
        """The version of `name` in force; AdapterNotFoundError (404) if none is registered."""
        manifest = self.state.adapters.get(name)
        if manifest is None:
            shown = name if len(name) <= 80 else f"{name[:80]}..."
            raise AdapterNotFoundError(
                f"no adapter named {shown!r} is registered; GET /admin/adapters lists them"
            )
        return manifest

    def status(self, manifest: AdapterManifest) -> AdapterStatus:
        return AdapterStatus(
            name=manifest.name,
            version=manifest.version,
            served_name=manifest.served_name,
            loaded=self.state.is_loaded(manifest),
            loaded_on=self.state.loaded_on(manifest),
            in_flight=self.state.in_flight[manifest.served_name],
            task=manifest.task,
            rank=manifest.rank,
        )

    def versions(self, name: str) -> list[int]:
        return [m.version for m in self.state.registry.versions(name)]

    async def add(self, name: str, path: str, task: str, examples: list[str]) -> AdapterStatus:
        """Validate, register and load a new adapter; nothing stays registered if any step
        fails. Its task profile is embedded off the event loop."""
        state = self.state
        async with state.swap_lock:
            manifest = await anyio.to_thread.run_sync(
                lambda: state.registry.add(
                    server_path(path),
                    name,
                    task,
                    base_model=state.base_model,
                    examples=examples,
                    max_rank=state.settings.engine.max_lora_rank,
                    base_model_dir=self._model_dir(),
                    max_examples=state.settings.api.max_adapter_examples,
                )
            )
            try:
                await state.ensure_loaded(manifest)
                await anyio.to_thread.run_sync(state.refresh_adapters)
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
        state = self.state
        async with state.swap_lock:
            old = self.current(name)
            new = await anyio.to_thread.run_sync(
                lambda: state.registry.add_version(
                    name,
                    server_path(path),
                    max_rank=state.settings.engine.max_lora_rank,
                    base_model_dir=self._model_dir(),
                )
            )
            # On every engine holding the old version (one, if none does), so that the traffic
            # moves over without a cold load. The swap holds the old version meanwhile: loading
            # the new one must not evict it.
            replicas = state.engines.holding(old.served_name) or [
                state.engines.choose(new.served_name)
            ]
            for replica in replicas:
                state.acquire(replica, old.served_name)
            try:
                for replica in replicas:
                    await state.ensure_loaded(new, replica)
                state.switch(new)
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    state.engines.on_event("swap_failed", new.served_name)
                    await self._forget(new)
                    refusal = await self._refusal(exc, f"v{old.version} keeps serving")
                if refusal is None:
                    raise
                raise refusal from exc
            finally:
                with anyio.CancelScope(shield=True):
                    for replica in replicas:
                        await state.release(replica, old.served_name)
            if not await state.drain(old.served_name, DRAIN_TIMEOUT_S):
                logger.warning(
                    "requests on %s still running after %.0f s; unloading it anyway",
                    old.served_name,
                    DRAIN_TIMEOUT_S,
                )
            await state.unload(old)
            state.engines.on_event("swap", new.served_name)
            return self.status(new)

    async def _forget(self, failed: AdapterManifest) -> None:
        """Undo a version that could not be loaded (a previous version keeps serving)."""
        try:
            await self.state.unload(failed)
        except ServingError as exc:
            logger.warning("could not unload the failed version %s: %s", failed.served_name, exc)
        await anyio.to_thread.run_sync(self.state.registry.withdraw, failed)

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
            and any((await self.state.engines.healthy()).values())
        ):
            return InvalidAdapterError(f"the engine could not load the adapter, {outcome}: {exc}")
        return None

    async def load(self, name: str) -> AdapterStatus:
        async with self.state.swap_lock:
            manifest = self.current(name)
            await self.state.ensure_loaded(manifest)
            return self.status(manifest)

    async def unload(self, name: str) -> AdapterStatus:
        async with self.state.swap_lock:
            manifest = self.current(name)
            self._refuse_if_busy(manifest)
            await self.state.unload(manifest)
            return self.status(manifest)

    async def remove(self, name: str) -> None:
        """Unload and delete the adapter, every version."""
        state = self.state
        async with state.swap_lock:
            manifest = self.current(name)
            versions = await anyio.to_thread.run_sync(state.registry.versions, name)
            for version in versions or [manifest]:
                self._refuse_if_busy(version)
            for version in versions or [manifest]:
                await state.unload(version)
            await anyio.to_thread.run_sync(state.registry.remove, name)
            await anyio.to_thread.run_sync(state.refresh_adapters)

    async def remove_version(self, name: str, version: int) -> None:
        """Delete one old version of the adapter (never the one in force)."""
        state = self.state
        async with state.swap_lock:
            self.current(name)
            old = next((m for m in state.registry.versions(name) if m.version == version), None)
            if old is not None:
                self._refuse_if_busy(old)
            # The registry refuses the version in force and one that does not exist.
            removed = await anyio.to_thread.run_sync(state.registry.remove_version, name, version)
            await state.unload(removed)

    def _refuse_if_busy(self, manifest: AdapterManifest) -> None:
        busy = self.state.in_flight[manifest.served_name]
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
