"""Fault suite: `kikimimi index` over a folder of good and broken files, then a kill -9 and a rerun."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import write_tiny_clap2025
from process_kill import run_ok

from kikimimi.cli import main
from kikimimi.inference.search import SearchIndex

from .inputs import fault_folder, named_once, tone


@pytest.fixture(scope="module")
def clap_path(tmp_path_factory) -> Path:
    return write_tiny_clap2025(tmp_path_factory.mktemp("clap"))


def test_index_names_every_bad_file_once_and_indexes_every_good_one(tmp_path, capsys, clap_path, fault_report):
    ff = fault_folder(tmp_path / "in")
    out = tmp_path / "index"
    assert main(["index", str(ff.root), "-m", str(clap_path), "-o", str(out), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert all(named_once(err, bad) for bad in ff.bad), err
    assert not any(named_once(err, good) for good in ff.good), err
    index = SearchIndex.load(out)
    assert sorted(index.errors) == sorted(p.name for p in ff.bad)  # the index's own record of failures
    assert sorted(e["key"] for e in index.entries) == sorted(p.name for p in ff.good)
    assert index.embeddings.shape[0] == len(ff.good) and np.isfinite(index.embeddings).all()
    # nothing could be indexed: exit status 1, every file still named
    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    for bad in ff.bad:
        (only_bad / bad.name).write_bytes(bad.read_bytes())
    assert main(["index", str(only_bad), "-m", str(clap_path), "-o", str(tmp_path / "i2"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert all(named_once(err, bad) for bad in ff.bad) and "no file could be indexed" in err
    fault_report("index", bad_named=len(ff.bad), good_indexed=len(ff.good))


def _index_cmd(audio: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "kikimimi", "index", str(audio), "-m", str(model), "-o", str(out),
            "--device", "cpu", "--batch-size", "1", "--save-every-s", "0"]


def _entries(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["entries"])
    except (OSError, ValueError, KeyError):
        return 0


def test_index_killed_mid_run_resumes_without_redoing_and_matches_an_uninterrupted_run(tmp_path, clap_path,
                                                                                      fault_report):
    audio = tmp_path / "audio"
    audio.mkdir()
    n = 30
    for i in range(n):
        sf.write(audio / f"clip {i:02d}.wav", tone(4.0, 200.0 + 37 * i), 16000, subtype="PCM_16")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_index_cmd(audio, clap_path, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _entries(killed) < 3 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = SearchIndex.load(killed)  # a consistent index (manifest + the embeddings it names)
    done = {e["key"]: partial.embeddings[i].copy() for i, e in enumerate(partial.entries)}
    assert 3 <= len(done) < n, f"the kill must land mid-run ({len(done)} of {n} indexed)"

    rerun = subprocess.run(_index_cmd(audio, clap_path, killed), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    counts = {k: int(v) for k, v in re.findall(r"(added|unchanged) (\d+)", rerun.stdout)}
    assert counts == {"added": n - len(done), "unchanged": len(done)}, rerun.stdout  # nothing finished redone
    whole = tmp_path / "whole"
    run_ok(_index_cmd(audio, clap_path, whole), env=env)
    a, b = SearchIndex.load(killed), SearchIndex.load(whole)
    assert a.entries == b.entries and len(a.entries) == n
    # same clips, same batches of one: the embeddings files are byte-identical
    assert (killed / str(a.embeddings_file)).read_bytes() == (whole / str(b.embeddings_file)).read_bytes()
    for i, e in enumerate(a.entries):  # rows finished before the kill were kept as they were
        if e["key"] in done:
            assert np.array_equal(a.embeddings[i], done[e["key"]])
    leftovers = sorted(p.name for p in killed.iterdir() if p.name.endswith(".tmp") or p.name.startswith("emb"))
    assert leftovers == [a.embeddings_file], leftovers  # no stale embeddings file, no half-written temp file
    fault_report("index", killed=1, finished_before_kill=len(done), redone=0, total=n)
