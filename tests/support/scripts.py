"""Load a bench script by its path: bench/ is no package that code imports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_script(path: Path) -> ModuleType:
    """The script at `path` as a module named after its file (registered in `sys.modules`, so
    that its dataclasses and pickles resolve)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
