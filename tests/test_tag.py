"""`kikimimi tag`: sorted-MID label order, head checks, sliding windows."""

from __future__ import annotations

import numpy as np
import official_layouts as ol
import soundfile as sf
import torch

from kikimimi.cli import main
from kikimimi.commands.tag import read_labels_sorted_by_mid, windows


def test_sorted_mid_order(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text('index,mid,display_name\n0,/m/09x0r,Speech\n1,/m/05zppz,"Male speech, man speaking"\n'
                        "2,/m/02zsn,Female speech\n")
    assert read_labels_sorted_by_mid(csv_path) == ["Female speech", "Male speech, man speaking", "Speech"]


def test_windows_cover_clip():
    assert windows(5 * 16000, 16000, 10.0, 5.0) == [(0, 80000)]
    spans = windows(23 * 16000, 16000, 10.0, 5.0)
    assert spans[0] == (0, 160000) and spans[-1][1] == 23 * 16000
    assert all(e - s == 160000 for s, e in spans)


def _tagging_model(tmp_path, n_classes: int):
    d = tmp_path / "m2d_vit_base-80x1001p16x16-221006-mr7_as_46ab246d"
    d.mkdir()
    state = ol.evar_finetuned(embed_dim=64, depth=2, n_classes=n_classes)
    torch.save(state, d / "weights_ep69it3124-0.48494.pth")
    return d / "weights_ep69it3124-0.48494.pth"


def test_tag_cli(tmp_path, capsys):
    model = _tagging_model(tmp_path, 3)
    labels = tmp_path / "labels.csv"
    labels.write_text("index,mid,display_name\n0,/m/c,Cat\n1,/m/a,Alarm\n2,/m/b,Bird\n")
    wav = tmp_path / "x.wav"
    sf.write(wav, (np.random.default_rng(0).standard_normal(16000 * 12) * 0.1).astype(np.float32), 16000)
    assert main(["tag", str(wav), "-m", str(model), "--labels", str(labels), "--top-k", "2",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(wav) and len(out) == 1 + 2  # 12 s, 10-s windows, 5-s hop -> 0-10, 2-12
    spans = [tuple(float(v) for v in line.split(" s ")[0].split("-")) for line in out[1:]]
    assert spans == [(0.0, 10.0), (2.0, 12.0)]
    for line in out[1:]:
        assert sum(name in line for name in ("Alarm", "Bird", "Cat")) == 2  # top-2 of 3 classes
    # a label list that does not match the head -> clear error
    labels.write_text("index,mid,display_name\n0,/m/c,Cat\n")
    assert main(["tag", str(wav), "-m", str(model), "--labels", str(labels)]) == 2
    assert "3 outputs" in capsys.readouterr().err
