"""Kill a running kikimimi process with SIGKILL once it has written a given file (resume tests)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def kill_when_written(proc: subprocess.Popen, path: Path, timeout_s: float = 120.0) -> None:
    """Wait until ``path`` exists (the process must still run), then ``kill -9`` it and reap it."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"no {path.name} within {timeout_s:.0f} s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
