"""Zero-shot classification: EVAR caption rules, a fake CLAP model whose answers are known, task scoring
(accuracy / macro mAP), the evaluation-report zero-shot section and `kikimimi zeroshot` end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP, HashTextEncoder, patch_text_encoder, write_tiny_clap2025
from conftest import sine

from kikimimi.cli import main as cli_main
from kikimimi.evaluation.tasks import Task
from kikimimi.evaluation.zeroshot import class_captions, zero_shot_classify, zero_shot_task

SR = 16000


def test_caption_rules_follow_evar():
    assert class_captions(["dog_bark", "rain"]) == ["dog bark can be heard", "rain can be heard"]
    assert class_captions(["ANG", "NEU"], task_name="cremad") == ["angry person talking can be heard",
                                                                  "someone talking calmly can be heard"]
    assert class_captions(["hip_hop"], task_name="gtzan") == ["hip hop music can be heard"]
    assert class_captions(["brass"], task_name="nsynth") == ["the musical instrument sound of brass can be heard"]
    assert class_captions(["/m/0bt9lr"], label_names={"/m/0bt9lr": "Dog"}) == ["Dog can be heard"]
    assert class_captions(["x"], template="the sound of {}") == ["the sound of x"]
    with pytest.raises(ValueError, match="template"):
        class_captions(["x"], template="no slot")


def test_zero_shot_classify_gives_the_known_answer():
    model = FrequencyCLAP()
    labels = ["a 220 Hz tone", "a 880 Hz tone", "a 3520 Hz tone"]
    waves = [sine(f, 0.5, SR) for f in (3520, 220, 880, 220)]
    probs, predicted = zero_shot_classify(model, waves, labels, template="{}", sample_rate=SR)
    assert predicted == ["a 3520 Hz tone", "a 220 Hz tone", "a 880 Hz tone", "a 220 Hz tone"]
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert probs[0, 2] > 0.9  # cosine × exp(logit_scale) makes the softmax confident
    flat, _ = zero_shot_classify(model, waves, labels, template="{}", sample_rate=SR, use_logit_scale=False)
    assert flat[0, 2] < probs[0, 2] and flat.argmax(1).tolist() == probs.argmax(1).tolist()


def _task_csv(tmp_path, rows, name="tones"):
    path = tmp_path / f"{name}.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "label", "split"])
        w.writerows(rows)
    return path


def test_zero_shot_task_accuracy_and_multilabel_map(tmp_path):
    rows = []
    for i, (f, split) in enumerate([(220, "train"), (880, "train"), (3520, "train"), (220, "test"), (880, "test"),
                                    (3520, "test"), (880, "test")]):
        sf.write(tmp_path / f"c{i}.wav", sine(f, 1.5, SR), SR)  # longer than unit_s: only the first 1 s is used
        rows.append([f"c{i}.wav", f"{f}_hz", split])
    rows.append(["missing.wav", "220_hz", "test"])
    task = Task.from_csv(_task_csv(tmp_path, rows), unit_s=1.0)
    result = zero_shot_task(FrequencyCLAP(), task)
    assert result.metric == "accuracy" and result.score == 1.0
    assert result.n_test == 4 and [k for k, _ in result.errors] == ["missing.wav"]
    assert result.captions == ["220 hz can be heard", "3520 hz can be heard", "880 hz can be heard"]
    assert result.per_class_accuracy == {"220_hz": 1.0, "3520_hz": 1.0, "880_hz": 1.0}

    ml = []
    mixes = {"a": (220, 3520), "b": (880,), "c": (220,), "d": (3520, 880)}
    for name, freqs in mixes.items():
        sf.write(tmp_path / f"{name}.wav", sum(sine(f, 1.0, SR, 0.3) for f in freqs), SR)
        label = ",".join(f"{f}_hz" for f in freqs)
        ml += [[f"{name}.wav", label, "train"], [f"{name}.wav", label, "test"]]
    mtask = Task.from_csv(_task_csv(tmp_path, ml, "mix"), unit_s=1.0)
    assert mtask.multi_label
    mres = zero_shot_task(FrequencyCLAP(), mtask)
    assert mres.metric == "mAP" and mres.score == pytest.approx(1.0)
    # sigmoid of a cosine in [0, 1] lies in [0.5, sigmoid(1) = 0.731]
    assert mres.scores.shape == (4, 3) and ((mres.scores >= 0.5) & (mres.scores <= 0.7311)).all()


def test_evaluation_report_gets_a_zero_shot_section(tmp_path):
    from kikimimi.evaluation.run import ModelSpec, run_evaluation

    rows = []
    for i, f in enumerate([220, 880, 3520] * 4):
        sf.write(tmp_path / f"r{i}.wav", sine(f * (1 + 0.01 * i), 1.0, SR), SR)
        rows.append([f"r{i}.wav", f"{f}_hz", ("train", "train", "valid", "test")[i // 3]])
    task = Task.from_csv(_task_csv(tmp_path, rows), unit_s=1.0)
    fake = FrequencyCLAP()
    spec = ModelSpec("fake-clap", lambda t: fake, SR, 1e-2, "fake", "m2d",
                     zero_shot=lambda t: zero_shot_task(fake, t))
    outcome = run_evaluation([spec], [task], tmp_path / "report", seeds=(42,), plots=False)
    assert outcome.zero_shot["tones"]["fake-clap"].score == 1.0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Zero-shot (CLAP models)" in md and "| fake-clap | 100.0 |" in md
    assert "fake-clap,zs_tones,zero-shot,accuracy,1.000000,,3" in (tmp_path / "report" / "scores.csv").read_text()
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["zero_shot"]["tones"]["fake-clap"]["score"] == 1.0


def test_zeroshot_command_end_to_end(tmp_path, capsys, monkeypatch):
    from kikimimi.audio.synthetic import make_sound

    ckpt = write_tiny_clap2025(tmp_path / "models")
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    rng = np.random.default_rng(1)
    files = []
    for kind in ("tone", "clicks"):
        files.append(tmp_path / f"{kind}.wav")
        sf.write(files[-1], make_sound(kind, 0.8, 22050, rng), 22050)  # resampled to 16 kHz on load
    (tmp_path / "bad.wav").write_bytes(b"junk")
    argv = ["zeroshot", str(ckpt), *map(str, files), str(tmp_path / "bad.wav"), "--labels", "dog barking, rain,tone",
            "--top", "2", "--json"]
    assert cli_main(argv) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["labels"] == ["dog barking", "rain", "tone"]
    assert [r["file"] for r in data["results"]] == [str(f) for f in files]
    for r in data["results"]:
        assert len(r["scores"]) == 2 and r["scores"][0]["score"] >= r["scores"][1]["score"]
        assert r["predicted"] == r["scores"][0]["label"]
    assert "bad.wav" in out.err
    assert cli_main(["zeroshot", str(ckpt), str(files[0]), "--labels", " , "]) == 2
