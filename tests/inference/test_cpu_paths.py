"""precision="auto": the choice among CPU paths (injected timings), its cache and key, and its wiring into load."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np
import pytest

import kikimimi
from kikimimi.inference import cpu_paths
from kikimimi.inference.cpu_paths import (
    THOROUGH,
    PathCache,
    PathChoice,
    PathMeasurement,
    ProbeSettings,
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
    result = measure_paths(make, list(fakes), [np.zeros(10)] * 4, 16000, settings=THOROUGH,
                           clock=lambda: next(ticks))
    by = {m.path: m for m in result}
    assert [m.path for m in result] == list(fakes) and order == list(fakes)
    assert by["fp32"].clips_per_s == pytest.approx(2.0) and by["int8"].clips_per_s == pytest.approx(8.0)
    assert by["ort-int8"].clips_per_s == pytest.approx(16.0)
    assert by["fp32"].cos_min == pytest.approx(1.0) and 0.999 < by["int8"].cos_min < 1.0
    assert by["ort-int8"].cos_min < 0.999
    assert by["bf16"].error == "RuntimeError: no kernel for this shape" and by["bf16"].clips_per_s is None
    assert "non-finite" in by["ort-fp32"].error
    assert choose_path(result).path == "int8"  # ort-int8 is faster but fails the cosine bound
    assert by["fp32"].rounds == by["ort-int8"].rounds == 2 and by["bf16"].rounds == 0


def test_a_bf16_path_whose_probe_fell_back_to_float32_is_never_chosen():
    from types import SimpleNamespace

    fell_back = _Fake()
    fell_back.encoder = SimpleNamespace(bf16_fallbacks=1)  # its cosine would be float32's, not bf16's
    fakes = {"fp32": _Fake(), "bf16": fell_back, "int8": _Fake(noise=0.001)}
    result = measure_paths(fakes.__getitem__, list(fakes), [np.zeros(10)] * 4, 16000)
    by = {m.path: m for m in result}
    assert by["bf16"].error.startswith("FloatingPointError: bf16 kernels gave non-finite values on the probe")
    assert choose_path(result).path != "bf16"


class _NaNOnSomeShapes(_Fake):
    """A fast path that is finite on the probe (clips of one length) and on other lengths, but gives NaN, or falls
    back to float32 like :class:`~kikimimi.inference.precision.Bf16Autocast`, on the probe's length once other
    lengths have run (what oneDNN's bf16 kernels did on an AMX CPU)."""

    def __init__(self, fallback: bool = False) -> None:
        super().__init__(noise=0.0001)
        self.fallback, self.lengths = fallback, []
        self.encoder = SimpleNamespace(bf16_fallbacks=0)

    def embed(self, clips, sample_rate=None, batch_size=8):
        out = super().embed(clips, sample_rate, batch_size)
        lengths = sorted({len(c) for c in clips})
        if len(lengths) == 1 and any(len(seen) > 1 for seen in self.lengths):
            if self.fallback:
                self.encoder.bf16_fallbacks += 1  # recomputed in float32: finite, but not bf16 any more
            else:
                out[-1] = np.nan
        self.lengths.append(lengths)
        return out


@pytest.mark.parametrize("fallback", [False, True])
def test_a_fast_path_that_is_not_finite_on_other_batch_shapes_is_not_chosen(fallback):
    clips = [np.zeros(100)] * 4  # one chunk each, as probe_clips makes them
    fakes = {"fp32": _Fake(), "bf16": _NaNOnSomeShapes(fallback), "int8": _Fake(noise=0.001)}
    speeds = {"fp32": 1.0, "bf16": 0.1, "int8": 0.5}
    clock = _Clock()

    def make(path):
        fake = fakes[path]
        embed = fake.embed

        def timed_embed(clips, sample_rate=None, batch_size=8):
            clock.t += speeds[path] * len(clips)
            return embed(clips, sample_rate, batch_size)

        fake.embed = timed_embed
        return fake

    unchecked = measure_paths(make, list(fakes), clips, 16000, clock=clock, settings=ProbeSettings(shape_check=()))
    assert choose_path(unchecked).path == "bf16"  # the probe alone sees nothing wrong: the old choice
    fakes.update(bf16=_NaNOnSomeShapes(fallback), int8=_Fake(noise=0.001))
    result = measure_paths(make, list(fakes), clips, 16000, clock=clock)
    by = {m.path: m for m in result}
    # clips of 0.3, 1.55, 2.8 and 8.45 probe lengths, then the probe clips again
    assert fakes["bf16"].lengths[-2:] == [[30, 155, 280, 845], [100]]
    assert "shape check" in by["bf16"].error and by["int8"].error is None
    choice = choose_path(result)
    assert choice.path == "int8" and "failed: bf16" in choice.reason


def test_shape_check_clips_cut_the_probe_clips_end_to_end():
    clips = [np.full(10, i, np.float32) for i in range(3)]
    out = cpu_paths.shape_check_clips(clips, (0.5, 2.5))
    assert [len(c) for c in out] == [5, 25] and out[1][:25].tolist() == [0] * 10 + [1] * 10 + [2] * 5


def test_a_path_that_gave_nan_at_run_time_is_excluded_from_the_cached_choice(tmp_path):
    cache = PathCache(tmp_path)
    measured = [_fp32(10), M("bf16", 40, 0.9999, 0.9999), M("int8", 30, 0.9999, 0.9999)]
    first = choose_path(measured)
    first.key, first.artifacts, first.measured_at = "k" * 64, "a" * 64, "2026-12-08 01:00"
    cache.put(first.key, first)
    assert first.path == "bf16"
    again = cpu_paths.record_nonfinite(first.key, "bf16", cache)
    assert again.path == "int8" and "failed: bf16" in again.reason
    cached = cache.get(first.key)
    assert cached.path == "int8" and cached.artifacts == first.artifacts and cached.measured_at == first.measured_at
    bf16 = next(m for m in cached.measurements if m.path == "bf16")
    assert "non-finite values on a batch at run time" in bf16.error and not bf16.eligible()
    assert cpu_paths.record_nonfinite("unknown", "bf16", cache) is None


def test_load_auto_records_a_bf16_nan_at_run_time_and_the_next_load_avoids_bf16(tiny_m2d_file, tmp_path,
                                                                               monkeypatch, caplog):
    import warnings

    import torch

    monkeypatch.setenv("KIKIMIMI_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_paths, "_ort_available", lambda: False)
    monkeypatch.setattr(cpu_paths, "cpu_has_native_bf16", lambda: True)
    calls: list = []

    def measure(make, paths, clips, sample_rate):
        calls.append(tuple(paths))
        return [_fp32(10), M("bf16", 40, 0.9999, 0.9999), M("int8", 30, 0.9999, 0.9999)]

    monkeypatch.setattr(cpu_paths, "measure_paths", measure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without it (CI) warns
        model = kikimimi.load(tiny_m2d_file, device="cpu", precision="auto")
    assert model.precision == "bf16" and len(calls) == 1
    linear = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    linear.register_forward_hook(lambda m, i, o: o * float("nan") if torch.is_autocast_enabled("cpu") else o)
    with caplog.at_level("WARNING", logger="kikimimi"):
        emb = model.embed([np.full(16000, 0.01, np.float32)], 16000)
    assert np.isfinite(emb).all() and model.encoder.bf16_fallbacks == 1
    assert "the next load of this model on this CPU runs int8" in caplog.text
    again = kikimimi.load(tiny_m2d_file, device="cpu", precision="auto")
    assert again.precision == "int8" and again.precision_choice.cached and len(calls) == 1  # not measured again


class _Clock:
    """A fake clock that embedders advance by their own duration per clip."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Timed(_Fake):
    """A :class:`_Fake` that takes ``per_clip`` fake seconds per clip and records the size of each call."""

    def __init__(self, clock: _Clock, per_clip: float, noise: float = 0.0) -> None:
        super().__init__(noise=noise)
        self.clock, self.per_clip, self.sizes = clock, per_clip, []

    def embed(self, clips, sample_rate=None, batch_size=8):
        self.clock.t += self.per_clip * len(clips)
        self.sizes.append(len(clips))
        return super().embed(clips, sample_rate, batch_size)


def test_the_bounded_measurement_times_only_the_paths_still_in_the_race():
    clock = _Clock()
    fakes = {"fp32": _Timed(clock, 1.0), "int8": _Timed(clock, 0.30, noise=0.001),
             "ort-fp32": _Timed(clock, 0.32), "ort-int8": _Timed(clock, 0.05, noise=0.5),
             "bf16": _Timed(clock, 0.9, noise=0.001)}
    result = measure_paths(fakes.__getitem__, list(fakes), [np.zeros(10)] * 4, 16000, clock=clock)
    by = {m.path: m for m in result}
    # one-clip warm-up, then the call that gives the cosines is the first timed round
    assert fakes["fp32"].sizes == [1, 4] and by["fp32"].clips_per_s == pytest.approx(1.0)
    # ort-int8 is the fastest but below the cosine bound: never timed again, never chosen
    assert by["ort-int8"].rounds == 1 and by["ort-int8"].cos_min < 0.999 and fakes["ort-int8"].sizes == [1, 4]
    # fp32 and bf16 are clearly slower than int8 (< 0.6×) after the first round: not timed again
    assert by["fp32"].rounds == by["bf16"].rounds == 1
    assert by["int8"].rounds == by["ort-fp32"].rounds == 2 and fakes["int8"].sizes == [1, 4, 4, 4, 4]  # + shape check
    assert choose_path(result).path == "int8" and by["int8"].clips_per_s == pytest.approx(4 / 1.2)


def test_the_measurement_starts_no_round_past_its_time_budget():
    clock = _Clock()
    fakes = {"fp32": _Timed(clock, 1.0), "int8": _Timed(clock, 0.9, noise=0.001)}
    result = measure_paths(fakes.__getitem__, list(fakes), [np.zeros(10)] * 4, 16000, clock=clock,
                           settings=ProbeSettings(budget_s=5.0))  # 1 + 4 + 0.9 + 3.6 = 9.5 s after the first round
    assert [m.rounds for m in result] == [1, 1] and choose_path(result).path == "int8"
    clock.t = 0.0
    again = measure_paths(fakes.__getitem__, list(fakes), [np.zeros(10)] * 4, 16000, clock=clock,
                          settings=ProbeSettings(budget_s=60.0, repeats=3))
    assert [m.rounds for m in again] == [3, 3]  # close in speed and within the budget: every round


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


def test_onnx_files_are_shared_across_thread_counts_and_the_line_says_how_long(tiny_bundle, tiny_m2d_file, tmp_path,
                                                                              monkeypatch):
    cache, calls = PathCache(tmp_path / "cache"), []
    build = lambda bundle, precision: object()  # noqa: E731
    first = choose_cpu_path(tiny_bundle, tiny_m2d_file, build, cache=cache, measure=_fake_measure(calls))
    assert first.seconds is not None and f"(measured in {first.seconds:.1f} s, once for" in first.line()
    again = choose_cpu_path(tiny_bundle, tiny_m2d_file, build, cache=cache, measure=_fake_measure(calls))
    assert again.cached and f" in {first.seconds:.1f} s, cached)" in again.line()
    signature = cpu_paths.cpu_signature()
    monkeypatch.setattr(cpu_paths, "cpu_signature", lambda: {**signature, "threads": 7})
    other = choose_cpu_path(tiny_bundle, tiny_m2d_file, build, cache=cache, measure=_fake_measure(calls))
    assert other.key != first.key and len(calls) == 2  # the decision is per thread count…
    assert other.artifacts == first.artifacts and cache.artifacts(other.key) == cache.artifacts(first.key)  # …files not
    assert cache.artifacts(first.key) == cache.artifact_folder(first.artifacts) != cache.artifact_folder(first.key)
    monkeypatch.setattr(cpu_paths, "cpu_signature", lambda: {**signature, "flags": ["sse2"]})
    flags = choose_cpu_path(tiny_bundle, tiny_m2d_file, build, cache=cache, measure=_fake_measure(calls))
    assert flags.artifacts != first.artifacts  # another CPU: int8 files may differ (7-bit weights without VNNI)


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
