"""The mteb adapter, run through mteb's own evaluation on small local tasks built from generated audio."""

from __future__ import annotations

import numpy as np
import pytest

mteb = pytest.importorskip("mteb")
datasets = pytest.importorskip("datasets")

from mteb.abstasks.classification import AbsTaskClassification  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from mteb.abstasks.zeroshot_classification import AbsTaskZeroShotClassification  # noqa: E402

import kikimimi  # noqa: E402
from kikimimi.audio.synthetic import make_sound  # noqa: E402
from kikimimi.evaluation.harness_mteb import MtebAdapterError, audio_items, mteb_model, mteb_model_meta  # noqa: E402

CLASSES = ("tone", "noise_burst")


def _metadata(name: str, task_type: str, category: str, modalities: list[str]) -> TaskMetadata:
    meta = TaskMetadata(
        name=name, description="Generated sounds (kikimimi.audio.synthetic), a local test task.",
        reference="https://pypi.org/project/kikimimi/", dataset={"path": f"local/{name}", "revision": "1"},
        type=task_type, category=category, eval_splits=["test"], eval_langs=["eng-Latn"], main_score="accuracy",
        date=("2026-12-01", "2026-12-07"), domains=[], task_subtypes=[], license="cc0-1.0",
        annotations_creators="derived", dialect=[], sample_creation="created", bibtex_citation="",
    )
    meta.modalities = modalities
    return meta


def _clips(n_per_class: int, seed: int, rates=(16000, 8000)) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    audio, labels = [], []
    for i in range(n_per_class):
        for label, kind in enumerate(CLASSES):
            rate = rates[i % len(rates)]
            audio.append({"array": make_sound(kind, 1.0, rate, rng).tolist(), "sampling_rate": rate})
            labels.append(label)
    return {"audio": audio, "label": labels}


class LocalAudioClassification(AbsTaskClassification):
    metadata = _metadata("KikimimiLocalAudioClassification", "AudioClassification", "a2c", ["audio"])
    input_column_name = "audio"
    n_experiments = 2  # mteb's default 10 logistic-regression fits would only slow the test

    def load_data(self, **kwargs):
        self.dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict(_clips(6, 0)),
                                             "test": datasets.Dataset.from_dict(_clips(3, 1))})
        self.data_loaded = True


class LocalAudioZeroShot(AbsTaskZeroShotClassification):
    metadata = _metadata("KikimimiLocalAudioZeroShot", "AudioZeroshotClassification", "a2t", ["audio", "text"])
    input_column_name = "audio"
    label_column_name = "label"

    def load_data(self, **kwargs):
        self.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_dict(_clips(3, 2, rates=(16000,)))})
        self.data_loaded = True

    def get_candidate_labels(self) -> list[str]:
        return [f"the sound of a {c.replace('_', ' ')}" for c in CLASSES]


def _score(result) -> float:
    (task_result,) = result.task_results
    return float(task_result.scores["test"][0]["accuracy"])


def test_audio_encoder_runs_an_mteb_classification_end_to_end(tiny_m2d_file, monkeypatch):
    model = kikimimi.load(tiny_m2d_file, "cpu", precision="fp32")
    wrapper = mteb_model(model, name="kikimimi/tiny-m2d")
    calls = []
    embed = model.embed
    monkeypatch.setattr(model, "embed", lambda clips, rate: calls.append((len(clips), rate)) or embed(clips, rate))
    result = mteb.evaluate(wrapper, LocalAudioClassification(), cache=None, show_progress_bar=False,
                           co2_tracker=False)
    assert 0.0 <= _score(result) <= 1.0
    assert sum(n for n, _ in calls) == 12 + 6  # every train and test clip embedded once, by kikimimi
    assert {rate for _, rate in calls} == {16000, 8000}  # each clip at its own rate (resampled by kikimimi)
    assert wrapper.mteb_model_meta.embed_dim == model.embedding_dim
    assert wrapper.mteb_model_meta.modalities == ["audio"]


def test_clap_runs_an_mteb_zero_shot_task_with_its_text_side(tmp_path):
    from clap_fakes import HashTextEncoder, write_tiny_clap2025

    clap = kikimimi.load_clap(write_tiny_clap2025(tmp_path), text_encoder=HashTextEncoder(32), device="cpu",
                              precision="fp32")
    wrapper = mteb_model(clap, name="kikimimi/tiny-clap")
    assert wrapper.mteb_model_meta.modalities == ["audio", "text"]
    result = mteb.evaluate(wrapper, LocalAudioZeroShot(), cache=None, show_progress_bar=False, co2_tracker=False)
    assert 0.0 <= _score(result) <= 1.0

    # the numbers mteb scored are kikimimi's: its zero-shot choice from the same embeddings
    clips = audio_items(_clips(3, 2, rates=(16000,))["audio"])
    audio = clap.encode_audio([w for w, _ in clips], 16000)
    text = clap.encode_text(LocalAudioZeroShot().get_candidate_labels())
    predicted = np.asarray(clap.similarity(audio, text)).argmax(axis=1)
    expected = float(np.mean(predicted == np.array([0, 1] * 3)))
    assert _score(result) == pytest.approx(expected)


def test_model_meta_loader_loads_the_source(tiny_m2d_file, monkeypatch):
    monkeypatch.setenv("KIKIMIMI_PRECISION", "fp32")
    meta = mteb_model_meta(tiny_m2d_file, name="kiki/tiny-m2d", license="apache-2.0")
    assert meta.name == "kiki/tiny-m2d" and meta.modalities == ["audio"]
    # meta.load_model() first checks mteb's "audio" extra (torchaudio, not installable beside this torch), then
    # calls the loader with the name and revision: the call made here
    wrapper = meta.loader(meta.name, meta.revision)
    assert wrapper.mteb_model_meta.name == "kiki/tiny-m2d"
    assert wrapper.mteb_model_meta.embed_dim == 320


def test_audio_items_and_errors():
    class Decoded:
        def get_all_samples(self):
            return type("S", (), {"data": np.ones((2, 8), np.float32), "sample_rate": 8000})()

    (wave, rate), (wave2, rate2) = audio_items([{"array": [0.0, 1.0], "sampling_rate": 16000}, Decoded()])
    assert wave.dtype == np.float32 and rate == 16000 and wave2.shape == (8,) and rate2 == 8000
    with pytest.raises(MtebAdapterError, match="audio item of type str"):
        audio_items(["clip.wav"])


def test_missing_mteb_names_the_install_command(monkeypatch, tiny_m2d_file):
    import sys

    from kikimimi.evaluation import harness_mteb

    monkeypatch.setitem(sys.modules, "mteb", None)
    harness_mteb._wrapper_class.cache_clear()
    try:
        with pytest.raises(MtebAdapterError, match=r'pip install "kikimimi\[mteb\]"'):
            mteb_model(tiny_m2d_file)
    finally:
        harness_mteb._wrapper_class.cache_clear()
