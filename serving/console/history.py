"""The server's recent traffic for the console: the Metrics object sampled every few seconds
into a bounded ring buffer, and what a window of it says (route mix, latency percentiles, error
rate, per-interval series for the charts)."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import anyio
from prometheus_client import Counter, Histogram

from ragtune.serving.observability import Metrics


@dataclass(frozen=True)
class MetricsSample:
    """Cumulative counts at one moment (Prometheus counters only grow; windows are deltas)."""

    at: float
    """Wall-clock seconds."""
    routes: dict[str, float] = field(default_factory=dict)
    """Chat completions by route taken."""
    http: float = 0.0
    """Every HTTP request."""
    client_errors: float = 0.0
    """HTTP requests answered 4xx."""
    server_errors: float = 0.0
    """HTTP requests answered 5xx."""
    latency: tuple[tuple[float, float], ...] = ()
    """Chat request seconds, every route: (bucket upper bound, cumulative count), ascending."""


@dataclass(frozen=True)
class Interval:
    """What happened between two consecutive samples."""

    start: float
    end: float
    routes: dict[str, float]
    p50_s: float | None
    p95_s: float | None


@dataclass(frozen=True)
class TrafficWindow:
    """The last `seconds` of traffic (as far as the samples reach back)."""

    seconds: float
    routes: dict[str, float]
    """Chat completions by route in the window."""
    chat_requests: float
    http_requests: float
    client_error_rate: float | None
    server_error_rate: float | None
    """Share of HTTP requests answered 4xx / 5xx; None without requests."""
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    intervals: list[Interval]


def _sum_by(
    samples: Iterable[tuple[str, dict[str, str], float]], name: str, label: str
) -> dict[str, float]:
    totals: dict[str, float] = {}
    for sample_name, labels, value in samples:
        if sample_name == name:
            key = labels.get(label, "")
            totals[key] = totals.get(key, 0.0) + value
    return totals


def _samples(metric: Counter | Histogram) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in metric.collect() for s in family.samples]


def take_sample(metrics: Metrics, at: float) -> MetricsSample:
    """The counters of `metrics` now."""
    routes = _sum_by(_samples(metrics.requests), "ragtune_requests_total", "route")
    statuses = _sum_by(_samples(metrics.http_requests), "ragtune_http_requests_total", "status")
    buckets = _sum_by(_samples(metrics.request_seconds), "ragtune_request_seconds_bucket", "le")
    return MetricsSample(
        at=at,
        routes=routes,
        http=sum(statuses.values()),
        client_errors=sum(v for s, v in statuses.items() if s.startswith("4")),
        server_errors=sum(v for s, v in statuses.items() if s.startswith("5")),
        latency=tuple(sorted((float(le), count) for le, count in buckets.items())),
    )


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' `histogram_quantile`: linear within the bucket the rank falls in (the last
    finite bound when it falls in +Inf); None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


def _delta(
    new: MetricsSample, old: MetricsSample
) -> tuple[dict[str, float], list[tuple[float, float]]]:
    routes = {r: n - old.routes.get(r, 0.0) for r, n in new.routes.items()}
    before = dict(old.latency)
    latency = [(bound, count - before.get(bound, 0.0)) for bound, count in new.latency]
    return {r: n for r, n in routes.items() if n > 0}, latency


def _rate(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


class MetricsHistory:
    """A ring buffer of samples of the server's metrics: `keep` samples, one per `every_s`
    (15 minutes by default), so that the console charts the last minutes from the server's own
    counters without a Prometheus.

    Usage:
        history = MetricsHistory(metrics)
        tasks.start_soon(history.run)        # in the app's lifespan
        history.window(300)                  # TrafficWindow of the last five minutes
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        every_s: float = 5.0,
        keep: int = 180,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.every_s = every_s
        self.clock = clock
        self._samples: deque[MetricsSample] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def sample(self) -> None:
        taken = take_sample(self.metrics, self.clock())
        with self._lock:
            self._samples.append(taken)

    async def run(self) -> None:
        """Sample until cancelled (the app's lifespan ends)."""
        while True:
            self.sample()
            await anyio.sleep(self.every_s)

    def window(self, seconds: float) -> TrafficWindow:
        """The last `seconds`, up to now: the newest sample is compared with the oldest one
        inside the window, and the counters as they are now close the last interval."""
        now = take_sample(self.metrics, self.clock())
        with self._lock:
            kept = [s for s in self._samples if s.at >= now.at - seconds]
        samples = [*kept, now] if kept else [MetricsSample(at=now.at), now]
        first, last = samples[0], samples[-1]
        routes, latency = _delta(last, first)
        http = last.http - first.http
        intervals = []
        for old, new in itertools.pairwise(samples):
            step_routes, step_latency = _delta(new, old)
            intervals.append(
                Interval(
                    old.at,
                    new.at,
                    step_routes,
                    quantile(0.5, step_latency),
                    quantile(0.95, step_latency),
                )
            )
        return TrafficWindow(
            seconds=seconds,
            routes=routes,
            chat_requests=sum(routes.values()),
            http_requests=http,
            client_error_rate=_rate(last.client_errors - first.client_errors, http),
            server_error_rate=_rate(last.server_errors - first.server_errors, http),
            p50_s=quantile(0.5, latency),
            p95_s=quantile(0.95, latency),
            p99_s=quantile(0.99, latency),
            intervals=intervals,
        )
