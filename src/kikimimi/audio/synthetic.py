"""Seeded synthetic sounds with labels, for tests, demos and smoke-test training runs.

Eight classes that vary within a class (every parameter is drawn from the ``rng`` passed in) but
are easy to tell apart: steady pure tones, log sweeps, band-passed coloured-noise bursts,
harmonic notes with ADSR envelopes, click trains, amplitude- and frequency-modulated tones and
digital silence. All outputs are float32 ``[samples]`` with peak amplitude <= 0.9.
"""

from __future__ import annotations

import csv
import io
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from kikimimi.fileio import atomic_write_bytes, atomic_write_text

__all__ = ["SOUND_CLASSES", "make_dataset", "make_sound", "speech_like"]

SOUND_CLASSES = ("tone", "chirp", "noise_burst", "harmonic_note", "clicks", "am_tone", "fm_tone", "silence")

PEAK_MAX = 0.9
_FADE_S = 0.01  # raised-cosine fade in/out, seconds


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _time(n: int, sample_rate: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sample_rate


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _nyq(sample_rate: int) -> float:
    """Highest frequency we synthesise (Hz): 45 % of the sample rate, safely below Nyquist."""
    return 0.45 * sample_rate


def _fade(x: np.ndarray, sample_rate: int) -> np.ndarray:
    n = min(int(_FADE_S * sample_rate), x.size // 2)
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _finish(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale to a random peak in [0.3, 0.9] and return float32."""
    peak = np.max(np.abs(x)) if x.size else 0.0
    if peak > 0:
        x = x * (rng.uniform(0.3, PEAK_MAX) / peak)
    return np.clip(x, -PEAK_MAX, PEAK_MAX).astype(np.float32)


def _bandpass_noise(n: int, sample_rate: int, rng: np.random.Generator, centre_hz: float,
                    bandwidth_oct: float, colour: float) -> np.ndarray:
    """Noise with a 1/f^colour spectrum and a Gaussian (in log-frequency) band-pass, via FFT."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    f[0] = f[1] if f.size > 1 else 1.0
    octaves = np.log2(f / centre_hz)
    gain = f ** (-colour / 2.0) * np.exp(-0.5 * (octaves / (bandwidth_oct / 2.0)) ** 2)
    return np.fft.irfft(spec * gain, n)


# --------------------------------------------------------------------------------------------
# Classes
# --------------------------------------------------------------------------------------------


def _tone(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    f = _log_uniform(rng, 200.0, min(2000.0, _nyq(sr)))
    return np.sin(2 * np.pi * f * _time(n, sr) + rng.uniform(0, 2 * np.pi))


def _chirp(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    f_lo = _log_uniform(rng, 100.0, 400.0)
    f_hi = _log_uniform(rng, min(1500.0, _nyq(sr) * 0.5), min(6000.0, _nyq(sr)))
    f0, f1 = (f_lo, f_hi) if rng.random() < 0.5 else (f_hi, f_lo)
    dur = max(n / sr, 1e-9)
    k = np.log(f1 / f0) / dur  # exponential sweep: f(t) = f0 * exp(k t)
    phase = 2 * np.pi * f0 * np.expm1(k * _time(n, sr)) / k
    return np.sin(phase)


def _noise_burst(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    centre = _log_uniform(rng, 500.0, min(4000.0, _nyq(sr) * 0.7))
    x = _bandpass_noise(n, sr, rng, centre, rng.uniform(0.7, 2.0), rng.uniform(0.0, 2.0))
    env = np.zeros(n)
    t = _time(n, sr)
    for onset in np.sort(rng.uniform(0.0, 0.7, size=int(rng.integers(1, 4)))) * (n / sr):
        decay = rng.uniform(0.05, 0.3)  # seconds
        on = t >= onset
        env[on] = np.maximum(env[on], np.exp(-(t[on] - onset) / decay))
    return x * env


def _adsr(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    a, d = rng.uniform(0.005, 0.08) * sr, rng.uniform(0.05, 0.3) * sr
    s_level, r = rng.uniform(0.3, 0.8), rng.uniform(0.1, 0.5) * sr
    a, d, r = (max(int(v), 1) for v in (a, d, r))
    if a + d + r > n:  # short clips: scale the segments down
        scale = n / (a + d + r + 1)
        a, d, r = (max(int(v * scale), 1) for v in (a, d, r))
    sustain = max(n - a - d - r, 0)
    env = np.concatenate([np.linspace(0, 1, a, endpoint=False), np.linspace(1, s_level, d, endpoint=False),
                          np.full(sustain, s_level), np.linspace(s_level, 0, r)])
    return np.pad(env, (0, max(n - env.size, 0)))[:n]


def _harmonic_note(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    f0 = _log_uniform(rng, 100.0, 800.0)
    n_harm = int(rng.integers(4, 13))
    rolloff = rng.uniform(0.5, 1.5)
    t = _time(n, sr)
    vibrato = 1.0 + rng.uniform(0.0, 0.006) * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
    phase0 = 2 * np.pi * f0 * np.cumsum(vibrato) / sr
    x = np.zeros(n)
    for k in range(1, n_harm + 1):
        if k * f0 >= _nyq(sr):
            break
        x += (k ** -rolloff) * rng.uniform(0.5, 1.0) * np.sin(k * phase0 + rng.uniform(0, 2 * np.pi))
    return x * _adsr(n, sr, rng)


def _clicks(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    rate = rng.uniform(5.0, 40.0)  # clicks per second
    jitter = rng.uniform(0.0, 0.2)
    click_len = max(int(rng.uniform(0.001, 0.003) * sr), 2)
    kernel = rng.standard_normal(click_len) * np.exp(-np.arange(click_len) / (click_len / 4))
    x = np.zeros(n + click_len)
    t = rng.uniform(0, 1 / rate)
    while t * sr < n:
        i = int(t * sr)
        x[i:i + click_len] += kernel * rng.uniform(0.6, 1.0)
        t += (1 / rate) * (1 + jitter * rng.uniform(-1, 1))
    return x[:n]


def _am_tone(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    fc = _log_uniform(rng, 300.0, min(3000.0, _nyq(sr)))
    fm, depth = rng.uniform(2.0, 20.0), rng.uniform(0.6, 1.0)
    t = _time(n, sr)
    mod = 1.0 + depth * np.sin(2 * np.pi * fm * t + rng.uniform(0, 2 * np.pi))
    return mod * np.sin(2 * np.pi * fc * t + rng.uniform(0, 2 * np.pi))


def _fm_tone(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    fc = _log_uniform(rng, 400.0, min(2500.0, _nyq(sr) * 0.7))
    fm = rng.uniform(3.0, 15.0)
    dev = rng.uniform(0.15, 0.4) * fc  # frequency deviation, Hz
    t = _time(n, sr)
    return np.sin(2 * np.pi * fc * t + (dev / fm) * np.sin(2 * np.pi * fm * t) + rng.uniform(0, 2 * np.pi))


_GENERATORS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "tone": _tone,
    "chirp": _chirp,
    "noise_burst": _noise_burst,
    "harmonic_note": _harmonic_note,
    "clicks": _clicks,
    "am_tone": _am_tone,
    "fm_tone": _fm_tone,
}


def make_sound(kind: str, duration_s: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One random example of class ``kind`` (see :data:`SOUND_CLASSES`).

    ``duration_s`` in seconds, ``sample_rate`` in Hz. Returns float32 ``[round(duration_s *
    sample_rate)]`` with peak <= 0.9; ``"silence"`` is exact digital zeros.
    """
    if kind not in SOUND_CLASSES:
        raise ValueError(f"unknown sound class {kind!r}; choose from {', '.join(SOUND_CLASSES)}")
    if duration_s <= 0 or sample_rate < 1000:
        raise ValueError(f"need duration_s > 0 and sample_rate >= 1000 Hz, got {duration_s}, {sample_rate}")
    n = int(round(duration_s * sample_rate))
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    x = _GENERATORS[kind](n, sample_rate, rng)
    if kind not in ("clicks", "noise_burst"):
        x = _fade(x, sample_rate)
    return _finish(x, rng)


# Vowel formants (F1, F2, F3) in Hz, rough adult averages.
_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))


def speech_like(duration_s: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A crude speech-like signal: syllables of voiced vowels separated by short pauses.

    Each syllable (120–300 ms) is a glottal pulse train (harmonics of a gliding f0 of 90–220 Hz
    with a net -6 dB/oct tilt: glottal source plus lip radiation) shaped by three formant
    resonances of a random vowel, under a smooth envelope.
    Returns float32 ``[round(duration_s * sample_rate)]`` with peak <= 0.9.
    """
    n = int(round(duration_s * sample_rate))
    x = np.zeros(n)
    base_f0 = rng.uniform(90.0, 220.0)
    pos = int(rng.uniform(0.0, 0.1) * sample_rate)
    while pos < n:
        length = min(int(rng.uniform(0.12, 0.3) * sample_rate), n - pos)
        if length < 16:
            break
        t = np.arange(length) / sample_rate
        f0 = base_f0 * rng.uniform(0.85, 1.15) * (1 + rng.uniform(-0.15, 0.15) * t / max(t[-1], 1e-9))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        formants = np.asarray(_VOWELS[int(rng.integers(len(_VOWELS)))], float) * rng.uniform(0.9, 1.1)
        bandwidths = np.array([80.0, 100.0, 150.0])
        seg = np.zeros(length)
        mean_f0 = float(f0.mean())
        for k in range(1, int(_nyq(sample_rate) / (mean_f0 * 1.15))):
            fk = k * mean_f0
            # Sum of resonance magnitudes around each formant, times a 1/k spectral tilt.
            amp = np.sum(1.0 / np.sqrt(1.0 + ((fk - formants) / (bandwidths / 2)) ** 2)) / k
            seg += amp * np.sin(k * phase)
        env = np.sin(np.pi * np.arange(length) / length) ** 2
        x[pos:pos + length] += seg * env
        pos += length + int(rng.uniform(0.03, 0.15) * sample_rate)
    return _finish(x, rng)


# --------------------------------------------------------------------------------------------
# Dataset writer
# --------------------------------------------------------------------------------------------


def _item_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """Independent stream per (seed, class, item): adding items or classes leaves others unchanged."""
    return np.random.default_rng([seed, zlib.crc32(kind.encode()), 1, index])


def _split_rng(seed: int, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(kind.encode()), 0])


def _largest_remainder_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Items per split (sum == n); every split with a positive ratio gets >= 1 item when n allows."""
    total = float(sum(ratios))
    counts = [int(np.floor(n * r / total)) for r in ratios]
    order = np.argsort([-(n * r / total - c) for r, c in zip(ratios, counts, strict=True)], kind="stable")
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    for i, r in enumerate(ratios):  # make sure small splits are not empty
        if r > 0 and counts[i] == 0:
            j = int(np.argmax(counts))
            if counts[j] > 1:
                counts[j] -= 1
                counts[i] += 1
    return counts


_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16")}


def make_dataset(out_dir: str | os.PathLike, n_per_class: int, duration_s: float = 2.0,
                 sample_rate: int = 16000, seed: int = 0, classes: Sequence[str] = SOUND_CLASSES,
                 split_ratios: Sequence[float] = (0.6, 0.2, 0.2), fmt: str = "wav") -> Path:
    """Write ``<out_dir>/<class>/<class>_<i>.<fmt>`` files and ``<out_dir>/labels.csv``.

    The CSV has columns ``file_name,label,split`` (``file_name`` relative to ``out_dir``; split
    names ``train``/``valid``/``test`` in ``split_ratios`` order, stratified per class). Files are
    16-bit PCM WAV or FLAC, ``duration_s`` seconds at ``sample_rate`` Hz. Same arguments -> same
    bytes. Returns the CSV path.
    """
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {sorted(_FORMATS)}, got {fmt!r}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    if len(split_ratios) != 3 or min(split_ratios) < 0 or sum(split_ratios) <= 0:
        raise ValueError(f"split_ratios must be 3 non-negative numbers, got {split_ratios}")
    unknown = [c for c in classes if c not in SOUND_CLASSES]
    if unknown:
        raise ValueError(f"unknown sound classes {unknown}; choose from {', '.join(SOUND_CLASSES)}")
    out = Path(out_dir)
    container, subtype = _FORMATS[fmt]
    split_names = ("train", "valid", "test")
    rows: list[tuple[str, str, str]] = []
    for kind in classes:
        (out / kind).mkdir(parents=True, exist_ok=True)
        counts = _largest_remainder_counts(n_per_class, split_ratios)
        labels = np.repeat(np.arange(3), counts)
        _split_rng(seed, kind).shuffle(labels)
        for i in range(n_per_class):
            wave = make_sound(kind, duration_s, sample_rate, _item_rng(seed, kind, i))
            # Quantise ourselves: libsndfile's float->int16 rounding differs between WAV and FLAC.
            pcm = np.clip(np.round(wave.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
            buf = io.BytesIO()
            sf.write(buf, pcm, sample_rate, format=container, subtype=subtype)
            rel = f"{kind}/{kind}_{i}.{fmt}"
            atomic_write_bytes(out / rel, buf.getvalue())
            rows.append((rel, kind, split_names[int(labels[i])]))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("file_name", "label", "split"))
    writer.writerows(rows)
    csv_path = out / "labels.csv"
    atomic_write_text(csv_path, text.getvalue())
    return csv_path
