"""The engines ragtune generates with (one vLLM, or several replicas of it) and the adapter
versions resident on each.

Residency is bounded by each engine's LoRA slots (`--max-loras`): loading one more adapter
evicts the least recently used idle one (it is loaded again on demand), and is refused with
`AdapterSlotsBusyError` when every slot holds an adapter that is answering requests. Keeping
within the slots also keeps vLLM from paging adapters in and out of a running batch.

An adapter request goes to a replica that has the adapter loaded (the least busy one), else to
the replica where loading it costs least; the rest is spread by requests in flight.

Requests are counted per replica and engine model name (`Replica.in_flight`, the one count):
eviction spares what is answering, a hot-swap drains the old version, the admin API reports it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ragtune.adapters.registry import parse_served_name
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.errors import (
    AdapterLoadError,
    AdapterSlotsBusyError,
    EngineModelMissingError,
    EngineNotRunningError,
)

logger = logging.getLogger("ragtune.engine")
DOWN_FOR_S = 5.0
"""A replica that refused a connection is passed over for this long (others are tried)."""
_T = TypeVar("_T")


class Replica:
    """One engine process: its client, the adapter versions resident on it (least recently used
    first) and the requests it is answering."""

    def __init__(self, client: EngineClient, slots: int) -> None:
        self.client = client
        self.slots = slots
        self.resident: OrderedDict[str, None] = OrderedDict()
        self.in_flight: Counter[str] = Counter()
        """Requests on this replica by engine model name (base model included)."""
        self.lock = asyncio.Lock()
        self.down_until = 0.0

    @property
    def url(self) -> str:
        return self.client.base_url

    @property
    def active(self) -> int:
        return sum(self.in_flight.values())

    def up(self) -> bool:
        return time.monotonic() >= self.down_until

    def mark_down(self) -> None:
        self.down_until = time.monotonic() + DOWN_FOR_S

    def touch(self, served: str) -> None:
        if served in self.resident:
            self.resident.move_to_end(served)

    def idle_victim(self, keep: str) -> str | None:
        """The least recently used resident adapter with no request on it (not `keep`)."""
        return next(
            (name for name in self.resident if name != keep and self.in_flight[name] <= 0), None
        )


@dataclass(eq=False)
class Lease:
    """One request's hold on an engine model: counted on `replica` from `EnginePool.lease` to
    `EnginePool.release`, so that nothing unloads the model under it. The replica may change
    (`EnginePool.call` moves a request off a replica that went away)."""

    served: str
    """The engine's model name: the base model's, or an adapter version's (`name@vN`)."""
    adapter_path: str | None
    """The adapter version's directory, for loading it (None: the base model)."""
    replica: Replica
    released: bool = False


class EnginePool:
    """Every engine replica, the adapters resident on each, and the requests each answers.

    Usage:
        lease = pool.lease(served, adapter_path)      # replica chosen, request counted
        try:
            answer = await pool.call(lease, lambda client: client.chat_completion(body))
        finally:
            await pool.release(lease)
    `call` loads the adapter where it is missing and recovers once from what a replica may do
    between two requests: restart and lose its adapters (loaded again), or go away (the
    request moves to another replica)."""

    def __init__(
        self,
        clients: Iterable[EngineClient],
        slots: int,
        residency_file: Path | None = None,
    ) -> None:
        self.replicas = [Replica(client, slots) for client in clients]
        if not self.replicas:
            raise ValueError("an engine pool needs at least one engine")
        self.residency_file = residency_file
        self.loads = 0
        self.evictions = 0
        self.on_event: Callable[[str, str], None] = lambda event, served: None
        """Called with ("load" | "evict" | "unload" | "swap" | "swap_failed", engine name);
        metrics hook in here."""
        self._released = asyncio.Condition()
        self._context_length: int | None = None

    async def aclose(self) -> None:
        for replica in self.replicas:
            await replica.client.aclose()

    async def context_length(self, model: str, fallback: int) -> int:
        """The served model's context length as the engines report it (asked once, of the first
        replica that answers), else `fallback` (the configured one)."""
        if self._context_length is None:
            models = await self._ask_any(lambda client: client.list_models())
            lengths = [
                int(entry["max_model_len"])
                for entry in models
                if entry.get("id") == model and entry.get("max_model_len")
            ]
            self._context_length = lengths[-1] if lengths else fallback
        return self._context_length

    async def _ask_any(self, send: Callable[[EngineClient], Awaitable[_T]]) -> _T:
        """`send(client)` to the replicas in turn (those not passed over first) until one
        takes the connection."""
        failure: EngineNotRunningError | None = None
        for replica in sorted(self.replicas, key=lambda r: not r.up()):
            try:
                return await send(replica.client)
            except EngineNotRunningError as exc:
                replica.mark_down()
                failure = exc
        assert failure is not None
        raise failure

    # -- requests in flight ----------------------------------------------------------------
    def lease(
        self, served: str, adapter_path: str | None = None, replica: Replica | None = None
    ) -> Lease:
        """Count a request on `served` at `replica` (default: the one `choose` picks). No await
        here: called in the same step as reading an adapter's alias, a hot-swap waits for it."""
        target = replica or self.choose(served if adapter_path is not None else None)
        self._count(target, served)
        return Lease(served, adapter_path, target)

    async def release(self, lease: Lease) -> None:
        """The request is over (once; again is a no-op)."""
        if lease.released:
            return
        lease.released = True
        await self._uncount(lease.replica, lease.served)

    def in_flight(self, served: str) -> int:
        """Requests on `served`, over every replica."""
        return sum(r.in_flight[served] for r in self.replicas)

    async def drain(self, served: str, timeout_s: float) -> bool:
        """Wait until no request uses `served`; False when the timeout came first."""

        async def idle() -> None:
            async with self._released:
                await self._released.wait_for(lambda: self.in_flight(served) <= 0)

        try:
            await asyncio.wait_for(idle(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _count(self, replica: Replica, served: str) -> None:
        replica.in_flight[served] += 1
        replica.touch(served)

    async def _uncount(self, replica: Replica, served: str) -> None:
        replica.in_flight[served] -= 1
        if replica.in_flight[served] <= 0:
            del replica.in_flight[served]
        if self.in_flight(served) <= 0:
            async with self._released:
                self._released.notify_all()

    # -- calling an engine -----------------------------------------------------------------
    async def call(self, lease: Lease, send: Callable[[EngineClient], Awaitable[_T]]) -> _T:
        """`send(client)` on the lease's replica, its adapter loaded there first. Recovers once
        from an engine that restarted and lost the adapter (loaded again, sent again) and from
        a replica that refuses connections (the request moves to another, when there is one).
        Nothing had reached the client yet, so sending again is safe."""
        try:
            await self.load(lease)
            return await send(lease.replica.client)
        except EngineModelMissingError:
            if lease.adapter_path is None:
                raise
            await self.load(lease, reload=True)
            return await send(lease.replica.client)
        except EngineNotRunningError:
            if len(self.replicas) == 1:
                raise
            lease.replica.mark_down()
            await self._move(lease)
            await self.load(lease)
            return await send(lease.replica.client)

    async def load(self, lease: Lease, *, reload: bool = False) -> None:
        """Make the lease's adapter resident on its replica (nothing for the base model)."""
        if lease.adapter_path is not None:
            await self.ensure_loaded(lease.replica, lease.served, lease.adapter_path, reload=reload)

    async def _move(self, lease: Lease) -> None:
        """Send the request to another replica (counted there before it is released here)."""
        old = lease.replica
        adapter = lease.served if lease.adapter_path is not None else None
        lease.replica = self.choose(adapter, exclude=old)
        self._count(lease.replica, lease.served)
        await self._uncount(old, lease.served)
        logger.warning(
            "engine %s refused the connection; request moved to %s", old.url, lease.replica.url
        )

    # -- choosing a replica ----------------------------------------------------------------
    def choose(self, served: str | None, exclude: Replica | None = None) -> Replica:
        """The replica for a request on `served` (an adapter's engine name, or None for the
        base model)."""
        candidates = [r for r in self.replicas if r is not exclude and r.up()]
        if not candidates:
            candidates = [r for r in self.replicas if r is not exclude] or self.replicas
        if served is not None:
            holding = [r for r in candidates if served in r.resident]
            if holding:
                return min(holding, key=lambda r: r.active)
            # Loading here costs least: a free slot, else an idle adapter to evict.
            return min(
                candidates,
                key=lambda r: (
                    len(r.resident) >= r.slots,
                    r.idle_victim(served) is None,
                    r.active,
                ),
            )
        return min(candidates, key=lambda r: r.active)

    def holding(self, served: str) -> list[Replica]:
        return [r for r in self.replicas if served in r.resident]

    # -- residency -------------------------------------------------------------------------
    async def ensure_loaded(
        self, replica: Replica, served: str, path: str, *, reload: bool = False
    ) -> None:
        """Make `served` resident on `replica`, evicting the least recently used idle adapter
        when every slot is taken."""
        async with replica.lock:
            if reload:
                await self._resync(replica)
            if served in replica.resident:
                replica.touch(served)
                return
            on_engine = {m["id"] for m in await replica.client.list_models()}
            if served not in on_engine:
                while len(replica.resident) >= replica.slots:
                    victim = replica.idle_victim(keep=served)
                    if victim is None:
                        raise AdapterSlotsBusyError(
                            f"all {replica.slots} LoRA slots of the engine at {replica.url} hold "
                            f"adapters that are answering requests ({', '.join(replica.resident)})"
                            "; try again shortly, or raise RAGTUNE_MAX_LORAS together with "
                            "vLLM's --max-loras"
                        )
                    await self._unload(replica, victim)
                    self.evictions += 1
                    self.on_event("evict", victim)
                    logger.info("evicted idle adapter %s from %s", victim, replica.url)
                await replica.client.load_adapter(served, path)
                self.loads += 1
                self.on_event("load", served)
            replica.resident[served] = None
            self.save()

    async def unload(self, served: str) -> None:
        """Unload `served` from every replica holding it."""
        for replica in self.holding(served):
            async with replica.lock:
                if served in replica.resident:
                    await self._unload(replica, served)
                    self.on_event("unload", served)
        self.save()

    async def _unload(self, replica: Replica, served: str) -> None:
        replica.resident.pop(served, None)
        try:
            await replica.client.unload_adapter(served)
        except AdapterLoadError as exc:
            # Already gone (the engine restarted): what we wanted.
            logger.info("unloading %s from %s: %s", served, replica.url, exc)

    async def _resync(self, replica: Replica) -> None:
        """Forget what the engine no longer holds (it restarted)."""
        on_engine = {m["id"] for m in await replica.client.list_models()}
        for name in [n for n in replica.resident if n not in on_engine]:
            del replica.resident[name]

    async def adopt(
        self,
        replica: Replica,
        is_ours: Callable[[str], bool | None],
    ) -> None:
        """At start: take over what the engine already holds. `is_ours(name)` is True for a
        current adapter version, False for one of ours that is stale (unloaded now), None
        for a name that is not ragtune's (left alone)."""
        async with replica.lock:
            models = await replica.client.list_models()
            for entry in models:
                name = entry.get("id")
                if not isinstance(name, str) or not entry.get("parent"):
                    continue
                ours = is_ours(name)
                if ours is True:
                    replica.resident[name] = None
                elif ours is False:
                    await self._unload(replica, name)

    # -- persistence across restarts -------------------------------------------------------
    def remembered(self) -> dict[str, list[str]] | None:
        """Adapter names resident per engine URL at the last change, or None if never saved."""
        if self.residency_file is None or not self.residency_file.is_file():
            return None
        try:
            data = json.loads(self.residency_file.read_text())
            engines = {str(url): [str(n) for n in names] for url, names in data["engines"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning(
                "ignoring %s (%s): no adapter is loaded from it", self.residency_file, exc
            )
            return None
        if len(self.replicas) == 1 and self.replicas[0].url not in engines:
            # One engine at a new address: it takes over everything that was resident.
            merged = dict.fromkeys(name for names in engines.values() for name in names)
            engines = {self.replicas[0].url: list(merged)}
        return engines

    def save(self) -> None:
        """Record the adapter names resident on each engine (names, not versions: a restart
        loads each adapter's current version)."""
        if self.residency_file is None:
            return
        engines = {r.url: [_adapter_name(name) for name in r.resident] for r in self.replicas}
        self.residency_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.residency_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"engines": engines}, indent=1))
        os.replace(tmp, self.residency_file)

    async def healthy(self) -> dict[str, bool]:
        results = await asyncio.gather(*(r.client.health() for r in self.replicas))
        return {r.url: ok for r, ok in zip(self.replicas, results, strict=True)}


def _adapter_name(served: str) -> str:
    parsed = parse_served_name(served)
    return parsed[0] if parsed else served
