"""What the benchmarks share: the developers' evaluation sets (and a check that a set's corpus
does not hold its own questions), a collection of real Python-docs
chunks of any size, the engine's settings, and one context manager that starts the engine (and
`ragtune serve` attached to it) and stops everything it started. No bench imports another."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ragtune.retrieval.evaluation import ngrams, words
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord, Collection, open_store
from ragtune.serving.engine.launcher import EngineLauncher
from ragtune.serving.engine.models import DEFAULT_MODEL_NAME, prepare_default_model
from ragtune.serving.settings import EngineSettings

REPO = Path(__file__).resolve().parent.parent
BUILDER = REPO.parent / "shared" / "eval" / "build_python_docs.py"
SQLITE_BUILDER = REPO / "bench" / "evalsets" / "build_sqlite_docs.py"
GIT_BUILDER = REPO / "bench" / "evalsets" / "build_git_docs.py"
PDF_PRINTER = REPO / "bench" / "evalsets" / "print_pdf.py"
MARKDOWN_CONVERTER = REPO / "bench" / "evalsets" / "to_markdown.py"
TEXT_CONVERTER = REPO / "bench" / "evalsets" / "to_text.py"
PYTHON_HTML_BUILDER = REPO / "bench" / "evalsets" / "build_python_html.py"
GTK_BUILDER = REPO / "bench" / "evalsets" / "build_gtk_docs.py"
FFMPEG_BUILDER = REPO / "bench" / "evalsets" / "build_ffmpeg_docs.py"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragtune"
EVAL = Path(os.environ.get("RAGTUNE_EVAL_CACHE") or CACHE / "evalsets")
ABSTRACTS = REPO.parent / "shared" / "eval" / "abstract2title.jsonl"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
SOURCE_DIR = CACHE / "bench" / "full-ingest"
API_KEY, ADMIN_KEY = "bench", "bench-admin"
ENGINE_API_KEY = "bench-engine"
"""The key the benches' engines require; the API process and direct calls send it."""


def eval_set(subset: str) -> Path:
    """The Python FAQ / Python docs set (`small` or `full`), built once and cached."""
    out = EVAL / subset
    if not (out / "qa.json").is_file():
        subprocess.run([sys.executable, str(BUILDER), str(out), "--subset", subset], check=True)
    return out


def sqlite_set(subset: str) -> Path:
    """The second developers' set: the SQLite FAQ over the SQLite HTML docs (`small` or
    `full`), built once and cached (bench/evalsets/build_sqlite_docs.py)."""
    out = EVAL / f"sqlite-{subset}"
    if not (out / "qa.json").is_file():
        subprocess.run(
            [sys.executable, str(SQLITE_BUILDER), str(out), "--subset", subset], check=True
        )
    return out


def git_set(subset: str) -> Path:
    """The third developers' set: the Git FAQ (gitfaq) over the Git HTML docs (`small` or
    `full`), built once and cached (bench/evalsets/build_git_docs.py). Opt-in: `--sets git`."""
    out = EVAL / f"git-{subset}"
    if not (out / "qa.json").is_file():
        subprocess.run([sys.executable, str(GIT_BUILDER), str(out), "--subset", subset], check=True)
    return out


def gtk_set(subset: str) -> Path:
    """The GTK 3 manual's Common Questions over the manual (gtk-doc's DocBook XSL HTML), built
    once and cached (bench/evalsets/build_gtk_docs.py). Opt-in: `--sets gtk`."""
    out = EVAL / f"gtk-{subset}"
    if not (out / "qa.json").is_file():
        subprocess.run([sys.executable, str(GTK_BUILDER), str(out), "--subset", subset], check=True)
    return out


def ffmpeg_set(subset: str) -> Path:
    """The FFmpeg FAQ over the FFmpeg manual (makeinfo's Texinfo HTML: flat pages, headings
    beside their paragraphs), built once and cached (bench/evalsets/build_ffmpeg_docs.py).
    Opt-in: `--sets ffmpeg`."""
    out = EVAL / f"ffmpeg-{subset}"
    if not (out / "qa.json").is_file():
        command = [sys.executable, str(FFMPEG_BUILDER), str(out), "--subset", subset]
        subprocess.run(command, check=True)
    return out


def sqlite_pdf_set(subset: str) -> Path:
    """The SQLite set printed to PDF (bench/evalsets/print_pdf.py): the same questions over
    the same pages, read from PDFs. Opt-in: `--sets sqlite-pdf`."""
    return _printed(sqlite_set(subset), EVAL / f"sqlite-pdf-{subset}")


def git_pdf_set(subset: str) -> Path:
    """The Git set printed to PDF, like `sqlite_pdf_set`. Opt-in: `--sets git-pdf`."""
    return _printed(git_set(subset), EVAL / f"git-pdf-{subset}")


def sqlite_md_set(subset: str) -> Path:
    """The SQLite set as Markdown (bench/evalsets/to_markdown.py). Opt-in: `--sets sqlite-md`."""
    return _converted(MARKDOWN_CONVERTER, sqlite_set(subset), EVAL / f"sqlite-md-{subset}")


def git_md_set(subset: str) -> Path:
    """The Git set as Markdown, like `sqlite_md_set`. Opt-in: `--sets git-md`."""
    return _converted(MARKDOWN_CONVERTER, git_set(subset), EVAL / f"git-md-{subset}")


def sqlite_txt_set(subset: str) -> Path:
    """The SQLite set as plain text (bench/evalsets/to_text.py). Opt-in: `--sets sqlite-txt`."""
    return _converted(TEXT_CONVERTER, sqlite_set(subset), EVAL / f"sqlite-txt-{subset}")


def git_txt_set(subset: str) -> Path:
    """The Git set as plain text, like `sqlite_txt_set`. Opt-in: `--sets git-txt`."""
    return _converted(TEXT_CONVERTER, git_set(subset), EVAL / f"git-txt-{subset}")


def python_html_set(subset: str) -> Path:
    """The Python FAQ over the Python docs as the HTML pages Sphinx wrote
    (bench/evalsets/build_python_html.py): sections as `<section>`. Opt-in: `--sets python-html`."""
    return _python_html(subset, "html5")


def python_div_set(subset: str) -> Path:
    """The same pages with sections as `<div class="section">` (docutils' HTML4 writer, DocBook
    XSL). Opt-in: `--sets python-div`."""
    return _python_html(subset, "div")


def python_page_set(subset: str) -> Path:
    """The same pages whole, as the site serves them: navigation bars, sidebar, footer.
    Opt-in: `--sets python-page`."""
    return _python_html(subset, "html5", "whole")


def _python_html(subset: str, sections: str, page: str = "body") -> Path:
    name = "page" if page == "whole" else "html" if sections == "html5" else sections
    out = EVAL / f"python-{name}-{subset}"
    if not (out / "qa.json").is_file():
        command = [sys.executable, str(PYTHON_HTML_BUILDER), str(out), "--subset", subset]
        subprocess.run([*command, "--sections", sections, "--page", page], check=True)
    return out


def _printed(html_set: Path, out: Path) -> Path:
    return _converted(PDF_PRINTER, html_set, out)


def _converted(script: Path, html_set: Path, out: Path) -> Path:
    if not (out / "qa.json").is_file():
        subprocess.run([sys.executable, str(script), str(html_set), str(out)], check=True)
    return out


_ASKED_WORDS = 8
"""A question of this many words or more counts as left in the corpus when any run of this
many of its words is there, word for word."""


def asked_in_corpus(qa_path: Path, *collections: Collection) -> list[str]:
    """The questions of `qa_path` that some chunk of `collections` holds (case and spacing
    aside): a set whose builder left a question in the corpus (a heading it did not cut, a
    link that names the question by its title, a reST label spelled from it,
    `why-can-t-i-use-an-assignment-in-an-expression`) lets a search find the question rather
    than its answer. A question of `_ASKED_WORDS` words or more is found by any run of that
    many of its words (punctuation aside), a shorter one only whole, as written. A question
    split between two chunks is not seen."""
    asked: dict[str, str] = {}
    runs: dict[tuple[str, ...], str] = {}
    for item in json.loads(qa_path.read_text(encoding="utf-8")):
        if not (isinstance(item, dict) and item.get("question")):
            continue
        question = str(item["question"])
        said = words(question)
        if len(said) < _ASKED_WORDS:
            asked[" ".join(question.lower().split())] = question
        runs.update(dict.fromkeys(ngrams(said, _ASKED_WORDS), question))
    found: set[str] = set()
    for collection in collections:
        for chunk in collection.scan(with_text=True):
            text = " ".join((chunk.text or "").lower().split())
            found.update(question for q, question in asked.items() if q in text)
            found.update(runs[run] for run in ngrams(words(text), _ASKED_WORDS) if run in runs)
    return sorted(found)


DEV_SETS = {
    "python": eval_set,
    "sqlite": sqlite_set,
    "git": git_set,
    "gtk": gtk_set,
    "ffmpeg": ffmpeg_set,
    "sqlite-pdf": sqlite_pdf_set,
    "git-pdf": git_pdf_set,
    "sqlite-md": sqlite_md_set,
    "git-md": git_md_set,
    "sqlite-txt": sqlite_txt_set,
    "git-txt": git_txt_set,
    "python-html": python_html_set,
    "python-div": python_div_set,
    "python-page": python_page_set,
}
"""The developers' sets a bench can score, by name (`--sets`)."""
DEFAULT_SETS = ("python", "sqlite")
"""The sets every retrieval change is measured on, a bench's default `--sets`: Python docs
(reStructuredText) and SQLite docs (HTML). The Git docs set (HTML, 20 questions) is opt-in."""


def add_set_options(parser: argparse.ArgumentParser) -> None:
    """`--subset` and `--sets`, for a bench that scores the developers' sets."""
    parser.add_argument("--subset", choices=["small", "full"], default="small")
    parser.add_argument(
        "--sets",
        default=",".join(DEFAULT_SETS),
        help="comma-separated: " + ", ".join(DEV_SETS) + f" (default: {','.join(DEFAULT_SETS)})",
    )


def chosen_sets(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The set names `--sets` asked for (an unknown one is a usage error)."""
    names = [name.strip() for name in args.sets.split(",") if name.strip()]
    unknown = sorted(set(names) - set(DEV_SETS))
    if unknown:
        parser.error(f"unknown set(s) {unknown}: choose from {', '.join(DEV_SETS)}")
    return names


def questions(subset: str = "small") -> list[str]:
    return [q["question"] for q in json.loads((eval_set(subset) / "qa.json").read_text())]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- chunks ------------------------------------------------------------------------------------
def source_collection() -> Path:
    """The full corpus ingested once by the real pipeline (cached)."""
    corpus = eval_set("full") / "corpus"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
    env.update(RAGTUNE_DATA_DIR=str(SOURCE_DIR), RAGTUNE_CONFIG="none")
    print("ingesting the full corpus (cached after the first run)...", file=sys.stderr)
    subprocess.run(
        [str(Path(sys.executable).parent / "ragtune"), "ingest", str(corpus), "--json"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return SOURCE_DIR


def load_source() -> list[tuple[str, str, dict, list[float]]]:  # type: ignore[type-arg]
    """Every chunk of the full ingest: id, text, metadata, vector."""
    settings = RetrievalSettings(data_dir=source_collection())
    with open_store(settings, "read") as store:
        collection = store.collection("default", MODEL_ID)
        raw = collection._raw  # type: ignore[attr-defined]  # the bench reads vectors back
        rows = []
        offset = 0
        while True:
            page = raw.get(
                include=["documents", "metadatas", "embeddings"], limit=5000, offset=offset
            )
            for i, t, m, e in zip(
                page["ids"], page["documents"], page["metadatas"], page["embeddings"], strict=True
            ):
                rows.append((i, t, dict(m), [float(x) for x in e]))
            if len(page["ids"]) < 5000:
                return rows
            offset += 5000


def _varied(text: str, copy: int, rng: random.Random) -> str:
    words = text.split()
    for _ in range(max(1, len(words) // 20)):  # swap a few neighbouring words
        i = rng.randrange(max(1, len(words) - 1))
        words[i : i + 2] = words[i : i + 2][::-1]
    return f"[variant {copy}] " + " ".join(words)


def fill(collection: Collection, rows: list, size: int) -> None:  # type: ignore[type-arg]
    """`size` chunks from `rows`; past the real ones, copies with lightly reordered words, a copy
    tag and noisy vectors, so that BM25 and HNSW see distinct chunks."""
    rng = random.Random(size)
    batch: list[ChunkRecord] = []
    for n in range(size):
        chunk_id, text, meta, vector = rows[n % len(rows)]
        copy = n // len(rows)
        if copy:
            text = _varied(text, copy, rng)
            noisy = [x + rng.gauss(0, 0.01) for x in vector]
            norm = sum(x * x for x in noisy) ** 0.5
            vector = [x / norm for x in noisy]
            meta = {**meta, "doc_id": f"{meta['doc_id']}-{copy}"}
        batch.append(ChunkRecord(f"{chunk_id}-{copy}", text, meta, vector))
        if len(batch) == 5000:
            collection.add(batch)
            batch = []
    collection.add(batch)


def collection_dir(chunks: int) -> Path:
    """A data dir holding the `default` collection of `chunks` Python-docs chunks and its BM25
    index, built once (in place: the lexical index is keyed by the store's path) and cached."""
    data_dir = (CACHE / "bench" / f"api-{chunks}").resolve()
    done = data_dir / "bench-complete.json"
    if done.is_file():
        return data_dir
    shutil.rmtree(data_dir, ignore_errors=True)
    print(f"building the {chunks:,}-chunk collection (cached after the first run)...", flush=True)
    rows = load_source()
    settings = RetrievalSettings(data_dir=data_dir)
    with open_store(settings, "write") as store:
        collection = store.collection(settings.collection, MODEL_ID, create=True)
        fill(collection, rows, chunks)
        LexicalIndexes.for_store(data_dir, store).current(collection)
        count = collection.count()
    done.write_text(json.dumps({"chunks": count}) + "\n")
    return data_dir


# -- the engine and the API --------------------------------------------------------------------
def free_port(env_name: str) -> int:
    """The port named by `env_name` in the environment, else a free one."""
    if os.environ.get(env_name):
        return int(os.environ[env_name])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def default_model() -> Path:
    """SmolLM2-135M-Instruct, prepared once under the benches' cache."""
    return prepare_default_model(CACHE / "bench" / "models").path.resolve()


def engine_settings(data_dir: Path, **overrides: Any) -> EngineSettings:
    """A fresh engine as `ragtune engine start` runs it, for the benches: the default model in
    float32, LoRA on, 2,048 tokens of context, its own key. `overrides` are EngineSettings
    fields."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "model": str(default_model()),
        "served_model_name": DEFAULT_MODEL_NAME,
        "engine_python": Path(
            os.environ.get("RAGTUNE_ENGINE_PYTHON") or REPO / ".venv-engine" / "bin" / "python"
        ),
        "engine_port": free_port("BENCH_ENGINE_PORT"),
        "max_loras": 1,
        "max_model_len": 2048,
        "engine_api_key": ENGINE_API_KEY,
        **overrides,
    }
    return EngineSettings(**values)


def use_api_settings(data_dir: Path, engine: EngineSettings, **extra: str) -> None:
    """Configure ragtune through the environment only, so that this process's settings and
    the API process's are the same settings, read the same way."""
    for name in [n for n in os.environ if n.startswith("RAGTUNE_")]:
        del os.environ[name]
    os.environ.update(
        RAGTUNE_CONFIG="none",  # no ragtune.toml from the working directory
        RAGTUNE_DATA_DIR=str(data_dir),
        RAGTUNE_MODEL=str(engine.model),
        RAGTUNE_SERVED_MODEL_NAME=DEFAULT_MODEL_NAME,
        RAGTUNE_VLLM_URL=engine.engine_url,
        RAGTUNE_MAX_MODEL_LEN=str(engine.max_model_len),
        RAGTUNE_MAX_LORAS=str(engine.max_loras),
        RAGTUNE_API_KEYS=API_KEY,
        RAGTUNE_ADMIN_API_KEYS=ADMIN_KEY,
        RAGTUNE_ENGINE_API_KEY=ENGINE_API_KEY,
        **extra,
    )


@dataclass(frozen=True)
class Running:
    engine_url: str
    engine_ready_s: float
    api_url: str | None = None


@contextlib.contextmanager
def running(engine: EngineSettings, *, api_log: Path | None = None) -> Iterator[Running]:
    """Start the engine, and with `api_log`, `ragtune serve --no-start-engine` attached to it
    (configured by `use_api_settings`, called first); stop whatever was started at the end."""
    launcher = EngineLauncher(engine)
    api: subprocess.Popen[bytes] | None = None
    started = time.perf_counter()
    try:
        launcher.start()
        ready_s = time.perf_counter() - started
        print(f"engine ready in {ready_s:.1f} s", flush=True)
        if api_log is None:
            yield Running(engine.engine_url, ready_s)
            return
        port = free_port("BENCH_API_PORT")
        api_url = f"http://127.0.0.1:{port}"
        api = _start_api(port, api_log)
        _wait_ready(api_url, api, api_log, timeout_s=180)
        print(f"API ready at {api_url}", flush=True)
        yield Running(engine.engine_url, ready_s, api_url)
    finally:
        if api is not None:
            _stop_api(api)
        launcher.stop()


def _start_api(port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).parent / "ragtune"),
        "serve",
        "--no-start-engine",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0) as http:
        while True:
            if process.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"the API exited while starting:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{url}/ready").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API was not ready after {timeout_s:g} s (log: {log})")
            time.sleep(0.5)


def _stop_api(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
