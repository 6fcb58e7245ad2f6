"""`kikimimi prep`: conversion, error reporting, strict mode, cache settings and resuming."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kikimimi.audio.decode import load_audio
from kikimimi.cli import main
from kikimimi.features.frontend import log_mel
from kikimimi.features.prep_cache import PrepError, plan_outputs, prep_cache, read_manifest
from kikimimi.features.streaming import stream_log_mel


def _noise(seconds: float, sr: int, seed: int) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


@pytest.fixture
def audio_dir(tmp_path: Path) -> Path:
    root = tmp_path / "audio"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", _noise(1.0, 16000, 0), 16000)
    sf.write(root / "sub" / "b.flac", _noise(0.5, 16000, 1), 16000)
    sf.write(root / "sub" / "c.wav", _noise(0.75, 22050, 2), 22050)  # resampled to 16 kHz
    sf.write(root / "sub" / "c.flac", _noise(0.3, 16000, 3), 16000)  # same stem as c.wav
    return root


def _add_bad_files(root: Path) -> None:
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))
    (root / "empty.wav").write_bytes(b"")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _mtimes(cache: Path) -> dict[str, int]:
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*.npy")}


def test_converts_folder_and_reports_bad_files(audio_dir, tmp_path):
    _add_bad_files(audio_dir)
    cache = tmp_path / "cache"
    assert main(["prep", str(audio_dir), "-o", str(cache), "--workers", "1", "--quiet"]) == 0

    rows = read_manifest(cache)
    # Sorted inputs: c.flac comes first and gets c.npy, c.wav keeps its suffix to stay distinct.
    assert [r["file_name"] for r in rows] == ["a.npy", "sub/b.npy", "sub/c.npy", "sub/c.wav.npy"]
    assert rows[3]["source"] == str((audio_dir / "sub" / "c.wav").resolve())
    assert rows[3]["sample_rate"] == "22050"
    for row in rows:
        lms = np.load(cache / row["file_name"])
        assert lms.dtype == np.float32 and lms.shape == (80, int(row["frames"]))
        wave, _ = load_audio(row["source"], 16000)
        assert float(row["duration_s"]) == pytest.approx(len(wave) / 16000, abs=1e-3)
        np.testing.assert_allclose(lms, log_mel(wave, "m2d-16k"), atol=1e-5)

    errors = _read_csv(cache / "errors.csv")
    assert sorted(Path(e["source"]).name for e in errors) == ["corrupt.wav", "empty.wav"]
    assert all("AudioDecodeError" in e["error"] for e in errors)
    assert not list(cache.glob("corrupt*")) and not list(cache.glob("empty*"))


def test_strict_and_nothing_converted_exit_nonzero(audio_dir, tmp_path):
    _add_bad_files(audio_dir)
    assert main(["prep", str(audio_dir), "-o", str(tmp_path / "c1"), "--strict", "--quiet",
                 "--workers", "1"]) == 1
    # The good files were still converted in strict mode.
    assert len(read_manifest(tmp_path / "c1")) == 4

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    _add_bad_files(only_bad)
    assert main(["prep", str(only_bad), "-o", str(tmp_path / "c2"), "--quiet", "--workers", "1"]) == 1
    assert len(_read_csv(tmp_path / "c2" / "errors.csv")) == 2

    empty = tmp_path / "nothing"
    empty.mkdir()
    assert main(["prep", str(empty), "-o", str(tmp_path / "c3"), "--quiet"]) == 2


def test_resume_skips_finished_files(audio_dir, tmp_path):
    cache = tmp_path / "cache"
    # First run: only a subset (a CSV list naming two of the files, paths relative to the CSV).
    listing = audio_dir / "subset.csv"
    listing.write_text("file_name\na.wav\nsub/b.flac\n")
    first = prep_cache([listing], cache)
    assert (first.converted, first.skipped) == (2, 0)
    assert len(read_manifest(cache)) == 2
    before = _mtimes(cache)

    # Simulate an interrupted run: one finished output lost; later, one output left damaged.
    (cache / "sub" / "b.npy").unlink()
    full = prep_cache([audio_dir], cache)
    assert (full.converted, full.skipped, full.failed) == (3, 1, [])
    after = _mtimes(cache)
    assert after["a.npy"] == before["a.npy"]  # not recomputed

    (cache / "sub" / "c.wav.npy").write_bytes(b"\x93NUMPY garbage")  # a damaged output
    again = prep_cache([audio_dir], cache)
    assert (again.converted, again.skipped) == (1, 3)
    assert _mtimes(cache)["a.npy"] == before["a.npy"]
    rows = read_manifest(cache)
    assert len(rows) == 4 and all((cache / r["file_name"]).is_file() for r in rows)

    done = prep_cache([audio_dir], cache)
    assert (done.converted, done.skipped) == (0, 4)


def test_interrupt_mid_run_then_resume(audio_dir, tmp_path):
    cache = tmp_path / "cache"
    seen: list[str] = []

    def stop_after_two(source: str, error: str | None) -> None:
        seen.append(source)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prep_cache([audio_dir], cache, on_result=stop_after_two)
    assert len(read_manifest(cache)) == 2  # what finished is recorded even on interruption
    resumed = prep_cache([audio_dir], cache)
    assert (resumed.converted, resumed.skipped) == (2, 2)
    assert len(read_manifest(cache)) == 4


def test_parallel_workers_float16_and_limit(audio_dir, tmp_path):
    cache = tmp_path / "cache16"
    code = main(["prep", str(audio_dir), "-o", str(cache), "--workers", "2", "--dtype", "float16",
                 "--limit-s", "0.6", "--quiet"])
    assert code == 0
    rows = {r["file_name"]: r for r in read_manifest(cache)}
    assert len(rows) == 4
    a = np.load(cache / "a.npy")
    assert a.dtype == np.float16 and a.shape == (80, 0.6 * 16000 // 160 + 1)
    assert float(rows["a.npy"]["duration_s"]) == pytest.approx(0.6)
    assert float(rows["sub/c.npy"]["duration_s"]) == pytest.approx(0.3)  # shorter than the limit
    wave, _ = load_audio(audio_dir / "a.wav", 16000)
    np.testing.assert_allclose(a.astype(np.float32), log_mel(wave[:9600], "m2d-16k"), atol=2e-2)


def test_refuses_to_mix_settings(audio_dir, tmp_path):
    cache = tmp_path / "cache"
    prep_cache([audio_dir / "a.wav"], cache, "m2d-16k")
    with pytest.raises(PrepError, match="preset"):
        prep_cache([audio_dir / "a.wav"], cache, "byola")
    with pytest.raises(PrepError, match="dtype"):
        prep_cache([audio_dir / "a.wav"], cache, "m2d-16k", dtype="float16")
    assert main(["prep", str(audio_dir), "-o", str(cache), "--preset", "m2d-32k", "--quiet"]) == 2
    assert np.load(cache / "a.npy").shape[0] == 80  # untouched


def test_long_files_are_streamed(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, _noise(3.0, 32000, 7), 32000, subtype="FLOAT")
    cache = tmp_path / "cache"
    result = prep_cache([path], cache, "m2d-32k", stream_threshold_s=1.0, block_s=0.5)
    assert result.converted == 1
    lms = np.load(cache / "long.npy")
    np.testing.assert_allclose(lms, stream_log_mel(path, "m2d-32k"), atol=1e-5)
    wave, _ = load_audio(path, 32000)
    np.testing.assert_allclose(lms, log_mel(wave, "m2d-32k"), atol=1e-4)


def test_a_file_shorter_than_one_stft_window_is_padded(tmp_path):
    sf.write(tmp_path / "tiny.wav", _noise(0.005, 16000, 8), 16000)  # 80 samples < 201
    sf.write(tmp_path / "ok.wav", _noise(0.2, 16000, 9), 16000)
    result = prep_cache([tmp_path / "tiny.wav", tmp_path / "ok.wav"], tmp_path / "cache")
    assert result.converted == 2 and not result.failed
    assert np.load(tmp_path / "cache" / "tiny.npy").shape == (80, 2)  # the frames of the zero-padded clip


def test_plan_keys_mirror_inputs(audio_dir):
    plan = plan_outputs([audio_dir, audio_dir / "a.wav"])  # the repeated file is kept once
    assert [key for _, key in plan] == ["a.npy", "sub/b.npy", "sub/c.npy", "sub/c.wav.npy"]
