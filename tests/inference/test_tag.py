"""`kikimimi tag`: sorted-MID label order, plain label lists, head checks, sliding windows, a fine-tuned head's own
class names and softmax."""

from __future__ import annotations

import json

import numpy as np
import official_layouts as ol
import pytest
import soundfile as sf
import torch

import kikimimi
from kikimimi.cli import main
from kikimimi.evaluation.finetune import FinetuneConfig, build_finetune_model, export_finetuned
from kikimimi.inference.tagging import head_activation, read_label_list, read_labels_sorted_by_mid
from kikimimi.inference.windows import window_bounds


def test_sorted_mid_order(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text('index,mid,display_name\n0,/m/09x0r,Speech\n1,/m/05zppz,"Male speech, man speaking"\n'
                        "2,/m/02zsn,Female speech\n")
    assert read_labels_sorted_by_mid(csv_path) == ["Female speech", "Male speech, man speaking", "Speech"]


def test_windows_cover_clip():
    assert window_bounds(5 * 16000, 16000, 10.0, 5.0) == [(0, 80000)]
    spans = window_bounds(23 * 16000, 16000, 10.0, 5.0)
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


def test_plain_label_lists(tmp_path):
    lines = tmp_path / "names.txt"
    lines.write_text("# my classes\nCat\n\nMale speech, man speaking\nBird\n")
    assert read_label_list(lines) == ["Cat", "Male speech, man speaking", "Bird"]  # one per line: commas kept
    one_line = tmp_path / "names.csv"
    one_line.write_text("cat, dog,bird\n")
    assert read_label_list(one_line) == ["cat", "dog", "bird"]
    assert read_label_list("cat,dog , bird") == ["cat", "dog", "bird"]  # the names themselves
    audioset = tmp_path / "class_labels_indices.csv"
    audioset.write_text("index,mid,display_name\n0,/m/c,Cat\n1,/m/a,Alarm\n")
    assert read_label_list(audioset) == ["Alarm", "Cat"]  # sorted by mid
    with pytest.raises(ValueError, match="no such labels file"):
        read_label_list(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="given twice: cat"):
        read_label_list("cat,dog,cat")


def test_head_activation_rules():
    assert head_activation({"head": {"in_dim": 8, "n_classes": 3, "activation": "softmax"}}) == "softmax"
    assert head_activation({"head": {"in_dim": 8, "n_classes": 527}}) == "sigmoid"  # official AudioSet heads
    # a single-label fine-tune written before the activation was stored
    assert head_activation({"head": {"classes": ["a", "b"]}, "finetune": {"metric": "accuracy"}}) == "softmax"
    with pytest.raises(ValueError, match="relu"):
        head_activation({"head": {"activation": "relu"}})


def _window_scores(out_jsonl):
    records = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    return [{t["label"]: t["score"] for t in w["tags"]} for r in records if "windows" in r for w in r["windows"]]


def test_a_fine_tuned_head_tags_with_its_own_names_and_softmax(tmp_path, capsys):
    base = kikimimi.load(_tagging_model(tmp_path, 5), device="cpu")
    model = build_finetune_model(base.bundle, 3, FinetuneConfig(seed=0))
    with torch.no_grad():
        model.head.linear.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    classes = ["cat", "dog", "bird"]
    folder = export_finetuned(model, base.bundle, classes, tmp_path / "ft", multi_label=False)
    head_cfg = json.loads((folder / "config.json").read_text())["config"]["head"]
    assert head_cfg["classes"] == classes and head_cfg["activation"] == "softmax"
    wav = tmp_path / "x.wav"
    sf.write(wav, (np.random.default_rng(0).standard_normal(16000 * 12) * 0.1).astype(np.float32), 16000)
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(wav), "-m", str(folder), "--top-k", "3", "--device", "cpu", "--out", str(out)]) == 0
    windows = _window_scores(out)
    assert len(windows) == 2 and all(set(w) == set(classes) for w in windows)
    assert all(sum(w.values()) == pytest.approx(1.0, abs=1e-5) for w in windows)  # softmax, as trained
    assert "cat" in capsys.readouterr().out
    sig = tmp_path / "sigmoid.jsonl"
    assert main(["tag", str(wav), "-m", str(folder), "--top-k", "3", "--device", "cpu", "--out", str(sig),
                 "--activation", "sigmoid"]) == 0
    assert all(abs(sum(w.values()) - 1.0) > 1e-3 for w in _window_scores(sig))  # what scoring it with sigmoids gave
    multi = export_finetuned(model, base.bundle, classes, tmp_path / "ft-multi", multi_label=True)
    assert json.loads((multi / "config.json").read_text())["config"]["head"]["activation"] == "sigmoid"


def test_a_head_without_names_needs_labels_and_takes_a_plain_list(tmp_path, capsys):
    model = _tagging_model(tmp_path, 3)
    wav = tmp_path / "x.wav"
    sf.write(wav, (np.random.default_rng(0).standard_normal(16000 * 3) * 0.1).astype(np.float32), 16000)
    assert main(["tag", str(wav), "-m", str(model), "--device", "cpu"]) == 2
    assert "stores no class names; pass --labels" in capsys.readouterr().err
    assert main(["tag", str(wav), "-m", str(model), "--device", "cpu", "--labels", "Cat,Alarm,Bird"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(name in out[1] for name in ("Alarm", "Bird", "Cat"))
