"""The inference faces (issue 26.6): the TextAudioModel protocol, "one input in, one output out" for `embed`,
`encode_audio` and `caption`, and `kikimimi.load` / `load_clap` with their real signatures (and still lazy)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from clap_fakes import HashTextEncoder, write_tiny_clap2024

import kikimimi
from kikimimi.evaluation.zeroshot import zero_shot_scores
from kikimimi.inference import clap as clap_module
from kikimimi.inference import encoder as encoder_module
from kikimimi.inference.encoder import is_single_input
from kikimimi.models.encoder import TextAudioModel


def _wave(seconds: float = 0.6, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    # the 2024 layout has no text projection: a 64-d stand-in text encoder meets the 64-d audio side
    return kikimimi.load_clap(write_tiny_clap2024(tmp_path_factory.mktemp("clap")), text_encoder=HashTextEncoder(64))


def test_one_input_in_one_output_out_for_embed(tiny_m2d_file, tmp_path):
    model = kikimimi.load(tiny_m2d_file, device="cpu")
    a, b = _wave(0.6, 0), _wave(1.1, 1)
    sf.write(tmp_path / "a.wav", a, 16000, subtype="FLOAT")
    batch = model.embed([a, b], sample_rate=16000)
    d = model.embedding_dim
    assert batch.shape == (2, d)
    for single in (model.embed(a, sample_rate=16000), model.embed(torch.from_numpy(a), sample_rate=16000),
                   model.embed(tmp_path / "a.wav"), model.embed(str(tmp_path / "a.wav"))):
        assert single.shape == (d,)  # one clip in: no batch dimension
        np.testing.assert_allclose(single, batch[0], atol=1e-5)
    assert model.embed([tmp_path / "a.wav"]).shape == (1, d)  # a list of one: a batch of one
    assert model.embed(np.stack([a, a]), sample_rate=16000).shape == (2, d)  # [B, samples]: a batch
    assert model(list([a, b]), 16000).shape == (2, d)  # the embedding-function form stays batched


def test_one_input_in_one_output_out_for_encode_audio(tiny_clap, tmp_path):
    assert isinstance(tiny_clap, TextAudioModel)
    a, b = _wave(0.6, 0), _wave(1.1, 1)
    sf.write(tmp_path / "a.wav", a, 16000, subtype="FLOAT")
    batch = tiny_clap.encode_audio([a, b], sample_rate=16000)
    d = tiny_clap.embedding_dim
    assert batch.shape == (2, d)
    single = tiny_clap.encode_audio(tmp_path / "a.wav")
    assert single.shape == (d,) and tiny_clap.encode_audio([tmp_path / "a.wav"]).shape == (1, d)
    np.testing.assert_allclose(single, batch[0], rtol=1e-4, atol=1e-5)
    # the scoring functions take one clip as a batch of one
    assert zero_shot_scores(tiny_clap, tmp_path / "a.wav", ["x", "y"]).shape == (1, 2)


def test_the_rule_is_one_predicate():
    assert is_single_input("a.wav") and is_single_input(np.zeros(10)) and is_single_input(torch.zeros(10))
    assert not is_single_input(["a.wav"]) and not is_single_input(np.zeros((1, 10)))
    assert not is_single_input([np.zeros(10)])


def test_caption_follows_the_same_rule():
    """Captioner.caption with its model replaced by a stand-in: one path / 1-D waveform in → one string out, a list
    or a [B, samples] array in → a list out, for every input kind `embed` accepts."""
    from kikimimi.inference.captioner import Captioner

    cap = Captioner.__new__(Captioner)  # no language model needed for the input/output rule
    cap.config = {}
    cap.frames = lambda audio, sample_rate=None: [None] * (1 if is_single_input(audio) else len(audio))
    cap.answer_frames = lambda frames, question, **kw: ("a caption", 0.0)
    for single in ("a.wav", np.zeros(10, np.float32), torch.zeros(10)):
        assert cap.caption(single) == "a caption"
    for batch, n in ((["a.wav"], 1), (["a.wav", "b.wav"], 2), (np.zeros((2, 10), np.float32), 2)):
        assert cap.caption(batch) == ["a caption"] * n


def test_load_and_load_clap_show_their_real_signatures():
    for face, impl in ((kikimimi.load, encoder_module.load), (kikimimi.load_clap, clap_module.load_clap)):
        face_sig, impl_sig = inspect.signature(face), inspect.signature(impl)
        assert list(face_sig.parameters) == list(impl_sig.parameters) and "args" not in face_sig.parameters
        for name, param in impl_sig.parameters.items():
            assert face_sig.parameters[name].kind == param.kind and face_sig.parameters[name].default == param.default
        assert face_sig.return_annotation == impl_sig.return_annotation


def test_importing_kikimimi_stays_light():
    code = "import sys, kikimimi; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
