"""Engine benchmark: vLLM's time to ready, and tokens/s for the base model and for a LoRA adapter.

    .venv/bin/python bench/engine.py [--max-tokens 64] [--concurrency 1,8,32] [--rank 16]

Starts a fresh engine exactly as `ragtune engine start` does (the engine environment from
scripts/install-engine, the default SmolLM2-135M-Instruct prepared under ~/.cache/ragtune/bench),
loads a rank-16 LoRA adapter on every attention and MLP projection (random weights, made with
PEFT: the cost of LoRA does not depend on what the weights say), and sends the Python FAQ
questions as chat requests, greedy, each generating exactly --max-tokens tokens (`ignore_eos`).
At concurrency 1 the requests go one after another; at c, c clients each send requests back to
back (4c requests in all). Throughput = generated tokens / wall time.
Baseline in the same run: the base model on the same requests; the LoRA/base throughput ratio
is the figure to compare with vLLM's own on a GPU (a 34% drop with one adapter, i.e. 0.66,
vllm-project/vllm#11267).
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
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import CACHE, default_model, engine_settings, running
from bench.common import questions as bench_questions
from ragtune.adapters.scaffold import make_random_lora
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


async def run_load(
    client: EngineClient, model: str, questions: list[str], concurrency: int, max_tokens: int
) -> dict[str, float]:
    total = len(questions)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for question in questions:
        queue.put_nowait(question)
    latencies: list[float] = []
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while not queue.empty():
            question = queue.get_nowait()
            started = time.perf_counter()
            response = await client.chat_completion(
                {
                    "model": model,
                    "messages": [{"role": "user", "content": question}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "ignore_eos": True,
                }
            )
            latencies.append(time.perf_counter() - started)
            tokens += response["usage"]["completion_tokens"]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "requests": total,
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "p50_latency_s": statistics.median(latencies),
    }


async def measure(
    settings: EngineSettings, adapter: Path, args: argparse.Namespace, questions: list[str]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with EngineClient.from_settings(settings) as client:
        await client.load_adapter("bench-lora", str(adapter))
        for model in (DEFAULT_MODEL_NAME, "bench-lora"):  # warm-up: first use of each
            await run_load(client, model, questions[:2], 1, 8)
        for concurrency in args.concurrency:
            count = args.sequential if concurrency == 1 else 4 * concurrency
            batch = [questions[i % len(questions)] for i in range(count)]
            for label, model in (("base", DEFAULT_MODEL_NAME), ("lora", "bench-lora")):
                run = await run_load(client, model, batch, concurrency, args.max_tokens)
                results[f"{label}@{concurrency}"] = run
                print(
                    f"  {label:4} c={concurrency:<3} {run['tokens_per_s']:7.1f} tok/s  "
                    f"p50 {run['p50_latency_s']:6.2f} s  ({run['requests']} requests)",
                    flush=True,
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32]
    )
    parser.add_argument("--sequential", type=int, default=8, help="requests at concurrency 1")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    questions = bench_questions("small")
    adapter = CACHE / "bench" / f"lora-r{args.rank}-all"
    if not (adapter / "adapter_model.safetensors").is_file():
        make_random_lora(
            default_model(),
            adapter,
            seed=0,
            rank=args.rank,
            alpha=2 * args.rank,
            target_modules=ALL_PROJECTIONS,
        )

    with tempfile.TemporaryDirectory(prefix="ragtune-bench-engine-") as tmp:
        settings = engine_settings(Path(tmp), max_lora_rank=max(16, args.rank))
        with running(settings) as engine:
            ready_s = engine.engine_ready_s
            print(f"dtype {settings.dtype}, 1 LoRA slot", flush=True)
            results = asyncio.run(measure(settings, adapter, args, questions))

    print("\nLoRA / base throughput (1.00 = no cost; vLLM on a GPU: 0.66):")
    for concurrency in args.concurrency:
        base, lora = results[f"base@{concurrency}"], results[f"lora@{concurrency}"]
        ratio = lora["tokens_per_s"] / base["tokens_per_s"]
        print(
            f"  c={concurrency:<3} base {base['tokens_per_s']:7.1f} tok/s  "
            f"lora {lora['tokens_per_s']:7.1f} tok/s  ratio {ratio:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"ready_s": ready_s, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
