"""The comparison that decides whether an adapter earns its place: on a task's examples, the base
model with the task's instruction, the same with few-shot examples, RAG over the collection, and
the adapter; a task metric, latency and answer length for each, and a recommendation."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio

from ragtune.adapters.examples import Example, load_examples
from ragtune.adapters.registry import AdapterManifest
from ragtune.evals.metrics import load_scorer
from ragtune.serving.chat.protocol import ChatCompletionRequest, ChatMessage, RagtuneOptions
from ragtune.serving.chat.service import ChatService
from ragtune.serving.components import open_components
from ragtune.serving.errors import ServingError
from ragtune.serving.settings import ServingSettings

Metric = Literal["rouge-l", "exact", "json-valid"]
SYSTEMS = ("prompt", "few-shot", "rag", "adapter")
# The adapter earns its place when it beats the best prompting system by this much (absolute).
MARGIN = 0.05


def score(metric: Metric, candidate: str, reference: str) -> float:
    return load_scorer(metric).score(candidate, reference)


@dataclass
class SystemResult:
    system: str
    metric: float
    latency_s: float
    completion_tokens: float
    answers: list[str] = field(default_factory=list)


@dataclass
class CompareReport:
    metric: Metric
    adapter: str
    examples: int
    shots: int
    systems: list[SystemResult]
    recommendation: str

    def to_dict(self, with_answers: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_answers:
            for system in data["systems"]:
                system.pop("answers")
        return data


def recommend(results: Sequence[SystemResult]) -> str:
    by_name = {r.system: r for r in results}
    adapter = by_name["adapter"].metric
    best_prompting = max((r for r in results if r.system != "adapter"), key=lambda r: r.metric)
    if adapter >= best_prompting.metric + MARGIN:
        return (
            f"The adapter earns its place: {adapter:.3f} against {best_prompting.metric:.3f} for "
            f"the best prompting approach ({best_prompting.system})."
        )
    if best_prompting.metric > 0.0 and best_prompting.metric + MARGIN > adapter:
        return (
            f"Prompting is enough: {best_prompting.system} scores {best_prompting.metric:.3f}, the "
            f"adapter {adapter:.3f} (not {MARGIN} better)."
        )
    return "Neither: no approach does the task (every score is 0)."


async def compare(
    service: ChatService,
    adapter: str,
    examples: Sequence[Example],
    *,
    metric: Metric = "rouge-l",
    shots: int = 3,
    max_tokens: int = 64,
    on_answer: Callable[[], None] | None = None,
) -> CompareReport:
    """Run every system on `examples[shots:]` (the first `shots` are the few-shot examples)."""
    demonstrations, scored = list(examples[:shots]), list(examples[shots:])
    if not scored:
        raise ValueError("no examples left to score after the few-shot examples")
    base = service.base_model
    few_shot: list[dict[str, str]] = []
    for demo in demonstrations:
        few_shot += [*demo.messages, {"role": "assistant", "content": demo.answer}]

    results = []
    for system in SYSTEMS:
        answers, latencies, tokens, scores = [], [], [], []
        for example in scored:
            model, route, messages = {
                "prompt": (base, "base", example.messages),
                "few-shot": (base, "base", few_shot + example.messages),
                "rag": (base, "rag", example.messages),
                "adapter": (adapter, "adapter", example.messages),
            }[system]
            request = ChatCompletionRequest(
                model=model,
                messages=[ChatMessage(**m) for m in messages],
                temperature=0,
                max_tokens=max_tokens,
                ragtune=RagtuneOptions(route=route),
            )
            started = time.perf_counter()
            response = await service.complete(await service.prepare(request))
            latencies.append(time.perf_counter() - started)
            answer = response["choices"][0]["message"]["content"] or ""
            answers.append(answer)
            tokens.append(response["usage"]["completion_tokens"])
            scores.append(score(metric, answer, example.answer))
            if on_answer:
                on_answer()
        results.append(
            SystemResult(
                system,
                round(statistics.fmean(scores), 4),
                round(statistics.fmean(latencies), 3),
                round(statistics.fmean(tokens), 1),
                answers,
            )
        )
    return CompareReport(
        metric, adapter, len(scored), len(demonstrations), results, recommend(results)
    )


def compare_on_task(
    settings: ServingSettings,
    task: Path,
    adapter: str | None = None,
    *,
    metric: Metric = "rouge-l",
    shots: int = 3,
    max_examples: int | None = None,
    max_tokens: int = 64,
) -> CompareReport:
    """`ragtune eval compare`: `compare` on the examples of a task file (the first `shots` as
    few-shot examples, then at most `max_examples` scored), through the server's own chat
    service on the running engine; the report is stored in the adapter's manifest (its
    evaluation's "compare"), where `ragtune adapters show` and the router's advice read it.

    `adapter` may be left out when exactly one adapter is registered.
    """
    examples = load_examples(task)
    if max_examples is not None:
        examples = examples[: max_examples + shots]
    components = open_components(settings)

    async def run() -> tuple[AdapterManifest, CompareReport]:
        # Closed in this event loop: the engine clients belong to it.
        async with components:
            names = components.fleet.names()
            if adapter is None and len(names) != 1:
                raise ServingError(
                    f"name the adapter to compare with --adapter (registered: {', '.join(names)})"
                )
            chosen = adapter or names[0]
            manifest = components.fleet.manifest(chosen)
            report = await compare(
                components.chat, chosen, examples, metric=metric, shots=shots,
                max_tokens=max_tokens,
            )  # fmt: skip
            return manifest, report

    manifest, report = anyio.run(run)
    components.registry.save_evaluation(manifest, {"compare": report.to_dict()})
    return report
