"""Kill a running kikimimi process with SIGKILL mid-run (resume tests)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    """Wait until ``ready()`` is true (the process must still run), then ``kill -9`` it and reap it."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}, so it could not be killed mid-run"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def kill_when_written(proc: subprocess.Popen, path: Path, timeout_s: float = 120.0) -> None:
    """Wait until ``path`` exists (the process must still run), then ``kill -9`` it and reap it."""
    kill_when(proc, path.exists, path.name, timeout_s)


def count_lines(path: Path) -> int:
    """Complete lines in ``path`` (0 while it does not exist)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0
