"""Write 16 kHz mono WAV clips (PCM-16, atomically) from any source file or waveform.

Used to turn registry audio (:mod:`kikimimi.data.debian_sources`) into task and corpus clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from kikimimi.audio.decode import AudioDecodeError, load_audio
from kikimimi.fileio import atomic_open

__all__ = ["SAMPLE_RATE", "SILENT_PEAK", "SKIPPED", "clip_file", "is_silent", "load_16k", "segment_file",
           "write_wav"]

SAMPLE_RATE = 16000
SILENT_PEAK = 1e-4  # clips whose peak stays below this are treated as empty

#: ``(path, reason)`` of every source file that could not be decoded (skipped, reported by the builders)
SKIPPED: list[tuple[str, str]] = []


def write_wav(path: Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Atomically write a mono float waveform ``[samples]`` (clipped to ±1) as 16-bit PCM WAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        sf.write(fh, np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0), sample_rate, format="WAV",
                 subtype="PCM_16")


def load_16k(path: Path) -> np.ndarray:
    """Mono float32 ``[samples]`` at 16 kHz (soxr HQ resampling through :mod:`kikimimi.audio.decode`).

    A file that cannot be decoded (empty, corrupt) is recorded in :data:`SKIPPED` and gives ``[0]`` samples.
    """
    try:
        wave, _ = load_audio(path, SAMPLE_RATE)
    except AudioDecodeError as err:
        SKIPPED.append((str(path), err.reason))
        return np.zeros(0, dtype=np.float32)
    return wave


def is_silent(wave: np.ndarray) -> bool:
    """True for an empty waveform or one whose peak stays below :data:`SILENT_PEAK`."""
    return wave.size == 0 or float(np.max(np.abs(wave))) < SILENT_PEAK


def clip_file(src: Path, dst: Path, max_s: float | None = None) -> float:
    """Convert ``src`` to a 16 kHz clip at ``dst`` cut to ``max_s`` seconds; returns its duration (s).

    Existing ``dst`` files are kept (resumable). Returns ``0.0`` (and writes nothing) for a silent source.
    """
    if dst.exists():
        return sf.info(str(dst)).duration
    wave = load_16k(src)
    if max_s is not None:
        wave = wave[: int(max_s * SAMPLE_RATE)]
    if is_silent(wave):
        return 0.0
    write_wav(dst, wave)
    return wave.shape[0] / SAMPLE_RATE


def segment_file(src: Path, dst_stem: Path, segment_s: float, max_total_s: float | None = None,
                 min_s: float = 0.5) -> list[tuple[Path, float]]:
    """Cut ``src`` into consecutive 16 kHz segments ``<dst_stem>-<k>.wav`` of ≤ ``segment_s`` seconds.

    Silent segments and tails shorter than ``min_s`` are dropped. Returns ``[(path, duration_s)]``.
    """
    wave = load_16k(src)
    if max_total_s is not None:
        wave = wave[: int(max_total_s * SAMPLE_RATE)]
    n = int(segment_s * SAMPLE_RATE)
    out = []
    for k, start in enumerate(range(0, wave.shape[0], n)):
        seg = wave[start : start + n]
        if seg.shape[0] < min_s * SAMPLE_RATE or is_silent(seg):
            continue
        dst = dst_stem.parent / f"{dst_stem.name}-{k:03d}.wav"
        if not dst.exists():
            write_wav(dst, seg)
        out.append((dst, seg.shape[0] / SAMPLE_RATE))
    return out
