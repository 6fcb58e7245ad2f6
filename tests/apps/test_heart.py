"""Heart-sound app: segmentation, patient rule, class weights, and a run on separable synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from kikimimi.apps.heart import (
    HeartConfig,
    class_weights,
    patient_decision,
    read_heart_csv,
    recording_logits,
    run_heart,
    score_labels,
    segment_recording,
)
from kikimimi.audio.synthetic import make_sound
from kikimimi.evaluation.baselines import LogMelStats


def test_segment_recording_pads_last():
    wave = np.arange(23, dtype=np.float32) + 1
    segs = segment_recording(wave, sample_rate=10, segment_s=1.0)
    assert segs.shape == (3, 10)
    np.testing.assert_array_equal(segs[0], wave[:10])
    np.testing.assert_array_equal(segs[2, :3], wave[20:])
    assert (segs[2, 3:] == 0).all()
    assert segment_recording(wave[:4], 10, 1.0).shape == (1, 10)
    assert segment_recording(wave[:20], 10, 1.0).shape == (2, 10)


@pytest.mark.parametrize(
    "recs, expected",
    [
        (["Absent", "Present", "Unknown"], "Present"),
        (["Absent", "Unknown", "Absent"], "Unknown"),
        (["Absent", "Absent"], "Absent"),
        (["Present"], "Present"),
        (["Unknown", "Present"], "Present"),
    ],
)
def test_patient_rule(recs, expected):
    assert patient_decision(recs) == expected


def test_class_weights_and_recording_mean():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2])  # counts 4, 2, 6 over 12
    w = class_weights(y, 3, [1.0, math.sqrt(3), math.sqrt(5)])
    np.testing.assert_allclose(w, [12 / 12 * 1, 12 / 6 * math.sqrt(3), 12 / 18 * math.sqrt(5)], rtol=1e-6)
    np.testing.assert_allclose(class_weights(y, 3, [1, 1, 1], balanced=False), [1, 1, 1])
    seg = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    np.testing.assert_allclose(recording_logits(seg, np.array([0, 0, 1]), 2), [[2.0, 1.0], [0.0, 5.0]])


def test_score_labels_hand_case():
    classes = ["Present", "Unknown", "Absent"]
    m = score_labels(
        ["Present", "Unknown", "Absent", "Absent"], ["Present", "Absent", "Absent", "Present"], classes
    )
    assert m["w_acc"] == pytest.approx((5 + 0 + 1) / (5 + 3 + 2))
    assert m["recall"] == {"Present": 1.0, "Unknown": 0.0, "Absent": 0.5}
    assert m["uar"] == pytest.approx(0.5)


SOUND_OF = {"Present": "noise_burst", "Unknown": "silence", "Absent": "clicks"}


def make_heart_dataset(root, n_patients=30, sr=16000, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["file_name,label,recording_id,patient_id,split"]
    labels = ["Present", "Unknown", "Absent"]
    for p in range(n_patients):
        label = labels[p % 3]
        split = ("train", "train", "train", "valid", "test")[(p // 3) % 5]
        for loc in ("AV", "MV"):
            wave = make_sound(SOUND_OF[label], 2.5, sr, rng)
            name = f"{p}_{loc}.wav"
            sf.write(root / name, wave, sr)
            lines.append(f"{name},{label},{p}_{loc},{p},{split}")
    lines.append("missing.wav,Absent,x_AV,x,train")
    csv = root / "heart.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def test_run_heart_on_separable_synthetic_data(tmp_path):
    csv = make_heart_dataset(tmp_path)
    recs = read_heart_csv(csv)
    assert recs[0].patient_id == "0" and recs[0].recording_id == "0_AV"
    cfg = HeartConfig(segment_s=1.0, optimizer="adam", lr=1e-2, epochs=30, batch_size=64)
    res = run_heart(csv, LogMelStats("m2d-16k"), sample_rate=16000, config=cfg, seed=0)
    assert [k for k, _ in res.errors] == ["missing.wav"]
    assert res.patient_metrics["n"] == 6 and res.recording_metrics["n"] == 12
    assert res.patient_metrics["w_acc"] >= 0.9
    assert res.recording_metrics["uar"] >= 0.9
    assert set(res.patient_metrics["recall"]) == {"Present", "Unknown", "Absent"}
    assert res.settings["best_epoch"] >= 1  # epoch selected on the valid split
    # the patient prediction follows the rule applied to its recording predictions
    for row in res.patient_predictions:
        recs_p = [r["prediction"] for r in res.recording_predictions if r["patient_id"] == row["patient_id"]]
        assert row["prediction"] == patient_decision(recs_p)
    # deterministic for a seed
    res2 = run_heart(csv, LogMelStats("m2d-16k"), sample_rate=16000, config=cfg, seed=0)
    assert [r["logits"] for r in res2.recording_predictions] == [
        r["logits"] for r in res.recording_predictions
    ]


def test_run_heart_shuffled_labels_not_learnable(tmp_path):
    csv = make_heart_dataset(tmp_path, seed=1)
    lines = csv.read_text().splitlines()
    rng = np.random.default_rng(0)
    # new labels per patient, independent of the sound type
    new = {str(p): ["Present", "Unknown", "Absent"][int(rng.integers(3))] for p in range(30)}
    out = [lines[0]]
    for line in lines[1:-1]:
        f = line.split(",")
        f[1] = new[f[3]]
        out.append(",".join(f))
    csv.write_text("\n".join(out) + "\n")
    cfg = HeartConfig(segment_s=1.0, optimizer="adam", lr=1e-2, epochs=30, batch_size=64)
    res = run_heart(csv, LogMelStats("m2d-16k"), sample_rate=16000, config=cfg, seed=0)
    assert res.recording_metrics["uar"] < 0.8


def test_labels_outside_classes_rejected(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    csv = tmp_path / "h.csv"
    csv.write_text("file_name,label,recording_id,patient_id,split\na.wav,Murmur,a,1,train\n")
    with pytest.raises(ValueError, match="Murmur"):
        run_heart(csv, LogMelStats(), sample_rate=16000)
