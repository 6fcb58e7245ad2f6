"""kikimimi.audio.decode: decoding, resampling, mono mix, streaming, error reporting; `kikimimi info`."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kikimimi import cli
from kikimimi.audio.decode import (
    AudioDecodeError,
    AudioInfo,
    audio_info,
    load_audio,
    resample,
    stream_audio,
    to_mono,
)


def _sine(freq_hz: float, duration_s: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(duration_s * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    """Frequency (Hz) of the largest spectral peak, refined by parabolic interpolation."""
    n = 1 << int(np.ceil(np.log2(len(x) * 4)))
    mag = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    k = int(np.argmax(mag))
    a, b, c = np.log(mag[k - 1:k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / n


# ---------------------------------------------------------------------------------------------
# Bad inputs: each builder returns (path, expected kind, words expected in the reason)
# ---------------------------------------------------------------------------------------------


def _good_wav_bytes(tmp: Path, subtype: str = "PCM_16") -> bytes:
    p = tmp / "_src.wav"
    sf.write(p, _sine(440, 0.5, 16000), 16000, subtype=subtype)
    data = p.read_bytes()
    p.unlink()
    return data


def _cut_file(tmp: Path, ext: str, fraction: float, **write_kw) -> Path:
    src = tmp / f"_src{ext}"
    sf.write(src, _sine(440, 1.0, 16000), 16000, **write_kw)
    data = src.read_bytes()
    src.unlink()
    out = tmp / f"cut{ext}"
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def _patched_rate(tmp: Path, rate: int) -> Path:
    data = bytearray(_good_wav_bytes(tmp))
    assert data[24:28] == struct.pack("<I", 16000)  # fmt chunk: sample rate field
    data[24:28] = struct.pack("<I", rate)
    data[28:32] = struct.pack("<I", (rate * 2) & 0xFFFFFFFF)  # byte rate
    p = tmp / f"rate_{rate}.wav"
    p.write_bytes(bytes(data))
    return p


def _float_with(tmp: Path, value: float, name: str) -> Path:
    x = _sine(440, 0.2, 16000)
    x[123] = value
    p = tmp / name
    sf.write(p, x, 16000, subtype="FLOAT")
    return p


def _write(tmp: Path, name: str, data: bytes) -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


BAD_INPUTS = {
    "missing": lambda t: (t / "nope.wav", "missing", ["not found"]),
    "directory": lambda t: ((t / "folder.wav").mkdir() or t / "folder.wav", "directory", ["directory"]),
    "empty": lambda t: (_write(t, "empty.wav", b""), "empty", ["empty", "0 bytes"]),
    "zero_samples": lambda t: (
        (sf.write(t / "zero.wav", np.zeros(0, np.float32), 16000) or t / "zero.wav"),
        "no_samples", ["no audio samples"]),
    "header_cut": lambda t: (_write(t, "hdr.wav", _good_wav_bytes(t)[:20]), "corrupt", ["corrupt", "WAV"]),
    "data_cut": lambda t: (_write(t, "half.wav", _good_wav_bytes(t)[:4044]), "truncated",
                           ["truncated", "8000", "2000"]),
    "garbage_after_riff": lambda t: (
        _write(t, "garbage.wav", _good_wav_bytes(t)[:12] + np.random.default_rng(0).bytes(3000)),
        "corrupt", ["corrupt"]),
    "empty_data_chunk_with_bytes": lambda t: (
        _write(t, "zero_size.wav", (lambda b: b[:40] + struct.pack("<I", 0) + b[44:])(_good_wav_bytes(t))),
        "corrupt", ["empty 'data' chunk"]),
    "text_renamed": lambda t: (_write(t, "notes.wav", b"this is a text file\nnot audio\n" * 20),
                               "not_audio", ["not an audio file", "text"]),
    "png_renamed": lambda t: (_write(t, "image.wav", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
                              "not_audio", ["not an audio file", "PNG"]),
    "m4a_renamed": lambda t: (_write(t, "song.wav", b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(64)),
                              "unsupported", ["MP4/M4A", "convert"]),
    "aac_adts": lambda t: (_write(t, "song.mp3", b"\xff\xf1\x50\x80\x02\x1f\xfc" + bytes(300)),
                           "unsupported", ["AAC"]),
    "nan": lambda t: (_float_with(t, np.nan, "nan.wav"), "non_finite", ["NaN", "frame 123"]),
    "inf": lambda t: (_float_with(t, np.inf, "inf.wav"), "non_finite", ["Inf", "frame 123"]),
    "rate_zero": lambda t: (_patched_rate(t, 0), "bad_sample_rate", ["sample rate", "0 Hz"]),
    "rate_absurd": lambda t: (_patched_rate(t, 5_000_000), "bad_sample_rate", ["sample rate", "5000000 Hz"]),
    "flac_cut": lambda t: (_cut_file(t, ".flac", 0.5), "truncated", ["FLAC", "decoding failed"]),
    "mp3_cut": lambda t: (_cut_file(t, ".mp3", 0.5), "truncated", ["truncated", "16000"]),
    "ogg_cut": lambda t: (_cut_file(t, ".ogg", 0.5), "corrupt", ["corrupt", "OGG"]),
    "aiff_cut": lambda t: (_cut_file(t, ".aiff", 0.5, subtype="PCM_16"), "truncated", ["16000"]),
}
# Damage that only shows while decoding the samples (header is fine): audio_info() without
# verify reports the header; with verify=True it raises like load_audio.
DATA_LEVEL = {"nan", "inf", "flac_cut", "mp3_cut"}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_named_error(tmp_path, case):
    path, kind, words = BAD_INPUTS[case](tmp_path)
    with pytest.raises(AudioDecodeError) as ei:
        load_audio(path)
    err = ei.value
    assert err.kind == kind, str(err)
    assert err.path == str(path)
    assert str(err) == f"'{path}': {err.reason}"
    for w in words:
        assert w in err.reason, (w, err.reason)
    assert isinstance(err, ValueError)

    # streaming fails the same way (at the call for header problems, while iterating otherwise)
    with pytest.raises(AudioDecodeError) as ei2:
        list(stream_audio(path, 1024, sample_rate=8000))
    assert ei2.value.kind == kind and ei2.value.path == str(path)

    if case in DATA_LEVEL:
        info = audio_info(path)
        assert info.frames > 0
        with pytest.raises(AudioDecodeError) as ei3:
            audio_info(path, verify=True)
        assert ei3.value.kind == kind
    else:
        with pytest.raises(AudioDecodeError) as ei3:
            audio_info(path)
        assert ei3.value.kind == kind


def test_bad_reasons_are_distinct(tmp_path):
    reasons = {}
    for case, build in BAD_INPUTS.items():
        sub = tmp_path / case
        sub.mkdir()
        path, _, _ = build(sub)
        with pytest.raises(AudioDecodeError) as ei:
            load_audio(path)
        reasons[case] = (ei.value.kind, ei.value.reason.split("(")[0])
    base = {k: v for k, v in reasons.items() if k in
            ("missing", "directory", "empty", "zero_samples", "header_cut", "data_cut", "text_renamed",
             "nan", "rate_zero")}
    assert len({v[0] for v in base.values()}) == len(base), base
    assert len({v[1] for v in base.values()}) == len(base), base


def test_error_pickles(tmp_path):
    err = AudioDecodeError(tmp_path / "x.wav", "file is empty (0 bytes)", "empty")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, back.kind, str(back)) == (err.path, err.reason, err.kind, str(err))


def test_wav_data_size_unknown_is_accepted(tmp_path):
    """Streaming writers put 0xFFFFFFFF in the data size; that is 'unknown', not truncation."""
    b = _good_wav_bytes(tmp_path)
    p = _write(tmp_path, "stream.wav", b[:40] + struct.pack("<I", 0xFFFFFFFF) + b[44:])
    x, sr = load_audio(p)
    ref, _ = load_audio(_write(tmp_path, "ref.wav", b))
    np.testing.assert_array_equal(x, ref)


def test_bad_target_rate(wav_factory):
    p = wav_factory()
    for bad in (0, -16000, 16000.5, 2_000_000):
        with pytest.raises(ValueError, match="sample_rate"):
            load_audio(p, bad)
    with pytest.raises(ValueError, match="block_samples"):
        stream_audio(p, 0)


# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subtype,atol", [("PCM_16", 1.01 / 32768), ("PCM_24", 1.01 / 2**23),
                                          ("FLOAT", 0.0)])
def test_wav_roundtrip(wav_factory, subtype, atol):
    x = _sine(440, 0.5, 22050, amp=0.7)
    p = wav_factory("a.wav", wave=x, sample_rate=22050, subtype=subtype)
    y, sr = load_audio(p)
    assert sr == 22050 and y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=atol, rtol=0)
    info = audio_info(p)
    assert info == AudioInfo(str(p), 22050, 1, x.size, x.size / 22050, "WAV", subtype)


def test_flac_and_aiff_lossless(wav_factory):
    x = np.round(_sine(440, 0.5, 16000) * 32767) / 32768
    for name in ("a.flac", "a.aiff"):
        y, sr = load_audio(wav_factory(name, wave=x, subtype="PCM_16"))
        assert sr == 16000
        np.testing.assert_allclose(y, x, atol=1e-6)


def _writable(fmt: str, subtype: str) -> bool:
    return fmt in sf.available_formats() and subtype in sf.available_subtypes(fmt)


LOSSY = [
    ("a.ogg", "OGG", "VORBIS"),
    ("a.opus", "OGG", "OPUS"),
    ("a.mp3", "MP3", "MPEG_LAYER_III"),
]


@pytest.mark.parametrize("name,fmt,subtype", LOSSY)
def test_lossy_roundtrip(wav_factory, name, fmt, subtype):
    assert _writable(fmt, subtype), f"this soundfile build cannot write {fmt}/{subtype}"
    sr = 48000 if subtype == "OPUS" else 16000
    x = _sine(1000, 1.0, sr, amp=0.5)
    p = wav_factory(name, wave=x, sample_rate=sr, format=fmt, subtype=subtype)
    y, got_sr = load_audio(p)
    assert got_sr == sr and y.dtype == np.float32
    assert abs(y.size - x.size) <= 0.05 * x.size
    assert abs(_peak_hz(y, sr) - 1000) < 5
    mid = y[y.size // 4: 3 * y.size // 4]
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.15)
    assert audio_info(p).subtype == subtype


def test_stereo_to_mono(wav_factory):
    left, right = _sine(440, 0.3, 16000, 0.6), _sine(880, 0.3, 16000, 0.2)
    p = wav_factory("st.wav", wave=np.stack([left, right], axis=1), subtype="FLOAT")
    mono, _ = load_audio(p)
    multi, _ = load_audio(p, mono=False)
    assert mono.shape == left.shape and multi.shape == (2, left.size)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-7)
    np.testing.assert_array_equal(multi[0], left)
    np.testing.assert_allclose(to_mono(multi), mono, atol=1e-7)
    assert to_mono(left) is left or np.array_equal(to_mono(left), left)
    assert audio_info(p).channels == 2


def test_float_file_over_range_is_kept(wav_factory):
    """Float files are returned as stored (no clipping), in load_audio and stream_audio alike."""
    x = _sine(100, 0.1, 16000, amp=1.5)
    p = wav_factory("loud.wav", wave=x, subtype="FLOAT")
    y, _ = load_audio(p)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(np.concatenate(list(stream_audio(p, 333))), x)


# ---------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------


def test_resample_preserves_tone(wav_factory):
    x = _sine(1000, 1.0, 44100, amp=0.5)
    p = wav_factory("hi.wav", wave=x, sample_rate=44100, subtype="FLOAT")
    y, sr = load_audio(p, 16000)
    assert sr == 16000 and y.dtype == np.float32
    assert abs(y.size - 16000) <= 1
    assert _peak_hz(y, 16000) == pytest.approx(1000, abs=0.5)
    mid = y[2000:-2000]
    assert np.sqrt(2 * np.mean(mid**2)) == pytest.approx(0.5, rel=0.01)
    np.testing.assert_array_equal(y, resample(x, 44100, 16000))


def test_resample_multichannel_and_identity():
    x = np.stack([_sine(500, 0.2, 32000), _sine(700, 0.2, 32000)])
    y = resample(x, 32000, 16000)
    assert y.shape == (2, 3200) and y.dtype == np.float32
    np.testing.assert_allclose(y[1], resample(x[1], 32000, 16000), atol=1e-6)
    same = resample(x, 32000, 32000)
    np.testing.assert_array_equal(same, x)
    assert same is not x


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [7, 4000, 100_000, 300_000])
def test_stream_equals_load_native_rate(wav_factory, block):
    rng = np.random.default_rng(0)
    x = (rng.uniform(-0.5, 0.5, size=(150_000, 2))).astype(np.float32)  # > one internal read
    p = wav_factory("long.wav", wave=x, sample_rate=22050, subtype="PCM_24")
    blocks = list(stream_audio(p, block))
    assert all(b.size == block for b in blocks[:-1]) and 0 < blocks[-1].size <= block
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    whole, _ = load_audio(p)
    np.testing.assert_array_equal(np.concatenate(blocks), whole)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_stream_equals_load_resampled(wav_factory, ext):
    rng = np.random.default_rng(1)
    x = (0.3 * rng.standard_normal(3 * 44100 + 17)).clip(-1, 1).astype(np.float32)
    p = wav_factory("r" + ext, wave=x, sample_rate=44100, subtype="PCM_16")
    blocks = list(stream_audio(p, 16000, sample_rate=16000))
    assert all(b.size == 16000 for b in blocks[:-1])
    whole, _ = load_audio(p, 16000)
    got = np.concatenate(blocks)
    assert got.size == whole.size
    np.testing.assert_allclose(got, whole, atol=1e-4, rtol=0)


def test_stream_reads_incrementally(tmp_path):
    """Blocks arrive before the damaged part of a long FLAC is reached, then the error is raised."""
    src = tmp_path / "src.flac"
    sf.write(src, _sine(440, 20.0, 16000), 16000)  # 320k frames, several internal reads
    cut = _write(tmp_path, "long_cut.flac", src.read_bytes()[: int(src.stat().st_size * 0.7)])
    got = []
    with pytest.raises(AudioDecodeError) as ei:
        for b in stream_audio(cut, 16000):
            got.append(b)
    assert ei.value.kind == "truncated" and ei.value.path == str(cut)
    assert len(got) >= 4
    np.testing.assert_allclose(np.concatenate(got), load_audio(src)[0][: 16000 * len(got)], atol=0)


# ---------------------------------------------------------------------------------------------
# `kikimimi info`
# ---------------------------------------------------------------------------------------------


def test_info_command(wav_factory, tmp_path, capsys):
    good = wav_factory("good.wav", sample_rate=22050, duration_s=1.5, channels=2)
    bad = _write(tmp_path, "bad.wav", b"RIFF\x00\x00")
    rc = cli.main(["info", str(good), str(bad)])
    out, err = capsys.readouterr()
    assert rc == 0  # the batch rule (kikimimi.commands._exit): done when one file was read, the bad one listed
    lines = out.strip().splitlines()
    assert len(lines) == 1
    fields = lines[0].split("\t")
    assert fields[0] == str(good) and "1.500" in fields[1] and "22050" in fields[2] and "2" in fields[3]
    assert fields[4] == "WAV/PCM_16"
    assert err.strip().startswith(f"error: '{bad}': ")

    rc = cli.main(["info", "--json", str(good)])
    out, err = capsys.readouterr()
    assert rc == 0 and err == ""
    rec = json.loads(out)
    assert rec["sample_rate"] == 22050 and rec["channels"] == 2 and rec["frames"] == 33075


def test_info_command_verify_and_folder(tmp_path, capsys):
    flac = _cut_file(tmp_path, ".flac", 0.6)
    rc = cli.main(["info", str(flac)])
    capsys.readouterr()
    assert rc == 0  # the header is fine
    rc = cli.main(["info", "--verify", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 1 and "decoding failed" in err and os.fspath(flac) in err
