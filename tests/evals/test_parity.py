"""The served adapter against PEFT's own generation, on the real engine: an adapter served as
trained passes; one that behaves otherwise is caught."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ragtune.adapters.examples import Example
from ragtune.adapters.parity import ParityResult, check_parity, peft_reference
from ragtune.evals.parity import served_parity
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME, default_model_dir
from ragtune.serving.settings import EngineSettings

HELD_OUT = [
    Example([{"role": "user", "content": "Write a title for: solar cells in humid air."}], "x"),
    Example([{"role": "user", "content": "Name three colours."}], "y"),
]

pytestmark = pytest.mark.engine


def test_an_adapter_served_as_trained_passes(
    engine: EngineSettings, models_dir: Path, lora_adapters: dict[str, Path]
) -> None:
    async def run() -> ParityResult:
        async with EngineClient.from_settings(engine) as client:
            return await served_parity(
                client, DEFAULT_MODEL_NAME, default_model_dir(models_dir),
                lora_adapters["alpha"], HELD_OUT, 16, name="alpha",
            )  # fmt: skip

    result = asyncio.run(run())
    assert result.ok, result.pairs
    assert not result.no_op


def test_a_served_adapter_that_behaves_otherwise_is_caught(
    engine: EngineSettings, models_dir: Path, lora_adapters: dict[str, Path]
) -> None:
    """The engine serves adapter beta where PEFT's reference is alpha: what a wrong or
    mis-loaded served adapter looks like from outside."""
    conversations = [e.messages for e in HELD_OUT]

    async def served() -> tuple[list[str], list[str]]:
        async with EngineClient.from_settings(engine) as client:
            await client.load_adapter("parity-test-beta", str(lora_adapters["beta"]))
            try:
                answers = [await greedy(client, "parity-test-beta", m) for m in conversations]
            finally:
                await client.unload_adapter("parity-test-beta")
            base = [await greedy(client, DEFAULT_MODEL_NAME, m) for m in conversations]
            return answers, base

    answers, base = asyncio.run(served())
    reference = peft_reference(
        default_model_dir(models_dir), lora_adapters["alpha"], conversations, max_new_tokens=16
    )
    result = check_parity(answers, base, reference)
    assert not result.ok
    assert result.agreement < 0.8


async def greedy(client: EngineClient, model: str, messages: list[dict[str, str]]) -> str:
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": 16}
    response = await client.chat_completion(body)
    return str(response["choices"][0]["message"]["content"] or "")
