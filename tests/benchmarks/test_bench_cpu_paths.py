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
                           "--ort-spin", "--ort-profile", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"]["cpu"] and isinstance(result["machine"]["flags"], list)
    # what the README's table names (benchmarks/render_perf_table.py): date, command, load at start and end
    assert result["machine"]["date"].endswith("UTC") and "--models micro" in result["machine"]["command"]
    assert len(result["machine"]["load_avg"]) == len(result["machine"]["load_avg_end"]) == 3
    model = result["models"][0]
    assert model["calibration"] == "real" and model["cosine_on"].startswith("real: 2 clips")
    run = model["threads"][0]
    assert run["threads"] == 1 and {"fp32", "bf16", "int8"} <= set(run["peaks_gops"])
    rows = {r["path"]: r for r in run["rows"]}
    assert {"fp32", "int8", "ort-fp32", "ort-int8", "ort-int8-static", "ort-int8-static-attn",
            "ort-int8-spin", "ort-int8-nospin"} <= set(rows)
    assert abs(rows["ort-int8-spin"]["cos_min"] - rows["ort-int8"]["cos_min"]) < 1e-6  # the same file, other threads
    profile = run["ort_profile"]  # time by operator type: int8 matmuls in the int8 graph, float ones in fp32's
    assert set(profile) == {"ort-fp32", "ort-int8", "ort-int8-static"}
    assert abs(sum(profile["ort-int8"].values()) - 1) < 1e-6 and "MatMul" in profile["ort-fp32"]
    assert any("Integer" in op or "Quant" in op for op in profile["ort-int8"])
    assert "ort-int8 time by operator:" in proc.stdout
    assert rows["fp32"]["x_fp32"] == 1.0 and rows["fp32"]["cos_min"] > 0.999999
    for r in rows.values():
        assert r["clips_per_s"] > 0 and abs(r["audio_s_per_s"] - 10 * r["clips_per_s"]) < 1e-6 * r["audio_s_per_s"]
        assert r["share_of_peak"] > 0
        assert 0.9 < r["cos_min"] <= r["cos_mean"] <= 1.0 + 1e-9
        assert r["bf16_fallbacks"] == 0  # batches bf16 recomputed in fp32 are counted (none on this model)
    assert "| ort-int8-static |" in proc.stdout and "% int8" in proc.stdout
    tables = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(out)], capture_output=True, text=True,
                            env=env, timeout=120)
    assert tables.returncode == 0 and "## micro, 1 thread(s): 1 × 10-s clips" in tables.stdout
    assert tables.stdout.count("| ort-int8") == 5  # dynamic, static, with int8 attention, spinning, not


def test_capped_run_and_auto_cost_compare_before_and_now_in_one_child(tmp_path):
    out = tmp_path / "c.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", KIKIMIMI_HOME=str(tmp_path / "home"))
    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                 "FBGEMM_ENABLE_INSTRUCTIONS"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", "micro", "--threads", "1", "--no-paths",
                           "--auto-cost", "--cap-avx2", "--json", str(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"]["capability"] == "AVX2"  # torch took the cap: the child was started with it
    assert result["machine"]["isa_caps"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and result["models"] == []
    assert "ONNX Runtime NOT capped" in proc.stdout
    rows = result["auto_cost"]
    assert [r["measurement"] for r in rows] == ["before", "now"] and all(r["seconds"] > 0 for r in rows)
    before = {m["path"]: m for m in rows[0]["paths"]}
    assert "bf16" not in before  # capped below bfloat16: not measured as a native path
    assert all(m["rounds"] == 2 for m in before.values() if m["error"] is None)  # the unbounded measurement
    assert all(1 <= m["rounds"] <= 2 for m in rows[1]["paths"] if m["error"] is None)
    assert "| micro | 1 | now |" in proc.stdout
    # the path table labels capped rows, and says which could not be capped
    run = {"machine": {**result["machine"], "load_avg": [0.0] * 3}, "auto_cost": [],
           "models": [{"model": "m", "clips": 1, "gflop_per_clip": 1.0, "cosine_on": "x", "threads": [
               {"threads": 1, "peaks_gops": {"fp32": 1.0, "bf16": 1.0, "int8": 1.0},
                "rows": [{"path": p, "isa": isa, "clips_per_s": 1.0, "audio_s_per_s": 10.0, "x_fp32": 1.0,
                          "gops": 1.0, "peak_kind": "fp32", "share_of_peak": 1.0, "load_rss_mb": 1.0,
                          "work_rss_mb": 1.0, "cos_min": 1.0, "cos_mean": 1.0}
                         for p, isa in (("int8", "capped to AVX2"), ("ort-int8", "NOT capped"))]}]}]}
    (tmp_path / "t.json").write_text(json.dumps(run))
    tables = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(tmp_path / "t.json")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert "| int8 [capped to AVX2] |" in tables.stdout and "| ort-int8 [NOT capped] |" in tables.stdout
