"""Load on a running ragtune: a headless asyncio load generator for the chat API. N clients send
requests back to back for a duration, from a mix of kinds (RAG, adapter, base; streamed or not),
and every outcome is recorded (bench/load.py measures with it, the load test asserts on it)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Kind:
    name: str
    """e.g. "rag", "adapter-stream"."""
    model: str
    prompts: tuple[str, ...]
    stream: bool = False
    route: str | None = None
    """Forced route (`ragtune.route`), or None to let the router choose."""
    expect_route: str | None = None


@dataclass
class Outcome:
    kind: str
    status: int
    seconds: float
    error: str | None = None
    route: str | None = None


@dataclass
class LoadResult:
    clients: int
    seconds: float
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200 and o.error is None]

    @property
    def server_errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status >= 500 or o.status < 0]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200 or o.error is not None]

    def summary(self, kind: str | None = None) -> dict[str, Any]:
        chosen = [o for o in self.outcomes if kind is None or o.kind.startswith(kind)]
        good = sorted(o.seconds for o in chosen if o.status == 200 and o.error is None)
        return {
            "clients": self.clients,
            "requests": len(chosen),
            "ok": len(good),
            "errors": len(chosen) - len(good),
            "statuses": dict(Counter(o.status for o in chosen)),
            "requests_per_s": len(good) / self.seconds if self.seconds else 0.0,
            "p50_s": percentile(good, 50),
            "p95_s": percentile(good, 95),
            "p99_s": percentile(good, 99),
            "mean_s": statistics.fmean(good) if good else None,
        }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def one_request(
    client: httpx.AsyncClient, kind: Kind, prompt: str, max_tokens: int
) -> Outcome:
    body: dict[str, Any] = {
        "model": kind.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,  # every answer the same length: comparable latencies
        "stream": kind.stream,
    }
    if kind.route:
        body["ragtune"] = {"route": kind.route}
    started = time.perf_counter()
    route = error = None
    try:
        if not kind.stream:
            response = await client.post("/v1/chat/completions", json=body)
            status = response.status_code
            if status == 200:
                route = response.json()["ragtune"]["route"]
            else:
                error = response.text[:300]
        else:
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                status = response.status_code
                if status != 200:
                    await response.aread()
                    error = response.text[:300]
                else:
                    done = False
                    async for line in response.aiter_lines():
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: {"):
                            chunk = json.loads(line[6:])
                            if "error" in chunk:
                                error = chunk["error"]["message"]
                            if "ragtune" in chunk:
                                # The first chunk says the route; the closing one may carry
                                # only the answer's grounding.
                                route = chunk["ragtune"].get("route", route)
                    if not done:
                        error = error or "stream ended without [DONE]"
    except httpx.HTTPError as exc:
        status, error = -1, f"{type(exc).__name__}: {exc}"
    if error is None and kind.expect_route and route != kind.expect_route:
        error = f"route {route!r}, expected {kind.expect_route!r}"
    return Outcome(kind.name, status, time.perf_counter() - started, error, route)


async def run_load(
    url: str,
    key: str,
    kinds: list[Kind],
    clients: int,
    duration_s: float,
    max_tokens: int,
) -> LoadResult:
    """`clients` clients, each sending requests back to back until `duration_s` is over
    (requests under way then are finished and counted). Client i takes kinds and prompts in
    turn from an offset of i, so the mix is the same in every run."""
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(600, connect=10),
        limits=limits,
    ) as client:
        result = LoadResult(clients, 0.0)
        started = time.perf_counter()
        deadline = started + duration_s

        async def worker(index: int) -> None:
            turn = index
            while time.perf_counter() < deadline:
                kind = kinds[turn % len(kinds)]
                prompt = kind.prompts[(turn // len(kinds)) % len(kind.prompts)]
                result.outcomes.append(await one_request(client, kind, prompt, max_tokens))
                turn += clients

        await asyncio.gather(*(worker(i) for i in range(clients)))
        result.seconds = time.perf_counter() - started
    return result
