"""The data an adapter needs, for `ragtune advise --train`: LoRA adapters trained with PEFT on
nested subsets of a task's training pool, each scored on the test split straight from the
engine; the one trained on all of it checked for parity with PEFT, registered, and scored as
served. Training time and peak memory are measured per point.

Usage:
    curve = await learning_curve(components, plan, asker)   # Curve(points, adapter, parity, s)
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ragtune.adapters.errors import InvalidAdapterError
from ragtune.adapters.examples import Example
from ragtune.adapters.parity import ParityResult
from ragtune.adapters.provenance import CollectionSnapshot
from ragtune.adapters.training import MANIFEST_EXAMPLES, PeftLoraTrainer, TrainingConfig
from ragtune.evals.asker import Asker, SystemResult
from ragtune.evals.parity import served_parity
from ragtune.serving.components import Components

if TYPE_CHECKING:
    from ragtune.evals.advise import AdvicePlan


@dataclass
class CurvePoint:
    size: int
    scores: dict[str, float]
    training_seconds: float
    peak_memory_mb: float
    steps: int


@dataclass
class Curve:
    points: list[CurvePoint]
    adapter: SystemResult
    """The adapter trained on the whole pool, registered, on the test split as served."""
    parity: ParityResult
    training_seconds: float
    """Of the registered adapter."""


async def learning_curve(components: Components, plan: AdvicePlan, asker: Asker) -> Curve:
    """Adapters trained on nested subsets of the pool (the first n of one seeded order), each
    scored on the test split straight from the engine; the one trained on the whole pool is
    checked for parity with PEFT, registered under `name` (recording the collection of
    --collection as it was before training: it was made alongside it), and scored as served."""
    options = plan.options
    assert options.name is not None
    registry = components.registry
    recorded = None
    if options.collection is not None:
        target = components.store.collection(options.collection, components.embedder.model_id)
        recorded = CollectionSnapshot.of(target)
    base_dir = plan.base_model_dir
    assert base_dir is not None
    metric = plan.scorers[0].name
    curve: list[CurvePoint] = []
    last: Path | None = None
    last_seconds = 0.0
    try:
        for size in plan.sizes:
            out = registry.root / f".advise-{options.name}-{size}"
            shutil.rmtree(out, ignore_errors=True)
            trained, seconds, peak = await anyio.to_thread.run_sync(
                _train, base_dir, plan.pool[:size], out, options.training
            )
            served = f"advise-{options.name}-n{size}"
            await components.engines.ensure_loaded(
                components.engines.choose(served), served, str(out.resolve())
            )
            try:
                result = await asker.adapter(f"n={size}", plan.test, served=served)
            finally:
                await components.engines.unload(served)
            curve.append(CurvePoint(size, result.scores, round(seconds, 1), peak, trained))
            if last is not None:
                shutil.rmtree(last, ignore_errors=True)  # only the largest is registered
            last, last_seconds = out, seconds
        assert last is not None
        parity = await served_parity(
            components.engines.choose(None).client,
            components.chat.base_model,
            base_dir,
            last,
            plan.test,
            plan.spec.max_tokens,
            name=options.name,
        )
        if not parity.ok:
            raise InvalidAdapterError(f"not registered: {parity.message()}")
        manifest = registry.add(
            last,
            options.name,
            options.task or _task_of(plan.pool),
            base_model=components.chat.base_model,
            examples=[e.prompt() for e in plan.pool[:MANIFEST_EXAMPLES]],
            training_data_sha256=plan.data_sha256,
            training_collection=recorded,
            max_rank=components.settings.engine.max_lora_rank,
            base_model_dir=base_dir,
        )
    finally:
        # The registry copied what it keeps; no trained folder is left behind, even when
        # training or a check failed half way.
        for size in plan.sizes:
            shutil.rmtree(registry.root / f".advise-{options.name}-{size}", ignore_errors=True)
    registry.save_evaluation(
        manifest,
        {
            "training": {
                "examples": len(plan.pool),
                "held_out": len(plan.test),
                "epochs": options.training.epochs,
                "learning_rate": options.training.learning_rate,
                "seconds": round(last_seconds, 1),
            },
            "parity": parity.to_dict(),
        },
    )
    components.fleet.refresh()
    served_result = await asker.adapter(options.name, plan.test)
    if abs(served_result.scores[metric] - curve[-1].scores[metric]) > 1e-9:
        # The same weights, two paths to the engine: they should agree; say so when not.
        plan.notes.append(
            f"the registered adapter scored {served_result.scores[metric]:.3f} as served, "
            f"{curve[-1].scores[metric]:.3f} straight from the engine"
        )
    return Curve(curve, served_result, parity, last_seconds)


def _task_of(pool: Sequence[Example]) -> str:
    first = pool[0].prompt().strip().splitlines()[0] if pool else "the task"
    return first[:200]


def _train(
    base_dir: Path, examples: Sequence[Example], out: Path, config: TrainingConfig
) -> tuple[int, float, float]:
    """(steps, seconds, peak memory in MB) of one training run: the GPU's peak allocation, else
    the peak resident size of this process while it trained (sampled every 50 ms)."""
    import psutil
    import torch

    started = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    process = psutil.Process()
    peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = PeftLoraTrainer().train(base_dir, examples, [], out, config)
    finally:
        done.set()
        sampler.join()
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated()
    return result.steps, time.perf_counter() - started, round(peak / 2**20, 1)
