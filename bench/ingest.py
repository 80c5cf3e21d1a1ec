"""Ingestion benchmark: `ragtune ingest` on the Python docs against raw model encoding.

    .venv/bin/python bench/ingest.py [--subset full|small] [--batch-size 32]

Measured in one run, each step in its own process:
1. `ragtune ingest CORPUS --json` into a fresh store: files/s, chunks/s, peak RSS;
2. the same command again on the unchanged corpus (should embed nothing);
3. `SentenceTransformer.encode` alone on exactly the texts the pipeline embedded (the same
   loaders and chunker, untimed), with the same batch size: the floor, since embedding is the
   work that cannot be skipped.
Targets: pipeline >= 0.85x raw encode throughput; re-ingest <= 5% of the first; RSS <= 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The repository root goes first on the path, not bench/ (whose ingest.py would otherwise
# shadow the `ingest` package when a bench runs as a script).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import eval_set

BIN = Path(sys.executable).parent
GIB = 1024**3

RAW_ENCODE = r"""
import json, os, sys, time
from pathlib import Path
os.environ["HF_HUB_OFFLINE"] = "1"
from ragtune.ingest.chunking import Chunker
from ragtune.ingest.loaders import load_document
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.embedder import SentenceTransformerEmbedder
# Exactly the texts the pipeline embedded: the same loaders and chunker, the same settings.
embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
s = IngestSettings()
chunker = Chunker(embedder, s.chunk_max_tokens, s.chunk_overlap_tokens, s.embed_headings,
                  s.split_on_blank_lines)
texts = [c.embed_text for path in sorted(Path(sys.argv[2]).rglob("*.rst.txt"))
         for c in chunker.chunk(load_document(path, path.read_bytes()))]
model = embedder._model
model.encode(texts[:64], batch_size=int(sys.argv[1]))  # warm-up
start = time.perf_counter()
model.encode(texts, batch_size=int(sys.argv[1]), normalize_embeddings=True)
print(json.dumps({"texts": len(texts), "seconds": time.perf_counter() - start}))
"""


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode not in (0, 1):
        sys.exit(f"{' '.join(command)} failed with status {process.returncode}")
    return wall, usage.ru_maxrss * 1024, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subset", choices=["full", "small"], default="full")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    docs = eval_set(args.subset) / "corpus"
    files = len(list(docs.rglob("*.rst.txt")))
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
        env.update(
            RAGTUNE_DATA_DIR=str(Path(tmp) / "data"),
            RAGTUNE_EMBEDDING_BATCH_SIZE=str(args.batch_size),
            RAGTUNE_CONFIG="none",
            HF_HUB_OFFLINE="1",
        )
        ingest = [str(BIN / "ragtune"), "ingest", str(docs), "--json"]
        first_wall, first_rss, out = timed(ingest, env)
        first = json.loads(out)
        again_wall, _, out = timed(ingest, env)
        again = json.loads(out)
        _, raw_rss, out = timed(
            [sys.executable, "-c", RAW_ENCODE, str(args.batch_size), str(docs)], env
        )
        raw = json.loads(out)

    chunks = first["chunks_embedded"]
    assert raw["texts"] == chunks, (raw["texts"], chunks)
    pipeline_cps = chunks / first["seconds"]
    wall_cps = chunks / first_wall
    raw_cps = raw["texts"] / raw["seconds"]
    rows = [
        ("corpus", f"{args.subset}: {files} files, {chunks} chunks, batch {args.batch_size}"),
        ("first ingest", f"{first_wall:.1f}s wall, {first['seconds']:.1f}s in the run"),
        ("files/s", f"{files / first['seconds']:.2f}"),
        ("chunks/s pipeline", f"{pipeline_cps:.1f} (whole process: {wall_cps:.1f})"),
        ("chunks/s raw encode", f"{raw_cps:.1f}"),
        ("re-ingest", f"{again_wall:.2f}s wall, {again['chunks_embedded']} chunks embedded"),
        ("peak RSS", f"ingest {first_rss / GIB:.2f} GiB, raw encode {raw_rss / GIB:.2f} GiB"),
    ]
    ratios = [
        ("pipeline / raw encode throughput", pipeline_cps / raw_cps, ">= 0.85"),
        ("  (whole process incl. start-up)", wall_cps / raw_cps, "(info)"),
        ("re-ingest / first ingest time", again_wall / first_wall, "<= 0.05"),
        ("peak RSS / 2 GiB", first_rss / (2 * GIB), "<= 1.00"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print()
    for name, ratio, target in ratios:
        print(f"{name:<34} {ratio:6.3f}   target {target}")


if __name__ == "__main__":
    main()
