"""The `ragtune ingest`, `docs` and `search` commands, run as processes on the real corpus
with the real embedding model and a real Chroma: embedded, and as a server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import RAGTUNE, env_for, ragtune, ragtune_json

pytestmark = pytest.mark.slow


def test_ingest_reports_every_file(ingested: tuple[Path, dict], eval_small: Path) -> None:  # type: ignore[type-arg]
    _, summary = ingested
    files = sorted((eval_small / "corpus").rglob("*.rst.txt"))
    assert summary["counts"]["new"] == len(files) == 46
    assert summary["counts"]["failed"] == 0
    assert summary["chunks_embedded"] == sum(f["chunks"] for f in summary["files"]) > 1000


def test_reingest_of_unchanged_corpus_embeds_nothing(
    ingested: tuple[Path, dict],  # type: ignore[type-arg]
    eval_small: Path,
) -> None:
    data_dir, first = ingested
    again = ragtune_json("ingest", eval_small / "corpus", data_dir=data_dir)
    assert again["counts"]["unchanged"] == 46
    assert again["chunks_embedded"] == 0
    assert again["seconds"] < first["seconds"] / 10


def test_search_finds_the_answer(ingested: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    data_dir, _ = ingested
    hits = ragtune_json(
        "search", "How do I read a file one line at a time?", "-k", "3", data_dir=data_dir
    )
    assert hits[0]["source"].endswith("tutorial/inputoutput.rst.txt")
    assert "for line in f" in " ".join(h["text"] for h in hits)
    result = ragtune("search", "Why is Python indented?", data_dir=data_dir)
    assert result.returncode == 0
    assert "design.rst.txt" in result.stdout


def test_docs_list(ingested: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    data_dir, summary = ingested
    documents = ragtune_json("docs", "list", data_dir=data_dir)
    assert len(documents) == 46
    assert sum(d["chunks"] for d in documents) == summary["chunks_embedded"]
    faq = next(d for d in documents if d["source"].endswith("faq/design.rst.txt"))
    assert faq["title"] == "Design and History FAQ"
    assert faq["file_type"] == "rst"


def test_another_process_cannot_write_while_the_store_is_open(
    ingested: tuple[Path, dict],  # type: ignore[type-arg]
    eval_small: Path,
) -> None:
    data_dir, _ = ingested
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from retrieval.settings import RetrievalSettings\n"
            "from retrieval.store import open_store\n"
            "with open_store(RetrievalSettings(), 'read') as store:\n"
            "    print(store.collection('default', 'sentence-transformers/all-MiniLM-L6-v2')"
            ".count(), flush=True)\n"
            "    time.sleep(60)\n",
        ],
        env=env_for(data_dir),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None
        count = int(reader.stdout.readline())
        (extra := data_dir.parent / "extra").mkdir(exist_ok=True)
        (extra / "new.md").write_text("# New\nA new document.\n")
        result = ragtune("ingest", extra, data_dir=data_dir)
        assert result.returncode == 2
        assert "in use by another process" in result.stderr
        assert "RAGTUNE_CHROMA_URL" in result.stderr
        assert "Traceback" not in result.stderr
        # a second reader is fine
        assert ragtune("search", "exceptions", data_dir=data_dir).returncode == 0
    finally:
        reader.kill()
        reader.communicate()
    documents = ragtune_json("docs", "list", data_dir=data_dir)
    assert sum(d["chunks"] for d in documents) == count


def test_docs_rm_removes_every_chunk(faq_docs: Path, eval_small: Path) -> None:
    data_dir, faq = faq_docs, eval_small / "corpus" / "faq"  # faq ingested as faq-docs
    collection = ("-c", "faq-docs")
    before = ragtune_json("docs", "list", *collection, data_dir=data_dir)
    assert [d for d in before if d["source"].endswith("design.rst.txt")]
    missing = ragtune("docs", "rm", faq / "nope.rst.txt", *collection, data_dir=data_dir)
    assert missing.returncode == 2
    assert "not in collection" in missing.stderr
    empty = ragtune("docs", "rm", faq / "design.rst.txt", "", *collection, data_dir=data_dir)
    assert empty.returncode == 2
    assert "empty (nothing was removed)" in empty.stderr
    assert len(ragtune_json("docs", "list", *collection, data_dir=data_dir)) == len(before)
    removed = ragtune("docs", "rm", faq / "design.rst.txt", *collection, data_dir=data_dir)
    assert removed.returncode == 0, removed.stderr
    documents = ragtune_json("docs", "list", *collection, data_dir=data_dir)
    assert not [d for d in documents if d["source"].endswith("design.rst.txt")]
    assert len(documents) == len(before) - 1
    hits = ragtune_json(
        "search", "Why does Python use indentation?", "-k", "10", *collection, data_dir=data_dir
    )
    assert not [h for h in hits if h["source"].endswith("design.rst.txt")]
    assert (faq / "design.rst.txt").is_file()  # the document's file is left alone


def test_exit_status_and_summary_for_bad_input(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\nA good document about llamas.\n")
    (docs / "bad.txt").write_bytes(b"\x00\x01\x02" * 100)
    result = ragtune("ingest", docs, tmp_path / "nope", data_dir=data_dir)
    assert result.returncode == 1
    assert "bad.txt: binary content" in result.stdout
    assert "nope: no such file or directory" in result.stdout
    ok = ragtune("ingest", docs / "good.md", data_dir=data_dir)
    assert ok.returncode == 0
    # Read as a path, "" is the current folder (the test's: the whole repository).
    empty = ragtune("ingest", docs / "good.md", "", data_dir=data_dir)
    assert empty.returncode == 2
    assert "an empty PATH names no file" in empty.stderr
    bad_meta = ragtune("ingest", docs, "--meta", "source=x", data_dir=data_dir)
    assert bad_meta.returncode == 2
    assert "reserved" in bad_meta.stderr
    assert "Traceback" not in bad_meta.stderr


def test_a_collection_refuses_another_embedding_model(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\nSome text.\n")
    assert ragtune("ingest", docs, data_dir=data_dir).returncode == 0
    other = tmp_path / "other-model"
    other.mkdir()
    for command in (("ingest", docs), ("search", "text")):
        result = ragtune(*command, data_dir=data_dir, RAGTUNE_EMBEDDING_MODEL=str(other))
        assert result.returncode == 2
        assert "was built with embedding model" in result.stderr
        assert "sentence-transformers/all-MiniLM-L6-v2" in result.stderr


def test_killed_ingest_leaves_a_usable_store_and_the_rerun_completes(
    tmp_path: Path,
    eval_small: Path,
    ingested: tuple[Path, Any],
) -> None:
    corpus = eval_small / "corpus" / "howto"  # about 1,200 chunks: half a minute of work
    # Killed mid-way: after 12 s, or, on a machine so loaded that nothing was stored by then
    # (the embedded store cannot be read while the command holds it), in a new store after
    # 25 s, then 50 s.
    partial: list[Any] = []
    for wait in (12, 25, 50):
        killed_dir = tmp_path / f"killed-{wait}"
        process = subprocess.Popen(
            [RAGTUNE, "ingest", str(corpus)],
            env=env_for(killed_dir, RAGTUNE_EMBED_WINDOW="32"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(wait)
        assert process.poll() is None, "ingest finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
        listed = ragtune("docs", "list", "--json", data_dir=killed_dir)
        partial = json.loads(listed.stdout) if listed.returncode == 0 else []
        if partial:
            break
    assert 0 < len(partial) < len(list(corpus.rglob("*.rst.txt")))
    rerun = ragtune_json("ingest", corpus, data_dir=killed_dir)
    assert rerun["counts"]["failed"] == 0
    done = ragtune_json("docs", "list", data_dir=killed_dir)
    # the same documents and chunks as an uninterrupted ingest of the same files
    reference = [
        d for d in ragtune_json("docs", "list", data_dir=ingested[0]) if "/howto/" in d["source"]
    ]
    fields = ("source", "chunks", "doc_id")
    assert [{k: d[k] for k in fields} for d in done] == [
        {k: d[k] for k in fields} for d in reference
    ]
    total = sum(d["chunks"] for d in done)
    assert 0 < rerun["chunks_embedded"] < total  # finished the work, did not start over
    hits = ragtune_json("search", "sorting with a key function", data_dir=killed_dir)
    assert len({h["chunk_id"] for h in hits}) == len(hits) == 5


def test_ctrl_c_stops_cleanly(tmp_path: Path, eval_small: Path) -> None:
    process = subprocess.Popen(
        [RAGTUNE, "ingest", str(eval_small / "corpus" / "howto")],
        # faulthandler: a command still running after Ctrl-C prints where it is on SIGABRT
        env=env_for(tmp_path / "data", RAGTUNE_EMBED_WINDOW="32", PYTHONFAULTHANDLER="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(10)
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _, stderr = process.communicate(timeout=30)
        pytest.fail(f"ingest still running 60 s after Ctrl-C; where it was:\n{stderr[-4000:]}")
    assert process.returncode == 130
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    assert ragtune("docs", "list", data_dir=tmp_path / "data").returncode == 0


@pytest.mark.chroma_server
def test_ingest_into_a_chroma_server_while_another_process_reads(
    chroma_server: str, tmp_path: Path, eval_small: Path
) -> None:
    data_dir = tmp_path / "data"
    server = {"RAGTUNE_CHROMA_URL": chroma_server, "RAGTUNE_COLLECTION": "served"}
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "seed.md").write_text("# Seed\nThe seed document mentions llamas.\n")
    assert ragtune("ingest", seed, data_dir=data_dir, **server).returncode == 0
    searcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "deadline = time.time() + 25\n"
            "while time.time() < deadline:\n"
            f"    r = subprocess.run([{RAGTUNE!r}, 'search', 'llamas', '--json'],"
            " capture_output=True, text=True)\n"
            "    if r.returncode: print(r.stderr); sys.exit(1)\n",
        ],
        env=env_for(data_dir, **server),
        stdout=subprocess.PIPE,
        text=True,
    )
    summary = ragtune_json("ingest", eval_small / "corpus" / "faq", data_dir=data_dir, **server)
    out, _ = searcher.communicate(timeout=120)
    assert searcher.returncode == 0, out
    assert summary["counts"]["new"] == len(list((eval_small / "corpus" / "faq").glob("*.rst.txt")))
    hits = ragtune_json("search", "Why does Python use indentation?", data_dir=data_dir, **server)
    assert any(h["source"].endswith("faq/design.rst.txt") for h in hits)
    assert not (data_dir / "chroma").exists()  # nothing embedded was used


def test_brackets_in_documents_are_shown_as_written(tmp_path: Path) -> None:
    """A document's text, name and title are data, never console markup: `list[int]` keeps its
    brackets, `[/x]` (a closing tag with no opening one) does not crash the command."""
    data_dir = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    text = (
        "# Types [bold]\nAnnotate llamas as list[int] and close with [/x] here.\n\n"
        "Colour \x1b[31mred\x1b[0m and a title \x1b]0;pwned\x07 stay text.\n"
    )
    (docs / "a[b].md").write_text(text)
    (docs / "e\x1b[31mx.md").write_text("# Escaped\nA name with an escape in it.\n")
    (docs / "bad[red].txt").write_bytes(b"\x00\x01\x02" * 100)
    ingest = ragtune("ingest", docs, data_dir=data_dir)
    assert ingest.returncode == 1, ingest.stderr
    assert "bad[red].txt: binary content" in ingest.stdout
    listed = ragtune("docs", "list", data_dir=data_dir)
    assert listed.returncode == 0, listed.stderr
    assert "a[b].md" in listed.stdout
    assert "Types [bold]" in listed.stdout
    # Terminal control is data: shown as escapes, never sent to the terminal.
    assert "e\\x1b[31mx.md" in listed.stdout
    assert "\x1b" not in listed.stdout
    found = ragtune("search", "llamas list[int]", data_dir=data_dir)
    assert found.returncode == 0, found.stderr
    assert "list[int] and close with [/x] here" in found.stdout
    # Control characters no reader sees are not a document's text (loaders leave them out).
    assert "Colour [31mred[0m and a title ]0;pwned stay text" in found.stdout
    assert "\x1b" not in found.stdout
    assert "a[b].md" in found.stdout
    removed = ragtune("docs", "rm", docs / "a[b].md", data_dir=data_dir)
    assert removed.returncode == 0, removed.stderr
    assert "a[b].md (1 chunks)" in removed.stdout
