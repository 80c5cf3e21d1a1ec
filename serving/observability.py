"""What the API tells operators: Prometheus metrics (`GET /metrics`), and each request's record
(its id, route and timings) for the one structured log line per request that
`middleware.RequestContext` writes; the log formatters.

Prompt text and keys never reach the logs unless `RAGTUNE_LOG_PROMPTS=true` (debugging only).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ragtune.retrieval.search import STAGES

RETRIEVAL_STAGES = ("query", *STAGES)
"""The retrieval stages a chat request's timings may hold as `retrieval_<stage>` (`Routed`)."""
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class RequestRecord:
    """What one request did, filled in as it goes and logged when its response ends."""

    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    route: str | None = None
    adapter: str | None = None
    adapter_version: int | None = None
    reason: str | None = None
    stream: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    grounding: float | None = None
    """The answer's grounding score, when it was given passages (`serving.grounding`)."""
    unsupported_sentences: int | None = None
    question: str | None = None
    """Only kept when prompt logging is on."""
    error: str | None = None

    def time(self, name: str, seconds: float) -> None:
        self.timings_ms[name] = round(seconds * 1000, 2)


_current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "ragtune_request", default=None
)


def current() -> RequestRecord | None:
    """The record of the request being answered (None outside a request)."""
    return _current.get()


def start_record(
    request_id: str, method: str, path: str
) -> tuple[RequestRecord, Callable[[], None]]:
    """A new request's record, current from now on; and the call that ends that."""
    record = RequestRecord(request_id, method, path)
    token = _current.set(record)
    return record, lambda: _current.reset(token)


class Metrics:
    """The API's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self, ingest_counters: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ragtune_requests",
            "Chat completion requests by route taken, adapter and HTTP status.",
            ["route", "adapter", "status"],
            registry=r,
        )
        self.http_requests = Counter(
            "ragtune_http_requests",
            "HTTP requests by method, path and status.",
            ["method", "path", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "ragtune_request_seconds",
            "Whole chat request time, until the last byte, by route.",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.retrieval_seconds = Histogram(
            "ragtune_retrieval_seconds",
            "Query embedding and hybrid retrieval.",
            buckets=_LATENCY,
            registry=r,
        )
        self.retrieval_stage_seconds = Histogram(
            "ragtune_retrieval_stage_seconds",
            "Retrieval by stage: the query built and embedded (query), then search's stages "
            "(index, embed, dense, lexical, fusion, rerank, texts, neighbours).",
            ["stage"],
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.routing_seconds = Histogram(
            "ragtune_routing_seconds",
            "The route decision (retrieval done), adapter matching included.",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1),
            registry=r,
        )
        self.first_token_seconds = Histogram(
            "ragtune_time_to_first_token_seconds",
            "From the request's arrival to the first generated token (streams).",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.generation_seconds = Histogram(
            "ragtune_generation_seconds",
            "Time in the engine, until the last token.",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.tokens = Counter(
            "ragtune_tokens", "Tokens in prompts and completions.", ["kind"], registry=r
        )
        self.adapter_events = Counter(
            "ragtune_adapter_events",
            "Adapter loads, evictions, unloads and swaps (ok or failed).",
            ["event"],
            registry=r,
        )
        self.engine_up = Gauge(
            "ragtune_engine_up", "1 when the engine answers /health.", ["url"], registry=r
        )
        self.grounding = Histogram(
            "ragtune_grounding_score",
            "Share of an answer's sentences supported by the passages it was given, by route.",
            ["route"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=r,
        )
        self.unsupported_sentences = Counter(
            "ragtune_unsupported_sentences",
            "Answer sentences the passages given to the model do not support, by route.",
            ["route"],
            registry=r,
        )
        self.shadow_runs = Counter(
            "ragtune_shadow_runs",
            "Shadow mode: requests sampled, skipped (busy, rate), runs done or failed, and runs "
            "whose route not taken was graded better than the live one (disagreed).",
            ["event"],
            registry=r,
        )
        self.rate_limited = Counter(
            "ragtune_rate_limited", "Requests refused with 429 (rate limit per key).", registry=r
        )
        if ingest_counters is not None:
            r.register(IngestCollector(ingest_counters))

    def observe(self, record: RequestRecord, status: int) -> None:
        self.http_requests.labels(record.method, _path_label(record.path), str(status)).inc()
        route = record.route or "none"
        if record.grounding is not None:  # chat completions and responses alike
            self.grounding.labels(route).observe(record.grounding)
            self.unsupported_sentences.labels(route).inc(record.unsupported_sentences or 0)
        if record.path != "/v1/chat/completions":
            return
        self.requests.labels(route, record.adapter or "", str(status)).inc()
        self.request_seconds.labels(route).observe(time.perf_counter() - record.started)
        timings = record.timings_ms
        if "retrieval" in timings:
            self.retrieval_seconds.observe(timings["retrieval"] / 1000)
        for stage in RETRIEVAL_STAGES:
            if f"retrieval_{stage}" in timings:
                self.retrieval_stage_seconds.labels(stage).observe(
                    timings[f"retrieval_{stage}"] / 1000
                )
        if "routing" in timings:
            self.routing_seconds.observe(timings["routing"] / 1000)
        if "first_token" in timings:
            self.first_token_seconds.labels(route).observe(timings["first_token"] / 1000)
        if "generation" in timings:
            self.generation_seconds.labels(route).observe(timings["generation"] / 1000)
        if record.prompt_tokens:
            self.tokens.labels("prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            self.tokens.labels("completion").inc(record.completion_tokens)


def _path_label(path: str) -> str:
    """Bounded label values: adapter names in admin paths become {name}."""
    if path.startswith("/admin/adapters/"):
        rest = path[len("/admin/adapters/") :]
        action = rest.split("/", 1)[1] if "/" in rest else ""
        return "/admin/adapters/{name}" + (f"/{action}" if action else "")
    known = (
        "/v1/chat/completions", "/v1/embeddings", "/v1/models", "/health", "/ready", "/metrics",
    )  # fmt: skip
    return path if path in known or path == "/admin/adapters" else "other"


class IngestCollector(Collector):
    """Ingestion counters, written by `ragtune ingest` runs (another process) to a file in the
    data directory and read at each scrape."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[CounterMetricFamily]:
        counters = read_ingest_counters(self.path)
        files = CounterMetricFamily(
            "ragtune_ingest_files", "Files seen by ingestion runs, by outcome.", labels=["outcome"]
        )
        for outcome, value in sorted(counters.get("files", {}).items()):
            files.add_metric([outcome], value)
        yield files
        chunks = CounterMetricFamily(
            "ragtune_ingest_chunks", "Chunks embedded, reused or deleted.", labels=["action"]
        )
        for action, value in sorted(counters.get("chunks", {}).items()):
            chunks.add_metric([action], value)
        yield chunks
        runs = CounterMetricFamily("ragtune_ingest_runs", "Ingestion runs completed.")
        runs.add_metric([], counters.get("runs", 0))
        yield runs


def read_ingest_counters(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is None and (ongoing := current()) is not None:
            request_id = ongoing.request_id
        if request_id:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


JsonFormatter.converter = time.gmtime


class TextFormatter(logging.Formatter):
    """For a terminal: the usual line, then the request's fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is None and (ongoing := current()) is not None:
            request_id = ongoing.request_id
        if request_id:
            line += f" request_id={request_id}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            skip = ("event", "method", "path", "status")
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items() if k not in skip)
        return line


def configure_logging(log_format: str, level: str = "info") -> None:
    """Root logging for `ragtune serve` (uvicorn's loggers included): JSON lines, or text
    for a terminal. `auto` is text on a terminal, JSON otherwise."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level.upper())  # also for libraries that set their own loggers' levels
    if use_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The per-request line replaces uvicorn's access log; httpx would log every engine call.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
