"""precision="auto": the choice among CPU paths (injected timings), its cache and key, and its wiring into load."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import kikimimi
from kikimimi.inference import cpu_paths
from kikimimi.inference.cpu_paths import (
    PathCache,
    PathChoice,
    PathMeasurement,
    choice_key,
    choose_cpu_path,
    choose_path,
    default_precision,
    measure_paths,
)

M = PathMeasurement


def _fp32(speed: float = 10.0) -> PathMeasurement:
    return M("fp32", speed, 1.0, 1.0)


# ------------------------------------------------------------------------------------------ the choice itself
def test_the_fastest_path_above_the_cosine_bound_wins():
    choice = choose_path([_fp32(10), M("int8", 25, 0.9995, 0.9997), M("ort-int8", 30, 0.9993, 0.9996),
                          M("ort-fp32", 15, 1.0, 1.0)])
    assert choice.path == "ort-int8" and choice.precision == "int8"
    assert "3.00× fp32" in choice.reason and choice.line().startswith("precision auto: ort-int8")


def test_a_path_below_the_cosine_bound_is_never_chosen_however_fast():
    measurements = [_fp32(10), M("bf16", 100, 0.9989, 0.9999), M("ort-int8-static", 80, 0.95, 0.99),
                    M("int8", 12, 0.9991, 0.9995)]
    choice = choose_path(measurements)
    assert choice.path == "int8"
    assert "below cosine 0.999: bf16 (cosine 0.9989), ort-int8-static (cosine 0.9500)" in choice.reason
    assert choose_path(measurements, min_cosine=0.9995).path == "fp32"  # int8's 0.9991 is then too low too


def test_failed_or_non_finite_paths_are_never_chosen_and_fp32_is_the_fallback():
    choice = choose_path([_fp32(10), M("ort-int8", 50, error="RuntimeError: boom"),
                          M("int8", 40, float("nan"), float("nan")), M("bf16", float("inf"), 1.0, 1.0)])
    assert choice.path == "fp32" and "failed: ort-int8" in choice.reason
    assert choose_path([]).path == "fp32"
    assert choose_path([M("fp32", error="x"), M("int8", 40, 0.9999, 0.9999)]).path == "fp32"  # no reference


def test_fp32_stays_when_nothing_is_faster():
    choice = choose_path([_fp32(10), M("int8", 9, 0.9999, 0.9999)])
    assert choice.path == "fp32" and "no other path was faster" in choice.reason


class _Fake:
    """An embedder whose output is fp32's plus ``noise`` (relative), or raises, or gives NaN."""

    def __init__(self, noise: float = 0.0, fail: bool = False, nan: bool = False) -> None:
        self.noise, self.fail, self.nan, self.calls = noise, fail, nan, 0

    def embed(self, clips, sample_rate=None, batch_size=8):
        self.calls += 1
        if self.fail:
            raise RuntimeError("no kernel for this\nshape")
        base = np.stack([np.linspace(1, 2, 16) * (i + 1) for i in range(len(clips))])
        out = base + self.noise * np.random.default_rng(self.calls).standard_normal(base.shape) * base.std()
        return np.full_like(out, np.nan) if self.nan else out


def test_measure_paths_reads_injected_timings_cosines_and_failures():
    fakes = {"fp32": _Fake(), "int8": _Fake(noise=0.001), "ort-int8": _Fake(noise=0.5), "bf16": _Fake(fail=True),
             "ort-fp32": _Fake(nan=True)}
    durations = {"fp32": 2.0, "int8": 0.5, "ort-int8": 0.25}
    order: list[str] = []

    def make(path):
        order.append(path)
        return fakes[path]

    ticks = iter(t for p in ["fp32", "int8", "ort-int8"] * 2 for t in (0.0, durations[p]))  # start, end per call
    result = measure_paths(make, list(fakes), [np.zeros(10)] * 4, 16000, repeats=2, clock=lambda: next(ticks))
    by = {m.path: m for m in result}
    assert [m.path for m in result] == list(fakes) and order == list(fakes)
    assert by["fp32"].clips_per_s == pytest.approx(2.0) and by["int8"].clips_per_s == pytest.approx(8.0)
    assert by["ort-int8"].clips_per_s == pytest.approx(16.0)
    assert by["fp32"].cos_min == pytest.approx(1.0) and 0.999 < by["int8"].cos_min < 1.0
    assert by["ort-int8"].cos_min < 0.999
    assert by["bf16"].error == "RuntimeError: no kernel for this shape" and by["bf16"].clips_per_s is None
    assert "non-finite" in by["ort-fp32"].error
    assert choose_path(result).path == "int8"  # ort-int8 is faster but fails the cosine bound


# ------------------------------------------------------------------------------------------ cache and its key
def _fake_measure(calls: list, int8_cos: float = 0.9999):
    def measure(make, paths, clips, sample_rate):
        calls.append(tuple(paths))
        assert make("fp32") is not None  # building the reference works
        return [_fp32(10)] + [M(p, 30, int8_cos, int8_cos) for p in paths if p == "int8"]

    return measure


@pytest.fixture
def tiny_bundle(tiny_m2d_file):
    return kikimimi.load(tiny_m2d_file, device="cpu", precision="fp32").bundle


def test_the_choice_is_cached_and_measured_again_when_cpu_or_versions_change(tiny_bundle, tiny_m2d_file, tmp_path,
                                                                             monkeypatch):
    cache, calls = PathCache(tmp_path / "cache"), []
    measure = _fake_measure(calls)
    build = lambda bundle, precision: object()  # noqa: E731
    first = choose_cpu_path(tiny_bundle, tiny_m2d_file, build, cache=cache, measure=measure)
    assert first.path == "int8" and not first.cached and len(calls) == 1
    assert json.loads(cache.file.read_text())[first.key]["path"] == "int8"
    again = choose_cpu_path(tiny_bundle, tiny_m2d_file, build, cache=cache, measure=measure)
    assert again.cached and again.path == "int8" and again.key == first.key and len(calls) == 1
    assert "cached" in again.line()
    signature = cpu_paths.cpu_signature()
    for change in ({"torch": "9.9"}, {"onnxruntime": "0.1"}, {"flags": ["sse2"]}, {"threads": 7}):
        monkeypatch.setattr(cpu_paths, "cpu_signature", lambda change=change: {**signature, **change})
        other = choose_cpu_path(tiny_bundle, tiny_m2d_file, build, cache=cache, measure=measure)
        assert other.key != first.key and not other.cached
    assert len(calls) == 5


def test_a_changed_model_file_is_measured_again(tiny_bundle, tiny_m2d_file, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("KIKIMIMI_HOME", str(tmp_path / "home"))  # the weights-fingerprint cache lives there
    model = tmp_path / "w.pth"
    shutil.copy(tiny_m2d_file, model)
    cache, calls = PathCache(tmp_path / "cache"), []
    build = lambda bundle, precision: object()  # noqa: E731
    first = choose_cpu_path(tiny_bundle, model, build, cache=cache, measure=_fake_measure(calls))
    with open(model, "ab") as fh:  # new content: a new fingerprint
        fh.write(b"\0")
    second = choose_cpu_path(tiny_bundle, model, build, cache=cache, measure=_fake_measure(calls))
    assert first.key != second.key and len(calls) == 2 and not second.cached


def test_processes_measuring_at_once_wait_for_one_measurement(tiny_bundle, tiny_m2d_file, tmp_path):
    import threading
    import time

    cache, calls = PathCache(tmp_path), []
    fake = _fake_measure(calls)

    def slow(*args):
        time.sleep(0.3)  # long enough for the other caller to reach the lock
        return fake(*args)

    choices = []

    def run():
        choices.append(choose_cpu_path(tiny_bundle, tiny_m2d_file, lambda b, p: object(), cache=PathCache(tmp_path),
                                       measure=slow))

    workers = [threading.Thread(target=run) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(calls) == 1 and sorted(c.cached for c in choices) == [False, True]
    assert {c.path for c in choices} == {"int8"} and cache.get(choices[0].key) is not None


def test_keys_differ_by_model_and_bound_and_a_damaged_cache_reads_empty(tmp_path):
    sig = {"cpu": "x", "flags": ["avx2"]}
    assert choice_key(sig, "a") != choice_key(sig, "b") != choice_key(sig, "b", min_cosine=0.99)
    cache = PathCache(tmp_path)
    tmp_path.joinpath("cpu-paths.json").write_text("{not json")
    assert cache.get("k") is None
    cache.put("k", PathChoice("int8", "why", [M("int8", 3.0, 0.9995, 0.9996)], key="k"))
    got = cache.get("k")
    assert got.path == "int8" and got.measurements[0].cos_min == 0.9995 and got.cached


def test_a_cached_path_no_longer_available_is_measured_again(tiny_bundle, tiny_m2d_file, tmp_path, monkeypatch):
    cache, calls = PathCache(tmp_path), []
    key = choice_key(cpu_paths.cpu_signature(), cpu_paths.model_fingerprint(tiny_m2d_file, dict(tiny_bundle.config)))
    cache.put(key, PathChoice("ort-int8", "measured with onnxruntime installed", key=key))
    monkeypatch.setattr(cpu_paths, "_ort_available", lambda: False)  # the onnx extra was removed since
    choice = choose_cpu_path(tiny_bundle, tiny_m2d_file, lambda b, p: object(), cache=cache,
                             measure=_fake_measure(calls))
    assert choice.path == "int8" and calls and not any(p.startswith("ort-") for p in calls[0])


def test_off_the_cpu_or_without_a_file_auto_is_fp32_without_measuring(tiny_bundle, tmp_path):
    calls: list = []
    cuda = choose_cpu_path(tiny_bundle, "x", lambda b, p: None, device="cuda", cache=PathCache(tmp_path),
                           measure=_fake_measure(calls))
    nofile = choose_cpu_path(tiny_bundle, None, lambda b, p: None, cache=PathCache(tmp_path),
                             measure=_fake_measure(calls))
    assert cuda.path == nofile.path == "fp32" and not calls and "cuda" in cuda.reason


# ------------------------------------------------------------------------------------------ load and commands
def test_load_auto_uses_the_choice_and_its_cache(tiny_m2d_file, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KIKIMIMI_HOME", str(tmp_path))
    calls: list = []
    monkeypatch.setattr(cpu_paths, "measure_paths", _fake_measure(calls))
    with caplog.at_level("INFO", logger="kikimimi"):
        model = kikimimi.load(tiny_m2d_file, device="cpu", precision="auto")
    assert model.precision == "int8" and model.precision_choice.path == "int8" and len(calls) == 1
    assert any("precision auto: int8" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv("KIKIMIMI_PRECISION", "auto")  # the default, as outside the test suite
    again = kikimimi.load(tiny_m2d_file, device="cpu")
    assert again.precision == "int8" and again.precision_choice.cached and len(calls) == 1
    exact = kikimimi.load(tiny_m2d_file, device="cpu", precision="fp32")
    assert exact.precision == "fp32" and not hasattr(exact, "precision_choice")


def test_load_auto_measures_for_real_without_onnxruntime(tiny_m2d_file, tmp_path, monkeypatch):
    monkeypatch.setenv("KIKIMIMI_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_paths, "_ort_available", lambda: False)
    monkeypatch.setattr(cpu_paths, "cpu_has_native_bf16", lambda: False)
    probe = cpu_paths.probe_clips
    monkeypatch.setattr(cpu_paths, "probe_clips", lambda d, sr, n=4, seed=0: probe(1.5, sr, n=2, seed=seed))
    model = kikimimi.load(tiny_m2d_file, device="cpu", precision="auto")
    choice = model.precision_choice
    assert [m.path for m in choice.measurements] == ["fp32", "int8"]
    assert all(m.error is None and m.clips_per_s > 0 for m in choice.measurements)
    assert choice.path in ("fp32", "int8") and model.precision == choice.path
    int8 = choice.measurements[1]
    assert (int8.cos_min >= 0.999) or choice.path == "fp32"  # never a path below the bound
    emb = model.embed([np.zeros(16000, np.float32) + 0.01], 16000)
    assert emb.shape == (1, model.embedding_dim) and np.isfinite(emb).all()


def test_default_precision_follows_the_environment(monkeypatch):
    monkeypatch.delenv("KIKIMIMI_PRECISION", raising=False)
    assert default_precision() == "auto"
    monkeypatch.setenv("KIKIMIMI_PRECISION", "INT8")
    assert default_precision() == "int8"
    monkeypatch.setenv("KIKIMIMI_PRECISION", "fp16")
    with pytest.raises(ValueError, match="KIKIMIMI_PRECISION='fp16'"):
        default_precision()


def test_an_index_keeps_the_precision_it_was_built_with(tmp_path):
    from kikimimi.commands._options import index_precision

    (tmp_path / "manifest.json").write_text(json.dumps({"model_identity": {"precision": "fp32"}}))
    assert index_precision(argparse.Namespace(precision=None), tmp_path) == "fp32"
    assert index_precision(argparse.Namespace(precision="int8"), tmp_path) == "int8"
    assert index_precision(argparse.Namespace(precision=None), tmp_path / "none") is None


def test_auto_measures_no_static_int8_and_no_onnx_for_clap(tiny_bundle, monkeypatch):
    import dataclasses

    from kikimimi.inference.cpu_paths import available_paths

    monkeypatch.setattr(cpu_paths, "_ort_available", lambda: True)
    monkeypatch.setattr(cpu_paths, "cpu_has_native_bf16", lambda: True)
    assert available_paths(tiny_bundle) == ("fp32", "bf16", "int8", "ort-fp32", "ort-int8")
    assert available_paths(tiny_bundle, include_static=True)[-1] == "ort-int8-static"
    clap = dataclasses.replace(tiny_bundle, audio_proj=object())  # its projector reads un-pooled frames
    assert available_paths(clap) == ("fp32", "bf16", "int8")
    assert available_paths(tiny_bundle, "cuda") == ("fp32",)
