"""How `ragtune advise` puts a task's examples to the engine: each system (a prompting variant,
a registered adapter, an adapter being measured) as a function of one example, sent through the
server's own chat service at most `concurrency` at once, scored with the task's metrics.

Usage:
    asker = Asker(components, scorers, spec, collection="default", concurrency=8)
    result = await asker.variant(variant, dev, "dev")       # SystemResult
    result = await asker.adapter("titler", test)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from ragtune.adapters.examples import Example
from ragtune.evals.errors import AdviceError
from ragtune.evals.metrics import Scorer
from ragtune.evals.variants import FormatSpec, Variant
from ragtune.retrieval.conversation import user_turns
from ragtune.serving.chat.protocol import ChatCompletionRequest, ChatMessage, RagtuneOptions
from ragtune.serving.components import Components
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.prompting import PromptBuilder
from ragtune.serving.router import Route

Progress = Callable[[str, int, int], None]
"""(stage, done, total): called as answers come back."""
Ask = Callable[[Example], Awaitable[dict[str, Any]]]
"""One example -> the engine's chat completion for it."""


@dataclass
class Reply:
    answer: str
    """What is scored: the reply, or the final answer extracted from it."""
    raw: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


@dataclass
class SystemResult:
    """One system (a prompting variant or an adapter) on one split."""

    name: str
    description: str
    split: str
    scores: dict[str, float]
    per_example: dict[str, list[float]]
    prompt_tokens: float
    completion_tokens: float
    latency_s: float
    wall_s: float
    answers: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("per_example")
        data.pop("answers")
        return data


async def greedy_completion(
    client: EngineClient, model: str, messages: list[dict[str, str]], max_tokens: int
) -> dict[str, Any]:
    """One greedy chat completion straight from an engine (no prompt built by ragtune)."""
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
    response: dict[str, Any] = await client.chat_completion(body)
    return response


async def prompt_builder(components: Components) -> PromptBuilder:
    if components.prompts is None:
        raise AdviceError("advise needs the served model's tokenizer: open the components with it")
    return await components.prompts.builder()


class Asker:
    def __init__(
        self,
        components: Components,
        scorers: Sequence[Scorer],
        spec: FormatSpec,
        *,
        collection: str | None,
        concurrency: int,
        progress: Progress | None = None,
    ) -> None:
        self.components = components
        self.scorers = list(scorers)
        self.spec = spec
        self.collection = collection
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.progress = progress

    # -- one example -> one request
    async def chat(
        self,
        model: str,
        route: Route,
        messages: list[dict[str, str]],
        max_tokens: int,
        own_turns: int | None = None,
    ) -> dict[str, Any]:
        """Through the chat service, as a client's request would go (greedy). `own_turns`: the
        example's own user turns, the last of `messages` (the turns before them are few-shot
        examples, which retrieval does not read)."""
        chat = self.components.chat
        request = ChatCompletionRequest(
            model=model,
            messages=[ChatMessage(**m) for m in messages],
            temperature=0,
            max_tokens=max_tokens,
            ragtune=RagtuneOptions(
                route=route, collection=self.collection if route == "rag" else None
            ),
        )
        return await chat.complete(await chat.prepare(request, own_turns=own_turns))

    async def engine(
        self, served: str, messages: list[dict[str, str]], max_tokens: int
    ) -> dict[str, Any]:
        """Straight to the engine, for an adapter being measured (not registered)."""
        replica = self.components.engines.choose(served)
        return await greedy_completion(replica.client, served, messages, max_tokens)

    async def ask_variant(self, variant: Variant) -> Ask:
        max_tokens = self.spec.max_tokens + variant.extra_tokens
        builder = await prompt_builder(self.components)
        base = self.components.chat.base_model
        route: Route = "rag" if variant.rag else "base"

        async def ask(example: Example) -> dict[str, Any]:
            shots = variant.shots
            messages = variant.messages(example, shots)
            # Fewer examples when the prompt would leave no room for the answer.
            while shots and builder.count(messages) + max_tokens > builder.context_length:
                shots -= 1
                messages = variant.messages(example, shots)
            # Retrieval reads the example's own turns, not the shots' inputs before them,
            # counted as the chat service counts turns (user messages with text).
            own_messages = [ChatMessage.model_validate(m) for m in example.messages]
            own = len(user_turns((m.role, m.text()) for m in own_messages))
            return await self.chat(base, route, messages, max_tokens, own_turns=own)

        return ask

    def ask_adapter(self, name: str, served: str | None = None) -> Ask:
        """An adapter on the task's own messages: a registered one through the chat service
        (as it is served), or one being measured straight from the engine (`served`)."""
        max_tokens = self.spec.max_tokens

        async def ask(example: Example) -> dict[str, Any]:
            if served is not None:
                return await self.engine(served, example.messages, max_tokens)
            return await self.chat(name, "adapter", example.messages, max_tokens)

        return ask

    # -- many examples
    async def run(
        self,
        stage: str,
        examples: Sequence[Example],
        ask: Ask,
        extract: Callable[[str], str] = str,
        concurrency: int | None = None,
    ) -> tuple[list[Reply], float]:
        """Every example through `ask`, concurrently; (replies in order, wall seconds)."""
        replies: list[Reply | None] = [None] * len(examples)
        limiter = self.limiter if concurrency is None else anyio.CapacityLimiter(concurrency)
        done = 0

        async def one(index: int, example: Example) -> None:
            nonlocal done
            async with limiter:
                started = time.perf_counter()
                response = await ask(example)
                seconds = time.perf_counter() - started
            raw = response["choices"][0]["message"].get("content") or ""
            usage = response.get("usage") or {}
            replies[index] = Reply(
                extract(raw),
                raw,
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
                seconds,
            )
            done += 1
            if self.progress:
                self.progress(stage, done, len(examples))

        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for index, example in enumerate(examples):
                group.start_soon(one, index, example)
        return [r for r in replies if r is not None], time.perf_counter() - started

    async def variant(
        self, variant: Variant, examples: Sequence[Example], split: str
    ) -> SystemResult:
        ask = await self.ask_variant(variant)
        replies, wall = await self.run(f"{variant.name} ({split})", examples, ask, variant.extract)
        return self.result(variant.name, variant.description, split, examples, replies, wall)

    async def adapter(
        self, name: str, examples: Sequence[Example], *, served: str | None = None
    ) -> SystemResult:
        replies, wall = await self.run(f"adapter {name}", examples, self.ask_adapter(name, served))
        return self.result(name, f"adapter {name}", "test", examples, replies, wall)

    def result(
        self,
        name: str,
        description: str,
        split: str,
        examples: Sequence[Example],
        replies: Sequence[Reply],
        wall: float,
    ) -> SystemResult:
        per_example = {
            s.name: [s.score(r.answer, e.answer) for r, e in zip(replies, examples, strict=True)]
            for s in self.scorers
        }
        return SystemResult(
            name,
            description,
            split,
            {k: round(statistics.fmean(v), 4) for k, v in per_example.items()},
            per_example,
            round(statistics.fmean(r.prompt_tokens for r in replies), 1),
            round(statistics.fmean(r.completion_tokens for r in replies), 1),
            round(statistics.fmean(r.seconds for r in replies), 3),
            round(wall, 2),
            [r.answer for r in replies],
        )
