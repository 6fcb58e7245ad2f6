"""Audio decoding: load any common audio file as float32 waveforms, resample, mix to mono, stream.

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF, ...) and resampling
uses soxr at quality "HQ". Every bad input raises :class:`AudioDecodeError` naming the file and
the cause; ``err.kind`` is a short machine-readable code (see :data:`ERROR_KINDS`).

What libsndfile does with damaged files, and what we do about it:

- WAV / AIFF cut short in the sample data: libsndfile silently shortens the frame count to the
  bytes present. We read the header's own frame count (WAV ``data`` chunk size, AIFF ``COMM``
  frames) and raise ``kind="truncated"`` when fewer frames are present than declared.
  A WAV ``data`` size of 0 / 0xFFFFFFFF (streaming writers) is treated as "unknown".
- FLAC cut short: the header (STREAMINFO) keeps the full count, decoding fails part-way ->
  ``kind="truncated"`` (raised by :func:`load_audio`, by :func:`stream_audio` when it gets there,
  and by :func:`audio_info` only with ``verify=True``).
- MP3 cut short: the frame count is an estimate from the Xing/LAME tag; fewer decoded frames
  than declared (beyond a tolerance of one MPEG frame + 1 %) -> ``kind="truncated"``.
- OGG (Vorbis/Opus) cut short: libsndfile usually refuses to open it ("malformed") ->
  ``kind="corrupt"``; a large file that reports zero frames -> ``kind="truncated"``.
- Non-audio content (text, images, archives, ...) -> ``kind="not_audio"``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "AudioDecodeError",
    "AudioInfo",
    "ERROR_KINDS",
    "MAX_SAMPLE_RATE",
    "audio_info",
    "load_audio",
    "resample",
    "stream_audio",
    "to_mono",
]

#: Highest sample rate (Hz) accepted from a file header; anything above is treated as corrupt.
MAX_SAMPLE_RATE = 1_000_000
#: Codes used in :attr:`AudioDecodeError.kind`.
ERROR_KINDS = (
    "missing",  # path does not exist
    "directory",  # path is a folder
    "unreadable",  # permission or OS error while opening
    "empty",  # 0-byte file
    "not_audio",  # not an audio format (text, image, unknown bytes)
    "unsupported",  # audio, but a container libsndfile cannot decode (MP4/M4A, AAC/ADTS)
    "corrupt",  # recognised audio container that cannot be decoded
    "truncated",  # fewer sample frames present than the header declares
    "no_samples",  # valid header, zero frames
    "bad_sample_rate",  # 0 Hz or > MAX_SAMPLE_RATE
    "non_finite",  # NaN / Inf samples in a float file
)

_RESAMPLE_QUALITY = "HQ"
_READ_FRAMES = 1 << 16  # frames per read when streaming
_MP3_FRAME = 1152
# A file reporting 0 frames but larger than this is treated as damaged rather than empty.
_ZERO_FRAME_SIZE_LIMIT = 8192


class AudioDecodeError(ValueError):
    """An audio file could not be decoded. ``str(e) == f"'{path}': {reason}"``.

    Attributes: ``path`` (str), ``reason`` (human-readable cause), ``kind`` (one of
    :data:`ERROR_KINDS`).
    """

    def __init__(self, path: str | os.PathLike, reason: str, kind: str = "corrupt") -> None:
        self.path = str(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"'{self.path}': {reason}")

    def __reduce__(self):  # keep pickling (DataLoader workers) working with the extra args
        return (type(self), (self.path, self.reason, self.kind))


@dataclass
class AudioInfo:
    """Header facts about an audio file. ``duration_s`` in seconds, ``sample_rate`` in Hz."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str
    subtype: str

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Sniffing and header checks
# --------------------------------------------------------------------------------------------

_NON_AUDIO_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable"),
    (b"\x93NUMPY", "a NumPy array file"),
)


def _sniff(head: bytes) -> str | None:
    """Container guess from the first bytes: 'wav', 'aiff', 'flac', 'ogg', 'mp3', 'audio' (other
    libsndfile formats), 'unsupported' or None (not audio)."""
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] in (b"RF64", b"BW64", b"riff"):
        return "audio"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp" or (len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0):
        return "unsupported"  # MP4/M4A, or AAC in ADTS frames (sync word with layer bits 00)
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0):
        return "mp3"
    if head[:4] in (b"caff", b".snd", b"FORM", b"NIST", b"Crea"):
        return "audio"
    return None


def _describe_non_audio(head: bytes) -> str:
    for magic, what in _NON_AUDIO_MAGIC:
        if head.startswith(magic):
            return f"not an audio file (looks like {what})"
    if head and b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "not an audio file (looks like a text file)"
    return f"not an audio file (format not recognised; starts with {head[:8]!r})"


@dataclass
class _Header:
    container: str | None  # from _sniff
    sample_rate: int | None = None  # declared in the header (WAV / AIFF only)
    frames: int | None = None  # declared frame count (WAV / AIFF only), None = unknown


# PCM, IEEE float, A-law, mu-law, WAVE_FORMAT_EXTENSIBLE: one block_align per sample frame.
_WAV_UNCOMPRESSED = (0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE)


def _parse_wav(f, file_size: int) -> _Header:
    hdr = _Header("wav")
    f.seek(12)
    block_align = None  # bytes per sample frame, only for uncompressed codings
    while True:
        raw = f.read(8)
        if len(raw) < 8:
            return hdr
        cid, size = raw[:4], struct.unpack("<I", raw[4:])[0]
        start = f.tell()
        if cid == b"fmt ":
            fmt = f.read(min(size, 16))
            if len(fmt) >= 14:
                tag = struct.unpack("<H", fmt[:2])[0]
                hdr.sample_rate = struct.unpack("<I", fmt[4:8])[0]
                if tag in _WAV_UNCOMPRESSED:
                    block_align = struct.unpack("<H", fmt[12:14])[0]
        elif cid == b"data":
            if block_align and size not in (0, 0xFFFFFFFF):
                hdr.frames = size // block_align
            elif size == 0 and file_size - start > 0:
                hdr.frames = -1  # marker: empty data chunk followed by bytes
            return hdr
        f.seek(start + size + (size & 1))


def _parse_aiff(f) -> _Header:
    hdr = _Header("aiff")
    f.seek(12)
    while True:
        raw = f.read(8)
        if len(raw) < 8:
            return hdr
        cid, size = raw[:4], struct.unpack(">I", raw[4:])[0]
        start = f.tell()
        if cid == b"COMM":
            comm = f.read(min(size, 18))
            if len(comm) >= 18:
                hdr.frames = struct.unpack(">I", comm[2:6])[0]
                hdr.sample_rate = int(_ieee_extended(comm[8:18]))
            return hdr
        f.seek(start + size + (size & 1))


def _ieee_extended(b: bytes) -> float:
    """80-bit IEEE 754 extended float (AIFF sample rate) -> float."""
    exponent = struct.unpack(">H", b[:2])[0] & 0x7FFF
    mantissa = struct.unpack(">Q", b[2:10])[0]
    if exponent == 0 and mantissa == 0:
        return 0.0
    if exponent == 0x7FFF:
        return float("inf")
    return mantissa * 2.0 ** (exponent - 16383 - 63)


def _check_rate(path: str, rate: float) -> None:
    if not (1 <= rate <= MAX_SAMPLE_RATE):
        raise AudioDecodeError(
            path,
            f"nonsensical sample rate {rate:.0f} Hz in the header (expected 1..{MAX_SAMPLE_RATE} Hz); "
            "the file is corrupt",
            "bad_sample_rate",
        )


def _precheck(path: str) -> _Header:
    """File-system checks and a cheap header parse. Raises AudioDecodeError."""
    if not os.path.lexists(path):
        raise AudioDecodeError(path, "file not found", "missing")
    if os.path.isdir(path):
        raise AudioDecodeError(path, "is a directory, not an audio file", "directory")
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise AudioDecodeError(path, "file is empty (0 bytes)", "empty")
        with open(path, "rb") as f:
            head = f.read(64)
            container = _sniff(head)
            if container == "wav" and head[:4] == b"RIFF":
                hdr = _parse_wav(f, size)
            elif container == "aiff":
                hdr = _parse_aiff(f)
            else:
                hdr = _Header(container)
    except AudioDecodeError:
        raise
    except FileNotFoundError as exc:  # dangling symlink
        raise AudioDecodeError(path, f"file not found ({exc.strerror})", "missing") from exc
    except OSError as exc:
        raise AudioDecodeError(path, f"cannot read file ({exc.strerror or exc})", "unreadable") from exc
    if container is None:
        raise AudioDecodeError(path, _describe_non_audio(head), "not_audio")
    if container == "unsupported":
        raise AudioDecodeError(
            path, "unsupported audio container (MP4/M4A or AAC); convert it to WAV, FLAC, OGG or MP3 "
            "(e.g. ffmpeg -i in.m4a out.flac)", "unsupported")
    if hdr.sample_rate is not None:
        _check_rate(path, hdr.sample_rate)
    if hdr.frames == -1:
        raise AudioDecodeError(
            path, "WAV header declares an empty 'data' chunk but sample bytes follow "
            "(unfinished recording?)", "corrupt")
    return hdr


def _open(path: str) -> tuple[sf.SoundFile, _Header]:
    """Validate and open ``path``. The caller closes the returned SoundFile."""
    hdr = _precheck(path)
    try:
        snd = sf.SoundFile(path)
    except sf.LibsndfileError as exc:
        msg = exc.error_string.strip() or str(exc)
        what = hdr.container.upper() if hdr.container not in (None, "audio") else "audio"
        raise AudioDecodeError(path, f"corrupt or truncated {what} file (libsndfile: {msg})",
                               "corrupt") from exc
    except (RuntimeError, TypeError, OSError) as exc:
        raise AudioDecodeError(path, f"cannot open audio file ({exc})", "corrupt") from exc
    try:
        _check_rate(path, snd.samplerate)
        if snd.channels < 1:
            raise AudioDecodeError(path, f"invalid channel count {snd.channels}", "corrupt")
        if snd.frames == 0:
            if os.path.getsize(path) > _ZERO_FRAME_SIZE_LIMIT:
                raise AudioDecodeError(
                    path, f"header reports 0 sample frames but the file holds {os.path.getsize(path)} "
                    "bytes: truncated or corrupt", "truncated")
            raise AudioDecodeError(path, "contains no audio samples (0 frames)", "no_samples")
        if hdr.frames is not None and snd.frames < hdr.frames:
            raise AudioDecodeError(path, _truncated_reason(hdr.frames, snd.frames), "truncated")
    except BaseException:
        snd.close()
        raise
    return snd, hdr


def _truncated_reason(declared: int, present: int) -> str:
    return (f"truncated: the header declares {declared} sample frames but only {present} "
            "could be read (file cut short?)")


def _expected_frames(snd: sf.SoundFile) -> tuple[int, int]:
    """(declared frames, allowed shortfall) for the truncation check after decoding."""
    if snd.format == "MP3":  # frame count is an estimate from the Xing/LAME tag
        return snd.frames, _MP3_FRAME + snd.frames // 100
    return snd.frames, 0


def _check_finite(path: str, block: np.ndarray, offset: int) -> None:
    if not np.isfinite(block).all():
        bad = int(np.argmax(~np.isfinite(block).all(axis=-1) if block.ndim == 2 else ~np.isfinite(block)))
        raise AudioDecodeError(
            path, f"contains NaN or Inf sample values (first at frame {offset + bad})", "non_finite")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def to_mono(wave: np.ndarray) -> np.ndarray:
    """Mix ``[channels, samples]`` to ``[samples]`` by the mean over channels; 1-D input is returned as is."""
    wave = np.asarray(wave)
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise ValueError(f"expected [samples] or [channels, samples], got shape {wave.shape}")
    return wave.mean(axis=0, dtype=np.float32).astype(np.float32, copy=False)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample with soxr "HQ" along the last axis (time). Returns float32.

    ``wave``: ``[samples]`` or ``[channels, samples]``; rates in Hz.
    """
    _check_target_rate(orig_sr, "orig_sr")
    _check_target_rate(target_sr, "target_sr")
    wave = np.asarray(wave, dtype=np.float32)
    if orig_sr == target_sr:
        return wave.copy()
    if wave.ndim == 1:
        out = soxr.resample(wave, orig_sr, target_sr, quality=_RESAMPLE_QUALITY)
        return out.astype(np.float32, copy=False)
    if wave.ndim != 2:
        raise ValueError(f"expected [samples] or [channels, samples], got shape {wave.shape}")
    out = soxr.resample(np.ascontiguousarray(wave.T), orig_sr, target_sr, quality=_RESAMPLE_QUALITY)
    return np.ascontiguousarray(out.T, dtype=np.float32)


def _check_target_rate(rate, name: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not 1 <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"{name} must be an integer number of Hz in 1..{MAX_SAMPLE_RATE}, got {rate!r}")


def audio_info(path: str | os.PathLike, *, verify: bool = False) -> AudioInfo:
    """Header facts of an audio file, after the same validity checks as :func:`load_audio`.

    Only the header is read unless ``verify=True``, which decodes the whole file (in blocks) to
    also catch damage in the sample data (corrupt FLAC frames, NaN samples, short MP3 streams).
    """
    path = os.fspath(path)
    snd, _ = _open(path)
    with snd:
        info = AudioInfo(path=path, sample_rate=int(snd.samplerate), channels=int(snd.channels),
                         frames=int(snd.frames), duration_s=snd.frames / snd.samplerate,
                         format=snd.format, subtype=snd.subtype)
    if verify:
        for _ in stream_audio(path, _READ_FRAMES):
            pass
    return info


def load_audio(path: str | os.PathLike, sample_rate: int | None = None, *,
               mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode a whole audio file.

    Returns ``(wave, rate)``: float32 with full scale = +-1 (integer PCM lands in [-1, 1]; float
    files are returned as stored, not clipped, so over-range values survive), shape ``[samples]`` if
    ``mono`` (channel mean) else ``[channels, samples]``; ``rate`` in Hz is ``sample_rate`` when
    given (soxr "HQ" resampling, after mixing to mono) else the file's rate.
    Raises :class:`AudioDecodeError` for any unreadable or damaged file.
    """
    path = os.fspath(path)
    if sample_rate is not None:
        _check_target_rate(sample_rate, "sample_rate")
    snd, _ = _open(path)
    with snd:
        sr = int(snd.samplerate)
        try:
            data = snd.read(dtype="float32", always_2d=True)  # [frames, channels]
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise _decode_failure(path, snd, exc) from exc
        declared, tolerance = _expected_frames(snd)
    if data.shape[0] == 0:
        raise AudioDecodeError(path, "contains no audio samples (0 frames decoded)", "no_samples")
    if data.shape[0] < declared - tolerance:
        raise AudioDecodeError(path, _truncated_reason(declared, data.shape[0]), "truncated")
    _check_finite(path, data, 0)
    wave = data.mean(axis=1) if mono else np.ascontiguousarray(data.T)
    if sample_rate is not None and sample_rate != sr:
        wave = resample(wave, sr, sample_rate)
        sr = sample_rate
    return wave.astype(np.float32, copy=False), sr


def _decode_failure(path: str, snd: sf.SoundFile, exc: Exception) -> AudioDecodeError:
    detail = getattr(exc, "error_string", "") or str(exc) or type(exc).__name__
    return AudioDecodeError(
        path, f"truncated or corrupt {snd.format} data: decoding failed part-way "
        f"(libsndfile: {detail.strip() or 'error code ' + str(getattr(exc, 'code', '?'))})", "truncated")


def stream_audio(path: str | os.PathLike, block_samples: int,
                 sample_rate: int | None = None) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks of exactly ``block_samples`` samples (the last may be shorter).

    Reads the file in pieces (bounded memory); resamples with a soxr stream when ``sample_rate``
    (Hz) is given. The concatenation equals :func:`load_audio` (``mono=True``, same rate).
    Validation happens up front for header problems and as the data arrives for damaged data,
    so an :class:`AudioDecodeError` can be raised after some blocks were yielded.
    """
    path = os.fspath(path)
    if isinstance(block_samples, bool) or not isinstance(block_samples, (int, np.integer)) \
            or block_samples < 1:
        raise ValueError(f"block_samples must be a positive integer, got {block_samples!r}")
    if sample_rate is not None:
        _check_target_rate(sample_rate, "sample_rate")
    snd, _ = _open(path)
    return _stream(path, snd, int(block_samples), sample_rate)


def _stream(path: str, snd: sf.SoundFile, block: int, sample_rate: int | None) -> Iterator[np.ndarray]:
    with snd:
        sr = int(snd.samplerate)
        rs = None
        if sample_rate is not None and sample_rate != sr:
            rs = soxr.ResampleStream(sr, sample_rate, 1, dtype="float32", quality=_RESAMPLE_QUALITY)
        declared, tolerance = _expected_frames(snd)
        pending: list[np.ndarray] = []
        n_pending = 0
        n_read = 0
        read_frames = max(_READ_FRAMES, block)
        while True:
            # Not SoundFile.blocks(): on a short read it pads the block with stale data.
            try:
                raw = snd.read(read_frames, dtype="float32", always_2d=True)  # [frames, channels]
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise _decode_failure(path, snd, exc) from exc
            last = raw.shape[0] == 0
            if not last:
                _check_finite(path, raw, n_read)
                n_read += raw.shape[0]
                piece = raw.mean(axis=1)
            else:
                if n_read == 0:
                    raise AudioDecodeError(path, "contains no audio samples (0 frames decoded)",
                                           "no_samples")
                if n_read < declared - tolerance:
                    raise AudioDecodeError(path, _truncated_reason(declared, n_read), "truncated")
                piece = np.zeros(0, dtype=np.float32)
            if rs is not None:
                piece = rs.resample_chunk(piece, last=last)
            if piece.size:
                pending.append(piece)
                n_pending += piece.size
            if n_pending >= block or (last and n_pending):
                buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
                n_full = buf.size // block
                for i in range(n_full):
                    yield buf[i * block:(i + 1) * block].astype(np.float32, copy=True)
                rest = buf[n_full * block:]
                pending, n_pending = ([rest], rest.size) if rest.size else ([], 0)
                if last and rest.size:
                    yield rest.astype(np.float32, copy=True)
                    pending, n_pending = [], 0
            if last:
                return

