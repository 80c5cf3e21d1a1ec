"""Operator actions on adapters while the API keeps answering: add, load, unload, hot-swap,
remove. No HTTP here."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import anyio

from adapters.errors import InvalidAdapterError
from adapters.registry import AdapterManifest
from serving.admin.protocol import AdapterStatus
from serving.engine.launcher import EngineLauncher
from serving.errors import ServingError
from serving.state import ServingState

logger = logging.getLogger("ragtune.admin")
DRAIN_TIMEOUT_S = 300.0


class AdapterAdmin:
    def __init__(self, state: ServingState) -> None:
        self.state = state

    def _model_dir(self) -> Path | None:
        path = Path(EngineLauncher(self.state.settings.engine).model_path(prepare=False))
        return path if path.is_dir() else None

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

    async def add(self, name: str, path: str, task: str, examples: list[str]) -> AdapterStatus:
        state = self.state
        manifest = await anyio.to_thread.run_sync(
            lambda: state.registry.add(
                Path(path),
                name,
                task,
                base_model=state.base_model,
                examples=examples,
                max_rank=state.settings.engine.max_lora_rank,
                base_model_dir=self._model_dir(),
            )
        )
        state.refresh_adapters()
        await state.ensure_loaded(manifest)
        return self.status(manifest)

    async def swap(self, name: str, path: str) -> AdapterStatus:
        """Load the new version under its own engine name, point the alias at it, wait for the
        requests still on the old version, then unload that. A failed load changes nothing."""
        state = self.state
        async with state.swap_lock:
            old = state.adapter(name)
            new = await anyio.to_thread.run_sync(
                lambda: state.registry.add_version(
                    name,
                    Path(path),
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
            except BaseException:
                state.engines.on_event("swap_failed", new.served_name)
                await self._forget(new)
                raise
            finally:
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
        """Undo a version that could not be loaded (the old one keeps serving)."""
        try:
            await self.state.unload(failed)
        except ServingError as exc:
            logger.warning("could not unload the failed version %s: %s", failed.served_name, exc)
        await anyio.to_thread.run_sync(self.state.registry.remove_version, failed)

    async def load(self, name: str) -> AdapterStatus:
        manifest = self.state.adapter(name)
        await self.state.ensure_loaded(manifest)
        return self.status(manifest)

    async def unload(self, name: str) -> AdapterStatus:
        manifest = self.state.adapter(name)
        if self.state.in_flight[manifest.served_name]:
            raise InvalidAdapterError(
                f"adapter {name!r} is answering {self.state.in_flight[manifest.served_name]} "
                "request(s); try again when they are done"
            )
        await self.state.unload(manifest)
        return self.status(manifest)

    async def remove(self, name: str) -> None:
        state = self.state
        manifest = state.adapter(name)
        if state.in_flight[manifest.served_name]:
            raise InvalidAdapterError(f"adapter {name!r} is answering requests; try again soon")
        if state.is_loaded(manifest):
            await state.unload(manifest)
        await anyio.to_thread.run_sync(shutil.rmtree, state.registry.root / manifest.name)
        state.refresh_adapters()
