"""The decision rule in numbers, for `ragtune advise`: paired bootstrap intervals, the verdict in
the rule's words (prompting is enough / retrieval is the fix / fine-tune / not enough data to
tell), and the break-even volume at which an adapter's saved tokens pay for it.

Pure functions of measured numbers: the same scores give the same verdict.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["prompting", "retrieval", "fine-tune", "undecided"]
VERDICT_WORDS: dict[Verdict, str] = {
    "prompting": "prompting is enough",
    "retrieval": "retrieval is the fix",
    "fine-tune": "fine-tune",
    "undecided": "not enough data to tell",
}


@dataclass(frozen=True)
class Interval:
    """A paired difference (b - a) of mean scores and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    level: float = 0.95

    def to_dict(self) -> dict[str, float]:
        return {
            "mean": round(self.mean, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
            "level": self.level,
        }


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, seed: int = 0,
    level: float = 0.95,
) -> Interval:  # fmt: skip
    """The mean of b - a over the same examples, with a percentile bootstrap interval
    (examples resampled with replacement, the pairs kept together)."""
    if len(a) != len(b) or not a:
        raise ValueError("a paired bootstrap needs two equally long, non-empty score lists")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    low = means[max(0, math.floor(tail * resamples))]
    high = means[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return Interval(sum(diffs) / n, low, high, level)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reasons: list[str]

    @property
    def words(self) -> str:
        return VERDICT_WORDS[self.verdict]


def decide(
    *,
    metric: str,
    best_prompting: str,
    prompting_score: float,
    uses_retrieval: bool,
    retrieval_gain: Interval | None,
    failure_share: float,
    systematic: bool,
    adapter: str | None,
    adapter_score: float | None,
    adapter_gain: Interval | None,
    margin: float,
    smallest_size: int | None = None,
) -> Decision:
    """The rule: prompting (with retrieval) first; an adapter only when the interval says it is
    better by at least `margin`. `retrieval_gain` is the best retrieval variant over the best
    variant without retrieval; `adapter_gain` the adapter over the best prompting variant
    (both on the test split)."""
    reasons = [
        f"best prompting variant {best_prompting!r}: {metric} {prompting_score:.3f} on the test "
        f"split; {failure_share:.0%} of its answers break the reference format"
        + (" (systematic)" if systematic else "")
    ]
    retrieval_helps = (
        uses_retrieval and retrieval_gain is not None and retrieval_gain.low > 0
    )  # fmt: skip
    if retrieval_gain is not None:
        reasons.append(
            f"retrieval vs none: {_interval(retrieval_gain)}"
            + (" (retrieval helps)" if retrieval_helps else "")
        )
    prompting_verdict: Verdict = "retrieval" if retrieval_helps else "prompting"
    if adapter_gain is None or adapter_score is None:
        if systematic:
            reasons.append(
                "prompting fails systematically and no adapter was measured: run with --train "
                "(or --adapter) to see whether one fixes it"
            )
            return Decision("undecided", reasons)
        reasons.append("prompting answers in the reference format; no adapter was measured")
        return Decision(prompting_verdict, reasons)
    reasons.append(
        f"adapter {adapter!r}: {metric} {adapter_score:.3f}; adapter - prompting: "
        f"{_interval(adapter_gain)}; the adapter must be better by {margin}"
    )
    if adapter_gain.low > 0 and adapter_gain.mean >= margin:
        if smallest_size is not None:
            reasons.append(f"{smallest_size} training examples sufficed")
        return Decision("fine-tune", reasons)
    if adapter_gain.high < margin:
        reasons.append(f"the interval excludes a gain of {margin}: the adapter does not pay")
        return Decision(prompting_verdict, reasons)
    reasons.append(
        "the interval holds both no gain and a gain of the margin: more test examples would tell"
    )
    return Decision("undecided", reasons)


def _interval(value: Interval) -> str:
    return f"{value.mean:+.3f} ({value.level:.0%} interval {value.low:+.3f} to {value.high:+.3f})"


@dataclass(frozen=True)
class Prices:
    """What the break-even is computed with. The defaults are assumptions, to be replaced by
    the user's own: a hosted small model's price per 1k tokens, a GPU hour, the share of a
    GPU an adapter's slot costs while it is resident."""

    per_1k_tokens: float = 0.0005
    per_training_hour: float = 2.0
    per_slot_hour: float = 0.02

    def to_dict(self) -> dict[str, float]:
        return {
            "per_1k_tokens": self.per_1k_tokens,
            "per_training_hour": self.per_training_hour,
            "per_slot_hour": self.per_slot_hour,
        }


@dataclass(frozen=True)
class BreakEven:
    saved_tokens: float
    """Tokens per request the adapter saves over the best prompting variant (prompt + answer)."""
    training_cost: float
    requests: float | None
    """Requests after which the saved tokens have paid for the training; None: never."""
    requests_per_hour: float | None
    """Requests per hour for the saved tokens to pay for the slot; None: never."""


def break_even(
    prompting_tokens: float, adapter_tokens: float, training_seconds: float, prices: Prices
) -> BreakEven:
    saved = prompting_tokens - adapter_tokens
    cost = training_seconds / 3600 * prices.per_training_hour
    per_request = saved / 1000 * prices.per_1k_tokens
    if per_request <= 0:
        return BreakEven(round(saved, 1), round(cost, 4), None, None)
    return BreakEven(
        round(saved, 1),
        round(cost, 4),
        math.ceil(cost / per_request),
        math.ceil(prices.per_slot_hour / per_request),
    )
