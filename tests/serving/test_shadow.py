"""Shadow mode's own rules: which route a shadow run tries, the sampling and its bounds (skipped,
never queued), what is appended, and that a failing shadow run only counts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import anyio
import pytest

from ragtune.serving.outcomes import CaseOutcome, RouteOutcome
from ragtune.serving.router import FEATURES, RoutePlan
from ragtune.serving.settings import RouterSettings
from ragtune.serving.shadow import ShadowRunner, route_not_taken

MATCHES = [("titler", 0.2), ("coder", 0.1)]


@pytest.mark.parametrize(
    ("route", "matches", "base_route", "expected"),
    [
        ("rag", MATCHES, "auto", ("adapter", "titler")),
        ("rag", [], "auto", ("base", None)),
        ("rag", [], "explicit", None),
        ("adapter", MATCHES, "auto", ("rag", None)),
        ("adapter+rag", MATCHES, "auto", ("rag", None)),
        ("base", MATCHES, "auto", ("rag", None)),
    ],
)
def test_the_route_not_taken(route: str, matches: list, base_route: str, expected: object) -> None:
    plan = RoutePlan(route, "titler" if route.startswith("adapter") else None, "")  # type: ignore[arg-type]
    assert route_not_taken(plan, matches, base_route) == expected


def outcome(live: float, shadow: float) -> CaseOutcome:
    return CaseOutcome(
        line=0,
        source="",
        features=dict.fromkeys(FEATURES, 0.0),
        decision="rag",
        decision_adapter=None,
        adapter="titler",
        outcomes=[
            RouteOutcome("rag", None, live, "grounding"),
            RouteOutcome("adapter", "titler", shadow, "grounding"),
        ],
        origin="shadow",
    )


def test_off_by_default_and_sampled_at_the_rate(tmp_path: Path) -> None:
    assert not ShadowRunner(RouterSettings(), tmp_path / "o.jsonl").sampled()
    settings = RouterSettings(shadow_rate=0.25, shadow_per_minute=10_000, shadow_concurrency=10_000)
    runner = ShadowRunner(settings, tmp_path / "o.jsonl", rng=random.Random(0))
    drawn = sum(runner.sampled() for _ in range(4000))
    assert 850 < drawn < 1150


async def finished(runner: ShadowRunner) -> None:
    with anyio.fail_after(10):
        while runner.running:
            await anyio.sleep(0.01)


def test_runs_are_bounded_skipped_not_queued_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "router" / "outcomes.jsonl"
    settings = RouterSettings(shadow_rate=1.0, shadow_concurrency=2, shadow_per_minute=3)
    runner = ShadowRunner(settings, path)
    events: list[str] = []
    runner.on_event = events.append
    release = anyio.Event()

    async def slow() -> CaseOutcome:
        await release.wait()
        return outcome(live=0.2, shadow=0.6)

    async def main() -> None:
        for _ in range(2):
            assert runner.sampled()
            runner.start(slow)
        assert not runner.sampled()  # two running: busy
        release.set()
        await finished(runner)
        assert runner.sampled()  # one more this minute
        runner.start(slow)
        await finished(runner)
        assert not runner.sampled()  # three this minute: over the rate
        await runner.aclose()

    anyio.run(main)
    assert events.count("ran") == 3
    assert events.count("disagreed") == 3  # the shadow route graded 0.4 higher
    assert "skipped_busy" in events
    assert "skipped_rate" in events
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 3
    assert {line["origin"] for line in lines} == {"shadow"}
    assert "question" not in lines[0]


def test_a_failing_shadow_run_is_counted_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = ShadowRunner(RouterSettings(shadow_rate=1.0), tmp_path / "o.jsonl")
    events: list[str] = []
    runner.on_event = events.append

    async def broken() -> CaseOutcome:
        raise RuntimeError("engine went away")

    async def main() -> None:
        runner.start(broken)
        await runner.aclose()

    anyio.run(main)
    assert events == ["failed"]
    assert "engine went away" in caplog.text
    assert not (tmp_path / "o.jsonl").exists()
