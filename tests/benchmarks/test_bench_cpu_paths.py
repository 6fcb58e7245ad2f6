"""benchmarks/bench_cpu_paths.py on a 2-block model: every path gets a row, the JSON holds peaks and cosines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cpu_paths.py"


def test_micro_run_reports_every_path_against_the_peaks(tmp_path, wav_factory):
    for i in range(4):  # real audio for calibration and cosine: 4 files of 1.5 s
        wav_factory(f"r{i}.wav", duration_s=1.5)
    out = tmp_path / "r.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", KIKIMIMI_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", "micro", "--threads", "1", "--clips", "1",
                           "--repeats", "1", "--real", str(tmp_path), "--real-max", "2", "--attention-int8",
                           "--json", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"]["cpu"] and isinstance(result["machine"]["flags"], list)
    model = result["models"][0]
    assert model["calibration"] == "real" and model["cosine_on"].startswith("real: 2 clips")
    run = model["threads"][0]
    assert run["threads"] == 1 and {"fp32", "bf16", "int8"} <= set(run["peaks_gops"])
    rows = {r["path"]: r for r in run["rows"]}
    assert {"fp32", "int8", "ort-fp32", "ort-int8", "ort-int8-static", "ort-int8-static-attn"} <= set(rows)
    assert rows["fp32"]["x_fp32"] == 1.0 and rows["fp32"]["cos_min"] > 0.999999
    for r in rows.values():
        assert r["clips_per_s"] > 0 and abs(r["audio_s_per_s"] - 10 * r["clips_per_s"]) < 1e-6 * r["audio_s_per_s"]
        assert r["share_of_peak"] > 0
        assert 0.9 < r["cos_min"] <= r["cos_mean"] <= 1.0 + 1e-9
    assert "| ort-int8-static |" in proc.stdout and "% int8" in proc.stdout
    tables = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(out)], capture_output=True, text=True,
                            env=env, timeout=120)
    assert tables.returncode == 0 and "## micro, 1 thread(s): 1 × 10-s clips" in tables.stdout
    assert tables.stdout.count("| ort-int8") == 3  # dynamic, static, static with int8 attention
