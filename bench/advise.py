"""`ragtune advise` benchmark: the whole advice on the abstract->title task with requests sent
concurrently (the default, 8 at once) against the same run sequentially (1 at a time).

    .venv/bin/python bench/advise.py [--full] [--concurrency 8]

A fresh vLLM engine (SmolLM2-135M-Instruct, float32, 4,096 tokens of context) and no collection
(the retrieval variants are skipped, as on a fresh install); no adapter, no training: what is
timed is the prompting part, every variant on the dev split and the chosen ones on the test
split. Default: 40 abstracts (10 dev, 10 test) to keep the run short; --full: all 200 (50 dev,
50 test), the issue's target (concurrent <= 1/3 of sequential). Printed: wall seconds of each,
the ratio, requests sent, and whether both runs chose the same variant and verdict. The
sequential run goes second, so vLLM's prefix cache already holds its prompts: the ratio is on
the sequential run's side, if anything.

Also printed, from the engine's own counters (its /metrics, read before and after each run):
prompt tokens computed (cached ones apart), tokens generated, and the seconds the engine spent
in prefill and in decode. One request at a time, the prefill seconds are wall seconds spent
computing prompts; prompts are compute-bound, so batching them does not make them cheaper, and
the concurrent run cannot take less than its own computed prompt tokens at the sequential
run's prefill rate: that bound, over the sequential wall time, is the lowest ratio this engine
on this machine can reach, whatever the concurrency.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.common import ABSTRACTS, ENGINE_API_KEY, engine_settings, running, use_api_settings
from ragtune.evals.advise import AdviseOptions, advise_on_task
from ragtune.serving.settings import ServingSettings

COUNTERS = {
    "prompt": "vllm:prompt_tokens_total",
    "cached": "vllm:prompt_tokens_cached_total",
    "generated": "vllm:generation_tokens_total",
    "prefill_s": "vllm:request_prefill_time_seconds_sum",
    "decode_s": "vllm:request_decode_time_seconds_sum",
}


def engine_counters(engine_url: str) -> dict[str, float]:
    """The engine's counters named in COUNTERS, summed over their labels."""
    response = httpx.get(
        f"{engine_url}/metrics", headers={"Authorization": f"Bearer {ENGINE_API_KEY}"}
    )
    response.raise_for_status()
    totals = dict.fromkeys(COUNTERS, 0.0)
    wanted = {sample: key for key, sample in COUNTERS.items()}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in wanted:
                totals[wanted[sample.name]] += sample.value
    return totals


def run(
    task: Path, concurrency: int, dev: int, test: int, engine_url: str
) -> tuple[float, dict[str, Any], dict[str, float]]:
    options = AdviseOptions(dev=dev, test=test, concurrency=concurrency)
    before = engine_counters(engine_url)
    started = time.perf_counter()
    report = advise_on_task(ServingSettings(), task, options)
    wall = time.perf_counter() - started
    after = engine_counters(engine_url)
    return wall, report, {key: after[key] - before[key] for key in COUNTERS}


def engine_line(name: str, used: dict[str, float]) -> str:
    computed = used["prompt"] - used["cached"]
    return (
        f"  {name}: {computed:,.0f} prompt tokens computed ({used['cached']:,.0f} cached), "
        f"{used['generated']:,.0f} generated; engine prefill {used['prefill_s']:.1f} s, "
        f"decode {used['decode_s']:.1f} s (summed over requests)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="All 200 abstracts (50 dev/test).")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    rows = ABSTRACTS.read_text().splitlines()
    dev = test = 50 if args.full else 10
    if not args.full:
        rows = rows[:40]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        task = Path(tmp) / "abstract2title.jsonl"
        task.write_text("\n".join(rows) + "\n")
        engine = engine_settings(data_dir, max_model_len=4096)
        use_api_settings(data_dir, engine)
        with running(engine) as started:
            concurrent_s, concurrent, concurrent_use = run(
                task, args.concurrency, dev, test, started.engine_url
            )
            sequential_s, sequential, sequential_use = run(task, 1, dev, test, started.engine_url)
    requests = len(concurrent["variants"]) * dev + len(concurrent["test"]) * test
    print(f"advise on {len(rows)} abstracts ({dev} dev, {test} test), {requests} requests")
    print(f"  concurrent ({args.concurrency} at once): {concurrent_s:7.1f} s")
    print(f"  sequential (1 at a time):  {sequential_s:7.1f} s")
    print(f"  ratio concurrent / sequential: {concurrent_s / sequential_s:.2f} (target <= 0.33)")
    print(
        f"  chosen variant: {concurrent['best']} / {sequential['best']}; verdict: "
        f"{concurrent['verdict']} / {sequential['verdict']}"
    )
    print(engine_line("concurrent", concurrent_use))
    print(engine_line("sequential", sequential_use))
    rate = (sequential_use["prompt"] - sequential_use["cached"]) / sequential_use["prefill_s"]
    floor_s = (concurrent_use["prompt"] - concurrent_use["cached"]) / rate
    print(
        f"  sequential prefill: {rate:,.0f} prompt tokens/s, "
        f"{sequential_use['prefill_s'] / sequential_s:.0%} of its wall time"
    )
    print(
        f"  the concurrent run's prompts at that rate: {floor_s:.1f} s, so its ratio cannot go "
        f"below {floor_s / sequential_s:.2f} on this engine and machine"
    )


if __name__ == "__main__":
    main()
