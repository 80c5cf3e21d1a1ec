"""`ragtune advise`: should a task be prompted, retrieved or fine-tuned? The decision rule walked
in order on the task's own examples, through the server's own chat service on the running
engine: prompting variants scored on a dev split (the best chosen there), reported on a separate
test split with its failure modes; an adapter (named, or trained on nested subsets for a
learning curve) scored on the same test split; paired bootstrap intervals; tokens, latency and
throughput side by side; a verdict, stored in the adapter's manifest.

Usage:
    plan = plan_advice(components, examples, options)   # every check, before any work
    report = await advise(components, plan)             # AdviceReport (to_dict() for JSON)
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ragtune.adapters.examples import Example, load_examples
from ragtune.adapters.parity import ParityResult
from ragtune.adapters.registry import AdapterManifest, AdapterRegistry, sha256_file
from ragtune.adapters.training import TrainingConfig
from ragtune.evals.asker import Asker, Progress, SystemResult, prompt_builder
from ragtune.evals.curve import CurvePoint, learning_curve
from ragtune.evals.decision import (
    Decision,
    Interval,
    Prices,
    break_even,
    decide,
    paired_bootstrap,
)
from ragtune.evals.errors import AdviceError
from ragtune.evals.failures import FailureModes, failure_modes
from ragtune.evals.metrics import Scorer, json_valid, load_scorer
from ragtune.evals.variants import FormatSpec, ShotPicker, Variant, prompting_variants
from ragtune.retrieval.store import VectorStore, open_store
from ragtune.serving.components import Components, open_components
from ragtune.serving.engine.launcher import EngineLauncher
from ragtune.serving.settings import ServingSettings

MIN_SPLIT = 5
"""Fewest examples in the dev and the test split each."""
LEVELS = (1, 8)
"""Concurrent requests at which latency and throughput are measured side by side."""


@dataclass(frozen=True)
class AdviseOptions:
    adapter: str | None = None
    """A registered adapter to weigh against prompting."""
    train: bool = False
    """Train adapters on nested subsets of the training pool (a learning curve) and register
    the one trained on all of it as `name`."""
    name: str | None = None
    task: str | None = None
    """What a trained adapter is for (its manifest's task); default: the examples' instruction."""
    collection: str | None = None
    """The collection of the retrieval variants (None: the default one, skipped if missing)."""
    dev: int = 50
    test: int = 50
    shots: tuple[int, ...] = (1, 3, 8)
    sizes: tuple[int, ...] = (25, 50, 100)
    concurrency: int = 8
    seed: int = 0
    margin: float = 0.05
    resamples: int = 2000
    reasoning_tokens: int = 192
    cost_requests: int = 16
    """Requests of the side-by-side cost measurement, per system and concurrency level (the
    first of the test split)."""
    parity_prompts: int = 4
    prices: Prices = field(default_factory=Prices)
    training: TrainingConfig = field(default_factory=TrainingConfig)


@dataclass(frozen=True)
class AdvicePlan:
    """Everything checked before any work: the splits, the format, what will run."""

    options: AdviseOptions
    scorers: tuple[Scorer, ...]
    """The first one chooses the variant and decides; the others are reported."""
    pool: list[Example]
    """Few-shot examples and training data."""
    dev: list[Example]
    test: list[Example]
    spec: FormatSpec
    collection: str | None
    """The collection the retrieval variants search; None: no retrieval variant."""
    notes: list[str]
    adapter: AdapterManifest | None
    sizes: tuple[int, ...]
    """Training-set sizes of the learning curve (empty without --train)."""
    base_model_dir: Path | None = None
    """The served base model as a local directory (training and parity need it)."""
    data_sha256: str | None = None


@dataclass
class AdviceReport:
    task: str
    metric: str
    splits: dict[str, int]
    format: dict[str, Any]
    notes: list[str]
    variants: list[SystemResult]
    """Every prompting variant on the dev split."""
    best: str
    test: list[SystemResult]
    """The chosen variant (and the best with/without retrieval, an adapter) on the test split."""
    failures: FailureModes
    intervals: dict[str, dict[str, Any]]
    curve: list[CurvePoint]
    smallest_size: int | None
    cost: dict[str, Any]
    decision: Decision
    adapter: str | None
    parity: ParityResult | None
    timing: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "splits": self.splits,
            "format": self.format,
            "notes": self.notes,
            "variants": [v.summary() for v in self.variants],
            "best": self.best,
            "test": [t.summary() for t in self.test],
            "failures": asdict(self.failures) | {"systematic": self.failures.systematic},
            "intervals": self.intervals,
            "curve": [asdict(p) for p in self.curve],
            "smallest_size": self.smallest_size,
            "cost": self.cost,
            "verdict": self.decision.verdict,
            "verdict_words": self.decision.words,
            "reasons": self.decision.reasons,
            "adapter": self.adapter,
            "parity": self.parity.to_dict() if self.parity else None,
            "timing": self.timing,
        }


# -- planning: every check before any work ----------------------------------------------------
def split_task(
    examples: Sequence[Example], dev: int, test: int, seed: int
) -> tuple[list[Example], list[Example], list[Example]]:
    """(pool, dev, test): a seeded shuffle; dev and test take at most a quarter each."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    n_test = min(test, len(order) // 4)
    n_dev = min(dev, len(order) // 4)
    if n_test < MIN_SPLIT or n_dev < MIN_SPLIT:
        raise AdviceError(
            f"{len(order)} examples are too few: advise needs at least {4 * MIN_SPLIT} (a "
            f"quarter, and at least {MIN_SPLIT}, each for the dev and the test split; the rest "
            "for few-shot examples and training)"
        )
    return order[n_test + n_dev :], order[n_test : n_test + n_dev], order[:n_test]


def load_task(path: Path) -> tuple[list[Example], str]:
    """A task's examples and the file's SHA-256; one format throughout."""
    examples = load_examples(path)
    kinds = set()
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            kinds.add("messages" if isinstance(row, dict) and "messages" in row else "instruction")
    if len(kinds) > 1:
        raise AdviceError(
            f'{path} mixes formats ({{"messages": ...}} and {{"instruction", "input", '
            '"output"}} lines): use one for every line'
        )
    return examples, sha256_file(path)


def check_options(
    examples: Sequence[Example], options: AdviseOptions
) -> tuple[list[Example], list[Example], list[Example]]:
    """What the options and the examples alone can tell is wrong, checked before anything is
    opened (the store, the embedder, the engine); the split (pool, dev, test)."""
    if options.train and options.adapter:
        raise AdviceError("give --adapter (weigh a registered one) or --train, not both")
    if options.train and not options.name:
        raise AdviceError("--train needs --name: the name the trained adapter registers as")
    if options.cost_requests < 1:
        raise AdviceError("--cost-requests must be at least 1")
    return split_task(examples, options.dev, options.test, options.seed)


@dataclass(frozen=True)
class StoredChecks:
    """What the store, the adapter registry and the engine's settings say about a run."""

    adapter: AdapterManifest | None
    sizes: tuple[int, ...]
    collection: str | None
    notes: list[str]


def check_stored(
    registry: AdapterRegistry,
    store: VectorStore,
    default_collection: str,
    served_model: str,
    options: AdviseOptions,
    pool: Sequence[Example],
    *,
    data_sha256: str | None = None,
    base_model_dir: Path | None = None,
) -> StoredChecks:
    """The checks that read what is stored (the adapter to weigh, the name to train, the
    collection to retrieve from, the base model's folder) but need no model loaded: run before
    the embedder and the tokenizer load, so that a mistake is refused in a second."""
    notes: list[str] = []
    adapter = None
    if options.adapter:
        adapter = registry.get(options.adapter)
        if adapter.base_model != served_model:
            raise AdviceError(
                f"adapter {adapter.name!r} was made for {adapter.base_model!r}, but the engine "
                f"serves {served_model!r}: advise it against the engine it was trained for"
            )
        if data_sha256 is not None and adapter.training_data_sha256 == data_sha256:
            notes.append(
                f"adapter {adapter.name!r} was trained on this very file: its test split may "
                "hold examples it saw, which flatters it; advise on the held-out examples "
                "saved next to it (heldout.jsonl) instead"
            )
    sizes: tuple[int, ...] = ()
    if options.train:
        if any(m.name == options.name for m in registry.list()):
            raise AdviceError(
                f"an adapter named {options.name!r} already exists: choose another --name, or "
                f"weigh it with --adapter {options.name}"
            )
        sizes = tuple(sorted({s for s in options.sizes if 0 < s < len(pool)} | {len(pool)}))
        if base_model_dir is None or not base_model_dir.is_dir():
            raise AdviceError(
                f"--train needs the served base model as a local directory ({base_model_dir} "
                "is not one): `ragtune models prepare`, or set RAGTUNE_MODEL to a local folder"
            )
    collection = _retrieval_collection(store, default_collection, options.collection, notes)
    return StoredChecks(adapter, sizes, collection, notes)


async def plan_advice(
    components: Components,
    examples: Sequence[Example],
    options: AdviseOptions,
    scorers: Sequence[Scorer],
    *,
    data_sha256: str | None = None,
    base_model_dir: Path | None = None,
) -> AdvicePlan:
    """Check everything a run needs, in the order a user would fix it, and split the task.
    `base_model_dir` is where training finds the served base model (--train only)."""
    pool, dev, test = check_options(examples, options)
    stored = check_stored(
        components.registry, components.store, components.settings.retrieval.collection,
        components.chat.base_model, options, pool, data_sha256=data_sha256,
        base_model_dir=base_model_dir,
    )  # fmt: skip
    builder = await prompt_builder(components)
    spec = FormatSpec.of([e.answer for e in pool], lambda t: len(builder.tokenizer.encode(t)))
    context = builder.context_length
    for number, example in enumerate(examples, start=1):
        needed = builder.count(example.messages) + len(builder.tokenizer.encode(example.answer))
        if needed > context:
            raise AdviceError(
                f"example {number} takes {needed} tokens with its answer, more than the "
                f"model's context of {context}: shorten it or leave it out"
            )
    return AdvicePlan(
        options, tuple(scorers), pool, dev, test, spec, stored.collection, stored.notes,
        stored.adapter, stored.sizes, base_model_dir, data_sha256,
    )  # fmt: skip


def _retrieval_collection(
    store: VectorStore, default: str, asked: str | None, notes: list[str]
) -> str | None:
    existing = {c.name: c for c in store.list_collections()}
    if asked is not None:
        if asked not in existing:
            raise AdviceError(
                f"collection {asked!r} does not exist (collections: "
                f"{', '.join(sorted(existing)) or 'none'}); ingest documents into it first"
            )
        return asked
    if default in existing and existing[default].count:
        return default
    notes.append(
        f"no retrieval variant: the collection {default!r} holds no documents "
        "(name one with --collection)"
    )
    return None


def _best(results: Sequence[SystemResult], metric: str) -> SystemResult:
    """The highest mean; a tie goes to the earlier (cheaper) one."""
    return max(results, key=lambda r: r.scores[metric])  # the first of equals


async def advise(
    components: Components, plan: AdvicePlan, progress: Progress | None = None
) -> AdviceReport:
    started = time.perf_counter()
    options = plan.options
    metric = plan.scorers[0].name
    asker = Asker(
        components, plan.scorers, plan.spec, collection=plan.collection,
        concurrency=options.concurrency, progress=progress,
    )  # fmt: skip
    picker = ShotPicker(plan.pool, components.embedder)
    picker.index([*plan.dev, *plan.test])
    variants = prompting_variants(
        plan.spec,
        picker,
        shots=options.shots,
        rag=plan.collection is not None,
        reasoning_tokens=options.reasoning_tokens,
    )
    by_name = {v.name: v for v in variants}

    # 1. Prompting, every variant on the dev split; the best chosen there.
    on_dev = [await asker.variant(v, plan.dev, "dev") for v in variants]
    best_dev = _best(on_dev, metric)
    best_variant = by_name[best_dev.name]

    # 2. On the test split: the chosen variant and, when retrieval was tried, the best of the
    #    other kind (retrieval vs none is measured on examples nobody chose on).
    best = await asker.variant(best_variant, plan.test, "test")
    on_test = [best]
    retrieval_gain = None
    if plan.collection is not None:
        other_kind = _best([r for r in on_dev if by_name[r.name].rag != best_variant.rag], metric)
        other = await asker.variant(by_name[other_kind.name], plan.test, "test")
        on_test.append(other)
        with_rag, without = (best, other) if best_variant.rag else (other, best)
        retrieval_gain = _gain(without, with_rag, metric, options)
    failures = failure_modes(plan.spec, plan.test, best.answers)

    # 3. The adapter: a named one, or a learning curve ending in a registered adapter.
    curve: list[CurvePoint] = []
    parity = None
    adapter_result = None
    adapter_name = plan.adapter.name if plan.adapter else None
    training_seconds = _trained_seconds(plan.adapter)
    if plan.adapter is not None:
        adapter_result = await asker.adapter(plan.adapter.name, plan.test)
    elif options.train:
        adapter_name = options.name
        trained = await learning_curve(components, plan, asker)
        curve, adapter_result = trained.points, trained.adapter
        parity, training_seconds = trained.parity, trained.training_seconds
    if adapter_result is not None:
        on_test.append(adapter_result)

    intervals: dict[str, dict[str, Any]] = {}
    adapter_gain = None
    if adapter_result is not None:
        for scorer in plan.scorers:
            gain = _gain(best, adapter_result, scorer.name, options)
            intervals[f"adapter - {best.name}"] = intervals.get(f"adapter - {best.name}", {}) | {
                scorer.name: gain.to_dict()
            }
            if scorer.name == metric:
                adapter_gain = gain
    if retrieval_gain is not None:
        intervals["retrieval - none"] = {metric: retrieval_gain.to_dict()}
    target = best.scores[metric] + options.margin
    smallest = next((p.size for p in curve if p.scores[metric] >= target), None)

    # 4. Cost: tokens, and latency and throughput side by side at 1 and 8 concurrent requests.
    cost: dict[str, Any] = {"prices": options.prices.to_dict(), "prompting": _tokens(best)}
    if adapter_result is not None and adapter_name is not None:
        cost["adapter"] = _tokens(adapter_result)
        cost["side_by_side"] = await _side_by_side(
            asker, best_variant, adapter_name, plan.test[: options.cost_requests]
        )
        cost["training_seconds"] = round(training_seconds, 1) if training_seconds else None
        if curve:
            cost["training_peak_memory_mb"] = curve[-1].peak_memory_mb
        cost["break_even"] = asdict(
            break_even(
                cost["prompting"]["total_tokens"],
                cost["adapter"]["total_tokens"],
                training_seconds or 0.0,
                options.prices,
            )
        )

    decision = decide(
        metric=metric,
        best_prompting=best.name,
        prompting_score=best.scores[metric],
        uses_retrieval=best_variant.rag,
        retrieval_gain=retrieval_gain,
        failure_share=failures.share,
        systematic=failures.systematic,
        adapter=adapter_name,
        adapter_score=adapter_result.scores[metric] if adapter_result else None,
        adapter_gain=adapter_gain,
        margin=options.margin,
        smallest_size=smallest,
    )
    if curve and smallest is None:
        decision.reasons.append(
            f"no training size reached {target:.3f} (the best prompting score + {options.margin})"
        )
    sequential = sum(r.latency_s * len(r.answers) for r in [*on_dev, *on_test])
    return AdviceReport(
        task="",
        metric=metric,
        splits={"pool": len(plan.pool), "dev": len(plan.dev), "test": len(plan.test)},
        format=asdict(plan.spec) | {"instructions": plan.spec.instructions()},
        notes=plan.notes,
        variants=on_dev,
        best=best.name,
        test=on_test,
        failures=failures,
        intervals=intervals,
        curve=curve,
        smallest_size=smallest,
        cost=cost,
        decision=decision,
        adapter=adapter_name,
        parity=parity,
        timing={
            "wall_s": round(time.perf_counter() - started, 1),
            "request_seconds_sum": round(sequential, 1),
            "concurrency": options.concurrency,
        },
    )


def _gain(a: SystemResult, b: SystemResult, metric: str, options: AdviseOptions) -> Interval:
    return paired_bootstrap(
        a.per_example[metric], b.per_example[metric], resamples=options.resamples,
        seed=options.seed,
    )  # fmt: skip


def _tokens(result: SystemResult) -> dict[str, float]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": round(result.prompt_tokens + result.completion_tokens, 1),
    }


def _trained_seconds(manifest: AdapterManifest | None) -> float | None:
    if manifest is None:
        return None
    training = manifest.evaluation.get("training") or {}
    seconds = training.get("seconds")
    return float(seconds) if isinstance(seconds, int | float) else None


async def _side_by_side(
    asker: Asker, variant: Variant, adapter: str, examples: Sequence[Example]
) -> list[dict[str, Any]]:
    """The best prompting variant and the adapter on the same requests, at each concurrency
    level in turn, in one run: median latency, requests and answer tokens per second."""
    rows = []
    for level in LEVELS:
        for system in ("prompting", "adapter"):
            ask = await asker.ask_variant(variant) if system == "prompting" else (
                asker.ask_adapter(adapter)
            )  # fmt: skip
            replies, wall = await asker.run(
                f"cost {system} x{level}", examples, ask, concurrency=level
            )
            rows.append(
                {
                    "system": variant.name if system == "prompting" else f"adapter {adapter}",
                    "concurrency": level,
                    "requests": len(replies),
                    "p50_latency_s": round(statistics.median(r.seconds for r in replies), 3),
                    "requests_per_s": round(len(replies) / wall, 3),
                    "answer_tokens_per_s": round(
                        sum(r.completion_tokens for r in replies) / wall, 1
                    ),
                }
            )
    return rows


# -- the command's service --------------------------------------------------------------------
def advise_on_task(
    settings: ServingSettings,
    task: Path,
    options: AdviseOptions,
    *,
    metric: str = "rouge-l",
    schema: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """`ragtune advise`: load and check the task, plan (every check before any request), run
    through the server's own chat service on the running engine, and store the verdict in the
    adapter's manifest (the named or the trained one), where `adapters show` and the router
    read it. The report as a dict (what --json prints and --report writes)."""
    examples, data_sha256 = load_task(task)
    scorers = task_scorers(metric, examples, schema)
    pool, _, _ = check_options(examples, options)
    launcher = EngineLauncher(settings.engine)
    base_model_dir = Path(launcher.model_path(prepare=False))
    with open_store(settings.retrieval, "read") as store:
        check_stored(
            AdapterRegistry(settings.adapters.adapters_dir), store, settings.retrieval.collection,
            launcher.served_model_name(), options, pool, data_sha256=data_sha256,
            base_model_dir=base_model_dir,
        )  # fmt: skip
    components = open_components(settings)

    async def run() -> tuple[AdviceReport, AdapterManifest | None]:
        # Closed in this event loop: the engine clients belong to it.
        async with components:
            plan = await plan_advice(
                components, examples, options, scorers, data_sha256=data_sha256,
                base_model_dir=base_model_dir,
            )  # fmt: skip
            report = await advise(components, plan, progress)
            name = report.adapter
            return report, components.registry.get(name) if name else None

    report, manifest = anyio.run(run)
    report.task = task.name
    result = report.to_dict()
    if manifest is not None:
        components.registry.save_evaluation(manifest, {"advise": stored_advice(result)})
    return result


def stored_advice(report: dict[str, Any]) -> dict[str, Any]:
    """What an adapter's manifest keeps of an advice: the verdict, its reasons and the numbers
    behind it (the whole report goes to --report)."""
    metric = report["metric"]
    return {
        "verdict": report["verdict"],
        "verdict_words": report["verdict_words"],
        "reasons": report["reasons"],
        "task": report["task"],
        "metric": metric,
        "best_prompting": report["best"],
        "scores": {t["name"]: t["scores"][metric] for t in report["test"]},
        "intervals": report["intervals"],
        "smallest_size": report["smallest_size"],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def task_scorers(
    metric: str, examples: Sequence[Example], schema: dict[str, Any] | None
) -> list[Scorer]:
    """The deciding metric first, then the others that apply: ROUGE-L and exact match always,
    JSON-valid when every reference answer is JSON, JSON-schema-valid with a schema."""
    names = [metric, "rouge-l", "exact"]
    if all(json_valid(e.answer) for e in examples):
        names.append("json-valid")
    if schema is not None:
        names.append("json-schema")
    return [load_scorer(n, schema) for n in dict.fromkeys(names)]
