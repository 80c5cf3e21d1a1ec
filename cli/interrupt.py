"""Ctrl-C that stops a long command even when something on the way swallows it.

Python turns SIGINT into KeyboardInterrupt wherever the main thread is; when that is inside code
that catches everything (a bare `except:` around an optional import in the model stack, a
finalizer, whose exceptions Python only prints), the interrupt is lost and the command runs on
to its end. `main` installs `on_sigint`, which also remembers the interrupt; long commands call
`stop_if_interrupted` between steps, so one Ctrl-C stops them at the next step at the latest.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_requested = threading.Event()


def on_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGINT: KeyboardInterrupt here, as Python's own handler does, and remembered."""
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """Install `on_sigint` (from the main thread only, as `signal` requires), with no Ctrl-C
    remembered yet."""
    _requested.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)


def requested() -> bool:
    """Whether Ctrl-C came since `install`, swallowed or not."""
    return _requested.is_set()


def stop_if_interrupted() -> None:
    """KeyboardInterrupt again when a Ctrl-C came and was swallowed on its way."""
    if _requested.is_set():
        raise KeyboardInterrupt
