"""Runs the engine as its child and ends the engine's whole process group when the process that
started it is gone, however it went (`ragtune serve` killed with SIGKILL included).

    python -I serving/engine/watchdog.py FD GRACE_S -- COMMAND...

FD is the read end of a pipe whose write end only the starting process holds: it never writes,
so end-of-file means that process has exited and the kernel closed its end. The watchdog leads
the engine's process group (the launcher starts it in a new session), so signalling the group
reaches vLLM and the processes vLLM started. Standard library only: it runs before, and apart
from, everything else.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time


def end_group(engine: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to the group, `grace_s` for the engine to stop, then SIGKILL to the group: what the
    engine left behind, and this process with it."""
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while engine.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(0, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    lifeline, grace_s, command = int(argv[0]), float(argv[1]), argv[3:]
    # `ragtune engine stop` signals the whole group, the engine included: this process outlives
    # the signal and exits with the engine's status once the engine has stopped.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    engine = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    while engine.poll() is None:
        readable, _, _ = select.select([lifeline], [], [], 0.5)
        if readable and not os.read(lifeline, 1):
            end_group(engine, grace_s)
    code = engine.returncode
    return code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
