"""Cumulative ingestion counters (runs, files by outcome, chunks), kept in the data directory
so that the API, another process, can publish them on /metrics."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from ragtune.ingest.pipeline import FileStatus, IngestSummary


def ingest_counters_path(data_dir: Path) -> Path:
    return data_dir / "metrics" / "ingest.json"


def record_run(data_dir: Path, summary: IngestSummary) -> None:
    """Add one run's numbers (under a lock: several ingestions may finish at once)."""
    path = ingest_counters_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / ".ingest.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            counters: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            counters = {}
        files = counters.setdefault("files", {})
        for status in FileStatus:
            files[status.value] = files.get(status.value, 0) + summary.count(status)
        chunks = counters.setdefault("chunks", {})
        for action, value in (
            ("embedded", summary.chunks_embedded),
            ("reused", summary.chunks_reused),
            ("deleted", summary.chunks_deleted),
        ):
            chunks[action] = chunks.get(action, 0) + value
        counters["runs"] = counters.get("runs", 0) + 1
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(counters))
        os.replace(tmp, path)
