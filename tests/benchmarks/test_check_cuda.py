"""benchmarks/check_cuda.py in its dry mode (CPU, gloo): every code path of the GPU check runs in CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "check_cuda.py"


def test_dry_run_passes_every_check():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env,
                          timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "dry-run" and summary["ok"] is True
    names = [c["check"] for c in summary["checks"]]
    for method in ("m2d", "byola"):
        for amp in ("off", "bf16", "fp16"):
            assert f"pretrain {method} amp={amp}" in names
    assert any(n.startswith("torchrun 2 processes, gloo") for n in names)
    assert {"embed fp32 on cpu", "embed bf16 on cpu", "embed int8 on cpu"} <= set(names)
    for check in summary["checks"]:
        if check["check"].startswith("pretrain"):
            assert len(check["losses"]) == 2 and check["first_loss_rel_to_fp32"] <= 0.05
    ddp = next(c for c in summary["checks"] if c["check"].startswith("torchrun"))
    assert ddp["ranks_identical"] and len(ddp["losses"]) == 3
