"""The console's traffic figures: percentiles from histogram buckets, and windows of the
metrics' ring buffer (route mix, latency, error rate) as a chart."""

from __future__ import annotations

import pytest

from ragtune.serving.console.history import MetricsHistory, quantile
from ragtune.serving.console.service import chart
from ragtune.serving.observability import Metrics, RequestRecord


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.25, 0.075), (0.5, 0.1), (0.9, 0.42), (1.0, 0.5)],
)
def test_quantiles_interpolate_within_the_bucket(q: float, expected: float) -> None:
    buckets = [(0.05, 0.0), (0.1, 2.0), (0.5, 4.0), (float("inf"), 4.0)]
    assert quantile(q, buckets) == pytest.approx(expected)


def test_no_observations_have_no_quantile() -> None:
    assert quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def chat_request(metrics: Metrics, route: str, status: int) -> None:
    record = RequestRecord("id", "POST", "/v1/chat/completions", route=route)
    metrics.observe(record, status)


def test_a_window_counts_only_its_own_requests() -> None:
    now = [1000.0]
    metrics = Metrics()
    history = MetricsHistory(metrics, clock=lambda: now[0])
    chat_request(metrics, "base", 200)  # before the window
    history.sample()
    now[0] += 400
    history.sample()
    for route, status in [("rag", 200), ("rag", 200), ("adapter", 200), ("rag", 500)]:
        chat_request(metrics, route, status)
    now[0] += 5
    window = history.window(300)
    assert window.routes == {"rag": 3, "adapter": 1}
    assert window.server_error_rate == pytest.approx(0.25)
    assert window.p50_s is not None
    drawn = chart(window)
    assert drawn.peak_requests == 4
    assert [route for route, _ in drawn.legend] == ["adapter", "rag"]
    assert sum(bar.height for bar in drawn.bars) == pytest.approx(drawn.height)
