"""Fault suite: `kikimimi prep` and `kikimimi embed` over a folder of good and broken files, then a kill -9."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import official_layouts as ol
import pytest
import torch
from process_kill import run_ok

from kikimimi.cli import main

from .inputs import fault_folder, named_once, tone


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    folder.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=2), folder / "w.pth")
    return folder / "w.pth"


def test_prep_names_every_bad_file_once_and_caches_every_good_one(tmp_path, capsys, fault_report):
    ff = fault_folder(tmp_path / "in")
    code = main(["prep", str(ff.root), "-o", str(tmp_path / "cache"), "--workers", "1", "--quiet"])
    assert code == 0  # some files converted: success, the failures are listed
    errors = _rows(tmp_path / "cache" / "errors.csv")
    assert sorted(Path(r["source"]).name for r in errors) == sorted(p.name for p in ff.bad)
    manifest = _rows(next((tmp_path / "cache").glob("manifest*.csv")))
    assert len(manifest) == len(ff.good)
    fault_report("prep", bad_named=len(ff.bad), good_cached=len(ff.good))


def test_embed_names_every_bad_file_once_and_embeds_every_good_one(tmp_path, capsys, model_path, fault_report):
    ff = fault_folder(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["embed", str(ff.root), "-m", str(model_path), "-o", str(out), "--no-progress", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert all(named_once(err, bad) for bad in ff.bad), err
    errors = _rows(out / "errors.csv")
    assert sorted(Path(r["source"]).name for r in errors) == sorted(p.name for p in ff.bad)
    manifest = _rows(out / "manifest.csv")
    assert len(manifest) == len(ff.good)
    for row in manifest:
        assert np.isfinite(np.load(out / row["file_name"])).all()
    # nothing could be embedded: exit status 1
    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    for bad in ff.bad:
        (only_bad / bad.name).write_bytes(bad.read_bytes())
    assert main(["embed", str(only_bad), "-m", str(model_path), "-o", str(tmp_path / "o2"), "--no-progress"]) == 1
    fault_report("embed", bad_named=len(ff.bad), good_embedded=len(ff.good))


def _embed_cmd(inputs: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "kikimimi", "embed", str(inputs), "-m", str(model), "-o", str(out),
            "--no-progress", "--device", "cpu", "--batch-size", "1"]


def test_embed_killed_mid_run_resumes_without_redoing_and_matches_an_uninterrupted_run(tmp_path, model_path,
                                                                                      fault_report):
    import soundfile as sf

    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(24):
        sf.write(audio / f"clip-{i:02d}.wav", tone(3.0, 200.0 + 37 * i), 16000, subtype="PCM_16")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_embed_cmd(audio, model_path, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(killed.rglob("*.npy"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p: p.stat().st_mtime_ns for p in killed.rglob("*.npy")}
    assert 3 <= len(done_before) < 24, "the kill must land mid-run"
    for p in done_before:  # every output that exists is complete (written atomically)
        assert np.load(p).shape == (320,)

    run_ok(_embed_cmd(audio, model_path, killed), env=env)
    assert all(p.stat().st_mtime_ns == t for p, t in done_before.items()), "finished files were redone"
    whole = tmp_path / "whole"
    run_ok(_embed_cmd(audio, model_path, whole), env=env)
    a, b = sorted(killed.rglob("*.npy")), sorted(whole.rglob("*.npy"))
    assert [p.relative_to(killed) for p in a] == [p.relative_to(whole) for p in b] and len(a) == 24
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.load(x), np.load(y), atol=1e-6)
    names = [r["file_name"] for r in _rows(killed / "manifest.csv")]
    assert names == [r["file_name"] for r in _rows(whole / "manifest.csv")]
    fault_report("embed", killed=1, finished_before_kill=len(done_before), redone=0, total=24)


def _tones(folder: Path, n: int, step_hz: float) -> Path:
    """``n`` one-second tones ``c<i>.wav`` in ``folder`` (created)."""
    import soundfile as sf

    folder.mkdir()
    for i in range(n):
        sf.write(folder / f"c{i}.wav", tone(1.0, 300.0 + step_hz * i), 16000, subtype="PCM_16")
    return folder


def test_embed_refuses_outputs_of_another_model_or_level(tmp_path, capsys, model_path):
    audio = _tones(tmp_path / "audio", 2, 100.0)
    out = tmp_path / "out"
    assert main(["embed", str(audio), "-m", str(model_path), "-o", str(out), "--no-progress"]) == 0
    first = np.load(out / "c0.npy")
    other = tmp_path / "other" / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    other.mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=2, seed=1), other / "w.pth")
    capsys.readouterr()
    assert main(["embed", str(audio), "-m", str(other / "w.pth"), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds embeddings written with other settings" in err and "--overwrite" in err
    assert np.array_equal(np.load(out / "c0.npy"), first)  # nothing was replaced
    assert main(["embed", str(audio), "-m", str(model_path), "-o", str(out), "--no-progress",
                 "--level", "frame"]) == 2
    assert main(["embed", str(audio), "-m", str(other / "w.pth"), "-o", str(out), "--no-progress",
                 "--overwrite"]) == 0
    assert not np.allclose(np.load(out / "c0.npy"), first)
    # the same model and settings again: everything is kept
    assert main(["embed", str(audio), "-m", str(other / "w.pth"), "-o", str(out), "--no-progress"]) == 0
    assert "already done 2" in capsys.readouterr().out


def test_sharded_embed_writes_a_merged_manifest(tmp_path, model_path, monkeypatch):
    audio = _tones(tmp_path / "audio", 5, 50.0)
    out = tmp_path / "out"
    for rank in range(2):  # what two torchrun ranks do, one after the other
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(["embed", str(audio), "-m", str(model_path), "-o", str(out), "--no-progress"]) == 0
        assert (out / "manifest.csv").exists() == (rank == 1)
    assert sorted(r["file_name"] for r in _rows(out / "manifest.csv")) == [f"c{i}.npy" for i in range(5)]
