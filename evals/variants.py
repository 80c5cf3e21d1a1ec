"""Prompting pushed seriously, for `ragtune advise`: the output format a task's reference answers
share, and the prompt variants built on it (the task's instruction alone, with the format spelt
out, few-shot examples chosen by similarity to the input, step-by-step reasoning with a final
answer extracted, retrieval), each a way to turn one example into the messages sent.

Usage:
    spec = FormatSpec.of([e.answer for e in pool], count_tokens)
    shots = ShotPicker(pool, embedder)
    for variant in prompting_variants(spec, shots, rag=True):
        messages = variant.messages(example)        # then answer = variant.extract(reply)
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ragtune.adapters.examples import Example
from ragtune.evals.metrics import parse_json, words
from ragtune.retrieval.embedder import Embedder

Message = dict[str, str]
ANSWER_MARK = "Answer:"


@dataclass(frozen=True)
class FormatSpec:
    """What the reference answers have in common, read from them: one line or several, how many
    words, JSON (objects with which fields)."""

    one_line: bool
    max_words: int
    median_words: int
    max_tokens: int
    """Tokens an answer may take: 1.5x the longest reference (at least 16)."""
    json: Literal["object", "any"] | None = None
    fields: tuple[str, ...] = ()
    """Keys every reference object has."""

    @classmethod
    def of(cls, answers: Sequence[str], count_tokens: Callable[[str], int]) -> FormatSpec:
        lengths = [len(words(a)) for a in answers]
        parsed: list[Any] = []
        for answer in answers:
            try:
                parsed.append(parse_json(answer))
            except ValueError:
                parsed = []
                break
        kind: Literal["object", "any"] | None = None
        fields: tuple[str, ...] = ()
        if parsed:
            kind = "object" if all(isinstance(p, dict) for p in parsed) else "any"
            if kind == "object":
                common = set(parsed[0]).intersection(*parsed[1:])
                fields = tuple(k for k in parsed[0] if k in common)
        longest = max(count_tokens(a) for a in answers)
        return cls(
            one_line=all("\n" not in a.strip() for a in answers),
            max_words=max(lengths),
            median_words=round(statistics.median(lengths)),
            max_tokens=max(16, math.ceil(longest * 1.5)),
            json=kind,
            fields=fields,
        )

    def instructions(self) -> str:
        """The format, said to the model."""
        if self.json == "object":
            parts = ["Reply with one JSON object and nothing else"]
            if self.fields:
                parts[0] += f", with the fields {', '.join(self.fields)}"
            parts[0] += "."
        elif self.json == "any":
            parts = ["Reply with JSON only, nothing else."]
        else:
            parts = ["Reply with the answer only: no preamble, no explanation, no quotes."]
            if self.one_line:
                parts.append(
                    f"Write it on one line of at most {self.max_words} words "
                    f"(typically {self.median_words})."
                )
            else:
                parts.append(f"Use at most {self.max_words} words.")
        return " ".join(parts)


class ShotPicker:
    """Few-shot examples for an input: the pool's examples most similar to it (cosine of the
    embedding model's vectors of the prompts), most similar last (next to the question)."""

    def __init__(self, pool: Sequence[Example], embedder: Embedder) -> None:
        self.pool = list(pool)
        self.embedder = embedder
        self._vectors = (
            np.asarray(embedder.embed_queries([e.prompt() for e in pool]), dtype=np.float32)
            if pool
            else np.zeros((0, 1), dtype=np.float32)
        )
        self._cache: dict[str, list[int]] = {}

    def index(self, examples: Sequence[Example]) -> None:
        """Embed the inputs that will ask for shots, in one batch."""
        missing = [e.prompt() for e in examples if e.prompt() not in self._cache]
        if not missing or not self.pool:
            return
        vectors = np.asarray(self.embedder.embed_queries(missing), dtype=np.float32)
        similarities = vectors @ self._vectors.T
        for prompt, row in zip(missing, similarities, strict=True):
            self._cache[prompt] = [int(i) for i in np.argsort(-row, kind="stable")]

    def pick(self, example: Example, k: int) -> list[Example]:
        if example.prompt() not in self._cache:
            self.index([example])
        # An input that is itself in the pool is not its own example.
        order = [i for i in self._cache.get(example.prompt(), []) if self.pool[i] != example]
        return [self.pool[i] for i in reversed(order[:k])]


def extract_final(reply: str) -> str:
    """The answer of a step-by-step reply: what follows the last "Answer:", else its last
    non-empty line."""
    found = list(re.finditer(re.escape(ANSWER_MARK), reply, flags=re.IGNORECASE))
    if found:
        return reply[found[-1].end() :].strip()
    lines = [line.strip() for line in reply.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _as_is(reply: str) -> str:
    return reply


@dataclass(frozen=True)
class Variant:
    """One way of prompting the base model for a task."""

    name: str
    description: str
    system: str | None = None
    shots: int = 0
    rag: bool = False
    extra_tokens: int = 0
    """Tokens the answer may take beyond the format's (room for the reasoning)."""
    extract: Callable[[str], str] = field(default=_as_is, compare=False)
    picker: ShotPicker | None = field(default=None, compare=False, repr=False)

    def messages(self, example: Example, shots: int | None = None) -> list[Message]:
        """The messages for one example (`shots` fewer than the variant's own when the prompt
        must shrink to fit the context). A system message of the task's own comes first, the
        variant's instructions after it in the same message."""
        task_system, own = _split_system(example.messages)
        system = "\n\n".join(s for s in (task_system, self.system) if s)
        turns: list[Message] = [{"role": "system", "content": system}] if system else []
        k = self.shots if shots is None else shots
        if k and self.picker is not None:
            for shot in self.picker.pick(example, k):
                turns += _split_system(shot.messages)[1]
                turns.append({"role": "assistant", "content": shot.answer})
        return turns + own


def _split_system(messages: Sequence[Message]) -> tuple[str | None, list[Message]]:
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], list(messages[1:])
    return None, list(messages)


def prompting_variants(
    spec: FormatSpec,
    picker: ShotPicker,
    *,
    shots: Sequence[int] = (1, 3, 8),
    rag: bool = False,
    reasoning_tokens: int = 192,
) -> list[Variant]:
    """The variants tried, cheapest first (a tie goes to the cheaper one): the instruction
    alone; with the format; few-shot with the format (k examples by similarity, k no larger
    than the pool); step by step with the format; retrieval with the format, and with the
    middle few-shot count."""
    form = spec.instructions()
    ks = sorted({k for k in shots if 0 < k <= len(picker.pool)})
    variants = [
        Variant("instruction", "the task's own messages"),
        Variant("format", "+ the output format spelt out", system=form),
    ]
    variants += [
        Variant(
            f"few-shot-{k}",
            f"+ format, {k} most similar example(s)",
            system=form,
            shots=k,
            picker=picker,
        )
        for k in ks
    ]
    variants.append(
        Variant(
            "step-by-step",
            "+ format, reasoning first, final answer extracted",
            system=(
                f"{form} First think step by step. Then write a last line that starts with "
                f"'{ANSWER_MARK}' followed by the answer alone, in that format."
            ),
            extra_tokens=reasoning_tokens,
            extract=extract_final,
        )
    )
    if rag:
        variants.append(
            Variant(
                "rag", "+ format, passages retrieved from the collection", system=form, rag=True
            )
        )
        if ks:
            k = ks[len(ks) // 2]
            variants.append(
                Variant(
                    f"rag+few-shot-{k}",
                    f"+ format, retrieval and {k} similar example(s)",
                    system=form,
                    shots=k,
                    rag=True,
                    picker=picker,
                )
            )
    return variants
