"""benchmarks/bench_throughput.py on a 2-block model and seconds of audio: end-to-end rows with memory, JSON, table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_throughput.py"


def test_tiny_run_reports_real_time_factors_memory_and_files(tmp_path):
    out = tmp_path / "t.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", "micro", "--hours", "0.0167", "--n-clips", "3",
                           "--clip-s", "1", "--threads", "1", "--precision", "fp32", "--workloads", "long-clip",
                           "folder-clip", "--tmp", str(tmp_path), "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(out.read_text())
    machine = run["machine"]
    assert machine["cpu"] and isinstance(machine["flags"], list) and machine["threads"] == 1
    assert len(machine["load_avg"]) == len(machine["load_avg_end"]) == 3
    (model,) = run["models"]
    assert model["model"] == "micro" and model["precision_line"] == "precision fp32" and model["startup_s"] > 0
    rows = {r["workload"]: r for r in model["rows"]}
    assert set(rows) == {"long-clip", "folder-clip"}
    assert abs(rows["long-clip"]["audio_s"] - 60.0) < 0.01 and rows["long-clip"]["files"] == 1
    assert abs(rows["folder-clip"]["audio_s"] - 3.0) < 1e-6 and rows["folder-clip"]["files"] == 3
    for r in rows.values():
        assert r["level"] == "clip" and r["wall_s"] > 0 and r["peak_rss_mb"] > 50
        # wall_s is stored to 0.01 s: the ratio recomputed from it may differ by that rounding
        assert abs(r["x_real_time"] - r["audio_s"] / r["wall_s"]) < (1e-3 + 0.006 / r["wall_s"]) * r["x_real_time"]
        assert 0 < r["cpu_s"] and abs(r["x_real_time_per_cpu_s"] * r["cpu_s"] / r["audio_s"] - 1) < 0.01
    assert model["startup_cpu_s"] > 0
    assert "| micro | folder-clip | 0.00 |" in proc.stdout
    tables = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(out)], capture_output=True, text=True,
                            env=env, timeout=120)
    assert tables.returncode == 0 and tables.stdout.count("| micro |") == 2 and "1 thread(s)" in tables.stdout
    assert not list(tmp_path.glob("tmp*"))  # the generated audio and outputs are gone
