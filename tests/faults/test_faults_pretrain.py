"""Fault suite: `kikimimi pretrain` on a folder of good and broken files, then a kill -9 and `--resume`.

Real processes (the program entry, warnings on stderr as a user sees them). The killed run saves every 2 steps
(``--save-every 2``); its rerun must end exactly like an uninterrupted run: each step logged once, the
checkpoints written before the kill untouched, the final weights equal tensor for tensor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from process_kill import kill_when_written

from .inputs import fault_folder, named_once

STEPS = 16


def _cmd(data: Path, out: Path, run_name: str) -> list[str]:
    return [sys.executable, "-m", "kikimimi", "pretrain", "--method", "byola", "--byola-dim", "64",
            "--data", str(data), "--out", str(out), "--run-name", run_name, "--steps", str(STEPS),
            "--batch-size", "4", "--device", "cpu", "--norm-samples", "8", "--min-epoch-size", "16",
            "--save-every", "2", "--log-every", "1", "--no-progress", "--seed", "11"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _step(checkpoint: Path) -> int:
    return int(checkpoint.stem.split("-")[1])


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One complete run over the fault folder: (fault folder, runs folder, completed process)."""
    root = tmp_path_factory.mktemp("pretrain-faults")
    ff = fault_folder(root / "in")
    proc = subprocess.run(_cmd(ff.root, root / "runs", "full"), env=_env(), capture_output=True, text=True)
    return ff, root / "runs", proc


def test_pretrain_trains_on_the_good_files_and_names_every_bad_one(uninterrupted, fault_report):
    ff, runs, proc = uninterrupted
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert all(bad.name in proc.stderr for bad in ff.bad), proc.stderr  # each named (how often: the next test)
    assert [s for s, _ in _losses(runs / "full")] == list(range(1, STEPS + 1))
    assert (runs / "full" / f"checkpoint-{STEPS}.pth").is_file()
    fault_report("pretrain", bad_named=len(ff.bad), good_trained_on=len(ff.good))


def test_pretrain_names_every_bad_file_exactly_once(uninterrupted):
    ff, _, proc = uninterrupted
    assert all(named_once(proc.stderr, bad) for bad in ff.bad), proc.stderr


def test_pretrain_on_only_bad_files_fails_with_one_line(tmp_path, uninterrupted):
    ff, _, _ = uninterrupted
    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    for bad in ff.bad:
        (only_bad / bad.name).write_bytes(bad.read_bytes())
    proc = subprocess.run(_cmd(only_bad, tmp_path / "runs", "bad"), env=_env(), capture_output=True, text=True)
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("kikimimi pretrain: error:")


def test_pretrain_killed_mid_run_resumes_to_the_uninterrupted_result(uninterrupted, fault_report):
    ff, runs, full = uninterrupted
    assert full.returncode == 0
    part = runs / "part"
    proc = subprocess.Popen(_cmd(ff.root, runs, "part"), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kill_when_written(proc, part / "checkpoint-4.pth")
    steps = sorted(_step(p) for p in part.glob("checkpoint-*.pth"))
    assert steps and steps[-1] < STEPS, f"killed run already finished: {steps}"
    for p in part.glob("checkpoint-*.pth"):  # every checkpoint on disk is complete (atomic writes)
        torch.load(p, map_location="cpu", weights_only=True)
    # finished = up to the one last.pth names (a kill between a checkpoint and its last.pth: the next test)
    last = _step((part / "last.pth").resolve())
    before = {p: p.stat().st_mtime_ns for p in part.glob("checkpoint-*.pth") if _step(p) <= last}

    resumed = subprocess.run([sys.executable, "-m", "kikimimi", "pretrain", "--resume", str(part), "--no-progress"],
                             env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    redone = sorted(p.name for p, t in before.items() if p.stat().st_mtime_ns != t)
    assert not redone, f"checkpoints written before the kill were written again: {redone} (of {steps})"
    assert _losses(part) == _losses(runs / "full")  # each step once, none lost or doubled, same losses
    a = torch.load(runs / "full" / f"checkpoint-{STEPS}.pth", map_location="cpu", weights_only=True)["model"]
    b = torch.load(part / f"checkpoint-{STEPS}.pth", map_location="cpu", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fault_report("pretrain", killed=1, finished_before_kill=steps[-1], redone=0, total=STEPS)


def test_pretrain_resume_starts_from_the_newest_complete_checkpoint(uninterrupted, tmp_path):
    """The kill that lands after ``checkpoint-N.pth`` is complete but before ``last.pth`` points to it, made
    deterministic: a finished run's ``last.pth`` is set back to an older checkpoint and the newer one kept."""
    import shutil

    from kikimimi.checkpoints.runs import point_last

    ff, runs, full = uninterrupted
    assert full.returncode == 0
    run = tmp_path / "run"
    shutil.copytree(runs / "full", run, symlinks=True)
    for p in run.glob("checkpoint-*.pth"):
        if _step(p) > 6:
            p.unlink()
    point_last(run, run / "checkpoint-4.pth")
    mtime = (run / "checkpoint-6.pth").stat().st_mtime_ns
    resumed = subprocess.run([sys.executable, "-m", "kikimimi", "pretrain", "--resume", str(run), "--no-progress"],
                             env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "checkpoint-6.pth").stat().st_mtime_ns == mtime, "checkpoint-6 (complete) was written again"
