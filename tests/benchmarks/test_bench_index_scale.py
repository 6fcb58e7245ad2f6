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
    assert rows["flat"]["recall_at_10"] == {"near": 1.0, "text": 1.0, "uniform": 1.0}
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
    assert rows["milvus_flat"]["recall_at_10"] == {"near": 1.0, "text": 1.0, "uniform": 1.0}  # exact, like faiss flat
    assert min(rows["milvus"]["recall_at_10"].values()) >= 0.95
    for kind in ("milvus", "milvus_flat"):
        r = rows[kind]
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] and r["disk_bytes_per_row"] > 16 * 4
        assert r["p50_ratio_to_faiss_exact"] > 0 and "sweep_ef" not in r  # --no-sweep


def test_save_then_query_phase_only_from_the_saved_folder(tmp_path):
    """--save DIR keeps the built index and the query sets; --from DIR measures the same recall without building."""
    saved, first, second = tmp_path / "saved", tmp_path / "a.json", tmp_path / "b.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rows", "2000", "--dim", "16", "--centres", "30",
                           "--queries", "40", "--kinds", "flat", "hnsw", "--no-sweep", "--save", str(saved),
                           "--json", str(first)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in saved.iterdir()) == ["hnsw.json", "hnsw.npz", "queries.npz", "run.json"]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--from", str(saved), "--json", str(second)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "query phase only" in proc.stdout and "# CPU:" in proc.stdout
    built = {r["kind"]: r for r in json.loads(first.read_text())}["hnsw"]
    (again,) = json.loads(second.read_text())
    assert again["kind"] == "hnsw" and again["rows"] == 2000 and again["build_s"] == built["build_s"]
    assert again["recall_at_10"] == built["recall_at_10"] and again["efSearch"] == built["efSearch"]
    assert again["index_bytes_per_row"] == built["index_bytes_per_row"] and "sweep_efSearch" in again
    for point in again["sweep_efSearch"].values():  # each effort: recall, p50 and p99 per sort of query
        assert all(0 < q["p50_ms"] <= q["p99_ms"] and 0 <= q["recall_at_10"] <= 1 for q in point.values())
    # --recalibrate: the vectors rebuilt from the run's seed, the saved graph calibrated again, new queries
    proc = subprocess.run([sys.executable, str(SCRIPT), "--from", str(saved), "--recalibrate", "--no-sweep", "--json",
                           str(second)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "calibrated again" in proc.stderr
    (recal,) = json.loads(second.read_text())
    assert set(recal["recall_at_10"]) == {"near", "text", "uniform"}
    assert min(recal["recall_at_10"]["near"], recal["recall_at_10"]["text"]) >= 0.9  # new draws, target 0.95
    proc = subprocess.run([sys.executable, str(SCRIPT), "--recalibrate"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "--recalibrate needs --from DIR" in proc.stderr
    proc = subprocess.run([sys.executable, str(SCRIPT), "--from", str(saved), "--kinds", "ivf"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0 and "no saved index of kind ivf (saved: hnsw)" in proc.stderr
    proc = subprocess.run([sys.executable, str(SCRIPT), "--from", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0 and "not a folder written by --save" in proc.stderr
