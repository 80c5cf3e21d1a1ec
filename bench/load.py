"""Load benchmark: ragtune under 1, 4, 16 and 64 concurrent clients, RAG and adapter routes.

    .venv/bin/python bench/load.py [--clients 1,4,16,64] [--seconds 30] [--max-tokens 16]

Client, API and engine are separate processes: a fresh vLLM engine (SmolLM2-135M-Instruct,
float32, the CPU here) and `ragtune serve --no-start-engine` attached to it, over the cached
10,000-chunk Python-docs collection of bench/api.py, with one LoRA adapter (`titler`, rank 16 on
all projections) registered. For each route and concurrency, clients send requests back to back
for --seconds (non-streamed, greedy, exactly --max-tokens tokens each with `ignore_eos`): RAG
requests are Python FAQ questions the router sends to retrieval; adapter requests are
abstract2title abstracts sent to `titler` by name. Reported: requests/s, p50/p95/p99 latency and
errors (target 0), and, as the ratio against a baseline measured in the same run, throughput at
each concurrency over throughput with one client (what batching gives).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import (
    ABSTRACTS,
    API_KEY,
    collection_dir,
    default_model,
    engine_settings,
    questions,
    running,
    use_api_settings,
)
from ragtune.evals.load import Kind, run_load
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME


def register_adapter(data_dir: Path, model_dir: Path) -> None:
    from ragtune.adapters.registry import AdapterRegistry
    from ragtune.adapters.scaffold import make_random_lora

    registry = AdapterRegistry(data_dir / "adapters")
    if any(m.name == "titler" for m in registry.list()):
        return
    with tempfile.TemporaryDirectory() as tmp:
        lora = make_random_lora(model_dir, Path(tmp) / "titler", seed=1)
        registry.add(lora, "titler", "Write the title of an article from its abstract.",
                     base_model=DEFAULT_MODEL_NAME)  # fmt: skip


def kinds() -> dict[str, Kind]:
    faq = tuple(questions("small"))
    rows = [json.loads(line) for line in ABSTRACTS.read_text().splitlines() if line.strip()]
    abstracts = tuple(f"{r['instruction']} {r['input']}" for r in rows[:64])
    return {
        "rag": Kind("rag", DEFAULT_MODEL_NAME, faq, expect_route="rag"),
        "adapter": Kind("adapter", "titler", abstracts, expect_route="adapter"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--routes", default="rag,adapter")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    routes = args.routes.split(",")

    model_dir = default_model()
    data_dir = collection_dir(10_000)
    register_adapter(data_dir, model_dir)
    mix = kinds()
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="ragtune-bench-load-") as tmp:
        # Room for 64 RAG prompts of ~1,000-2,000 tokens at once.
        engine = engine_settings(Path(tmp), max_loras=2, cpu_kvcache_gib=4.0)
        use_api_settings(data_dir, engine, RAGTUNE_LOG_LEVEL="warning")
        with running(engine, api_log=Path(tmp) / "api.log") as started:
            url = started.api_url or ""
            for route in routes:
                # Warm-up: the adapter loaded, the code paths compiled.
                asyncio.run(run_load(url, API_KEY, [mix[route]], 2, 3.0, args.max_tokens))
                results[route] = []
                for clients in levels:
                    began = time.perf_counter()
                    outcome = asyncio.run(
                        run_load(url, API_KEY, [mix[route]], clients, args.seconds, args.max_tokens)
                    )
                    summary = outcome.summary()
                    summary["failure_examples"] = [o.error for o in outcome.failures[:3]]
                    results[route].append(summary)
                    print(f"{route} c={clients}: {summary['requests_per_s']:.2f} req/s, "
                          f"p50 {summary['p50_s']:.2f} s, errors {summary['errors']} "
                          f"({time.perf_counter() - began:.0f} s)", flush=True)  # fmt: skip
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\n{args.seconds:g} s per point, {args.max_tokens} tokens per answer")
    print("| route | clients | req/s | vs 1 client | p50 (s) | p95 (s) | p99 (s) | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for route, points in results.items():
        base = points[0]["requests_per_s"] or 1e-9
        for p in points:
            print(f"| {route} | {p['clients']} | {p['requests_per_s']:.2f} | "
                  f"{p['requests_per_s'] / base:.2f} | {p['p50_s']:.2f} | {p['p95_s']:.2f} | "
                  f"{p['p99_s']:.2f} | {p['errors']} |")  # fmt: skip
    total = sum(p["errors"] for points in results.values() for p in points)
    print(f"errors in all: {total} (target 0)")


if __name__ == "__main__":
    main()
