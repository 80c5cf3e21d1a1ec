"""What operators see: /metrics, one JSON log line per request with its id (and no prompt
text), and the rate limit per key (429 + Retry-After)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ragtune.serving.app import create_app
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.observability import JsonFormatter
from ragtune.serving.ratelimit import RateLimiter
from ragtune.serving.settings import EngineSettings
from tests.support.serving import CHAT, RAG_QUESTION, api_settings

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def client(api_data: Path, engine: EngineSettings, models_dir: Path) -> Iterator[TestClient]:
    settings = api_settings(api_data, engine, models_dir, rate_limit=600, rate_limit_burst=50)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def ask(client: TestClient, content: str, **extra: Any) -> Any:
    body = {
        "model": DEFAULT_MODEL_NAME,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
        "temperature": 0,
        **extra,
    }
    return client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {CHAT}"}
    )


def test_metrics_count_requests_routes_timings_and_tokens(client: TestClient) -> None:
    before = samples(client)
    assert ask(client, RAG_QUESTION).status_code == 200
    streamed = ask(client, RAG_QUESTION, stream=True)
    assert streamed.status_code == 200
    # The engine was asked for usage (for the metrics); the client did not ask: no usage chunk.
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines()
              if line.startswith("data: {")]  # fmt: skip
    assert not any(c.get("usage") for c in chunks)
    assert ask(client, RAG_QUESTION, model="no-such-model").status_code == 404
    after = samples(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ragtune_requests_total", route="rag", adapter="", status="200") == 2
    assert delta("ragtune_requests_total", route="none", adapter="", status="404") == 1
    assert delta("ragtune_retrieval_seconds_count") == 2
    # ... and by stage: the query built and embedded, then search's own stages.
    for stage in ("query", "index", "dense", "lexical", "fusion", "texts"):
        assert delta("ragtune_retrieval_stage_seconds_count", stage=stage) == 2, stage
    assert delta("ragtune_retrieval_stage_seconds_count", stage="rerank") == 0  # no reranker
    assert delta("ragtune_routing_seconds_count") == 2
    assert delta("ragtune_generation_seconds_count", route="rag") == 2
    assert delta("ragtune_time_to_first_token_seconds_count", route="rag") == 1
    assert delta("ragtune_tokens_total", kind="completion") == 16  # 8 + 8, whole and streamed
    assert delta("ragtune_tokens_total", kind="prompt") > 100
    engine_url = client.app.state.components.engines.replicas[0].url  # type: ignore[attr-defined]
    assert value(after, "ragtune_engine_up", url=engine_url) == 1
    admin = {"Authorization": "Bearer admin-key"}
    assert client.post("/admin/adapters/titler/unload", headers=admin).status_code == 200
    assert client.post("/admin/adapters/titler/load", headers=admin).status_code == 200
    events = samples(client)
    for event in ("unload", "load"):
        assert value(events, "ragtune_adapter_events_total", event=event) == (
            value(after, "ragtune_adapter_events_total", event=event) + 1
        )
    assert ("ragtune_ingest_runs_total", ()) in after


def test_request_id_is_echoed_and_logged_without_the_prompt(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret_question = RAG_QUESTION + " zebra-canary-42"
    with caplog.at_level(logging.INFO, logger="ragtune"):
        response = client.post(
            "/v1/chat/completions",
            json={
                "model": DEFAULT_MODEL_NAME,
                "messages": [{"role": "user", "content": secret_question}],
                "max_tokens": 4,
            },
            headers={"Authorization": f"Bearer {CHAT}", "x-request-id": "trace-abc.123"},
        )
        generated = ask(client, "Hello there")
        hostile = client.get("/health", headers={"x-request-id": "bad id\nwith newline"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-abc.123"
    assert len(generated.headers["x-request-id"]) == 32  # made here (uuid4 hex)
    assert hostile.headers["x-request-id"] != "bad id\nwith newline"
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records
             if r.name == "ragtune.access"]  # fmt: skip
    mine = next(line for line in lines if line.get("request_id") == "trace-abc.123")
    assert mine["route"] == "rag"
    assert mine["status"] == 200
    assert mine["path"] == "/v1/chat/completions"
    for timing in ("retrieval_ms", "routing_ms", "generation_ms", "duration_ms"):
        assert mine[timing] >= 0
    stages = ("query", "dense", "lexical", "fusion")
    assert all(mine[f"retrieval_{stage}_ms"] >= 0 for stage in stages)
    assert sum(mine[f"retrieval_{stage}_ms"] for stage in stages) <= mine["retrieval_ms"] + 0.05
    assert mine["completion_tokens"] <= 4
    everything = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "zebra-canary-42" not in everything  # no prompt text
    assert CHAT not in everything  # no keys


def test_rate_limit_per_key_answers_429_with_retry_after(
    api_data: Path, engine: EngineSettings, models_dir: Path
) -> None:
    settings = api_settings(api_data, engine, models_dir, rate_limit=2, rate_limit_burst=2)
    with TestClient(create_app(settings)) as limited:
        codes = [
            limited.get("/v1/models", headers={"Authorization": f"Bearer {CHAT}"}).status_code
            for _ in range(3)
        ]
        refused = limited.get("/v1/models", headers={"Authorization": f"Bearer {CHAT}"})
        # Another key has its own budget.
        other = limited.get("/v1/models", headers={"Authorization": "Bearer admin-key"})
        metrics = samples(limited)
    assert codes == [200, 200, 429]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "per minute" in refused.json()["error"]["message"]
    assert other.status_code == 200
    assert value(metrics, "ragtune_rate_limited_total") == 2


def test_token_bucket_refills_at_the_rate() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)
    assert limiter.check("k", now=0.0) == 0.0
    assert limiter.check("k", now=0.0) == 0.0
    wait = limiter.check("k", now=0.0)
    assert wait == pytest.approx(1.0)
    assert limiter.check("k", now=0.5) == pytest.approx(0.5)
    assert limiter.check("k", now=1.0) == 0.0
    assert limiter.check("other", now=1.0) == 0.0
    assert RateLimiter(per_minute=0).check("k") == 0.0
