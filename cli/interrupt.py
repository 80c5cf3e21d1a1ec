"""Ctrl-C that stops a long command even when something on the way swallows it.

Python turns SIGINT into KeyboardInterrupt wherever the main thread is; when that is inside code
that catches everything (a bare `except:` around an optional import in the model stack, a
finalizer, whose exceptions Python only prints), the interrupt is lost and the command runs on
to its end. `main` installs `on_sigint`, which also remembers the interrupt; long commands call
`stop_if_interrupted` between steps, so one Ctrl-C stops them at the next step at the latest.
A KeyboardInterrupt that lands in a finalizer is remembered too, and not printed: Python would
show it as "Exception ignored in ..." with a traceback, for an interrupt the command then
reports as one line.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_requested = threading.Event()


def on_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGINT: KeyboardInterrupt here, as Python's own handler does, and remembered."""
    _requested.set()
    raise KeyboardInterrupt


def on_unraisable(unraisable: Any) -> None:
    """`sys.unraisablehook`: a KeyboardInterrupt Python could not raise (it came in a finalizer)
    is remembered and not printed; anything else goes to the hook this one replaced."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _requested.set()
        return
    if getattr(_passing_on, "now", False):  # the hook we replaced calls this one back
        sys.__unraisablehook__(unraisable)
        return
    _passing_on.now = True
    try:
        _replaced.hook(unraisable)
    finally:
        _passing_on.now = False


class _Replaced:
    def __init__(self) -> None:
        self.hook: Callable[[Any], object] = sys.unraisablehook
        """The `sys.unraisablehook` that `on_unraisable` replaced."""


_replaced = _Replaced()
_passing_on = threading.local()


def install() -> None:
    """Install `on_sigint` (from the main thread only, as `signal` requires) and
    `on_unraisable`, with no Ctrl-C remembered yet."""
    _requested.clear()
    if sys.unraisablehook is not on_unraisable:
        _replaced.hook = sys.unraisablehook
        sys.unraisablehook = on_unraisable
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)


def requested() -> bool:
    """Whether Ctrl-C came since `install`, swallowed or not."""
    return _requested.is_set()


def stop_if_interrupted() -> None:
    """KeyboardInterrupt again when a Ctrl-C came and was swallowed on its way."""
    if _requested.is_set():
        raise KeyboardInterrupt
