"""benchmarks/bench_index_scale.py on a tiny size: every kind runs, reaches the recall target, and the memory
estimate the manifest records agrees with the measured index size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_index_scale.py"
pytest.importorskip("faiss", reason='the benchmark needs pip install "kikimimi[serve]"')


def test_small_run_reports_every_kind(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rows", "3000", "--dim", "16", "--centres", "40",
                           "--queries", "50", "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "# CPU:" in proc.stdout and "vector extensions:" in proc.stdout
    rows = {r["kind"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"flat", "ivf", "hnsw", "hnsw_sq"}
    assert rows["flat"]["recall_at_10"] == {"near": 1.0, "text": 1.0}
    for kind in ("ivf", "hnsw", "hnsw_sq"):
        assert rows[kind]["calibrated_recall"] >= 0.95
        assert min(rows[kind]["recall_at_10"].values()) >= 0.9  # other queries than the calibration's
    for r in rows.values():
        assert abs(r["estimate_bytes_per_row"] - r["index_bytes_per_row"]) <= 0.05 * r["index_bytes_per_row"]
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]


def test_small_run_reports_the_milvus_backend(tmp_path):
    pytest.importorskip("milvus_lite", reason='the Milvus rows need pip install "kikimimi[milvus]"')
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rows", "600", "--dim", "16", "--centres", "20",
                           "--queries", "20", "--kinds", "flat", "milvus", "milvus_flat", "--no-sweep", "--json",
                           str(out)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "# CPU:" in proc.stdout and "milvus-lite" in proc.stdout
    rows = {r["kind"]: r for r in json.loads(out.read_text())}
    assert rows["milvus_flat"]["recall_at_10"] == {"near": 1.0, "text": 1.0}  # exact, like faiss flat
    assert min(rows["milvus"]["recall_at_10"].values()) >= 0.95
    for kind in ("milvus", "milvus_flat"):
        r = rows[kind]
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] and r["disk_bytes_per_row"] > 16 * 4
        assert r["p50_ratio_to_faiss_exact"] > 0 and "sweep_ef" not in r  # --no-sweep
