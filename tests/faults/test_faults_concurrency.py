"""Two processes writing into one output folder: the second stops at once with a clear message, the first
finishes a complete, uncorrupted output (:func:`kikimimi.fileio.output_lock`)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import official_layouts as ol
import pytest
import soundfile as sf
import torch
from clap_fakes import write_tiny_clap2025

from kikimimi.fileio import OutputInUseError, output_lock
from kikimimi.inference.search import SearchIndex

from .inputs import tone

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

HOLDER = textwrap.dedent("""
    import sys, time
    from kikimimi.fileio import output_lock
    with output_lock(sys.argv[1], sys.argv[2], rank=None if sys.argv[3] == "-" else int(sys.argv[3])):
        print("held", flush=True)
        time.sleep(60)
""")

# The second process imports everything first, then waits for the first one's lock before it runs the real
# program entry: so it reaches the lock while the first process is still working, however slow the machine.
SECOND = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import kikimimi.features.prep_cache, kikimimi.inference.search, kikimimi.inference.clap, kikimimi.inference.jobs
    from kikimimi.cli import console_main
    go = Path(sys.argv[1])
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    raise SystemExit(console_main(sys.argv[2:]))
""")


def _hold(folder: Path, what: str, rank: int | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), what, "-" if rank is None else str(rank)],
                            env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_output_lock_refuses_a_second_holder_at_once_and_is_freed_by_a_kill(tmp_path):
    out = tmp_path / "out"
    holder = _hold(out, "embed")
    try:
        with pytest.raises(OutputInUseError) as info, output_lock(out, "embed"):
            pass
        assert str(info.value) == (f"'{out}' is in use by another kikimimi embed (pid {holder.pid}); wait for it "
                                   "or choose another output")
        for other in ({"what": "prep"}, {"what": "embed", "rank": 1}):  # one lock for every job in a folder
            with pytest.raises(OutputInUseError, match=rf"kikimimi embed \(pid {holder.pid}\)"), \
                    output_lock(out, **other):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with output_lock(out, "embed") as lock_file:  # the kernel dropped the dead holder's lock
        assert lock_file.name == ".kikimimi.lock"
        assert (out / ".kikimimi.lock.pid").read_text().split() == [str(os.getpid()), "embed"]


def test_torchrun_ranks_lock_separately(tmp_path):
    out = tmp_path / "out"
    holders = [_hold(out, "embed", rank=r) for r in (0, 1)]  # two ranks of one job hold their locks together
    try:
        with pytest.raises(OutputInUseError, match=rf"pid {holders[1].pid}\)"), output_lock(out, "embed", rank=1):
            pass
    finally:
        for h in holders:
            h.send_signal(signal.SIGKILL)
            h.wait()


def _race(first_cmd: list[str], second_argv: list[str], pid_file: Path) -> tuple[subprocess.CompletedProcess,
                                                                                 subprocess.Popen, bool]:
    """Start the second process (pre-imported, waiting), then the first; returns (second's result, first
    process after it ended, whether the first was still running when the second had finished)."""
    second = subprocess.Popen([sys.executable, "-c", SECOND, str(pid_file), *second_argv], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen(first_cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out, err = second.communicate(timeout=180)
    first_still_running = first.poll() is None
    first.wait(timeout=180)
    return subprocess.CompletedProcess(second.args, second.returncode, out, err), first, first_still_running


def test_second_prep_into_the_same_cache_stops_at_once_and_the_first_completes(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(300):
        sf.write(audio / f"c{i:03d}.wav", tone(2.0, 200.0 + i), 16000, subtype="PCM_16")
    cache = tmp_path / "cache"
    argv = ["prep", str(audio), "-o", str(cache), "--workers", "1", "--quiet"]
    second, first, overlapped = _race([sys.executable, "-m", "kikimimi", *argv], argv,
                                      cache / ".kikimimi.lock.pid")
    assert overlapped, "the second prep must have ended while the first was still converting"
    assert second.returncode == 2
    assert second.stderr.strip() == (f"kikimimi prep: error: '{cache}' is in use by another kikimimi prep "
                                     f"(pid {first.pid}); wait for it or choose another output")
    assert first.returncode == 0, first.stderr.read()
    with open(cache / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300 and (cache / "errors.csv").read_text().strip() == "source,error"
    for row in rows:
        assert np.load(cache / row["file_name"]).shape[0] == 80
    again = subprocess.run([sys.executable, "-m", "kikimimi", *argv[:-1]], env=ENV, capture_output=True, text=True)
    assert again.returncode == 0 and "300 already cached" in again.stderr  # the lock was released


def test_second_index_into_the_same_folder_stops_at_once_and_the_first_completes(tmp_path):
    model = write_tiny_clap2025(tmp_path / "clap")
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(40):
        sf.write(audio / f"clip {i:02d}.wav", tone(4.0, 200.0 + 37 * i), 16000, subtype="PCM_16")
    out = tmp_path / "index"
    argv = ["index", str(audio), "-m", str(model), "-o", str(out), "--device", "cpu", "--batch-size", "1",
            "--save-every-s", "0"]
    second, first, overlapped = _race([sys.executable, "-m", "kikimimi", *argv], argv,
                                      out / ".kikimimi.lock.pid")
    assert overlapped, "the second index must have ended while the first was still embedding"
    assert second.returncode == 2
    assert f"'{out}' is in use by another kikimimi index (pid {first.pid})" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert first.returncode == 0, first.stderr.read()
    index = SearchIndex.load(out)
    assert len(index.entries) == 40 and np.isfinite(index.embeddings).all()


def test_second_embed_into_the_same_folder_stops_at_once(tmp_path):
    folder = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    folder.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=2), folder / "w.pth")
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(40):
        sf.write(audio / f"clip-{i:02d}.wav", tone(3.0, 200.0 + 37 * i), 16000, subtype="PCM_16")
    out = tmp_path / "out"
    argv = ["embed", str(audio), "-m", str(folder / "w.pth"), "-o", str(out), "--no-progress", "--device", "cpu",
            "--batch-size", "1"]
    # the first embed is seen at work by its first output file, as embed's lock file name is not fixed yet
    second = subprocess.Popen([sys.executable, "-c", SECOND, str(out / "go"), *argv], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen([sys.executable, "-m", "kikimimi", *argv], env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.rglob("*.npy")) and time.monotonic() < deadline:
        time.sleep(0.005)
    (out / "go").touch()
    _, err = second.communicate(timeout=180)
    first.wait(timeout=180)
    assert second.returncode == 2 and f"is in use by another kikimimi embed (pid {first.pid})" in err, err
