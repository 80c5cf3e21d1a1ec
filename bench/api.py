"""API benchmark: what ragtune adds in front of vLLM (latency, throughput, the router's own time).

    .venv/bin/python bench/api.py [--chunks 10000] [--clients 16] [--requests 64] [--max-tokens 16]

Client, API and engine are separate processes, as in production: a fresh vLLM engine (started as
bench/engine.py starts it, SmolLM2-135M-Instruct in float32, prefix caching off so that a prompt
costs the engine the same whichever path sent it first), and `ragtune serve --no-start-engine`
attached to it, serving an embedded Chroma collection of --chunks chunks of the Python docs (real
texts and embeddings from the cached full ingest, as in bench/search.py; the collection and its
BM25 index are cached under ~/.cache/ragtune/bench). Requests are the Python FAQ questions,
non-streamed, greedy, each generating exactly --max-tokens tokens (`ignore_eos`, which ragtune
passes through to vLLM).
Baseline in the same run: the same question sent straight to vLLM with exactly the body ragtune
sends it (built in-process by `ChatService.prepare` on the same store and settings); both paths'
usage is checked to be the same prompt and completion tokens.
- Sequential latency: after a warm-up, each question goes both ways one after the other (which
  path goes first alternates); added latency = ragtune - direct, per question.
- Throughput: --clients clients each send requests back to back, --requests per path.
- Router: `serving.router.plan_route` on each question's real (hits, matches), timed per call;
  and `ChatService.route` (query embedding + hybrid retrieval + decision), ragtune's main added
  work, timed per question before the engine starts.
Targets: added latency p50 <= 30 ms; ragtune throughput >= 0.9x direct; plan p50 <= 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx

from bench.common import (
    API_KEY,
    ENGINE_API_KEY,
    collection_dir,
    engine_settings,
    percentile,
    questions,
    running,
    use_api_settings,
)
from ragtune.serving.chat.protocol import ChatCompletionRequest
from ragtune.serving.chat.service import ChatService
from ragtune.serving.components import Components, open_components
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.router import RouteRequest, plan_route
from ragtune.serving.settings import ServingSettings

TARGET_ADDED_P50_MS = 30.0
TARGET_THROUGHPUT_RATIO = 0.9
TARGET_DECIDE_P50_MS = 1.0


# -- the router, in-process --------------------------------------------------------------------
def time_router(parts: Components, questions: list[str], iterations: int) -> dict[str, Any]:
    """`plan_route` per call on each question's real inputs; `ChatService.route` (embedding,
    retrieval, plan) per question."""
    chat, settings = parts.chat, parts.settings.router
    for question in questions[:5]:  # warm-up: model, index and caches
        chat.route(RouteRequest(question))
    route_ms = []
    for question in questions:
        started = time.perf_counter()
        chat.route(RouteRequest(question))
        route_ms.append((time.perf_counter() - started) * 1000)

    # The inputs exactly as `ChatService.route` computes them.
    inputs = []
    for question in questions:
        vector = parts.embedder.embed_query(question)
        hits = parts.retrievers.search(question, vector, k=settings.rag_top_k)
        inputs.append((RouteRequest(question), hits, parts.fleet.matches(vector)))
    plan_ms = []
    clock = time.perf_counter_ns
    for request, hits, matches in inputs:
        for _ in range(iterations):
            tick = clock()
            plan_route(settings, request, hits, matches)
            plan_ms.append((clock() - tick) / 1e6)
    return {
        "route_ms": route_ms,
        "decide_p50_ms": statistics.median(plan_ms),
        "decide_p99_ms": percentile(plan_ms, 99),
        "decide_calls": len(plan_ms),
        "adapters": len(parts.fleet.profiles),
    }


# -- the two paths -----------------------------------------------------------------------------
async def post(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[float, dict[str, Any]]:
    """Seconds until the whole response is read, and the response."""
    started = time.perf_counter()
    response = await http.post(url, json=body, headers=headers)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:500]}")
    result: dict[str, Any] = response.json()
    return elapsed, result


class Paths:
    """The same question, straight to vLLM (ragtune's exact engine body) or through ragtune."""

    def __init__(self, http: httpx.AsyncClient, engine_url: str, api_url: str) -> None:
        self.http = http
        self.engine_url = f"{engine_url}/v1/chat/completions"
        self.api_url = f"{api_url}/v1/chat/completions"
        self.auth = {"Authorization": f"Bearer {API_KEY}"}
        self.engine_auth = {"Authorization": f"Bearer {ENGINE_API_KEY}"}

    async def send(self, path: str, request: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        if path == "direct":
            return await post(self.http, self.engine_url, request, self.engine_auth)
        return await post(self.http, self.api_url, request, self.auth)


def client_request(question: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": DEFAULT_MODEL_NAME,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }


async def engine_bodies(
    service: ChatService, requests: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """What ragtune sends vLLM for each request (as its engine client sends it: not streamed),
    and the routes taken."""
    bodies, routes = [], Counter[str]()
    for request in requests:
        prepared = await service.prepare(ChatCompletionRequest.model_validate(request))
        await service.finish(prepared)
        bodies.append({**prepared.engine_request, "stream": False})
        routes[prepared.plan.route] += 1
    return bodies, routes


def same_work(direct: dict[str, Any], ragtune: dict[str, Any]) -> bool:
    keys = ("prompt_tokens", "completion_tokens")
    return all(direct["usage"][k] == ragtune["usage"][k] for k in keys)


Pair = tuple[dict[str, Any], dict[str, Any]]
"""A request's engine body (direct) and its client request (through ragtune)."""


async def sequential(paths: Paths, pairs: list[Pair], warmup: list[Pair]) -> dict[str, Any]:
    """Each question both ways, back to back; the path that goes first alternates."""
    for body, request in warmup:
        await paths.send("direct", body)
        await paths.send("ragtune", request)
    direct_s, ragtune_s, mismatches, prompt_tokens = [], [], 0, []
    for n, (body, request) in enumerate(pairs):
        if n % 2:
            ragtune_t, via_api = await paths.send("ragtune", request)
            direct_t, direct = await paths.send("direct", body)
        else:
            direct_t, direct = await paths.send("direct", body)
            ragtune_t, via_api = await paths.send("ragtune", request)
        direct_s.append(direct_t)
        ragtune_s.append(ragtune_t)
        mismatches += not same_work(direct, via_api)
        prompt_tokens.append(direct["usage"]["prompt_tokens"])
    added_ms = [(r - d) * 1000 for r, d in zip(ragtune_s, direct_s, strict=True)]
    return {
        "requests": len(pairs),
        "direct_p50_ms": statistics.median(direct_s) * 1000,
        "ragtune_p50_ms": statistics.median(ragtune_s) * 1000,
        "added_p50_ms": statistics.median(added_ms),
        "added_p95_ms": percentile(added_ms, 95),
        "prompt_tokens_p50": statistics.median(prompt_tokens),
        "usage_mismatches": mismatches,
        "added_ms": added_ms,
    }


async def throughput(
    paths: Paths, path: str, requests: list[dict[str, Any]], clients: int
) -> dict[str, Any]:
    """`clients` clients, each sending the next request as soon as its last one is answered."""
    pending = iter(requests)
    latencies: list[float] = []
    tokens = 0

    async def client() -> None:
        nonlocal tokens
        for request in pending:  # shared iterator: each request is sent once
            elapsed, response = await paths.send(path, request)
            latencies.append(elapsed)
            tokens += response["usage"]["completion_tokens"]

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "requests": len(requests),
        "wall_s": wall,
        "requests_per_s": len(requests) / wall,
        "tokens_per_s": tokens / wall,
        "p50_latency_ms": statistics.median(latencies) * 1000,
    }


async def measure(
    parts: Components,
    engine_url: str,
    api_url: str,
    questions: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    requests = [
        client_request(questions[n % len(questions)], args.max_tokens)
        for n in range(args.requests + args.warmup)
    ]
    try:
        bodies, routes = await engine_bodies(parts.chat, requests)
    finally:
        await parts.engines.aclose()  # its clients belong to this event loop
    print(f"routes ragtune takes for these questions: {dict(routes)}", flush=True)
    limits = httpx.Limits(
        max_connections=4 * args.clients, max_keepalive_connections=4 * args.clients
    )
    async with httpx.AsyncClient(timeout=600.0, limits=limits) as http:
        paths = Paths(http, engine_url, api_url)
        pairs = list(zip(bodies, requests, strict=True))
        print(f"sequential: {args.requests} questions, each both ways...", flush=True)
        latency = await sequential(paths, pairs[args.warmup :], pairs[: args.warmup])
        runs = {}
        for path, batch in (("direct", bodies), ("ragtune", requests)):
            print(f"throughput: {path}, {args.clients} clients...", flush=True)
            runs[path] = await throughput(paths, path, batch[args.warmup :], args.clients)
    ratio = runs["ragtune"]["requests_per_s"] / runs["direct"]["requests_per_s"]
    return {
        "routes": dict(routes),
        "sequential": latency,
        "throughput": runs,
        "throughput_ratio": ratio,
    }


# -- the command -------------------------------------------------------------------------------
def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    seq, runs, router = results["sequential"], results["throughput"], results["router"]
    route_ms = router["route_ms"]
    print(
        f"\nsequential, {seq['requests']} questions, {args.max_tokens} tokens each, "
        f"prompt p50 {seq['prompt_tokens_p50']:.0f} tokens (ms):"
    )
    print(f"  direct to vLLM  p50 {seq['direct_p50_ms']:8.1f}")
    print(f"  through ragtune p50 {seq['ragtune_p50_ms']:8.1f}")
    print(
        f"  added by ragtune p50 {seq['added_p50_ms']:7.1f}  p95 {seq['added_p95_ms']:7.1f}"
        f"   (target p50 <= {TARGET_ADDED_P50_MS:g} ms)"
    )
    if seq["usage_mismatches"]:
        print(
            f"  WARNING: {seq['usage_mismatches']} question(s) differ in prompt/completion tokens"
        )
    print(f"\nthroughput, {args.clients} clients, {args.requests} requests per path:")
    for name, run in runs.items():
        print(
            f"  {name:7} {run['requests_per_s']:7.2f} req/s  {run['tokens_per_s']:7.1f} tok/s  "
            f"p50 {run['p50_latency_ms']:8.1f} ms"
        )
    print(
        f"  ragtune / direct {results['throughput_ratio']:.2f}"
        f"   (target >= {TARGET_THROUGHPUT_RATIO:g})"
    )
    print(
        f"\nrouter, {len(route_ms)} questions, {router['adapters']} adapter(s) registered:"
        f"\n  decide  p50 {router['decide_p50_ms']:.4f} ms  p99 {router['decide_p99_ms']:.4f} ms"
        f"  ({router['decide_calls']:,} calls; target p50 <= {TARGET_DECIDE_P50_MS:g} ms)"
        f"\n  route (embed + retrieve + decide)  p50 {statistics.median(route_ms):.1f} ms"
        f"  p95 {percentile(route_ms, 95):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64, help="measured requests per path")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2, help="requests per path not measured")
    parser.add_argument("--decide-iterations", type=int, default=200, help="calls per question")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.requests < 2:
        parser.error("--requests must be at least 2 (percentiles need two values)")

    faq = questions("small")
    data_dir = collection_dir(args.chunks)

    with tempfile.TemporaryDirectory(prefix="ragtune-bench-api-") as tmp:
        engine = engine_settings(
            Path(tmp),
            # Room for --clients RAG prompts of ~1,000-2,000 tokens at once (fp32 SmolLM2 keeps
            # ~46 KB per token): the engine then batches every client's request on both paths.
            cpu_kvcache_gib=2.0,
            # Both paths send the same prompts: with prefix caching, whichever went second
            # would find its prompt cached.
            engine_args=["--no-enable-prefix-caching"],
        )
        use_api_settings(data_dir, engine)
        settings = ServingSettings()  # from the environment, as the API process reads it
        parts = open_components(settings)
        try:
            count = parts.retrievers.get(None).collection.count()
            print(f"collection: {count:,} chunks in {data_dir}", flush=True)
            router = time_router(parts, faq, args.decide_iterations)
            with running(engine, api_log=Path(tmp) / "api.log") as started:
                results = asyncio.run(
                    measure(parts, engine.engine_url, started.api_url or "", faq, args)
                )
        finally:
            parts.close()
    results["router"] = router
    results["chunks"] = count
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
