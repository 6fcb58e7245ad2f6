"""benchmarks/bench_serve.py at a reduced size (the CI form of the issue-29 load test): concurrent clients on
loopback mix text search, search by example and tags of indexed files over an HNSW index; every answer is a
200, each endpoint reports its percentiles, and the server's memory stays flat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_serve.py"
pytest.importorskip("faiss", reason='the benchmark needs pip install "kikimimi[serve]"')
pytest.importorskip("uvicorn", reason='the benchmark needs pip install "kikimimi[serve]"')


def test_mixed_load_has_no_errors_and_flat_memory(tmp_path):
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(SCRIPT), "--sizes", "2000", "--dim", "32", "--data", "clustered", "--clients", "8",
           "--seconds", "3", "--exact-below", "1000", "--queue-limit", "32", "--recall-queries", "50",
           "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = json.loads(out.read_text())[0]
    assert run["vector_index"]["kind"] == "hnsw" and run["vector_index"]["calibration"]["reached"]
    load = run["load"]
    assert set(load["endpoints"]) == {"text", "similar", "tags"}
    for name, ep in load["endpoints"].items():
        assert ep["queries"] > 0 and set(ep["statuses"]) == {"200"}, (name, ep)
        assert ep["p50_ms"] <= ep["p95_ms"] <= ep["p99_ms"]
    assert abs(load["server_rss_mb"]["growth_pct"]) <= 10, load["server_rss_mb"]


def test_end_to_end_text_latency_at_a_saved_index(tmp_path):
    """--index-from serves the HNSW index bench_index_scale.py --save wrote (its recall on the saved queries) and
    every run reports the end-to-end text-query latency with and without the text-embedding cache."""
    saved, out = tmp_path / "saved", tmp_path / "r.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(SCRIPT.with_name("bench_index_scale.py")), "--rows", "1500", "--dim",
                           "16", "--centres", "20", "--queries", "30", "--kinds", "hnsw", "--no-sweep", "--save",
                           str(saved)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--index-from", str(saved), "--clients", "2", "--seconds",
                           "1", "--text-queries", "15", "--mix", "text", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "# CPU:" in proc.stdout and "vector extensions:" in proc.stdout
    (run,) = json.loads(out.read_text())
    assert run["rows"] == 1500 and run["vector_index"]["kind"] == "hnsw" and min(run["recall"].values()) >= 0.9
    e2e = run["text_e2e"]
    assert e2e["statuses"] == {"200": 30}
    for name, included in (("cache_miss", "included"), ("cache_hit", "excluded")):
        part = e2e[name]
        assert part["queries"] == 15 and part["text_embedding"].startswith(included)
        assert 0 < part["p50_ms"] <= part["p95_ms"] <= part["p99_ms"]
