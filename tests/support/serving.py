"""What the serving tests share: the keys and questions they use, the settings of an API on the
session's engine (in-process or as `ragtune serve`), and copies of the ingested corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ragtune.adapters.settings import AdapterSettings
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME, default_model_dir
from ragtune.serving.settings import ApiSettings, EngineSettings, RouterSettings, ServingSettings

ABSTRACTS = Path(__file__).resolve().parents[3] / "shared" / "eval" / "abstract2title.jsonl"
CHAT, ADMIN = "chat-key", "admin-key"
RAG_QUESTION = "How do I read a file line by line in Python?"
SMALL_TALK = "Good morning! How are you feeling today?"


def abstract_prompts() -> list[str]:
    rows = [json.loads(line) for line in ABSTRACTS.read_text().splitlines() if line.strip()]
    return [f"{row['instruction']} {row['input']}" for row in rows]


def api_settings(data_dir: Path, engine: EngineSettings, models_dir: Path, **api: Any) -> Any:
    """An API over `data_dir`, attached to the session's engine, with the CHAT and ADMIN keys."""
    return ServingSettings(
        retrieval=RetrievalSettings(data_dir=data_dir),
        engine=engine.model_copy(
            update={
                "data_dir": data_dir,
                "vllm_url": engine.engine_url,
                "model": str(default_model_dir(models_dir)),
                "served_model_name": DEFAULT_MODEL_NAME,
            }
        ),
        adapters=AdapterSettings(data_dir=data_dir),
        router=RouterSettings(),
        api=ApiSettings(api_keys=CHAT, admin_api_keys=ADMIN, **api),
    )


def attach_env(engine: EngineSettings, models_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a `ragtune serve` (or any command) attached to the session's engine."""
    return {
        "RAGTUNE_VLLM_URL": engine.engine_url,
        "RAGTUNE_MODEL": str(default_model_dir(models_dir)),
        "RAGTUNE_SERVED_MODEL_NAME": DEFAULT_MODEL_NAME,
        **extra,
    }


def copy_of(data_dir: Path, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A private copy of a data directory (a store a test may change)."""
    copy = tmp_path_factory.mktemp(name) / "data"
    shutil.copytree(data_dir, copy)
    return copy
