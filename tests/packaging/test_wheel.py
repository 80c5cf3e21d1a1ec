"""The wheel as users install it: everything under one `ragtune` name (nothing generic such as
`adapters` or `serving` at the top of site-packages), every module of every package in it, and
the `ragtune` command pointing at the CLI."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ingest", "retrieval", "adapters", "serving", "evals", "cli")
"""The top-level folders that install as `ragtune.<folder>` (design.md's layout)."""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """`python -m build --wheel` of a copy holding what the Dockerfile copies: the build writes
    nothing into the checkout, and a file it needs from elsewhere fails here too."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the setuptools of this environment, no download.
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = out.glob("ragtune-*.whl")
    return zipfile.ZipFile(path)


def test_nothing_but_ragtune_lands_at_the_top(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/")[0] for name in wheel.namelist()}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert len(dist_info) == 1
    assert top - dist_info == {"ragtune"}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_in_the_wheel(wheel: zipfile.ZipFile, package: str) -> None:
    """A subpackage left out of pyproject's explicit `packages` list would be missing here (and
    its imports would fail only once installed)."""
    in_wheel = set(wheel.namelist())
    modules = sorted(
        p.relative_to(REPO).as_posix()
        for p in (REPO / package).rglob("*.py")
        if "__pycache__" not in p.parts
    )
    assert modules
    missing = [m for m in modules if f"ragtune/{m}" not in in_wheel]
    assert not missing, f"not in the wheel (add their package to pyproject.toml): {missing}"


def test_the_command_is_the_cli(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert dict(parser["console_scripts"]) == {"ragtune": "ragtune.cli.app:main"}
