"""``precision="auto"``: the fastest arithmetic for this model on this CPU that keeps cosine >= 0.999 to float32.

A *path* is one way of running the encoder on a CPU (:data:`PATHS`):

- ``fp32``: the network as trained (PyTorch eager); the reference, always eligible;
- ``bf16``: PyTorch bfloat16 autocast (only where the CPU has native bfloat16: AVX-512 BF16 / AMX);
- ``int8``: PyTorch dynamic quantisation of the Linear layers (:mod:`kikimimi.inference.precision`);
- ``ort-fp32``, ``ort-int8`` (dynamic; full 8-bit weights on CPUs with int8 dot products, 7-bit elsewhere),
  ``ort-int8-static`` (QDQ, calibrated; measured by the benchmark, not by ``auto``: see :func:`available_paths`):
  the encoder's chunk step exported to ONNX and run on ONNX Runtime (:mod:`kikimimi.inference.onnx_runtime`; the
  ``onnx`` extra). Encoder-only models: a CLAP model's projector reads the encoder's frames before pooling, which
  the graph does not expose.

:func:`choose_cpu_path` measures every available path once — four synthetic clips of the model's chunk length
(:func:`probe_clips`), the cosine of each clip embedding to float32's and clips/s — and :func:`choose_path`
keeps the fastest path whose *minimum* cosine is >= :data:`MIN_COSINE`; a path that failed or missed the bound
is never chosen, and ``fp32`` is the fallback. The measurement is bounded in time (:class:`ProbeSettings`): the
call that gives the cosines is the first timed round (after a one-clip warm-up), and only the paths still in the
race — at the bound and within :attr:`ProbeSettings.drop_below` of the fastest — get a second round, if the
measurement is still under :attr:`ProbeSettings.budget_s`. Timings may be cut short; the cosine rule never is.
(On a ViT-B, the worst cosine of the synthetic probe matched that of 16 real recordings to 1e-4: 0.99935 / 0.99936
for a 7-bit int8 path, 0.99985 / 0.99980 for an 8-bit one.) The decision is cached in
``<kikimimi home>/cache/cpu-paths.json`` under a key made of the model's content fingerprint and config, the
CPU (model name and flags), the thread count and the torch / ONNX Runtime versions (:func:`choice_key`): a
change of any of them measures again. ONNX files of the ONNX paths are kept next to it
(``<kikimimi home>/cache/cpu-paths/<key>/``, the key without the thread count: the files do not depend on it, so a
measurement at another thread count reuses the export) so a later load reuses them. The user's line
(:meth:`PathChoice.line`) says how long the measurement took.

``KIKIMIMI_PRECISION`` (``fp32``, ``bf16``, ``int8`` or ``auto``) replaces the default ``auto`` of every
command and of :func:`kikimimi.load`; an explicit ``precision=`` / ``--precision`` wins over it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import filelock
import numpy as np
import torch

from kikimimi.audio.synthetic import make_sound, speech_like
from kikimimi.checkpoints import EncoderBundle
from kikimimi.checkpoints.home import cache_root
from kikimimi.features.frontend import LogMelSpectrogram
from kikimimi.fileio import atomic_write_json, file_fingerprint
from kikimimi.inference.onnx_runtime import (
    OnnxFrameEncoder,
    export_onnx,
    onnx_session,
    quantize_onnx_int8,
    quantize_onnx_int8_static,
)
from kikimimi.inference.precision import (
    PRECISIONS,
    cpu_flags,
    cpu_has_int8_dot,
    cpu_has_native_bf16,
    cpu_name,
    isa_caps,
)

__all__ = [
    "AUTO",
    "MIN_COSINE",
    "PATHS",
    "PRECISION_ENV",
    "PathCache",
    "PathChoice",
    "PathMeasurement",
    "ProbeSettings",
    "THOROUGH",
    "available_paths",
    "artifact_key",
    "choice_key",
    "choose_cpu_path",
    "choose_path",
    "cpu_signature",
    "default_precision",
    "measure_paths",
    "prepare_path",
    "probe_clips",
    "record_nonfinite",
    "shape_check_clips",
]

_log = logging.getLogger(__name__)

AUTO = "auto"
#: every CPU path, in the order they are measured (``fp32`` first: the reference)
PATHS = ("fp32", "bf16", "int8", "ort-fp32", "ort-int8", "ort-int8-static")
ORT_PATHS = ("ort-fp32", "ort-int8", "ort-int8-static")
#: a path is eligible when the cosine of every probe clip's embedding to float32's is at least this
MIN_COSINE = 0.999
PRECISION_ENV = "KIKIMIMI_PRECISION"
CACHE_NAME = "cpu-paths.json"
#: the digests of weight files, shared with :mod:`kikimimi.inference.jobs` (same file name)
_FINGERPRINT_CACHE = "weights-fingerprints.json"
#: bumped when the measurement changes meaning: older cache entries are measured again
_FORMAT = 1


class Embedder(Protocol):
    """What :func:`measure_paths` times: an :class:`~kikimimi.inference.encoder.AudioEncoder`-like object."""

    def embed(self, audio: Any, sample_rate: int | None = None, batch_size: int = 8) -> np.ndarray: ...


def default_precision() -> str:
    """The precision used when none is given: ``$KIKIMIMI_PRECISION`` when set, else ``"auto"``.

    Raises:
        ValueError: ``KIKIMIMI_PRECISION`` holds an unknown name.
    """
    value = os.environ.get(PRECISION_ENV, "").strip().lower() or AUTO
    if value != AUTO and value not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV}={value!r} is not a precision; use auto, {', '.join(PRECISIONS)}")
    return value


# --------------------------------------------------------------------------------------------- measurements
@dataclass
class PathMeasurement:
    """One path measured on the probe clips: speed (clips/s), cosine of clip embeddings to float32 (min / mean
    over the clips), or the one-line ``error`` that made it unusable."""

    path: str
    clips_per_s: float | None = None
    cos_min: float | None = None
    cos_mean: float | None = None
    error: str | None = None
    #: timed rounds behind ``clips_per_s`` (the best one is kept)
    rounds: int = 0

    def eligible(self, min_cosine: float = MIN_COSINE) -> bool:
        """Measured without error, finite, and ``cos_min >= min_cosine`` (``fp32``: always, when it ran)."""
        if self.error is not None or self.clips_per_s is None or not np.isfinite(self.clips_per_s):
            return False
        if self.path == "fp32":
            return True
        return self.cos_min is not None and bool(np.isfinite(self.cos_min)) and self.cos_min >= min_cosine


@dataclass
class PathChoice:
    """The path chosen for a model on this CPU, why, and what was measured (``key``: :func:`choice_key`)."""

    path: str
    reason: str
    measurements: list[PathMeasurement] = field(default_factory=list)
    key: str = ""
    measured_at: str = ""
    cached: bool = False
    #: wall seconds the measurement took (building the paths, ONNX export and quantisation included)
    seconds: float | None = None
    #: the key of the folder of its ONNX files (:func:`artifact_key`; ``""``: ``key``'s)
    artifacts: str = ""

    @property
    def precision(self) -> str:
        """The :class:`~kikimimi.inference.encoder.AudioEncoder` precision of the path (``fp32``/``bf16``/``int8``)."""
        return "fp32" if self.path == "ort-fp32" else "int8" if self.path.startswith("ort-") else self.path

    def line(self) -> str:
        """One line for the user: the path, why, and how long its measurement took."""
        took = f" in {self.seconds:.1f} s" if self.seconds is not None else ""
        if self.cached and self.measured_at:
            where = f" (measured {self.measured_at}{took}, cached)"
        else:
            where = f" (measured{took}, once for this model, CPU and thread count)" if self.key else ""
        return f"precision auto: {self.path} — {self.reason}{where}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, "key": self.key, "measured_at": self.measured_at,
                "seconds": self.seconds, "artifacts": self.artifacts,
                "measurements": [dataclasses.asdict(m) for m in self.measurements]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PathChoice:
        seconds = data.get("seconds")
        return cls(path=str(data["path"]), reason=str(data["reason"]), key=str(data.get("key", "")),
                   measured_at=str(data.get("measured_at", "")),
                   seconds=None if seconds is None else float(seconds), artifacts=str(data.get("artifacts") or ""),
                   measurements=[PathMeasurement(**m) for m in data.get("measurements", [])])


def choose_path(measurements: Sequence[PathMeasurement], min_cosine: float = MIN_COSINE) -> PathChoice:
    """The fastest eligible path (:meth:`PathMeasurement.eligible`); ``fp32`` when none is faster or nothing was
    measured. The reason names the speed-up over fp32, the worst cosine and the paths turned down for accuracy."""
    measurements = list(measurements)
    eligible = [m for m in measurements if m.eligible(min_cosine)]
    ref = next((m for m in measurements if m.path == "fp32" and m.eligible(min_cosine)), None)
    if not eligible or ref is None:
        return PathChoice("fp32", "the reference (no other path could be measured)", measurements)
    best = max(eligible, key=lambda m: m.clips_per_s)
    refused = [f"{m.path} (cosine {m.cos_min:.4f})" for m in measurements
               if m.error is None and m.cos_min is not None and m.path != "fp32" and not m.eligible(min_cosine)]
    failed = [m.path for m in measurements if m.error is not None]
    notes = []
    if refused:
        notes.append(f"below cosine {min_cosine}: {', '.join(refused)}")
    if failed:
        notes.append(f"failed: {', '.join(failed)}")
    tail = f"; {'; '.join(notes)}" if notes else ""
    if best.path == "fp32":
        return PathChoice("fp32", f"no other path was faster at cosine >= {min_cosine}{tail}", measurements)
    speedup = best.clips_per_s / ref.clips_per_s
    return PathChoice(best.path, f"{speedup:.2f}× fp32 at cosine >= {best.cos_min:.4f} on this CPU{tail}",
                      measurements)


def probe_clips(duration_s: float, sample_rate: int, n: int = 4, seed: int = 0) -> list[np.ndarray]:
    """``n`` synthetic clips ``[round(duration_s · sample_rate)]`` float32 at ``sample_rate`` Hz: speech-like
    syllables, notes, chirps and noise bursts mixed with a little background noise, so that the probe sees
    the range of levels real audio has."""
    rng = np.random.default_rng(seed)
    kinds = ("harmonic_note", "chirp", "noise_burst", "fm_tone", "clicks", "am_tone")
    clips = []
    for i in range(n):
        wave = speech_like(duration_s, sample_rate, rng) if i % 2 == 0 else make_sound(
            kinds[i // 2 % len(kinds)], duration_s, sample_rate, rng)
        wave = wave + 0.5 * make_sound(kinds[(i + 1) % len(kinds)], duration_s, sample_rate, rng)
        wave = wave + rng.standard_normal(len(wave)).astype(np.float32) * 10 ** rng.uniform(-3.5, -2)
        clips.append((wave / max(1.0, float(np.abs(wave).max()) / 0.9)).astype(np.float32))
    return clips


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two ``[N, D]`` arrays (float64)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


@dataclass(frozen=True)
class ProbeSettings:
    """How :func:`measure_paths` spends its time (the default: ``precision="auto"``'s first load).

    Every path is built and run once on all the probe clips (that call gives its cosines, and is its first timed
    round unless ``warmup_clips`` is ``None``); later rounds time only the paths still in the race. Timings may be
    cut short by ``drop_below`` and ``budget_s``; no path below ``min_cosine`` is ever made eligible by them.
    """

    #: timed rounds per path at most (the best is kept)
    repeats: int = 2
    #: clips of the untimed warm-up call before the timed call that gives the cosines (0: none); ``None``: the call
    #: that gives the cosines is the warm-up, untimed, and ``repeats`` rounds follow (the measurement before the
    #: time bound, :data:`THOROUGH`)
    warmup_clips: int | None = 1
    #: after a round, a path whose clips/s is under this fraction of the fastest one's is not timed again (0: never)
    drop_below: float = 0.6
    #: no new round starts once the measurement (building included) has taken this many seconds
    budget_s: float = 20.0
    #: a path whose cosine to fp32 is under this after its first call is not timed again (it cannot be chosen)
    min_cosine: float = MIN_COSINE
    #: lengths, in probe-clip lengths, of the clips of the shape check (:func:`shape_check_clips`; empty: none): the
    #: fastest eligible path must also give finite outputs, without a bfloat16 fallback, on the batch shapes of real
    #: work (full chunks at batch 8 and 3, partial chunks of four widths at batch 1) and then on the probe clips
    #: again, else the next fastest is checked. oneDNN's bfloat16 kernels on an AMX CPU (PyTorch 2.13, 2 threads)
    #: returned NaN for open-m2d-tiny's full chunks once other widths had run, not on the probe's one shape alone
    shape_check: tuple[float, ...] = (0.3, 1.55, 2.8, 8.45)


#: the measurement before it was bounded in time: an untimed warm-up on every clip, then ``repeats`` rounds of every
#: path that ran, whatever its speed or cosine (``benchmarks/bench_cpu_paths.py --auto-cost`` compares the two)
THOROUGH = ProbeSettings(warmup_clips=None, drop_below=0.0, budget_s=float("inf"), min_cosine=float("-inf"))


def measure_paths(make: Callable[[str], Embedder], paths: Sequence[str], clips: Sequence[np.ndarray],
                  sample_rate: int, *, settings: ProbeSettings = ProbeSettings(), batch_size: int = 8,
                  clock: Callable[[], float] = time.perf_counter) -> list[PathMeasurement]:
    """Every path of ``paths`` (``fp32`` among them, first: the reference) built by ``make(path)`` and run on
    ``clips`` ``[samples]`` at ``sample_rate`` Hz: cosine of each path's clip embeddings to fp32's, and clips/s
    (best of the timed rounds, interleaved across paths so that a disturbance on a shared machine hits every path
    alike; how many rounds each path gets: :class:`ProbeSettings`). A path whose building or embedding raises, or
    whose embeddings are not finite, gets an ``error`` instead."""
    clips = list(clips)
    begin = clock() if np.isfinite(settings.budget_s) else 0.0
    built: dict[str, Embedder] = {}
    outputs: dict[str, np.ndarray] = {}
    best: dict[str, float] = {}
    results = {p: PathMeasurement(p) for p in paths}

    def timed(path: str) -> np.ndarray:
        start = clock()
        out = built[path].embed(clips, sample_rate, batch_size=batch_size)
        best[path] = min(best.get(path, float("inf")), clock() - start)
        results[path].rounds += 1
        return out

    for path in paths:
        try:
            built[path] = make(path)
            if settings.warmup_clips is None:
                out = built[path].embed(clips, sample_rate, batch_size=batch_size)
            else:
                if settings.warmup_clips > 0:
                    built[path].embed(clips[: settings.warmup_clips], sample_rate, batch_size=batch_size)
                out = timed(path)
            out = np.asarray(out)
            if not np.isfinite(out).all():
                raise FloatingPointError("non-finite embeddings")
            if _bf16_fallbacks(built[path]):
                raise FloatingPointError("bf16 kernels gave non-finite values on the probe (those batches were "
                                         "recomputed in float32, so its cosine would not be bf16's)")
            outputs[path] = out
        except Exception as exc:  # noqa: BLE001 - a path that cannot run is reported, never chosen
            results[path].error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            results[path].rounds = 0
            built.pop(path, None)
            best.pop(path, None)
    ref = outputs.get("fp32")
    racing = []
    for path in built:
        if ref is not None:
            cos = _cosines(outputs[path], ref)
            results[path].cos_min, results[path].cos_mean = float(cos.min()), float(cos.mean())
        if ref is None or path == "fp32" or results[path].cos_min >= settings.min_cosine:
            racing.append(path)
    while racing:
        if settings.drop_below > 0 and all(p in best for p in racing):  # clearly slower after a round: out
            fastest = min(best[p] for p in racing)
            racing = [p for p in racing if fastest / max(best[p], 1e-12) >= settings.drop_below]
        done = min(results[p].rounds for p in racing)
        if done >= settings.repeats or (done >= 1 and len(racing) < 2):
            break
        if done >= 1 and np.isfinite(settings.budget_s) and clock() - begin > settings.budget_s:
            break
        for path in racing:
            timed(path)
    for path in best:
        results[path].clips_per_s = len(clips) / max(best[path], 1e-9)
    if settings.shape_check and "fp32" in best:
        bound = settings.min_cosine if np.isfinite(settings.min_cosine) else MIN_COSINE
        candidates = sorted((results[p] for p in best if p != "fp32" and results[p].eligible(bound)
                             and results[p].clips_per_s > results["fp32"].clips_per_s),
                            key=lambda m: -m.clips_per_s)
        # the other shapes, then the probe's own again: oneDNN's bf16 NaN came on a shape seen before, after others
        calls = [shape_check_clips(clips, settings.shape_check), clips]
        for m in candidates:  # the fastest first, until one passes: only a path that passed can be chosen
            problem = _nonfinite_on(built[m.path], calls, sample_rate, batch_size)
            if problem is None:
                break
            m.error = problem
    return [results[p] for p in paths]


def shape_check_clips(clips: Sequence[np.ndarray], lengths: Sequence[float]) -> list[np.ndarray]:
    """Clips ``[round(f · len(clips[0]))]`` for each ``f`` of ``lengths``, cut from the probe clips laid end to end
    (so with their levels): with one-chunk probe clips, their chunks come in every shape real work batches (full
    chunks at several batch sizes, partial chunks of several widths)."""
    tape = np.concatenate([np.asarray(c, np.float32) for c in clips])
    n = len(clips[0])
    return [np.resize(tape, max(1, round(f * n))) for f in lengths]


def _bf16_fallbacks(embedder: Embedder) -> int:
    """Batches a bf16 embedder recomputed in float32 so far (0 for every other path)."""
    return int(getattr(getattr(embedder, "encoder", None), "bf16_fallbacks", 0) or 0)


def _nonfinite_on(embedder: Embedder, calls: Sequence[Sequence[np.ndarray]], sample_rate: int,
                  batch_size: int) -> str | None:
    """``None`` when ``embedder`` gives finite embeddings of the clips of every call of ``calls`` (in order) without
    a bfloat16 fallback, else the one-line error (as :class:`PathMeasurement` keeps it)."""
    before = _bf16_fallbacks(embedder)
    for clips in calls:
        try:
            out = np.asarray(embedder.embed(list(clips), sample_rate, batch_size=batch_size))
        except Exception as exc:  # noqa: BLE001 - a shape it cannot run: not a path for real work
            return f"{type(exc).__name__} on the shape check: {' '.join(str(exc).split())[:160]}"
        if _bf16_fallbacks(embedder) > before:
            return ("FloatingPointError: bf16 kernels gave non-finite values on the shape check (batch shapes of real "
                    "work; those batches were recomputed in float32)")
        if not np.isfinite(out).all():
            return "FloatingPointError: non-finite embeddings on the shape check (batch shapes of real work)"
    return None


# ------------------------------------------------------------------------------------------- paths themselves
def _ort_available() -> bool:
    return importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None


def available_paths(bundle: EncoderBundle, device: torch.device | str = "cpu", *,
                    include_static: bool = False) -> tuple[str, ...]:
    """The paths worth measuring for ``bundle`` on ``device``: only ``fp32`` off the CPU; ``bf16`` with native
    bfloat16; the ONNX Runtime paths with the ``onnx`` extra installed and an encoder-only model.

    ``ort-int8-static`` only with ``include_static`` (benchmarks): its activation ranges come from calibration
    audio, so synthetic probe clips judge it too kindly — on a ViT-B it kept cosine 0.9998 on synthetic clips but
    0.9987 on real recordings (calibrated on real ones), and it was slower than dynamic int8 anyway."""
    if torch.device(device).type != "cpu":
        return ("fp32",)
    paths = ["fp32"]
    if cpu_has_native_bf16():
        paths.append("bf16")
    if torch.backends.quantized.engine in ("x86", "fbgemm", "onednn", "qnnpack"):
        paths.append("int8")
    if _ort_available() and getattr(bundle, "audio_proj", None) is None:
        paths.extend(p for p in ORT_PATHS if include_static or p != "ort-int8-static")
    return tuple(paths)


def calibration_chunks(bundle: EncoderBundle, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Normalised log-mel chunks ``[1, n_mels, Tc]`` float32 of ``waves`` (at the model rate), cut by the encoder's
    own chunking: the inputs of the exported graph, for static int8 calibration."""
    frontend = LogMelSpectrogram(bundle.frontend)
    chunks = []
    with torch.inference_mode():
        for wave in waves:
            lms = frontend(torch.from_numpy(np.ascontiguousarray(wave)))[0]
            lms = (lms - bundle.norm_stats.mean) / bundle.norm_stats.std
            chunks.extend(c[None].numpy().astype(np.float32) for c in bundle.encoder.split_chunks(lms))
    return chunks


def _calibration_waves(bundle: EncoderBundle) -> list[np.ndarray]:
    """Synthetic calibration audio (seed 1: not the probe clips), two chunk lengths per clip."""
    return probe_clips(2 * _chunk_seconds(bundle), int(bundle.frontend.sample_rate), n=6, seed=1)


def _chunk_seconds(bundle: EncoderBundle) -> float:
    """Length (s) of one encoder chunk (M2D: the training length), 2 s for encoders without chunks (BYOL-A)."""
    frames = getattr(bundle.encoder, "chunk_frames", None)
    if not frames:
        return 2.0
    return float(frames * bundle.frontend.hop_length / bundle.frontend.sample_rate)


def _ort_file(bundle: EncoderBundle, path: str, folder: Path,
              calibration: Callable[[], list[np.ndarray]] | None) -> Path:
    """The ONNX file of ``path`` in ``folder``, written (and the fp32 export it comes from) when absent."""
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "fp32.onnx"
    if not fp32.is_file():
        export_onnx(bundle, fp32)
    if path == "ort-fp32":
        return fp32
    out = folder / f"{path.removeprefix('ort-')}.onnx"
    if not out.is_file():
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        if path == "ort-int8":  # 7-bit weights only where u8×s8 sums could saturate (measured on ViT-B with VNNI:
            quantize_onnx_int8(fp32, tmp, reduce_range=not cpu_has_int8_dot())  # cosine 0.9994 with, 0.9998 without)
        else:
            chunks = (calibration or (lambda: calibration_chunks(bundle, _calibration_waves(bundle))))()
            quantize_onnx_int8_static(fp32, tmp, chunks, reduce_range=not cpu_has_int8_dot())
        os.replace(tmp, out)
    return out


def prepare_path(bundle: EncoderBundle, path: str, onnx_dir: str | os.PathLike | None = None, *,
                 calibration: Callable[[], list[np.ndarray]] | None = None, copy_encoder: bool = False,
                 threads: int | None = None) -> tuple[EncoderBundle, str]:
    """``bundle`` ready for ``path``, with the precision to build its :class:`AudioEncoder` with.

    Torch paths return ``bundle`` (``bf16`` switches the encoder's class in place: ``copy_encoder`` gives it a
    copy, for measuring beside fp32). ONNX paths export / quantise into ``onnx_dir`` (files kept there and reused)
    and return a copy of ``bundle`` whose encoder is an :class:`OnnxFrameEncoder` and the file's precision, as
    ``kikimimi.load("x.onnx")`` does (``threads``: ONNX Runtime
    intra-op threads, default torch's). ``calibration``: chunks for ``ort-int8-static`` (default: synthetic).
    """
    if path not in PATHS:
        raise ValueError(f"unknown CPU path {path!r}; choose one of {', '.join(PATHS)}")
    if path not in ORT_PATHS:
        if path == "bf16" and copy_encoder:
            bundle = dataclasses.replace(bundle, encoder=copy.deepcopy(bundle.encoder))
        return bundle, path
    if onnx_dir is None:
        raise ValueError(f"path {path!r} needs a folder for its ONNX files")
    onnx_file = _ort_file(bundle, path, Path(onnx_dir), calibration)
    config = dict(bundle.config)
    config["precision"] = "fp32" if path == "ort-fp32" else "int8"
    encoder = OnnxFrameEncoder(onnx_session(onnx_file, threads), config)
    return dataclasses.replace(bundle, encoder=encoder, config=config), config["precision"]


# ----------------------------------------------------------------------------------------------------- cache
def cpu_signature() -> dict[str, Any]:
    """What decides which path is fastest besides the model: CPU model and flags, PyTorch's CPU capability and
    quantised engine, thread count, torch and ONNX Runtime versions, and the instruction-set caps set in the
    environment (:func:`~kikimimi.inference.precision.isa_caps`)."""
    try:
        from importlib.metadata import version

        ort_version = version("onnxruntime") if _ort_available() else None
    except Exception:  # noqa: BLE001 - a broken install: no ONNX paths anyway
        ort_version = None
    signature = {"cpu": cpu_name(), "machine": platform.machine(), "flags": cpu_flags(),
                 "capability": str(torch.backends.cpu.get_cpu_capability()),
                 "quantized_engine": str(torch.backends.quantized.engine), "threads": int(torch.get_num_threads()),
                 "torch": torch.__version__, "onnxruntime": ort_version}
    caps = isa_caps()
    if caps:  # only when set, so that the keys of uncapped runs stay as they were
        signature["isa_caps"] = caps
    return signature


def model_fingerprint(source: str | os.PathLike | None, config: dict[str, Any]) -> str | None:
    """Content fingerprint of the weight file / folder ``source`` (SHA-256, cached by path, size, mtime and ctime
    with the one :mod:`kikimimi.inference.jobs` keeps) with the model config; ``None`` without a readable file."""
    if source is None or not Path(source).exists():
        return None
    try:
        weights = file_fingerprint(source, cache_file=cache_root() / "cache" / _FINGERPRINT_CACHE)["sha256"]
    except OSError:
        return None
    config = {k: v for k, v in config.items() if k not in ("source", "precision")}
    return hashlib.sha256(f"{weights}\n{json.dumps(config, sort_keys=True, default=str)}".encode()).hexdigest()


def choice_key(signature: dict[str, Any], model: str, min_cosine: float = MIN_COSINE) -> str:
    """The cache key of a decision: SHA-256 of the CPU signature, the model fingerprint and the cosine bound."""
    text = json.dumps({"format": _FORMAT, "cpu": signature, "model": model, "min_cosine": min_cosine},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def artifact_key(signature: dict[str, Any], model: str) -> str:
    """The key of the folder of a model's ONNX files on this CPU: :func:`choice_key`'s without the thread count
    and the cosine bound, which do not change the files (an export and its quantisation serve every thread count;
    a ViT-B's take tens of seconds)."""
    cpu = {k: v for k, v in signature.items() if k != "threads"}
    text = json.dumps({"format": _FORMAT, "cpu": cpu, "model": model, "files": "onnx"}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class PathCache:
    """Decisions by :func:`choice_key` in ``<folder>/cpu-paths.json`` (default folder: ``<kikimimi home>/cache``),
    and a folder of ONNX files per model and CPU (``<folder>/cpu-paths/<artifact key[:32]>``, :func:`artifact_key`:
    shared by every thread count). Writes are atomic; a damaged file reads as empty."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder) if folder is not None else cache_root() / "cache"
        self.file = self.folder / CACHE_NAME

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> PathChoice | None:
        entry = self._read().get(key)
        if not isinstance(entry, dict):
            return None
        try:
            choice = PathChoice.from_dict(entry)
        except (KeyError, TypeError, ValueError):
            return None
        choice.cached = True
        return choice

    def put(self, key: str, choice: PathChoice) -> None:
        data = self._read()  # re-read: another process may have added its own decisions
        data[key] = choice.to_dict()
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.file, data)

    def exclude(self, key: str, path: str, why: str, min_cosine: float = MIN_COSINE) -> PathChoice | None:
        """Mark ``path`` of the decision ``key`` as failed (``why``) and choose again from the same measurements
        (nothing is measured again), so that the next load takes the new choice; returns it (``None`` when ``key``
        is not in the file)."""
        choice = self.get(key)
        if choice is None:
            return None
        measured = [m for m in choice.measurements if m.path == path]
        if not measured:
            choice.measurements.append(PathMeasurement(path))
            measured = choice.measurements[-1:]
        for m in measured:
            m.error, m.clips_per_s = why, None
        again = choose_path(choice.measurements, min_cosine)
        again.key, again.artifacts, again.seconds = choice.key or key, choice.artifacts, choice.seconds
        again.measured_at = choice.measured_at
        self.put(key, again)
        return again

    def artifacts(self, key: str) -> Path:
        """The ONNX files' folder of the decision ``key`` (its :attr:`PathChoice.artifacts` key when the decision is
        in the file, else ``key``'s own)."""
        entry = self._read().get(key)
        name = entry.get("artifacts") if isinstance(entry, dict) else None
        return self.artifact_folder(str(name) if name else key)

    def artifact_folder(self, name: str) -> Path:
        """``<folder>/cpu-paths/<name[:32]>``."""
        return self.folder / "cpu-paths" / name[:32]


def choose_cpu_path(bundle: EncoderBundle, source: str | os.PathLike | None,
                    build: Callable[[EncoderBundle, str], Embedder], *, device: torch.device | str = "cpu",
                    cache: PathCache | None = None, min_cosine: float = MIN_COSINE,
                    measure: Callable[..., list[PathMeasurement]] | None = None) -> PathChoice:
    """The path for ``bundle`` (loaded from ``source``) on ``device``: the cached decision of this model on this
    CPU, else measured now (``measure``, default :func:`measure_paths`, on :func:`probe_clips`; ``build(bundle,
    precision)`` makes each path's embedder) and cached. Off the CPU, or for a model without a file, ``fp32``
    without measuring."""
    device = torch.device(device)
    if device.type != "cpu":
        return PathChoice("fp32", f"auto measures CPU paths only; {device.type} runs fp32")
    fingerprint = model_fingerprint(source, dict(bundle.config))
    if fingerprint is None:
        return PathChoice("fp32", "a model not loaded from a file is not measured")
    cache = cache or PathCache()
    signature = cpu_signature()
    key, files = choice_key(signature, fingerprint, min_cosine), artifact_key(signature, fingerprint)
    paths = available_paths(bundle, device)
    cached = cache.get(key)
    if cached is not None and cached.path in paths:
        return cached
    with _measuring(cache):  # one process measures; the others (torchrun ranks…) wait and read its decision
        cached = cache.get(key)
        if cached is not None and cached.path in paths:
            return cached
        start = time.perf_counter()
        choice = _measure_and_choose(bundle, build, paths, cache.artifact_folder(files), min_cosine,
                                     measure or measure_paths)
        choice.key, choice.artifacts, choice.seconds = key, files, round(time.perf_counter() - start, 1)
        choice.measured_at = time.strftime("%Y-%m-%d %H:%M", time.localtime())
        try:
            cache.put(key, choice)
        except OSError as exc:  # a read-only home: the choice still holds for this run
            _log.warning("could not cache the precision choice in %s (%s)", cache.file, exc)
    return choice


def record_nonfinite(key: str, path: str, cache: PathCache | None = None) -> PathChoice | None:
    """``path``, chosen by ``precision="auto"`` under the cache key ``key``, gave non-finite values on a batch at run
    time (a shape the probe did not see): the cached decision excludes it from now on, so the next load of this model
    on this CPU takes the next fastest path (:meth:`PathCache.exclude`). Says so in one warning; returns the new
    choice (``None`` without a cached decision or a writable cache)."""
    cache = cache or PathCache()
    try:
        again = cache.exclude(key, path, f"FloatingPointError: non-finite values on a batch at run time "
                                         f"({time.strftime('%Y-%m-%d %H:%M', time.localtime())})")
    except OSError as exc:
        _log.warning("precision auto: %s gave non-finite values; could not record it in %s (%s)", path, cache.file,
                     exc)
        return None
    if again is not None:
        _log.warning("precision auto: %s gave non-finite values on a batch here; the next load of this model on this "
                     "CPU runs %s instead (recorded in %s)", path, again.path, cache.file)
    return again


@contextlib.contextmanager
def _measuring(cache: PathCache, timeout_s: float = 1800.0):
    """Hold ``<cache folder>/cpu-paths.lock`` while measuring (waits up to ``timeout_s``; without a writable
    folder, or after the wait, measures without it)."""
    try:
        cache.folder.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(cache.folder / "cpu-paths.lock"), timeout=timeout_s)
        lock.acquire()
    except (OSError, filelock.Timeout):
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _measure_and_choose(bundle: EncoderBundle, build: Callable[[EncoderBundle, str], Embedder],
                        paths: Sequence[str], artifacts: Path, min_cosine: float,
                        measure: Callable[..., list[PathMeasurement]]) -> PathChoice:
    """Every path of ``paths`` measured on the probe clips (ONNX files written into ``artifacts``) and chosen."""
    clips = probe_clips(_chunk_seconds(bundle), int(bundle.frontend.sample_rate), n=4, seed=0)
    _log.info("precision auto: measuring %s on this CPU (once per model and CPU)", ", ".join(paths))

    def make(path: str) -> Embedder:
        prepared, precision = prepare_path(bundle, path, artifacts, copy_encoder=True)
        return build(prepared, precision)

    return choose_path(measure(make, paths, clips, int(bundle.frontend.sample_rate)), min_cosine)
