"""benchmarks/outputs_fingerprint.py: its fast part gives the same fingerprints in two processes, with an entry for
every fast surface, and ``compare`` names an output whose fingerprint changed."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "outputs_fingerprint.py"


def _script():
    spec = importlib.util.spec_from_file_location("outputs_fingerprint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fast_run() -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "--fast"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_fast_part_is_deterministic_and_covers_every_fast_surface():
    fp = _script()
    runs = [_fast_run(), _fast_run()]  # two processes, two temp folders
    results = []
    for proc in runs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out))
    first, second = results
    assert tuple(first["surfaces"]) == tuple(sorted(fp.FAST))
    for name in fp.FAST:
        entry = first["surfaces"][name]
        assert "error" not in entry, entry
        leaves = fp._leaves(entry)
        assert leaves and all(v for k, v in leaves.items() if k.endswith("/sha256")), entry
        assert any(k.endswith("/sha256") for k in leaves), entry
    assert first["meta"]["torch_threads"] == 1 and first["meta"]["KIKIMIMI_PRECISION"] == "fp32"
    assert fp.compare(first, second) == []
    assert first["surfaces"] == second["surfaces"]


def test_compare_names_each_changed_output():
    fp = _script()
    a = {
        "surfaces": {
            "embed_api": {"clip": {"sha256": "aa", "max": 1.0}, "frames": {"sha256": "bb"}},
            "captioner": {"captions": {"sha256": "cc", "texts": ["a dog"]}},
        }
    }
    assert fp.compare(a, copy.deepcopy(a)) == []
    b = copy.deepcopy(a)
    b["surfaces"]["embed_api"]["clip"]["sha256"] = "ab"
    b["surfaces"]["captioner"] = {"error": "RuntimeError: kikimimi caption exited 1: boom"}
    lines = fp.compare(a, b)
    assert lines[0].startswith("/captioner/captions/sha256: cc != (absent)")
    assert any(line.startswith("/captioner/error: (absent) != RuntimeError") for line in lines)
    assert "/embed_api/clip/sha256: aa != ab" in lines and not any("frames" in line for line in lines)
