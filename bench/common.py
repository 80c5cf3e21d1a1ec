"""What the benchmarks share: where the developers' evaluation sets are built and cached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILDER = REPO.parent / "shared" / "eval" / "build_python_docs.py"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragtune"
EVAL = Path(os.environ.get("RAGTUNE_EVAL_CACHE") or CACHE / "evalsets")
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def eval_set(subset: str) -> Path:
    """The Python FAQ / Python docs set (`small` or `full`), built once and cached."""
    out = EVAL / subset
    if not (out / "qa.json").is_file():
        subprocess.run([sys.executable, str(BUILDER), str(out), "--subset", subset], check=True)
    return out
