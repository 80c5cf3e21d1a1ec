"""The served side of the parity check (`adapters.parity`): an adapter ragtune trained is loaded
into the engine under a temporary name, its greedy answers and the base model's are taken on a
few held-out prompts, and compared with PEFT's own generation before it is registered.

Usage:
    result = await served_parity(client, base_model, base_model_dir, adapter_dir, held_out, 32)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import anyio

from ragtune.adapters.examples import Example
from ragtune.adapters.parity import ParityResult, check_parity, peft_reference
from ragtune.evals.asker import greedy_completion
from ragtune.serving.engine.client import EngineClient

PROMPTS = 4
"""Held-out prompts checked: enough to catch a no-op or a diverging adapter, few enough that
the check takes seconds."""


async def served_parity(
    client: EngineClient,
    base_model: str,
    base_model_dir: Path,
    adapter_dir: Path,
    held_out: Sequence[Example],
    max_tokens: int,
    *,
    name: str = "adapter",
) -> ParityResult:
    conversations = [e.messages for e in held_out[:PROMPTS]]
    served = f"parity-check-{name}"

    async def greedy(model: str, messages: list[dict[str, str]]) -> str:
        response = await greedy_completion(client, model, messages, max_tokens)
        return str(response["choices"][0]["message"].get("content") or "")

    await client.load_adapter(served, str(adapter_dir.resolve()))
    try:
        with_adapter = await asyncio.gather(*(greedy(served, m) for m in conversations))
    finally:
        await client.unload_adapter(served)
    without = await asyncio.gather(*(greedy(base_model, m) for m in conversations))
    reference = await anyio.to_thread.run_sync(
        lambda: peft_reference(
            base_model_dir, adapter_dir, conversations, max_new_tokens=max_tokens
        )
    )
    return check_parity(with_adapter, without, reference)
