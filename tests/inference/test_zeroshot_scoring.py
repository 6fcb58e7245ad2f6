"""Zero-shot scoring lives once (:mod:`kikimimi.inference.zeroshot`): evaluation and `serve` both call it, and
their outputs are those of the two former copies on a fixed input (the copies are kept here as references)."""

from __future__ import annotations

import numpy as np
import pytest
from clap_fakes import FrequencyCLAP
from conftest import sine

from kikimimi.evaluation.zeroshot import class_captions, zero_shot_classify
from kikimimi.inference.clap import cosine_similarity
from kikimimi.inference.vector_index import normalise
from kikimimi.inference.zeroshot import softmax, top_labels, zero_shot_scores


def _old_softmax(x, axis=-1):  # evaluation/zeroshot.softmax before the move
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _old_serve_tags(vector, text_unit, labels, scale):  # ServeState.tags before the move
    cos = text_unit @ vector
    probs = _old_softmax(cos[None] * scale, axis=1)[0]
    order = np.argsort(-cos, kind="stable")
    return [{"label": labels[i], "score": round(float(cos[i]), 6), "probability": round(float(probs[i]), 6)}
            for i in order]


@pytest.fixture
def fixed():
    rng = np.random.default_rng(1234)
    return rng.standard_normal((7, 32)).astype(np.float32), rng.standard_normal((5, 32)).astype(np.float32)


def test_evaluation_scores_are_bit_identical(fixed):
    audio, text = fixed
    cos = cosine_similarity(audio, text)
    for scale in (1.0, 20.0, 100.0):
        got = zero_shot_scores(audio, text, scale)
        assert np.array_equal(got.cosine, cos) and np.array_equal(got.probs, _old_softmax(cos * scale, axis=1))
    multi = zero_shot_scores(audio, text, 50.0, multi_label=True).probs
    assert np.array_equal(multi, (1.0 / (1.0 + np.exp(-cos.astype(np.float64)))).astype(np.float32))
    assert softmax is not None and np.array_equal(softmax(cos), _old_softmax(cos))


def test_zero_shot_classify_unchanged_on_a_fixed_input():
    model = FrequencyCLAP()
    waves = [sine(f, 0.5, model.sample_rate) for f in (220, 440, 880)]
    labels = ["a 220 Hz tone", "a 440 Hz tone", "a 880 Hz tone", "a 3000 Hz tone"]
    probs, predicted = zero_shot_classify(model, waves, labels, sample_rate=model.sample_rate)
    audio_emb = np.asarray(model.encode_audio(waves, sample_rate=model.sample_rate), dtype=np.float32)
    text_emb = np.asarray(model.encode_text(class_captions(labels)), dtype=np.float32)
    expected = _old_softmax(cosine_similarity(audio_emb, text_emb) * model.temperature_scale, axis=1)
    assert np.array_equal(probs, expected) and predicted == labels[:3]


def test_serve_tags_unchanged_on_a_fixed_input(fixed):
    audio, text = fixed
    labels = [f"label {i}" for i in range(text.shape[0])]
    text_unit = normalise(text)
    for row in range(audio.shape[0]):
        vector = normalise(audio[row : row + 1])[0]
        new = top_labels(zero_shot_scores(vector, text_unit, 20.0), labels)
        old = _old_serve_tags(vector, text_unit, labels, 20.0)
        assert [t["label"] for t in new] == [t["label"] for t in old]
        for a, b in zip(new, old, strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=2e-6)
            assert a["probability"] == pytest.approx(b["probability"], abs=2e-6)


def test_top_labels_checks_its_input(fixed):
    audio, text = fixed
    scores = zero_shot_scores(audio, text)
    assert len(top_labels(scores, list("abcde"), row=2, k=2)) == 2
    with pytest.raises(ValueError, match="labels"):
        top_labels(scores, ["a"])
    with pytest.raises(ValueError, match="at least one"):
        zero_shot_scores(audio, np.zeros((0, 32)))
