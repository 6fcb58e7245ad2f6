"""benchmarks/render_perf_table.py: the README's CPU table is exactly what the committed benchmark JSON renders."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "render_perf_table.py"


def _module():
    spec = importlib.util.spec_from_file_location("render_perf_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(path: str, x: float, cos: float, fallbacks: int = 0) -> dict:
    return {"path": path, "x_fp32": x, "clips_per_s": 2.0 * x, "cos_min": cos, "share_of_peak": 0.25 * x,
            "bf16_fallbacks": fallbacks}


RUN = {"machine": {"cpu": "Some CPU", "cores": 2, "flags": ["avx2", "avx512_vnni"], "torch": "2.13.0",
                   "onnxruntime": "1.32.0", "load_avg": [3.0, 2.0, 1.0], "load_avg_end": [4.5, 2.0, 1.0],
                   "date": "2026-12-08 02:30 UTC", "command": "python benchmarks/bench_cpu_paths.py --models vitb"},
       "models": [{"model": "vitb", "weights": "random (official layout)", "cosine_on": "real: 4 clips from /x",
                   "threads": [{"threads": 2, "peaks_gops": {"fp32": 100.0, "bf16": float("nan"), "int8": 400.0},
                                "rows": [_row("fp32", 1.0, 1.0), _row("bf16", 4.0, 0.9999, fallbacks=3),
                                         _row("int8", 2.5, 0.9995), _row("ort-int8", 3.0, 0.998)]}]}]}


def test_the_readme_table_is_the_committed_benchmark_json():
    module = _module()
    files = module.result_files()
    assert files, "no benchmarks/results/cpu_paths*.json committed"
    block = module.render([json.loads(f.read_text(encoding="utf-8")) for f in files])
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert module.current_block(readme) == block, "run: python benchmarks/render_perf_table.py --write"
    assert "| ViT-B, official layout (random weights) | 2 |" in block and "| open-m2d-tiny | 2 |" in block


def test_the_fastest_path_at_the_cosine_bound_is_bold_and_the_others_are_marked():
    block = _module().render([RUN])
    (row,) = [line for line in block.splitlines() if line.startswith("| ViT-B")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["ViT-B, official layout (random weights)", "2", "2.00"]
    # bf16 is fastest but fell back to fp32 on some batch: not bold; ort-int8 is below 0.999: marked, not bold
    assert cells[3] == "4.00× (0.9999) ‡" and cells[4] == "**2.50× (0.9995)**" and cells[5] == "—"
    assert cells[6] == "3.00× (0.9980) †" and cells[8] == "100 / — / 400" and cells[9] == "int8 62 %"
    assert "load average 3.0 at start, 4.5 at end" in block and "2026-12-08 02:30 UTC" in block
    assert "`nice -n 10 python benchmarks/bench_cpu_paths.py --models vitb`" in block
    assert "/x" not in block  # the folder of the real clips is this machine's, not the reader's
    assert "above the 2 cores" in block  # load 3.0 on 2 cores: the table says its timings are noisy


def test_write_and_check_replace_only_the_marked_block(tmp_path, capsys):
    module = _module()
    data = tmp_path / "cpu_paths_x.json"
    data.write_text(json.dumps(RUN))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{module.BEGIN_LINE}\nold table\n{module.END}\noutro\n")
    assert module.main(["--check", "--readme", str(readme), str(data)]) == 1
    assert "differs" in capsys.readouterr().err
    assert module.main(["--write", "--readme", str(readme), str(data)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- cpu paths: begin") and text.endswith(f"{module.END}\noutro\n")
    assert "old table" not in text and module.main(["--check", "--readme", str(readme), str(data)]) == 0
    changed = copy.deepcopy(RUN)
    changed["models"][0]["threads"][0]["rows"][2]["x_fp32"] = 2.6
    data.write_text(json.dumps(changed))
    assert module.main(["--check", "--readme", str(readme), str(data)]) == 1  # a new measurement: stale table


def test_a_readme_without_the_markers_is_refused(tmp_path, capsys):
    module = _module()
    data = tmp_path / "cpu_paths_x.json"
    data.write_text(json.dumps(RUN))
    readme = tmp_path / "README.md"
    readme.write_text("no block here\n")
    assert module.main(["--write", "--readme", str(readme), str(data)]) == 2
    assert "no '<!-- cpu paths: begin" in capsys.readouterr().err and readme.read_text() == "no block here\n"
    with pytest.raises(ValueError):
        module.replace_block("x", "y")
