"""`kikimimi card`: a Hub model card built from a real `kikimimi eval` report; every number traced to it."""

from __future__ import annotations

import hashlib
import json
import re

import official_layouts as ol
import pytest
import torch

from kikimimi.audio.synthetic import make_dataset
from kikimimi.cli import main

hub = pytest.importorskip("huggingface_hub")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny kikimimi folder and the report of `kikimimi eval` on a 3-class generated task (with baselines)."""
    tmp = tmp_path_factory.mktemp("card")
    mp = pytest.MonkeyPatch()
    mp.setenv("KIKIMIMI_PRECISION", "fp32")
    mp.setenv("KIKIMIMI_HOME", str(tmp / "home"))
    official = tmp / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    official.mkdir()
    torch.manual_seed(0)
    torch.save(ol.m2d_encoder_state(embed_dim=32, depth=1), official / "w.pth")
    folder = tmp / "tiny-open-m2d"
    assert main(["convert", str(official / "w.pth"), str(folder)]) == 0
    labels = make_dataset(tmp / "audio", n_per_class=4, duration_s=1.0, classes=("tone", "noise_burst", "clicks"))
    out = tmp / "report"
    assert main(["eval", str(folder), "--task", str(labels), "-o", str(out), "--seeds", "2", "--no-plots",
                 "--probe", "logistic"]) == 0
    yield folder, out / "report.json", labels
    mp.undo()


def _facts(tmp_path, **extra):
    facts = {"name": "tiny-open-m2d", "license": "apache-2.0", "description": "A test model.",
             "datasets": [{"name": "generated tones", "licence": "CC0-1.0", "url": "kikimimi.audio.synthetic",
                           "hub_id": "kiki/tones"}],
             "compute": {"hardware": "2 CPU cores", "hours": 0.01}, "recipe": "cpu-small",
             "command": "kikimimi pretrain m2d --recipe cpu-small", "eval_tasks": {"labels": "tasks/labels.csv"},
             **extra}
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    return path


def _report_values(report_path):
    report = json.loads(report_path.read_text())
    values = {}
    for task, entry in report["tasks"].items():
        for model, result in entry["results"].items():
            for probe, r in result["probes"].items():
                values[(task, model, probe)] = (r["mean"], r["std"])
    return report, values


def test_card_numbers_come_from_the_report(evaluated, tmp_path, capsys):
    folder, report_path, _ = evaluated
    out = tmp_path / "README.md"
    assert main(["card", str(folder), "--eval", str(report_path.parent), "--facts", str(_facts(tmp_path)),
                 "--repo-id", "kiki/tiny-open-m2d", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = out.read_text()
    report, values = _report_values(report_path)
    trained = [m for m, info in report["models"].items()
               if info["family"] != "baseline" and not info["fingerprint"].startswith("random:")]
    assert len(trained) == 1

    card = hub.ModelCard(text)  # the Hub's own parser of model-card metadata
    assert card.data.library_name == "kikimimi" and card.data.license == "apache-2.0"
    assert card.data.pipeline_tag == "feature-extraction" and "kikimimi" in card.data.tags
    assert card.data.datasets == ["kiki/tones"]
    results = card.data.eval_results
    assert len(results) == 1  # one task × one probe of the trained model (the baselines left out)
    ours = {probe: v for (task, model, probe), v in values.items() if model == trained[0]}
    for r in results:
        probe = r.metric_name.split("(")[1].split()[0]
        assert r.dataset_name == "labels" and r.metric_type == "accuracy"
        assert r.metric_value == ours[probe][0]  # the report's value, unchanged

    # every number in the results table is a report value (mean or std, in percent, 2 decimals)
    allowed = {f"{100 * v:.2f}" for pair in values.values() for v in pair}
    rows = [line for line in text.splitlines() if line.startswith("| labels |")]
    assert len(rows) == 1
    for row in rows:
        score_cell = row.split("|")[4]
        numbers = re.findall(r"\d+\.\d+", score_cell)
        assert numbers and set(numbers) <= allowed
        assert "kikimimi eval hf://kiki/tiny-open-m2d --task tasks/labels.csv" in row and "--seeds 2" in row
        assert "--probe logistic" in row
    report_sha = hashlib.sha256(report_path.read_bytes()).hexdigest()
    assert all(report_sha[:12] in row for row in rows)

    weights_sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert f"| model.safetensors | {(folder / 'model.safetensors').stat().st_size} | `{weights_sha}` |" in text
    assert "| generated tones | CC0-1.0 |" in text and "kikimimi pretrain m2d --recipe cpu-small" in text
    assert "- hardware: 2 CPU cores" in text


def test_card_without_reports_or_facts_states_what_is_missing(evaluated, capsys):
    folder, _, _ = evaluated
    assert main(["card", str(folder), "--stdout"]) == 0
    text = capsys.readouterr().out
    card = hub.ModelCard(text)
    assert card.data.license == "other" and card.data.eval_results is None
    assert "No evaluation report given" in text and "Not stated" in text


def test_card_usage_errors_name_the_file(evaluated, tmp_path, capsys):
    folder, report_path, _ = evaluated
    bad_facts = _facts(tmp_path, licence_typo="x")
    assert main(["card", str(folder), "--facts", str(bad_facts), "--stdout"]) == 2
    assert "unknown key(s) licence_typo" in capsys.readouterr().err
    assert main(["card", str(folder), "--eval", str(report_path), "--report-model", "nope", "--stdout"]) == 2
    assert "no model 'nope' in the report" in capsys.readouterr().err
    not_report = tmp_path / "other.json"
    not_report.write_text('{"a": 1}')
    assert main(["card", str(folder), "--eval", str(not_report), "--stdout"]) == 2
    assert "not a kikimimi evaluation report" in capsys.readouterr().err


def test_card_refuses_weights_that_do_not_match_config(evaluated, tmp_path, capsys):
    import shutil

    folder, _, _ = evaluated
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert main(["card", str(copy), "--stdout"]) == 2
    assert "SHA-256 differs" in capsys.readouterr().err
