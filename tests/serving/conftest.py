"""Fixtures of the serving tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ragtune.adapters.registry import AdapterRegistry
from ragtune.adapters.settings import adapters_dir
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from tests.support.serving import abstract_prompts, copy_of


@pytest.fixture(scope="module")
def api_data(
    ingested: tuple[Path, Any],
    lora_adapters: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A copy of the ingested small corpus (one per test module), with a title-writing adapter
    registered."""
    data_dir = copy_of(ingested[0], tmp_path_factory, "api")
    AdapterRegistry(adapters_dir(data_dir)).add(
        lora_adapters["alpha"],
        "titler",
        "Write the title of a scientific article from its abstract.",
        base_model=DEFAULT_MODEL_NAME,
        examples=abstract_prompts()[:20],
    )
    return data_dir
