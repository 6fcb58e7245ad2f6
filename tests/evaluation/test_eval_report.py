"""`kikimimi eval` and `kikimimi plot`: report files, baselines, notes, plots."""

from __future__ import annotations

import csv
import json

import matplotlib.image as mpimg
import numpy as np
import official_layouts as ol
import torch

from kikimimi.audio.synthetic import make_dataset
from kikimimi.cli import main


def _tiny_m2d(tmp_path):
    d = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    d.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=32, depth=1), d / "w.pth")
    return d / "w.pth"


def test_eval_report_with_baselines(tmp_path, capsys):
    labels = make_dataset(tmp_path / "audio", n_per_class=5, duration_s=1.0,
                          classes=("tone", "noise_burst", "clicks"))
    out = tmp_path / "report"
    assert main(["eval", str(_tiny_m2d(tmp_path)), "--task", str(labels), "-o", str(out), "--seeds", "2"]) == 0
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    models = [r["model"] for r in rows]
    # 3 models (log-mel, the M2D file, its random-init twin) × 2 probes (linear, logistic)
    assert models[0] == "log-mel stats" and any("random init" in m for m in models) and len(rows) == 6
    assert [r["probe"] for r in rows[:2]] == ["linear", "logistic"]
    for r in rows:
        assert 0.0 <= float(r["mean"]) <= 1.0 and int(r["n_test"]) == 3
    report = json.loads((out / "report.json").read_text())
    res = report["tasks"]["labels"]["results"]["log-mel stats"]
    assert len(res["seed_scores"]) == 2 and set(res["per_class_accuracy"]) == {"clicks", "noise_burst", "tone"}
    assert len(report["tasks"]["labels"]["fingerprint"]) == 64
    md = (out / "report.md").read_text()
    assert "| log-mel stats |" in md and "Per-class accuracy" in md
    for png in [out / "labels" / "clusters.png", *sorted((out / "labels").glob("confusion-*.png"))]:
        assert mpimg.imread(png).shape[0] > 100
    assert len(list((out / "labels").glob("confusion-*.png"))) == 6


def test_no_valid_split_is_reported(tmp_path):
    root = tmp_path / "task"
    make_dataset(tmp_path / "audio", n_per_class=6, duration_s=0.5, classes=("tone", "clicks"))
    rows = list(csv.DictReader(open(tmp_path / "audio" / "labels.csv")))
    root.mkdir()
    with open(root / "cv.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "label", "fold"])
        for i, r in enumerate(rows):
            w.writerow([str(tmp_path / "audio" / r["file_name"]), r["label"], 1 + i % 2])
    out = tmp_path / "rep"
    assert main(["eval", "logmel", "--task", str(root / "cv.csv"), "-o", str(out), "--seeds", "1",
                 "--no-plots"]) == 0
    assert "no validation split" in (out / "report.md").read_text()


def test_plot_command(tmp_path):
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(0, 1, (10, 8)), rng.normal(5, 1, (10, 8))])
    np.save(tmp_path / "e.npy", emb)
    (tmp_path / "l.csv").write_text("file_name,label\n" + "".join(f"f{i}.wav,{'ab'[i // 10]}\n" for i in range(20)))
    assert main(["plot", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.csv"), "-o",
                 str(tmp_path / "p.png")]) == 0
    assert mpimg.imread(tmp_path / "p.png").shape[0] > 100
    (tmp_path / "bad.csv").write_text("file_name,label\nx,a\n")
    assert main(["plot", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "bad.csv"), "-o",
                 str(tmp_path / "q.png")]) == 2
