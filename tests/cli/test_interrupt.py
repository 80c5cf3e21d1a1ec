"""Ctrl-C stops a long command even when code on its way swallows the KeyboardInterrupt (a
bare `except:` in a library, a finalizer): the command stops at its next step."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
from collections.abc import Iterator

import pytest
from rich.console import Console

from ragtune.cli import interrupt
from ragtune.cli.ingest import RichProgress


@pytest.fixture
def installed() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGINT)
    interrupt.install()
    yield
    interrupt.install()  # nothing remembered for the next test
    signal.signal(signal.SIGINT, previous)


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
