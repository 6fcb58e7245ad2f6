"""The README's open-model tables state exactly the numbers of the packaged models' own evaluation reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "src" / "kikimimi" / "weights"


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- open models: begin.*?<!-- open models: end -->", text, flags=re.S)
    assert found, "README.md has no open-models section"
    return found.group(0)


def _rows(section: str, first_cell: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|")]
    return [r for r in rows if r[0] == first_cell]


@pytest.mark.skipif(not (WEIGHTS / "open-m2d-tiny" / "evaluation" / "report.json").is_file(),
                    reason="no packaged open-m2d-tiny in this checkout")
def test_encoder_table_is_the_packaged_report():
    report = json.loads((WEIGHTS / "open-m2d-tiny" / "evaluation" / "report.json").read_text())
    evidence = json.loads((WEIGHTS / "open-m2d-tiny" / "evidence.json").read_text())
    section = _section()
    assert f"checkpoint {evidence['checkpoint']['step']} of the" in section
    names = ("open-m2d-tiny", "log-mel stats", "open-m2d-tiny (random init)")
    for task, entry in report["tasks"].items():
        for probe in ("linear", "logistic"):
            (row,) = [r for r in _rows(section, task) if r[1] == probe]
            want = [f"{100 * entry['results'][n]['probes'][probe]['mean']:.1f}" for n in names]
            assert row[2:] == want, (task, probe)


@pytest.mark.skipif(not (WEIGHTS / "open-clap-tiny" / "evaluation" / "open_clap_eval.json").is_file(),
                    reason="no packaged open-clap-tiny in this checkout")
def test_clap_table_is_the_packaged_report():
    report = json.loads((WEIGHTS / "open-clap-tiny" / "evaluation" / "open_clap_eval.json").read_text())
    section = _section()
    ours, chance = report["models"][0], report["chance"]
    (row,) = _rows(section, "open-clap-tiny")
    want = [f"{100 * v['accuracy']:.1f}" for v in ours["zero_shot"].values()]
    want += [f"{100 * ours['retrieval'][d]['R@10']:.1f}" for d in ("text_to_audio", "audio_to_text")]
    assert row[1:] == want
    (row,) = _rows(section, "chance")
    want = [f"{100 * v:.1f}" for v in chance["zero_shot"].values()]
    want += [f"{100 * chance['retrieval'][d]['R@10']:.1f}" for d in ("text_to_audio", "audio_to_text")]
    assert row[1:] == want


@pytest.mark.skipif(not (WEIGHTS / "open-captioner-tiny" / "evaluation" / "open_captioner_eval.json").is_file(),
                    reason="no packaged open-captioner-tiny in this checkout")
def test_captioner_table_is_the_packaged_report():
    report = json.loads((WEIGHTS / "open-captioner-tiny" / "evaluation" / "open_captioner_eval.json").read_text())
    section = _section()
    assert f"{report['n_test']:,} held-out test clips, beam {report['beam']}" in section
    for task, v in report["class_words"].items():
        (row,) = _rows(section, task)[-1:]  # the captioner table comes after the encoder table
        assert row[1:] == [f"{100 * v[k]:.1f}" for k in ("captioner", "nearest_neighbour", "chance")], task
