"""`router collect` with more adapters in its cases than the engine has LoRA slots: an answer
whose adapter finds every slot busy with another one waits for a slot, within a bound, instead
of ending the whole collection (no engine: the pool's error raised by rule)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from ragtune.evals.errors import EvalError
from ragtune.evals.outcomes import when_a_slot_is_free
from ragtune.serving.errors import AdapterSlotsBusyError

BUSY = "all 1 LoRA slots of the engine hold adapters that are answering requests (titler@v1)"


def busy_for(times: int) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise AdapterSlotsBusyError(BUSY)
        return "answered"

    return calls, call


def test_an_answer_waits_for_a_slot_and_is_tried_again() -> None:
    calls, call = busy_for(3)
    result = anyio.run(lambda: when_a_slot_is_free(call, wait_s=1.0, first_pause_s=0.01))
    assert result == "answered"
    assert len(calls) == 4


def test_a_slot_that_never_frees_ends_with_what_to_do() -> None:
    calls, call = busy_for(1000)
    with pytest.raises(EvalError, match=r"titler@v1.*waited.*--max-loras at least"):
        anyio.run(lambda: when_a_slot_is_free(call, wait_s=0.05, first_pause_s=0.01))
    assert 2 <= len(calls) < 1000


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        raise RuntimeError("engine down")

    with pytest.raises(RuntimeError, match="engine down"):
        anyio.run(lambda: when_a_slot_is_free(call, wait_s=1.0, first_pause_s=0.01))
    assert len(calls) == 1
