"""kikimimi.load / AudioEncoder on official-layout files with random weights."""

from __future__ import annotations

import numpy as np
import official_layouts as ol
import pytest
import soundfile as sf
import torch

import kikimimi
from kikimimi.features.frontend import log_mel

TINY = dict(embed_dim=64, depth=2)


def _m2d_file(tmp_path, folder: str, input_size=(80, 608), patch_size=(16, 16)):
    d = tmp_path / folder
    d.mkdir()
    state = ol.m2d_encoder_state(input_size=input_size, patch_size=patch_size, norm_stats=(-7.5, 4.0), **TINY)
    path = d / "weights_enconly.pth"
    torch.save(state, path)
    return path


def _noise(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * sr)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def m2d_608(tmp_path_factory):
    path = _m2d_file(tmp_path_factory.mktemp("m"), "m2d_vit_base-80x608p16x16-221006-mr7_enconly")
    return kikimimi.load(path, device="cpu", size=None)


def test_m2d_documented_shapes(m2d_608):
    assert m2d_608.sample_rate == 16000 and m2d_608.embedding_dim == 5 * 64
    emb, ts = m2d_608.embed_frames([_noise(10.0), _noise(30.0, seed=1)])
    assert [e.shape for e in emb] == [(63, 320), (188, 320)]
    # official timestamps: i * duration / frames, 158.73 ms steps for 10 s / 63 frames
    assert ts[0][1] == pytest.approx(10_000 / 63, rel=1e-9)
    assert ts[1][-1] == pytest.approx(187 * 30_000 / 188, rel=1e-9)


def test_m2d_1001_model_gives_62_frames(tmp_path):
    path = _m2d_file(tmp_path, "m2d_vit_base-80x1001p16x16-221006-mr7_as_46ab246d", input_size=(80, 1001))
    enc = kikimimi.load(path)
    emb, _ = enc.embed_frames(_noise(10.0))
    assert emb.shape == (1, 62, 320)


def test_embed_equals_manual_official_path(m2d_608):
    wave = _noise(7.3, seed=3)
    lms = torch.from_numpy(log_mel(wave, "m2d-16k"))[None]
    lms = (lms - (-7.5)) / 4.0
    with torch.inference_mode():
        frames = m2d_608.encoder.encode_lms(lms)
    expected = frames.mean(dim=1).numpy()
    np.testing.assert_allclose(m2d_608.embed(wave), expected[0], atol=1e-5)  # one clip in: [D] out


def test_variable_length_batch_equals_one_by_one(m2d_608):
    waves = [_noise(s, seed=i) for i, s in enumerate([1.0, 6.08, 2.5, 1.0])]
    batch = m2d_608.embed(waves)
    single = np.stack([m2d_608.embed(w) for w in waves])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_paths_and_resampling(m2d_608, tmp_path):
    wave16 = _noise(2.0, seed=5)
    sf.write(tmp_path / "a.wav", wave16, 16000)
    from kikimimi.audio.decode import resample

    wave44 = resample(wave16, 16000, 44100)
    sf.write(tmp_path / "b.wav", wave44, 44100, subtype="FLOAT")
    from_paths = m2d_608.embed([tmp_path / "a.wav", tmp_path / "b.wav"])
    from_array = m2d_608.embed(wave44, sample_rate=44100)
    assert from_paths.shape == (2, 320)
    np.testing.assert_allclose(from_paths[1], from_array, atol=1e-4)
    # a 44.1 kHz resampled copy of the same noise lands close to the original
    cos = np.dot(from_paths[0], from_paths[1]) / np.linalg.norm(from_paths[0]) / np.linalg.norm(from_paths[1])
    assert cos > 0.99


def test_byola_d512_one_second(tmp_path):
    path = tmp_path / "AudioNTT2020-BYOLA-64x96d512.pth"
    torch.save(ol.byola_v1(512), path)
    enc = kikimimi.load(path, norm_stats=(-9.0, 4.5))
    assert enc.embedding_dim == 512
    out = enc.embed(_noise(1.0))
    assert out.shape == (512,)
    frames, ts = enc.embed_frames(_noise(1.0))
    assert frames.shape == (1, 12, 512)  # 101 frames -> 50 -> 25 -> 12
    np.testing.assert_allclose(ts[0][:2], [35.0, 115.0])
    # clip embedding = max + mean over the frames
    np.testing.assert_allclose(out, frames[0].max(0) + frames[0].mean(0), atol=1e-5)


def test_byola_norm_stats_matter(tmp_path):
    path = tmp_path / "AudioNTT2020-BYOLA-64x96d512.pth"
    torch.save(ol.byola_v1(512), path)
    a = kikimimi.load(path, norm_stats=(-9.0, 4.5)).embed(_noise(1.0))
    b = kikimimi.load(path, norm_stats=(-5.0, 3.0)).embed(_noise(1.0))
    assert not np.allclose(a, b)


def test_norm_stats_from_files(tmp_path):
    from kikimimi.inference.encoder import norm_stats_from_files

    quiet, loud = tmp_path / "quiet.wav", tmp_path / "loud.wav"
    sf.write(quiet, _noise(1.0, seed=1) * 0.01, 16000)
    sf.write(loud, _noise(1.0, seed=2), 16000)
    both = norm_stats_from_files([quiet, loud], n_samples=200)
    only_quiet = norm_stats_from_files([quiet], n_samples=200)
    assert both.mean > only_quiet.mean and both.std > only_quiet.std
    assert norm_stats_from_files([quiet, loud], n_samples=200) == both  # seeded


def test_norm_stats_from_files_pads_short_clips_and_skips_bad_files(tmp_path):
    from kikimimi.audio.decode import AudioDecodeError
    from kikimimi.inference.encoder import norm_stats_from_files

    blip, bad = tmp_path / "blip.wav", tmp_path / "bad.wav"
    sf.write(blip, _noise(0.02, seed=3), 16000)  # 320 samples: shorter than one BYOL-A STFT window
    bad.write_bytes(b"not audio at all")
    with pytest.warns(UserWarning, match="bad.wav"):
        stats = norm_stats_from_files([blip, bad], n_samples=50)
    assert np.isfinite(stats.mean) and stats.std > 0
    with pytest.raises(AudioDecodeError, match="bad.wav"):
        norm_stats_from_files([bad], n_samples=10)
