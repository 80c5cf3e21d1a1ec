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

from bench.common import ABSTRACTS, engine_settings, running, use_api_settings
from ragtune.evals.advise import AdviseOptions, advise_on_task
from ragtune.serving.settings import ServingSettings


def run(task: Path, concurrency: int, dev: int, test: int) -> tuple[float, dict[str, Any]]:
    options = AdviseOptions(dev=dev, test=test, concurrency=concurrency)
    started = time.perf_counter()
    report = advise_on_task(ServingSettings(), task, options)
    return time.perf_counter() - started, report


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
        with running(engine):
            concurrent_s, concurrent = run(task, args.concurrency, dev, test)
            sequential_s, sequential = run(task, 1, dev, test)
    requests = len(concurrent["variants"]) * dev + len(concurrent["test"]) * test
    print(f"advise on {len(rows)} abstracts ({dev} dev, {test} test), {requests} requests")
    print(f"  concurrent ({args.concurrency} at once): {concurrent_s:7.1f} s")
    print(f"  sequential (1 at a time):  {sequential_s:7.1f} s")
    print(f"  ratio concurrent / sequential: {concurrent_s / sequential_s:.2f} (target <= 0.33)")
    print(
        f"  chosen variant: {concurrent['best']} / {sequential['best']}; verdict: "
        f"{concurrent['verdict']} / {sequential['verdict']}"
    )


if __name__ == "__main__":
    main()
