"""`AudioEncoder` inputs that used to pass silently: NaN, integer PCM, a missing sample rate, very short clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kikimimi.checkpoints.bundle import EncoderBundle
from kikimimi.features.frontend import PRESETS
from kikimimi.features.normstats import NormStats
from kikimimi.inference.encoder import AudioEncoder
from kikimimi.models.byola import AudioNTT2020


@pytest.fixture(scope="module")
def encoder() -> AudioEncoder:
    torch.manual_seed(0)
    net = AudioNTT2020(d=64).eval()
    bundle = EncoderBundle("byola", net, PRESETS["byola"], NormStats(-9.0, 4.0), {"family": "byola"})
    return AudioEncoder(bundle, device="cpu")


def _tone(n: int = 16000) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)


def test_nan_waveform_is_refused(encoder):
    wave = _tone()
    wave[100] = np.nan
    with pytest.raises(ValueError, match="waveform 1 has NaN or infinite samples"):
        encoder.embed([_tone(), wave], sample_rate=16000)


def test_int16_is_scaled_to_full_scale(encoder):
    pcm = np.round(_tone() * 32767).astype(np.int16)
    scaled = encoder.embed(pcm, sample_rate=16000)
    np.testing.assert_allclose(scaled, encoder.embed(pcm / 32768.0, sample_rate=16000), atol=1e-6)
    unscaled = encoder.embed(pcm.astype(np.float32), sample_rate=16000)  # what an int16 array used to give
    assert not np.allclose(scaled, unscaled, atol=1e-3)


def test_missing_sample_rate_is_warned_about(encoder):
    with pytest.warns(UserWarning, match="without sample_rate; assuming the model rate 16000 Hz"):
        encoder.embed(_tone())


def test_a_clip_shorter_than_one_stft_window_is_padded(encoder):
    out = encoder.embed([_tone(50), _tone(16000)], sample_rate=16000)  # 3 ms
    assert out.shape[0] == 2 and np.isfinite(out).all()


def test_a_low_rate_file_is_warned_about_once(encoder, tmp_path):
    import warnings

    import soundfile as sf

    from kikimimi.features.frontend import empty_mel_bins

    heart = tmp_path / "heart-2k.wav"
    sf.write(heart, _tone(4000)[:2000], 2000)  # 1 s at 2 kHz, like PhysioNet heart sounds
    phone = tmp_path / "phone-8k.wav"
    sf.write(phone, _tone(8000)[:8000], 8000)
    n_empty = empty_mel_bins(encoder.frontend.config, 2000)
    assert n_empty * 3 > 64 and empty_mel_bins(encoder.frontend.config, 8000) * 3 <= 64
    with pytest.warns(UserWarning, match=f"sampled at 2000 Hz: {n_empty} of the model's 64 mel bins"):
        encoder.embed([heart, heart])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.embed([heart, phone])  # once per rate; 8 kHz keeps most bins
