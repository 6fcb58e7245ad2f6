"""Run kikimimi as a child process in tests: kill it with SIGKILL mid-run (resume tests), or run it to
the end and fail with its stderr."""

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


def run_ok(cmd: list[str], tail_lines: int = 40, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd)`` with captured text output; a non-zero exit fails the test with the end of the
    command's stderr (``check=True`` alone would hide why a child kikimimi process failed)."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout or "").splitlines()[-tail_lines:])
        raise AssertionError(f"exit {done.returncode} from {' '.join(map(str, cmd))}\n{tail}")
    return done
