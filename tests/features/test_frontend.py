"""Front end vs an independent float64 numpy reference (periodic Hann, reflect pad, DFT, Slaney mel)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from kikimimi.audio import synthetic
from kikimimi.audio.decode import load_audio
from kikimimi.features.frontend import (
    PRESETS,
    FrontendConfig,
    LogMelSpectrogram,
    get_preset,
    log_mel,
    slaney_mel_filterbank,
)
from kikimimi.features.streaming import log_mel_from_blocks, stream_log_mel

LN_EPS = math.log(1.1920929e-07)


# ---------------------------------------------------------------- independent reference (float64)


def ref_hz_to_mel(f: float) -> float:
    """Slaney mel: linear 3 mel per 200 Hz below 1 kHz, then 27 mel per factor 6.4."""
    if f < 1000.0:
        return 3.0 * f / 200.0
    return 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def ref_mel_to_hz(m: float) -> float:
    if m < 15.0:
        return 200.0 * m / 3.0
    return 1000.0 * 6.4 ** ((m - 15.0) / 27.0)


def ref_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    lo, hi = ref_hz_to_mel(fmin), ref_hz_to_mel(fmax)
    edges = [ref_mel_to_hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if left < f < right:
                w = (f - left) / (centre - left) if f <= centre else (right - f) / (right - centre)
                fb[m, k] = w * 2.0 / (right - left)
    return fb


def ref_log_mel(x: np.ndarray, c: FrontendConfig) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    pad = c.n_fft // 2
    padded = np.concatenate([x[1 : pad + 1][::-1], x, x[-pad - 1 : -1][::-1]])
    n_frames = len(x) // c.hop_length + 1
    n = np.arange(c.n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / c.n_fft)  # periodic Hann, win_length == n_fft here
    k = np.arange(c.n_fft // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(n, k) / c.n_fft)  # plain DFT matrix, no FFT library
    frames = np.stack([padded[j * c.hop_length : j * c.hop_length + c.n_fft] for j in range(n_frames)])
    power = np.abs((frames * window) @ dft) ** 2  # [frames, bins]
    fb = ref_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)
    return np.log(fb @ power.T + 1.1920929e-07)


# ---------------------------------------------------------------- signals


def white_noise(sr: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    return (0.3 * rng.standard_normal(int(sr * seconds))).astype(np.float32)


def log_chirp(sr: int, seconds: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    f0, f1 = 60.0, 0.45 * sr
    k = math.log(f1 / f0) / seconds
    return (0.8 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)).astype(np.float32)


def speech_like(sr: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(synthetic.speech_like(seconds, sr, rng), dtype=np.float32)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(PRESETS))
def test_filterbank_matches_formula_and_librosa(name):
    c = PRESETS[name]
    fb = slaney_mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)
    assert fb.shape == (c.n_mels, c.n_fft // 2 + 1)
    assert fb.dtype == np.float64
    np.testing.assert_allclose(fb, ref_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max),
                               rtol=1e-9, atol=1e-12)
    librosa = pytest.importorskip("librosa")
    lib = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.f_min, fmax=c.f_max,
                              htk=False, norm="slaney", dtype=np.float64)
    np.testing.assert_allclose(fb, lib, rtol=1e-9, atol=1e-12)
    # No filter is empty and no weight falls outside [f_min, f_max].
    assert (fb.sum(axis=1) > 0).all()
    freqs = np.arange(c.n_fft // 2 + 1) * c.sample_rate / c.n_fft
    assert fb[:, (freqs < c.f_min) | (freqs > c.f_max)].max() == 0


def test_window_is_periodic_hann():
    module = LogMelSpectrogram("m2d-16k")
    w = module.window.double().numpy()
    assert w.shape == (400,)
    assert w[0] == 0.0 and abs(w[1] - 6.168e-5) < 1e-8  # periodic, not symmetric (docs/reference.md §2)
    np.testing.assert_allclose(w, 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400), atol=1e-7)


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("signal", ["noise", "chirp", "speech"])
def test_log_mel_matches_float64_reference(name, signal):
    c = PRESETS[name]
    rng = np.random.default_rng(1)
    sr = c.sample_rate
    x = {"noise": lambda: white_noise(sr, 1.3, rng),
         "chirp": lambda: log_chirp(sr, 1.3),
         "speech": lambda: speech_like(sr, 1.3, rng)}[signal]()
    ours = log_mel(x, c)
    ref = ref_log_mel(x, c)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (c.n_mels, len(x) // c.hop_length + 1)
    assert np.abs(ours - ref).max() <= 1e-3


@pytest.mark.parametrize("name", list(PRESETS))
def test_silence_is_ln_eps(name):
    c = PRESETS[name]
    out = log_mel(np.zeros(c.sample_rate // 2, dtype=np.float32), c)
    np.testing.assert_allclose(out, LN_EPS, atol=1e-6)
    assert abs(LN_EPS - (-15.942)) < 1e-3


@pytest.mark.parametrize(("name", "seconds", "frames"),
                         [("m2d-16k", 1.0, 101), ("m2d-16k", 6.08, 609), ("m2d-16k", 10.0, 1001),
                          ("m2d-32k", 1.0, 101), ("m2d-32k", 6.08, 609), ("m2d-32k", 10.0, 1001),
                          ("byola", 0.95, 96)])
def test_frame_counts(name, seconds, frames):
    c = PRESETS[name]
    n = round(seconds * c.sample_rate)
    assert c.num_frames(n) == frames
    assert log_mel(np.zeros(n, dtype=np.float32) + 0.01, c).shape == (c.n_mels, frames)


def test_batch_matches_single_and_accepts_1d():
    rng = np.random.default_rng(2)
    module = LogMelSpectrogram("m2d-16k")
    batch = torch.from_numpy(np.stack([white_noise(16000, 0.7, rng), log_chirp(16000, 0.7)]))
    with torch.no_grad():
        out = module(batch)
        singles = [module(batch[i]) for i in range(2)]
    assert out.shape == (2, 80, 0.7 * 16000 // 160 + 1) and out.dtype == torch.float32
    for i in range(2):
        assert singles[i].shape == (1, 80, out.shape[-1])
        torch.testing.assert_close(out[i], singles[i][0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(log_mel(batch[i].numpy(), "m2d-16k"), out[i].numpy(), atol=1e-5)


def test_long_input_is_chunked_consistently():
    # Long enough to need several internal STFT chunks: values must equal the reference everywhere.
    c = get_preset("m2d-16k")
    x = white_noise(16000, 12.0, np.random.default_rng(3))
    ours = log_mel(x, c)
    ref = ref_log_mel(x, c)
    assert ours.shape == (80, 1201)
    assert np.abs(ours - ref).max() <= 1e-3


def test_module_follows_device_and_dtype():
    module = LogMelSpectrogram(get_preset("byola"))
    x64 = torch.from_numpy(log_chirp(16000, 0.5).astype(np.float64))
    out = module(x64)
    assert out.dtype == torch.float32 and out.shape == (1, 64, 51)
    if torch.cuda.is_available():
        cuda_out = module.cuda()(x64.cuda())
        assert cuda_out.is_cuda
        torch.testing.assert_close(cuda_out.cpu(), out, atol=1e-3, rtol=0)


def test_short_input_raises_clear_error():
    c = get_preset("m2d-16k")
    log_mel(np.ones(c.n_fft // 2 + 1, dtype=np.float32), c)  # shortest accepted input
    with pytest.raises(ValueError, match="at least 201 samples"):
        log_mel(np.ones(c.n_fft // 2, dtype=np.float32), c)
    with pytest.raises(ValueError, match="at least"):
        log_mel(np.zeros(0, dtype=np.float32), c)
    with pytest.raises(ValueError, match="mono waveform"):
        log_mel(np.zeros((2, 1000), dtype=np.float32), c)


def test_config_roundtrip_and_validation():
    c = get_preset("m2d-32k")
    assert FrontendConfig.from_dict(c.to_dict()) == c
    assert (c.sample_rate, c.n_fft, c.hop_length, c.n_mels, c.f_max) == (32000, 800, 320, 80, 16000.0)
    with pytest.raises(ValueError, match="unknown front-end preset"):
        get_preset("m2d-48k")
    with pytest.raises(ValueError, match="f_max"):
        FrontendConfig(16000, 400, 400, 160, 80, 50.0, 9000.0)
    with pytest.raises(ValueError, match="unknown FrontendConfig keys"):
        FrontendConfig.from_dict({**c.to_dict(), "power": 2})


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("block", [1, 157, 203, 4000, 10**6])
def test_blocks_equal_whole(name, block):
    c = PRESETS[name]
    rng = np.random.default_rng(4)
    x = np.concatenate([speech_like(c.sample_rate, 0.6, rng), white_noise(c.sample_rate, 0.37, rng)])
    whole = log_mel(x, c)
    if block == 1:
        block = 61  # very small blocks: start padding needs several blocks
    streamed = log_mel_from_blocks((x[i : i + block] for i in range(0, len(x), block)), c)
    assert streamed.shape == whole.shape
    assert np.abs(streamed - whole).max() <= 1e-4


@pytest.mark.parametrize("n", [201, 202, 359, 401, 560])
def test_blocks_equal_whole_near_minimum_length(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    whole = log_mel(x, "m2d-16k")
    streamed = log_mel_from_blocks([x[:150], x[150:]], "m2d-16k")
    assert streamed.shape == whole.shape
    assert np.abs(streamed - whole).max() <= 1e-4


def test_blocks_too_short_raise():
    with pytest.raises(ValueError, match="at least 201 samples"):
        log_mel_from_blocks([np.ones(100, np.float32), np.ones(100, np.float32)], "m2d-16k")


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_stream_log_mel_file_equals_whole(tmp_path, fmt):
    rng = np.random.default_rng(5)
    x = np.concatenate([log_chirp(16000, 1.5), speech_like(16000, 1.2, rng), white_noise(16000, 0.8, rng)])
    path = tmp_path / f"long.{fmt.lower()}"
    sf.write(path, x, 16000, format=fmt, subtype="PCM_16" if fmt == "FLAC" else "FLOAT")
    stored, _ = load_audio(path, 16000)
    whole = log_mel(stored, "m2d-16k")
    streamed = stream_log_mel(path, "m2d-16k", block_s=0.25)
    assert streamed.shape == whole.shape == (80, len(x) // 160 + 1)
    assert np.abs(streamed - whole).max() <= 1e-4
    limited = stream_log_mel(path, "m2d-16k", block_s=0.25, limit_s=1.0)
    np.testing.assert_allclose(limited, log_mel(stored[:16000], "m2d-16k"), atol=1e-4)


@pytest.mark.parametrize("name", list(PRESETS))
def test_precision_guard_bounds_float32_floor(name):
    # Loud chirps and harmonic tones have ~90 dB of dynamic range within a frame: plain float32 DFT
    # rounding shows up in the quiet bands; the guard recomputes those frames in float64.
    c = PRESETS[name]
    sr = c.sample_rate
    t = np.arange(sr) / sr
    harmonic = sum(np.sin(2 * np.pi * 220.0 * k * t) / k for k in range(1, 6)) / 2.3
    x = np.concatenate([log_chirp(sr, 1.0), harmonic.astype(np.float32)])
    ref = ref_log_mel(x, c)
    guarded = LogMelSpectrogram(c)(torch.from_numpy(x))[0].numpy()
    plain = LogMelSpectrogram(c, precision_guard=False)(torch.from_numpy(x))[0].numpy()
    guarded_err, plain_err = np.abs(guarded - ref).max(), np.abs(plain - ref).max()
    assert guarded_err <= 5e-4
    assert guarded_err <= plain_err
    assert plain_err <= 5e-3  # the float32 floor is small but real


@pytest.mark.parametrize("hint", [None, 0, 5000, 20000, 10**6])
def test_blocks_result_independent_of_size_hint(hint):
    x = white_noise(16000, 1.0, np.random.default_rng(6))
    streamed = log_mel_from_blocks((x[i : i + 3000] for i in range(0, len(x), 3000)), "m2d-16k",
                                   expected_samples=hint)
    assert streamed.shape == (80, 101)
    np.testing.assert_allclose(streamed, log_mel(x, "m2d-16k"), atol=1e-4)


def test_stream_log_mel_resamples_like_load_audio(tmp_path):
    path = tmp_path / "cd.wav"
    x = white_noise(22050, 2.0, np.random.default_rng(7))
    sf.write(path, x, 22050, subtype="FLOAT")
    whole = log_mel(load_audio(path, 16000)[0], "m2d-16k")
    streamed = stream_log_mel(path, "m2d-16k", block_s=0.3)
    assert streamed.shape == whole.shape == (80, 201)
    assert np.abs(streamed - whole).max() <= 1e-2
