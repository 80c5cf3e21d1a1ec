"""Shadow mode: a sampled share of live requests also runs one route the router did not take,
off the response path, and the two answers, graded alike, are appended as a paired outcome for
the next `ragtune router train`.

Bounded three ways: the sampling rate, the shadow runs at once (a request that would exceed them
is skipped, never queued), and the runs per minute. A shadow run never touches the client's
response: it starts after the answer was sent, in a context of its own (not the live request's
metrics record), and its failure is logged and counted, nothing more.

Usage:
    shadow = ShadowRunner(settings.router, outcomes_path)
    if shadow.sampled():
        shadow.start(run_and_record)        # an async function of no arguments
    shadow.on_event = lambda event: metrics.shadow_runs.labels(event).inc()
    await shadow.aclose()                   # at shutdown: waits briefly, then cancels
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio

from ragtune.serving.outcomes import CaseOutcome, append_outcomes
from ragtune.serving.router import ADAPTER_ROUTES, Route, RoutePlan
from ragtune.serving.settings import RouterSettings

logger = logging.getLogger("ragtune.shadow")

DISAGREEMENT = 0.05
"""A shadow route graded this much above the live one is a disagreement (counted)."""


def route_not_taken(
    plan: RoutePlan, matches: Sequence[tuple[str, float]], base_route: str = "auto"
) -> tuple[Route, str | None] | None:
    """The alternative a shadow run tries: from an adapter route, the documents alone (rag);
    from rag, the best-matching adapter if there is one, else the base model; from base, rag.
    None when there is nothing else to try."""
    best = matches[0][0] if matches else None
    if plan.route in ADAPTER_ROUTES:
        return "rag", None
    if plan.route == "rag":
        if best is not None:
            return "adapter", best
        return ("base", None) if base_route == "auto" else None
    return "rag", None


class ShadowRunner:
    def __init__(
        self, settings: RouterSettings, path: Path, *, rng: random.Random | None = None
    ) -> None:
        self.settings = settings
        self.path = path
        """Where the paired outcomes are appended."""
        self.rng = rng or random.Random()
        self.on_event: Callable[[str], None] = lambda event: None
        """Told each event: sampled, skipped_busy, skipped_rate, ran, failed, disagreed."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._started: deque[float] = deque()

    @property
    def running(self) -> int:
        """Shadow runs in progress."""
        return len(self._tasks)

    @property
    def enabled(self) -> bool:
        return self.settings.shadow_rate > 0

    def sampled(self) -> bool:
        """Whether this request gets a shadow run: drawn at the rate, then within the bounds
        (a request over them is skipped and counted, not queued)."""
        if not self.enabled or self.rng.random() >= self.settings.shadow_rate:
            return False
        now = time.monotonic()
        while self._started and now - self._started[0] > 60:
            self._started.popleft()
        if self.running >= self.settings.shadow_concurrency:
            self.on_event("skipped_busy")
            return False
        if len(self._started) >= self.settings.shadow_per_minute:
            self.on_event("skipped_rate")
            return False
        self._started.append(now)
        self.on_event("sampled")
        return True

    def start(self, run: Callable[[], Awaitable[CaseOutcome | None]]) -> None:
        """Run `run` in the background, in a fresh context; append what it returns."""

        async def guarded() -> None:
            try:
                outcome = await run()
            except Exception as exc:  # a shadow run must never surface: log and count it
                logger.warning("shadow run failed: %s", exc)
                self.on_event("failed")
                return
            if outcome is None:
                return
            await anyio.to_thread.run_sync(append_outcomes, self.path, [outcome])
            self.on_event("ran")
            live = outcome.grade(outcome.decision, outcome.decision_adapter)
            shadow = max(o.grade for o in outcome.outcomes)
            if live is not None and shadow > live + DISAGREEMENT:
                self.on_event("disagreed")

        task = asyncio.get_running_loop().create_task(guarded(), context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, wait_s: float = 5.0) -> None:
        """Let running shadow runs finish for up to `wait_s`, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=wait_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
