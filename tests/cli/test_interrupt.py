"""Ctrl-C stops a long command even when code on its way swallows the KeyboardInterrupt (a
bare `except:` in a library, a finalizer): the command stops at its next step."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from ragtune.cli import interrupt
from ragtune.cli.ingest import RichProgress


@pytest.fixture
def installed() -> Iterator[None]:
    previous, previous_hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    interrupt.install()
    yield
    interrupt.install()  # nothing remembered for the next test
    signal.signal(signal.SIGINT, previous)
    sys.unraisablehook = previous_hook


def test_a_swallowed_ctrl_c_stops_ingestion_at_its_next_step(installed: None) -> None:
    progress = RichProgress(Console(file=io.StringIO()))
    progress.embedded(3)  # no Ctrl-C yet: it goes on
    with contextlib.suppress(KeyboardInterrupt):  # what a bare `except:` on the way does
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler runs here, long before the end
    assert interrupt.requested()
    with pytest.raises(KeyboardInterrupt):
        progress.embedded(3)
    with pytest.raises(KeyboardInterrupt):
        interrupt.stop_if_interrupted()
    interrupt.install()  # a new command remembers nothing
    assert not interrupt.requested()
    progress.embedded(3)


class _Finalized:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __del__(self) -> None:
        raise self.error


def test_a_ctrl_c_in_a_finalizer_is_remembered_not_printed(installed: None) -> None:
    shown: list[BaseException | None] = []
    sys.unraisablehook = lambda unraisable: shown.append(unraisable.exc_value)
    interrupt.install()  # over the hook that was there (here: one that records)
    # where the CLI's Ctrl-C once landed: a library object's __del__, which Python can only print
    _Finalized(KeyboardInterrupt())
    assert interrupt.requested()
    assert shown == []
    # anything else a finalizer raises still goes to the hook that was there before
    failure = ValueError("a finalizer's own failure")
    _Finalized(failure)
    assert shown == [failure]
    interrupt.install()  # twice: still the one hook, over the same previous one
    _Finalized(failure)
    assert shown == [failure, failure]


def test_a_hook_wrapping_the_interrupts_own_is_not_called_back_forever(
    installed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = sys.unraisablehook

    def wrapping(unraisable: Any) -> None:
        ours(unraisable)

    sys.unraisablehook = wrapping
    interrupt.install()  # over the wrapper, which calls it back
    _Finalized(ValueError("a finalizer's own failure"))
    err = capsys.readouterr().err
    assert "a finalizer's own failure" in err  # shown by Python's own hook, once
    assert "RecursionError" not in err
    _Finalized(KeyboardInterrupt())
    assert capsys.readouterr().err == ""
