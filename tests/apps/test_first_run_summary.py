"""Figures a newcomer reproduces: the first run's machine line, its time left as a range from the pace it
measured, and ``summary.json``'s ``figures`` — whose keys the README's figure table must name, both ways."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kikimimi.apps.first_run import figures as F
from kikimimi.apps.first_run.pipeline import PLANNED_S, Progress

README = Path(__file__).resolve().parents[2] / "README.md"

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 avx_vnni amx_bf16 amx_tile fma
processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
"""


def readme_figure_keys() -> list[str]:
    """The backquoted keys of the second column of the README's marked first-run figure table."""
    text = README.read_text(encoding="utf-8")
    begin, end = text.index("<!-- first-run figures: begin"), text.index("<!-- first-run figures: end -->")
    rows = [line for line in text[begin:end].splitlines() if line.startswith("|")]
    assert rows[1].replace("|", "").strip("-") == "", "the figure table's second line is its separator"
    keys = []
    for line in rows[2:]:  # under the header and the separator
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        keys += re.findall(r"`([^`]+)`", cells[-1])
    return keys


def test_readme_names_exactly_the_figures_the_run_writes(tmp_path):
    keys = readme_figure_keys()
    assert keys and len(keys) == len(set(keys))
    assert set(keys) == set(F.FIGURE_KEYS), "README figure table and figures.FIGURE_KEYS differ"
    # the writer writes exactly the declared keys, measured from the run's own files
    out = tmp_path / "demo"
    (out / "report").mkdir(parents=True)
    (out / "report" / "report.json").write_text(json.dumps({"tasks": {"drums": {"results": {
        "log-mel statistics": {"probes": {"linear": {"mean": 0.8}}}}}}}))
    (out / "big.bin").write_bytes(b"x" * 3_000_000)
    summary = {"machine": F.describe_machine(CPUINFO, 0.5, 2, 2), "data": {"kind": "real"}, "seconds": 470.0,
               "stages": {"data": 38.0}, "clap": {"zeroshot_accuracy": 0.21, "chance": 0.09},
               "captions": {"class_word_accuracy": 0.42, "nn_class_word_accuracy": 0.4, "chance": 0.09}}
    fig = F.run_figures(out, summary, dataset_cache=out / "report")
    assert tuple(fig) == F.FIGURE_KEYS
    assert fig["probes"] == {"drums": {"log-mel statistics": {"linear": 0.8}}}
    assert 3.0 <= fig["output_mb"] < 3.5 and fig["dataset_cache_mb"] < 0.1 and fig["total_s"] == 470.0
    assert fig["zeroshot_accuracy"] == 0.21 and fig["class_word_accuracy"] == 0.42 and fig["data_kind"] == "real"
    assert F.folder_mb(tmp_path / "missing") is None


def test_machine_line_names_cpu_cores_vector_flags_and_load():
    quiet = F.describe_machine(CPUINFO, load_1min=0.2, cores=2, usable=2)
    assert quiet["cpu"] == "Intel(R) Xeon(R) Processor" and quiet["cores"] == 2
    assert quiet["vector_flags"] == ["amx_bf16", "amx_tile", "avx2", "avx512_bf16", "avx512bw", "avx512f",
                                     "avx_vnni"]
    line = F.machine_line(quiet)
    assert line.startswith("machine: Intel(R) Xeon(R) Processor, 2 cores (2 usable), ")
    assert "avx2" in line and "avx512(" in line and "amx(bf16, tile)" in line and "load 0.20 (1 min)" in line
    assert "busy" not in line and F.load_factor(quiet) == pytest.approx(1.1)
    busy = F.describe_machine(CPUINFO, load_1min=4.0, cores=2, usable=2)
    assert F.load_factor(busy) == pytest.approx(3.0) and "busy" in F.machine_line(busy) and "3.0×" in \
        F.machine_line(busy)
    bare = {**F.describe_machine("", load_1min=0.0, cores=1, usable=1), "load_1min": None}  # no getloadavg
    assert bare["vector_flags"] == [] and "no AVX2/AVX-512/AMX reported" in F.machine_line(bare)
    assert F.load_factor(bare) == 1.0 and "load ? (1 min)" in F.machine_line(bare)
    real = F.describe_machine()  # this machine: something sensible, whatever it is
    assert real["cores"] >= 1 and real["usable_cores"] >= 1 and real["cpu"]


def test_time_left_is_a_range_from_the_measured_pace():
    """The issue's run: stage 1 (downloads) said "about 4 min 35 s left", then pre-training alone took 10:32.
    The data stage no longer sets the pace; a loaded machine widens the range before any CPU stage ends."""
    stages = ["data", "log-mel", "pre-training", "evaluation", "report"]
    lines: list[str] = []
    busy = Progress(stages, lines.append, load_factor=3.0)
    busy.times["data"] = 20.0  # fast download: says nothing about the CPU
    low, high = busy.eta_range_s()
    rest = sum(PLANNED_S[s] for s in stages[1:])
    assert low == pytest.approx(0.9 * rest) and high == pytest.approx(3.0 * 1.5 * rest)
    assert high > 632  # pre-training alone took 10:32 there: the range covers it
    busy.times["log-mel"] = 2.6 * PLANNED_S["log-mel"]  # a CPU stage: its pace now sets the range
    low, high = busy.eta_range_s()
    rest -= PLANNED_S["log-mel"]
    assert low == pytest.approx(0.9 * 2.6 * rest) and high == pytest.approx(2.6 * 1.5 * rest)
    busy.times["pre-training"] = 2.0 * PLANNED_S["pre-training"]
    low, high = busy.eta_range_s()
    rest -= PLANNED_S["pre-training"]
    assert low == pytest.approx(0.9 * 2.0 * rest) and high == pytest.approx(2.6 * 1.25 * rest)
    busy.begin("evaluation", "eval")
    busy.end("done")
    assert re.search(r"stage time \d+ s; about \d+–\d+ s left \(report\)$", lines[-1])
    # a reused cache (far faster than planned) does not set the pace
    quiet = Progress(stages, lines.append)
    quiet.times.update({"data": 1.0, "log-mel": 0.5})
    assert quiet.paces() == [] and quiet.eta_range_s()[1] == pytest.approx(1.5 * (245 + 110 + 5))
    assert quiet.eta_text().startswith("about 5–9 min left (pre-training, evaluation, report)")
