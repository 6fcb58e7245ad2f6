"""CPU smoke chain of the four published M2D2 stages (../shared/docs/fact-sheet-m2d2-2026.md §1) through the commands a
user runs, each stage starting from the previous stage's output file, on a tiny model, generated audio and NTT's data
files as they are (files_*.csv over *_lms trees, capembs_*.npy for stage 1, rawcap_*.csv for stages 2 and 2.1):

1 ``pretrain --method m2d2_stage1`` → 1.1 ``finetune --recipe m2d2-stage1.1`` on its checkpoint → 2 ``pretrain --method
m2d2_stage2 --recipe official`` on the fine-tuned model → 2.1 ``pretrain --recipe m2d2-stage2.1`` on the stage-2
checkpoint (mask 0; projector, BERT and logit scale continue)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_m2d2 import tiny_bert_folder  # noqa: E402

from kikimimi.audio.decode import load_audio  # noqa: E402
from kikimimi.audio.synthetic import make_dataset  # noqa: E402
from kikimimi.checkpoints import load_encoder  # noqa: E402
from kikimimi.cli import main  # noqa: E402
from kikimimi.features.frontend import log_mel  # noqa: E402

#: generated clips → official-style names: AudioSet (11-character ID prefix) and WavCaps (<Source>_flac folder)
YTIDS = ["aaaaaaaaaa1", "bbbbbbbbbb2", "ccccccccc-3"]


def _official_data(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """``data/`` with *_lms log-mels [1, 80, T] of generated clips, a files_*.csv list, capembs_*.npy (pickled dict,
    24-d) and rawcap_*.csv files; returns (task CSV, file list, capembs folder, data folder)."""
    task = make_dataset(tmp_path / "audio", n_per_class=3, duration_s=1.2, classes=("tone", "noise_burst"))
    clips = sorted((tmp_path / "audio").rglob("*.wav"))
    data = tmp_path / "data"
    names = [f"audioset_lms/unbalanced_train_segments/{y}_0.000.npy" for y in YTIDS]
    names += [f"wavcaps_lms/FreeSound_flac/{i}.npy" for i in range(len(clips) - len(YTIDS))]
    for name, clip in zip(names, clips, strict=True):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(data / name, log_mel(load_audio(clip, 16000)[0], "m2d-16k")[None].astype(np.float32))
    files = data / "files_A_W.csv"
    files.write_text("file_name\n" + "".join(f"{n}\n" for n in [*names, "audioset_lms/x/gone_missing.npy"]))
    keys = YTIDS + [f"FreeSound{i}" for i in range(len(clips) - len(YTIDS))]
    (data / "rawcap_auto_acd.csv").write_text("ytid,caption\n" + "".join(f"{k},The sound of {k}.\n" for k in YTIDS))
    (data / "rawcap_wav_caps.csv").write_text(
        "ytid,caption\n" + "".join(f"{k},A {k} recording.\n" for k in keys[len(YTIDS) :])
    )
    cache = data / "cache" / "m2d_clap_vit_base-80x608p16x16p16kpN-_N_V_E_m_b_2"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(cache / "capembs_all.npy", {k: rng.normal(size=(2, 24)).astype(np.float16) for k in keys})
    return task, files, cache, data


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_stage1_then_1_1_then_2_then_2_1(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task, files, capembs, data = _official_data(tmp_path)
    tiny_bert_folder(tmp_path / "bert")
    runs = tmp_path / "runs"
    common = ["--data", str(files), "--out", str(runs), "--steps", "1", "--batch-size", "2", "--device", "cpu",
              "--norm-samples", "4", "--no-progress"]  # fmt: skip

    # stage 1: NV-Embed caption embeddings from NTT's capembs cache, official file list (a missing file is skipped)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["pretrain", "--method", "m2d2_stage1", "--size", "tiny", "--input-frames", "64", *common,
                     "--captions", str(capembs)]) == 0  # fmt: skip
    assert any("gone_missing.npy" in str(w.message) for w in caught)
    (s1,) = [p for p in runs.iterdir() if p.name.startswith("m2d_clap_vit_tiny-80x64p16x16p16kpN-")]
    assert json.loads((s1 / "config.json").read_text())["decisions"]["text_dim"] == 24
    bundle1 = load_encoder(s1 / "checkpoint-1.pth")
    assert bundle1.config["audio_proj"]["kind"] == "semantic" and bundle1.text_proj is not None

    # stage 1.1: the stage-1 checkpoint fine-tuned with the structured 0.5 training mask (101 frames here, not 1001)
    ft = tmp_path / "stage1.1"
    assert main(["finetune", str(s1 / "checkpoint-1.pth"), str(task), "--recipe", "m2d2-stage1.1", "--epochs", "1",
                 "--batch-size", "4", "--dur-frames", "101", "--warmup-epochs", "0", "--out", str(ft),
                 "--quiet"]) == 0  # fmt: skip
    settings = json.loads((ft / "report.json").read_text())["result"]["settings"]
    assert (settings["training_mask"], settings["training_mask_mode"], settings["dur_frames"]) == (0.5, "structured",
                                                                                                   101)  # fmt: skip
    model11 = ft / "fold0" / "model"
    assert load_encoder(model11).config["vit"]["input_size"] == [80, 101]

    # stage 2: clap_only on the fine-tuned encoder, captions from NTT's rawcap files (ytid keys)
    spec = f"bert:{tmp_path / 'bert'}"
    texts = ["--captions", str(data), "--text-encoder", spec, "--input-frames", "100"]
    assert main(["pretrain", "--method", "m2d2_stage2", "--recipe", "official", "--init-from", str(model11),
                 *common, *texts]) == 0  # fmt: skip
    (s2,) = [p for p in runs.iterdir() if "p16kpBpTI-" in p.name]
    c2 = json.loads((s2 / "config.json").read_text())
    assert (c2["mask_ratio"], c2["mask_strategy"], c2["pad_mode"]) == (0.3, "structured", "log_zero")
    assert c2["init_from"] == str(model11.resolve()) or Path(c2["init_from"]).parent == model11.resolve()
    assert c2["method_config"]["continued_from_stage2"] is False
    sd2 = _state(s2 / "checkpoint-1.pth")
    assert float(sd2["logit_scale"]) == pytest.approx(4.6052, abs=1e-3)  # reset to ln 100, clamped there
    bundle2 = load_encoder(s2 / "checkpoint-1.pth")
    assert bundle2.text_encoder_state and bundle2.config["vit"]["input_size"] == [80, 101]

    # stage 2.1 from the stage-2 file: mark its projector, BERT and logit scale so continuation is visible
    sd2["logit_scale"] = torch.tensor(3.0)
    bert_key = next(k for k in sd2 if k.startswith("text_encoder.text_encoder.") and k.endswith("query.weight"))
    sd2[bert_key] = sd2[bert_key] + 0.5
    sd2["backbone.audio_proj.sem_token"] = sd2["backbone.audio_proj.sem_token"] + 1.0
    marked = s2 / "checkpoint-2.pth"
    torch.save({"model": sd2}, marked)
    assert main(["pretrain", "--recipe", "m2d2-stage2.1", "--init-from", str(marked), *common, *texts]) == 0
    (s21,) = [p for p in runs.iterdir() if p.name.split("-")[2].endswith("FT")]
    c21 = json.loads((s21 / "config.json").read_text())
    assert (c21["method"], c21["mask_ratio"], c21["seed"]) == ("m2d2_stage2", 0.0, 0)
    assert c21["method_config"]["continued_from_stage2"] is True
    sd21 = _state(s21 / "checkpoint-1.pth")
    assert set(sd21) == set(sd2)
    assert float(sd21["logit_scale"]) == pytest.approx(3.0, abs=1e-3)  # continued, not reset to ln 100
    torch.testing.assert_close(sd21[bert_key], sd2[bert_key], atol=1e-3, rtol=0)
    torch.testing.assert_close(sd21["backbone.audio_proj.sem_token"], sd2["backbone.audio_proj.sem_token"], atol=1e-3,
                               rtol=0)  # fmt: skip
    assert load_encoder(s21 / "checkpoint-1.pth").text_encoder_state
