"""Adapter benchmark: hot-swap under load, and LoRA training cost on the default model.

    .venv/bin/python bench/adapters.py [--clients 8] [--swaps 5] [--train-steps 6]

Swap: a fresh vLLM engine (SmolLM2-135M-Instruct, float32, 2 LoRA slots) and `ragtune serve`
attached to it, as separate processes. --clients clients stream greedy 16-token answers from
the adapter `swapper` back to back while it is hot-swapped --swaps times (two PEFT LoRA weight
sets made on the base model, alternating, so each version's answer is known). Measured:
- time from the swap request to the first request answered by the new version (a request that
  started after the switch and finished), against the baseline of the same run: the median
  latency of one request under the same load (what a client waits anyway);
- the swap call's own duration (load, switch, drain, unload);
- failures: non-200 responses, error events, and answers that are not wholly one version's
  (target 0).
Training: `PeftLoraTrainer` on abstract2title examples (batch 8, max length 384, rank 8 on the
attention projections, as `ragtune adapters train` runs it) in its own process: seconds per
step (median after the first) and peak RSS. Baseline in the same run: a full fine-tune step
(every weight trained, AdamW) on the same batches in its own process: what LoRA saves.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx

from bench.common import (
    ABSTRACTS,
    ADMIN_KEY,
    API_KEY,
    default_model,
    engine_settings,
    running,
    use_api_settings,
)
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME

CHAT, ADMIN = API_KEY, ADMIN_KEY
PROMPT = "Name three primary colours."


# -- training (each in its own process, for its peak RSS) -----------------------------------------
def train_worker(mode: str, steps: int, model_dir: Path) -> dict[str, Any]:
    import torch

    from ragtune.adapters.examples import load_examples
    from ragtune.adapters.training import (
        PeftLoraTrainer,
        TrainingConfig,
        answer_loss,
        collate,
        encode,
    )

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config = TrainingConfig(epochs=1, batch_size=8, max_length=384, eval_split=0.0)
    examples = load_examples(ABSTRACTS)[: steps * config.batch_size]
    stamps: list[float] = []
    if mode == "lora":
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            PeftLoraTrainer().train(
                model_dir, examples, [], Path(out), config,
                lambda step, total, loss: stamps.append(time.perf_counter()),
            )  # fmt: skip
        stamps.insert(0, started)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        if mode == "lora-all-logits":
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=config.rank,
                lora_alpha=config.alpha,
                lora_dropout=0.0,
                target_modules=list(config.target_modules),
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)  # fmt: skip
        model.train()
        trained = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=config.learning_rate)
        encoded = [encode(tokenizer, e, config.max_length) for e in examples]
        pad = tokenizer.pad_token_id or 0
        stamps.append(time.perf_counter())
        for start in range(0, len(encoded), config.batch_size):
            ids, mask, labels = collate(encoded[start : start + config.batch_size], pad)
            if mode == "full":
                answer_loss(model, ids, mask, labels).backward()
            else:  # the loss as transformers computes it, with every position's logits
                model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            stamps.append(time.perf_counter())
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "steps": len(intervals),
        "s_per_step": statistics.median(intervals[1:] or intervals),
        "peak_rss_gib": peak_kib / 2**20,
    }


def run_worker(mode: str, steps: int, model_dir: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--train-worker", mode, "--train-steps", str(steps),
               "--model-dir", str(model_dir)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"training worker {mode} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- hot-swap under load ----------------------------------------------------------------------
async def stream_once(client: httpx.AsyncClient) -> dict[str, Any]:
    body = {
        "model": "swapper",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    version, text, errors = -1, "", []
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                errors.append(f"{response.status_code}: {response.text[:200]}")
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        errors.append(chunk["error"]["message"])
                    if "ragtune" in chunk:
                        version = chunk["ragtune"]["adapter_version"]
                    if chunk.get("choices"):
                        text += chunk["choices"][0]["delta"].get("content") or ""
    except httpx.HTTPError as exc:
        errors.append(f"transport: {exc!r}")
    return {
        "started": started,
        "ended": time.perf_counter(),
        "version": version,
        "text": text,
        "errors": errors,
    }


async def swap_storm(api_url: str, weights: list[Path], clients: int, swaps: int) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(
        base_url=api_url, timeout=300, headers={"Authorization": f"Bearer {CHAT}"}
    ) as client:
        # Each weight set's answer (v1 = weights[0]; v2 = weights[1]; then alternating).
        expected = {1: (await stream_once(client))["text"]}
        response = await client.post("/admin/adapters/swapper/swap", headers=admin,
                                     json={"path": str(weights[1])})  # fmt: skip
        response.raise_for_status()
        expected[0] = (await stream_once(client))["text"]
        results: list[dict[str, Any]] = []
        running = True

        async def reader() -> None:
            while running:
                results.append(await stream_once(client))

        tasks = [asyncio.create_task(reader()) for _ in range(clients)]
        await asyncio.sleep(3.0)  # the load is steady before the first swap
        events = []
        for step in range(swaps):
            version = 3 + step
            started = time.perf_counter()
            response = await client.post("/admin/adapters/swapper/swap", headers=admin,
                                         json={"path": str(weights[1 - version % 2])})  # fmt: skip
            returned = time.perf_counter()
            events.append({"version": version, "status": response.status_code,
                           "started": started, "returned": returned})  # fmt: skip
            await asyncio.sleep(3.0)
        running = False
        await asyncio.gather(*tasks)
    for event in events:
        answered = [r["ended"] for r in results
                    if r["version"] == event["version"] and not r["errors"]]  # fmt: skip
        event["first_answer_s"] = (min(answered) - event["started"]) if answered else None
        event["swap_call_s"] = event["returned"] - event["started"]
    failures = [r for r in results if r["errors"]]
    mixed = [r for r in results if not r["errors"] and r["text"] != expected[r["version"] % 2]]
    latencies = [r["ended"] - r["started"] for r in results if not r["errors"]]
    return {
        "requests": len(results),
        "failures": len(failures),
        "failure_examples": [f["errors"] for f in failures[:3]],
        "mixed": len(mixed),
        "bad_swaps": [e for e in events if e["status"] != 200],
        "median_latency_s": statistics.median(latencies),
        "swaps": events,
    }


def swap_bench(args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    from ragtune.adapters.registry import AdapterRegistry
    from ragtune.adapters.scaffold import make_random_lora

    with tempfile.TemporaryDirectory(prefix="ragtune-bench-adapters-") as tmp:
        root = Path(tmp)
        weights = [make_random_lora(model_dir, root / f"w{seed}", seed=seed) for seed in (1, 2)]
        data_dir = root / "data"
        AdapterRegistry(data_dir / "adapters").add(
            weights[0], "swapper", "Name things.", base_model=DEFAULT_MODEL_NAME
        )
        engine = engine_settings(data_dir, max_loras=2)
        use_api_settings(data_dir, engine, RAGTUNE_LOG_FORMAT="json")
        with running(engine, api_log=root / "api.log") as started:
            return asyncio.run(swap_storm(started.api_url or "", weights, args.clients, args.swaps))


def report(swap: dict[str, Any] | None, training: dict[str, dict[str, Any]]) -> None:
    if swap is not None:
        base = swap["median_latency_s"]
        print(f"\nhot-swap under load: {swap['requests']} streamed requests during "
              f"{len(swap['swaps'])} swaps")  # fmt: skip
        print("| swap to v | swap call (s) | first answer by it (s) | ratio to a request |")
        print("| --- | --- | --- | --- |")
        for event in swap["swaps"]:
            first = event["first_answer_s"]
            shown = "n/a" if first is None else f"{first:.2f}"
            ratio = "n/a" if first is None else f"{first / base:.2f}"
            print(f"| v{event['version']} | {event['swap_call_s']:.2f} | {shown} | {ratio} |")
        print(f"baseline: median request latency under the same load {base:.2f} s")
        print(f"failures: {swap['failures']} (target 0), answers mixing versions: "
              f"{swap['mixed']}, refused swaps: {len(swap['bad_swaps'])}")  # fmt: skip
        if swap["failure_examples"]:
            print(f"  e.g. {swap['failure_examples']}")
    if training:
        lora, full = training["lora"], training["full"]
        print("\ntraining on the default model (batch 8 abstracts, max length 384, CPU):")
        print("| | s/step | peak RSS (GiB) |")
        print("| --- | --- | --- |")
        names = {
            "lora": "LoRA r=8 (ragtune adapters train: answer logits only)",
            "lora-all-logits": "LoRA r=8, logits of every position (transformers' loss)",
            "full": "baseline: full fine-tune (answer logits only)",
        }
        for mode, row in training.items():
            print(f"| {names[mode]} | {row['s_per_step']:.2f} | {row['peak_rss_gib']:.2f} |")
        print(f"ratios LoRA/full: time {lora['s_per_step'] / full['s_per_step']:.2f}, "
              f"peak RSS {lora['peak_rss_gib'] / full['peak_rss_gib']:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-swap", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--train-worker", choices=["lora", "lora-all-logits", "full"], help=argparse.SUPPRESS
    )
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_worker:
        print(json.dumps(train_worker(args.train_worker, args.train_steps, args.model_dir)))
        return
    model_dir = default_model()
    swap = None if args.skip_swap else swap_bench(args, model_dir)
    training = {}
    if not args.skip_training:
        for mode in ("lora", "lora-all-logits", "full"):
            training[mode] = run_worker(mode, args.train_steps, model_dir)
    report(swap, training)
    if args.json:
        args.json.write_text(json.dumps({"swap": swap, "training": training}, indent=2))


if __name__ == "__main__":
    main()
