"""``kikimimi.pipeline``: the call and output of transformers' zero-shot-audio-classification and feature-extraction
pipelines, checked against those pipelines' own post-processing (run offline on the same logits / features)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from clap_fakes import FrequencyCLAP
from conftest import sine

import kikimimi
from kikimimi.checkpoints.registry import default_packaged_model
from kikimimi.inference import pipelines
from kikimimi.inference.pipelines import FeatureExtractionPipeline, ZeroShotAudioClassificationPipeline, pipeline

LABELS = ["a 1000 Hz tone", "a 440 Hz tone", "a 200 Hz tone", "a 3000 Hz tone"]


def _transformers_zero_shot(logits: np.ndarray, labels: list[str]) -> list[dict]:
    """transformers' own ZeroShotAudioClassificationPipeline.postprocess on ``logits`` ``[C]`` (it uses no state)."""
    zsac = pytest.importorskip("transformers.pipelines.zero_shot_audio_classification")
    outputs = {"candidate_labels": list(labels), "logits": torch.as_tensor(logits, dtype=torch.float32)[None]}
    return zsac.ZeroShotAudioClassificationPipeline.postprocess(None, outputs)


def _logits(model: FrequencyCLAP, wave: np.ndarray, labels: list[str]) -> np.ndarray:
    """CLAP logits_per_audio of one clip, written out here: cosine × temperature."""
    a = model.encode_audio([wave], model.sample_rate)[0].astype(np.float64)
    t = model.encode_text(labels).astype(np.float64)
    cos = (t @ a) / (np.linalg.norm(t, axis=1) * np.linalg.norm(a))
    return cos * model.temperature_scale


def test_zero_shot_output_is_what_the_transformers_pipeline_returns():
    model = FrequencyCLAP()
    classifier = kikimimi.pipeline("zero-shot-audio-classification", model=model, hypothesis_template="{}")
    assert isinstance(classifier, ZeroShotAudioClassificationPipeline)
    wave = sine(440.0, 1.0, 16000)
    out = classifier(wave, candidate_labels=LABELS)
    expected = _transformers_zero_shot(_logits(model, wave, LABELS), LABELS)
    assert [list(d) for d in out] == [list(d) for d in expected] == [["score", "label"]] * len(LABELS)
    assert [d["label"] for d in out] == [d["label"] for d in expected]
    assert out[0]["label"] == "a 440 Hz tone"
    np.testing.assert_allclose([d["score"] for d in out], [d["score"] for d in expected], rtol=1e-5, atol=1e-6)
    scores = [d["score"] for d in out]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert all(type(d["score"]) is float and type(d["label"]) is str for d in out)


def test_zero_shot_batch_gives_one_list_per_clip_in_input_order(wav_factory):
    model = FrequencyCLAP()
    classifier = pipeline("zero-shot-audio-classification", model=model, hypothesis_template="{}")
    path = wav_factory("tone.wav", freq_hz=3000.0, duration_s=1.0)
    batch = [sine(200.0, 1.0, 16000), str(path), {"array": sine(1000.0, 1.0, 32000), "sampling_rate": 32000},
             torch.from_numpy(sine(440.0, 1.0, 16000))]
    out = classifier(batch, candidate_labels=LABELS)
    assert len(out) == 4 and all(len(r) == len(LABELS) for r in out)
    assert [r[0]["label"] for r in out] == ["a 200 Hz tone", "a 3000 Hz tone", "a 1000 Hz tone", "a 440 Hz tone"]
    assert model.embedded == [4]  # the batch is encoded in one call
    single = classifier(batch[1], candidate_labels=LABELS)
    assert single == out[1]


def test_zero_shot_template_is_applied_to_every_label():
    seen: list[list[str]] = []

    class Recording(FrequencyCLAP):
        def encode_text(self, texts):
            seen.append(list(texts))
            return super().encode_text(texts)

    classifier = pipeline("zero-shot-audio-classification", model=Recording())
    classifier(sine(440.0, 0.5, 16000), candidate_labels=["440", "200"])
    classifier(sine(440.0, 0.5, 16000), candidate_labels=["440"], hypothesis_template="This is a sound of {}.")
    assert seen == [["440 can be heard", "200 can be heard"], ["This is a sound of 440."]]


def test_zero_shot_errors_say_what_is_wrong():
    classifier = pipeline("zero-shot-audio-classification", model=FrequencyCLAP())
    wave = sine(440.0, 0.5, 16000)
    with pytest.raises(ValueError, match="candidate_labels"):
        classifier(wave)
    with pytest.raises(ValueError, match="must contain"):
        classifier(wave, candidate_labels=["a"], hypothesis_template="no slot")
    with pytest.raises(ValueError, match="single-channel"):
        classifier([np.zeros((2, 300), np.float32)], candidate_labels=["a"])
    with pytest.raises(ValueError, match="'array'"):
        classifier({"sampling_rate": 16000}, candidate_labels=["a"])
    with pytest.raises(TypeError, match="expected a file path"):
        classifier([b"RIFF"], candidate_labels=["a"])
    with pytest.raises(ValueError, match="unknown pipeline task"):
        pipeline("audio-classification", model=FrequencyCLAP())
    with pytest.raises(TypeError, match="needs a CLAP model"):
        pipeline("zero-shot-audio-classification", model=object())


def test_default_model_is_the_packaged_one(monkeypatch):
    loaded = []
    monkeypatch.setattr(pipelines, "load_clap", lambda name, **kw: loaded.append(name) or FrequencyCLAP())
    monkeypatch.setattr(pipelines, "load", lambda name, device=None, **kw: loaded.append(name))
    name = default_packaged_model("clap")
    if name is None:
        with pytest.raises(ValueError, match="no model given"):
            pipeline("zero-shot-audio-classification")
        return
    assert isinstance(pipeline("zero-shot-audio-classification"), ZeroShotAudioClassificationPipeline)
    pipeline("zero-shot-audio-classification", model="hf://kiki/clap")
    assert loaded == [name, "hf://kiki/clap"]
    monkeypatch.setattr(pipelines, "default_packaged_model", lambda kind: None)
    with pytest.raises(ValueError, match="no model given"):
        pipeline("feature-extraction")


def test_feature_extraction_gives_frame_features_as_transformers_does(tiny_m2d_file, wav_factory):
    encoder = kikimimi.load(tiny_m2d_file, "cpu", precision="fp32")
    extractor = pipeline("feature-extraction", model=str(tiny_m2d_file), device="cpu", precision="fp32")
    assert isinstance(extractor, FeatureExtractionPipeline)
    path = wav_factory("a.wav", duration_s=1.0)
    frames, _ = encoder.embed_frames(path)  # [1, T, D]
    ours = extractor(path)
    fe = pytest.importorskip("transformers.pipelines.feature_extraction")
    theirs = fe.FeatureExtractionPipeline.postprocess(None, (torch.as_tensor(frames),))
    assert np.asarray(ours).shape == np.asarray(theirs).shape == (1, frames.shape[1], encoder.embedding_dim)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-6)
    as_tensor = extractor(path, return_tensors=True)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (1, frames.shape[1], encoder.embedding_dim)
    pooled = extractor([path, sine(440.0, 2.0, 16000)], pool=True, return_tensors=True)
    assert len(pooled) == 2 and pooled[0].shape == (1, encoder.embedding_dim)
    np.testing.assert_allclose(pooled[0][0].numpy(), encoder.embed(path), rtol=1e-5, atol=1e-6)
    assert pipeline("feature-extraction", model=encoder).model is encoder
    with pytest.raises(TypeError, match="AudioEncoder or CLAPModel"):
        pipeline("feature-extraction", model=FrequencyCLAP())


def test_import_kikimimi_and_its_pipeline_name_stay_light():
    code = "import sys, kikimimi; kikimimi.pipeline; kikimimi.from_pretrained; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
