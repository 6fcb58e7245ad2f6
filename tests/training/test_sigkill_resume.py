"""A `kikimimi pretrain` process killed with SIGKILL and resumed ends exactly like an uninterrupted run.

Unlike the in-process resume tests, this kills a real OS process mid-run (no clean-up code runs), then
`--resume RUN_DIR` continues from the last atomic checkpoint. Both the logged losses of every step and the
final weights must equal those of an uninterrupted run with the same settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from process_kill import kill_when, run_ok

from kikimimi.audio.synthetic import make_dataset

STEPS = 60

METHOD_ARGS = {
    "byola": ["--method", "byola", "--byola-dim", "64"],
    "m2d": ["--method", "m2d", "--size", "tiny", "--input-frames", "64"],
}


def _command(method: str, data: Path, out: Path, run_name: str) -> list[str]:
    return [sys.executable, "-m", "kikimimi", "pretrain", *METHOD_ARGS[method], "--data", str(data),
            "--out", str(out), "--run-name", run_name, "--steps", str(STEPS), "--batch-size", "4",
            "--device", "cpu", "--norm-samples", "8", "--min-epoch-size", "16", "--save-every", "2",
            "--keep-checkpoints", "2", "--log-every", "1", "--no-progress", "--seed", "11"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _checkpoint_steps(run: Path) -> list[int]:
    """Steps of the checkpoints in ``run``, ascending (only the newest two are kept, to bound the disk)."""
    return sorted(int(p.stem.split("-")[1]) for p in run.glob("checkpoint-*.pth"))


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_sigkilled_run_resumes_to_the_uninterrupted_result(method, tmp_path):
    data = tmp_path / "audio"
    make_dataset(data, n_per_class=2, duration_s=1.2, classes=("tone", "chirp", "noise_burst", "clicks"))
    out = tmp_path / "runs"
    run_ok(_command(method, data, out, "full"), env=_env())

    part = out / "part"
    proc = subprocess.Popen(_command(method, data, out, "part"), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    kill_when(proc, lambda: any(s >= 4 for s in _checkpoint_steps(part)), "checkpoint-4.pth or later")
    written = _checkpoint_steps(part)
    assert written and written[-1] < STEPS, f"killed run already finished: {written}"

    run_ok([sys.executable, "-m", "kikimimi", "pretrain", "--resume", str(part), "--no-progress"], env=_env())

    full_losses, part_losses = _losses(out / "full"), _losses(part)
    assert sorted(part_losses) == list(range(1, STEPS + 1))  # each step logged once, none lost or doubled
    assert part_losses == full_losses
    a = torch.load(out / "full" / f"checkpoint-{STEPS}.pth", map_location="cpu", weights_only=True)["model"]
    b = torch.load(part / f"checkpoint-{STEPS}.pth", map_location="cpu", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
