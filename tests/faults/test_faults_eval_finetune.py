"""Fault suite: `kikimimi eval` and `kikimimi finetune` on a task whose CSV lists broken files next to good ones."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import official_layouts as ol
import torch

from kikimimi.audio.synthetic import make_dataset
from kikimimi.cli import main

from .inputs import fault_folder, named_once


def _task_with_bad_files(tmp_path: Path) -> tuple[Path, list[Path], int]:
    """A 3-class task CSV (good clips in every split) plus every bad input, spread over train and test."""
    labels = make_dataset(tmp_path / "audio", n_per_class=6, duration_s=0.5, classes=("tone", "chirp", "clicks"))
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    ff = fault_folder(tmp_path / "faults")
    bad = []
    for i, path in enumerate(sorted(ff.bad)):
        target = tmp_path / "audio" / path.name
        shutil.copyfile(path, target)
        bad.append(target)
        rows.append({**rows[i % len(rows)], "file_name": target.name, "split": ("train", "test")[i % 2]})
    task = tmp_path / "audio" / "task.csv"
    with open(task, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return task, bad, len(rows) - len(bad)


def test_eval_names_every_bad_file_once_and_scores_the_good_ones(tmp_path, capsys, fault_report):
    task, bad, n_good = _task_with_bad_files(tmp_path)
    out = tmp_path / "report"
    assert main(["eval", "logmel", "--task", str(task), "-o", str(out), "--seeds", "1", "--probe", "logistic",
                 "--no-plots"]) == 0
    console = capsys.readouterr()
    report = (out / "report.md").read_text()
    for path in bad:
        assert named_once(console.out + console.err, path), path.name
        assert named_once(report, path), path.name
    assert json.loads((out / "report.json").read_text())  # the report was written in full
    fault_report("eval", bad_named=len(bad), good_scored=n_good)


def test_finetune_names_every_bad_file_once_and_trains_on_the_good_ones(tmp_path, capsys, fault_report):
    task, bad, n_good = _task_with_bad_files(tmp_path)
    folder = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    folder.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=1), folder / "w.pth")
    out = tmp_path / "ft"
    code = main(["finetune", str(folder / "w.pth"), str(task), "-o", str(out), "--epochs", "1", "--batch-size", "8",
                 "--warmup-epochs", "0", "--quiet", "--device", "cpu"])
    console = capsys.readouterr()
    assert code == 0, console.err[-2000:]
    for path in bad:
        assert named_once(console.out + console.err, path), (path.name, console.err[-3000:])
    fault_report("finetune", bad_named=len(bad), good_used=n_good)
