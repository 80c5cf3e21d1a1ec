"""Run the installed `ragtune` command as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RAGTUNE = str(Path(sys.executable).parent / "ragtune")


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
    env.update(
        RAGTUNE_DATA_DIR=str(data_dir),
        RAGTUNE_CONFIG=str(data_dir / "no-config.toml"),
        HF_HUB_OFFLINE="1",
        ANONYMIZED_TELEMETRY="False",
        COLUMNS="200",
    )
    env.update(extra)
    return env


def ragtune(
    *args: str | Path, data_dir: Path, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAGTUNE, *map(str, args)],
        env=env_for(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ragtune_json(*args: str | Path, data_dir: Path, **env: str) -> Any:
    result = ragtune(*args, "--json", data_dir=data_dir, **env)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)
