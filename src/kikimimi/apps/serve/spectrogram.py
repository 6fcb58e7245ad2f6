"""Small spectrogram pictures (PNG) of a segment of an audio file, for the result rows of the page.

A segment is read with a seek (never the whole file), mixed to mono, cut into ``width`` short-time frames
and its magnitude spectrum pooled into ``height`` log-spaced bands from 50 Hz to the Nyquist frequency;
levels in dB, the top 70 dB kept, low frequencies at the bottom. Colours come from matplotlib's ``magma``
map when matplotlib (extra ``eval``) is installed, else from a built-in dark-to-light ramp; the PNG itself is
written with ``zlib`` + ``struct`` (no imaging library).
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import soundfile as sf

__all__ = ["MAX_SEGMENT_S", "SpectrogramError", "colour_map", "png_bytes", "segment_png", "spectrogram_image"]

#: the longest segment drawn, seconds (longer requests are cut to this)
MAX_SEGMENT_S = 30.0
_FLOOR_DB = 70.0


class SpectrogramError(ValueError):
    """The segment cannot be read; the message says why (without the server's paths)."""


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode ``[H, W, 3]`` uint8 as a PNG file (8-bit RGB, no interlace)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 per scan line

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def colour_map(levels: np.ndarray) -> np.ndarray:
    """``[H, W]`` values in 0..1 → ``[H, W, 3]`` uint8 colours (matplotlib ``magma`` when available)."""
    x = np.clip(np.asarray(levels, dtype=np.float64), 0.0, 1.0)
    try:
        from matplotlib import colormaps
    except ImportError:
        stops = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], np.float64)
        pos = x * (len(stops) - 1)
        lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
        frac = (pos - lo)[..., None]
        return (stops[lo] * (1 - frac) + stops[lo + 1] * frac).round().astype(np.uint8)
    return (colormaps["magma"](x)[..., :3] * 255).round().astype(np.uint8)


def spectrogram_image(wave: np.ndarray, sample_rate: int, width: int = 160, height: int = 48) -> np.ndarray:
    """Levels ``[height, width]`` in 0..1 (low frequencies in the last row) of a mono wave ``[samples]``."""
    n_fft = 1 << max(6, int(np.ceil(np.log2(max(64, 0.032 * sample_rate)))))
    wave = np.asarray(wave, dtype=np.float64)
    if wave.size < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.size))
    starts = np.linspace(0, wave.size - n_fft, width).round().astype(int)
    frames = np.stack([wave[s:s + n_fft] for s in starts]) * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [W, bins]
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    edges = np.geomspace(50.0, sample_rate / 2, height + 1)
    bands = np.zeros((height, width))
    for b in range(height):
        sel = (freqs >= edges[b]) & (freqs < edges[b + 1])
        if not sel.any():  # a band narrower than one bin: the nearest bin
            sel = np.zeros_like(freqs, dtype=bool)
            sel[int(np.argmin(np.abs(freqs - np.sqrt(edges[b] * edges[b + 1]))))] = True
        bands[b] = power[:, sel].mean(axis=1)
    db = 10 * np.log10(bands + 1e-12)
    top = db.max()
    return np.clip((db - (top - _FLOOR_DB)) / _FLOOR_DB, 0.0, 1.0)[::-1]


def segment_png(path: str | os.PathLike, start_s: float = 0.0, end_s: float | None = None, *, width: int = 160,
                height: int = 48) -> bytes:
    """PNG bytes of the spectrogram of ``path`` from ``start_s`` to ``end_s`` seconds (None: ``start_s`` +
    :data:`MAX_SEGMENT_S` or the end of the file).

    Raises:
        SpectrogramError: the file cannot be opened or the segment lies outside it.
    """
    start_s = max(0.0, float(start_s))
    stop_s = start_s + MAX_SEGMENT_S if end_s is None else min(float(end_s), start_s + MAX_SEGMENT_S)
    if stop_s <= start_s:
        raise SpectrogramError(f"empty segment {start_s:g}..{stop_s:g} s")
    try:
        with sf.SoundFile(os.fspath(path)) as snd:
            sr = int(snd.samplerate)
            first = int(start_s * sr)
            if snd.frames and first >= snd.frames:
                raise SpectrogramError(f"the segment starts at {start_s:g} s, after the end of the file "
                                       f"({snd.frames / sr:g} s)")
            if snd.seekable():
                snd.seek(first)
            else:
                snd.read(first, dtype="float32")
            data = snd.read(max(1, int((stop_s - start_s) * sr)), dtype="float32", always_2d=True)
    except SpectrogramError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise SpectrogramError(f"cannot read the audio ({type(exc).__name__})") from exc
    if data.size == 0 or not np.isfinite(data).all():
        raise SpectrogramError("no finite samples in the segment")
    return png_bytes(colour_map(spectrogram_image(data.mean(axis=1), sr, width, height)))
