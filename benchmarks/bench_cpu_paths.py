"""Every CPU path of an audio encoder, against this machine's matmul peaks, in one process and one run.

Paths (:mod:`kikimimi.inference.cpu_paths`): float32 eager (the reference), bf16 autocast (where the CPU has
native bfloat16), torch dynamic int8, ONNX Runtime float32, ONNX Runtime int8 dynamic, ONNX Runtime int8 static
(QDQ, calibrated on real audio from ``--real`` when it has any, else on synthetic audio, which the output says),
and with ``--attention-int8`` the static variant with the attention matrix products in int8 too; with ``--ort-spin``
``ort-int8-spin`` / ``ort-int8-nospin``: the dynamic int8 file with ONNX Runtime's idle threads spinning (its
default) or not (kikimimi's sessions spin only while the machine has idle cores for them: ``spin_by_load``).
``--ort-profile``: each ONNX Runtime path's time by operator type (what int8 does not speed up).

For each model (``--models``: ``vitb`` = M2D ViT-Base 80x608 p16x16 and ``tiny`` = ViT-Tiny 80x208 p16x16, 12
blocks, both random weights in the official layout, as tests/official_layouts.py builds them; ``open-m2d-tiny`` and
``open-clap-tiny``: the shipped models with their weights, the CLAP model's audio encoder without its projector) and
each thread count (``--threads``), it measures in the same process:

- the float32, bfloat16 and int8 matrix-multiply peaks (``[2048, 2048]²``; int8: the better of torch ``_int_mm``
  and ONNX Runtime ``MatMulInteger`` u8×s8);
- per path: clips/s and audio-seconds per second on ``--clips`` 10-s clips at batch 8 (best of ``--repeats``
  interleaved rounds after a warm-up, so a disturbance on a shared machine hits every path alike; front end
  included), the ratio to float32 eager, the encoder's GOP/s (FLOPs counted from the ViT's shapes) and its share
  of the matching peak (fp32 paths: fp32 peak; bf16: bf16 peak; int8 paths: int8 peak), its memory (load MB: the
  resident memory its preparation added, fp32 = the model load; run MB: the peak during its first call above the
  memory before it; the process peak is printed last) and the cosine (min / mean) of its clip embeddings to
  float32's on real clips (``--real``; synthetic clips with a note otherwise).

Output: a Markdown table per model and thread count, the CPU model and flags, and the whole run as JSON
(``--json FILE``, else printed last). ``--quick``: the tiny model and ViT-B at 2 threads, 2 clips, one round.

``--auto-cost``: how long ``precision="auto"``'s first load spends measuring (:func:`choose_cpu_path` from an
empty cache, ONNX export and quantisation included), the measurement before its time bound
(:data:`~kikimimi.inference.cpu_paths.THOROUGH`) and the bounded one, in the same process, per model and thread
count, with the path each chose; the bounded one keeps one cache across thread counts, so from the second thread
count on it reuses the ONNX files. ``--no-paths`` leaves the path table out.

``--cap-avx2``: the whole run again in a child process with PyTorch capped to AVX2 (``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``, ``FBGEMM_ENABLE_INSTRUCTIONS``: no AVX-512, VNNI, bfloat16
or AMX in torch's fp32, bf16 and int8 kernels), as an AVX2-only CPU would run it; its rows say "capped to AVX2".
ONNX Runtime cannot be capped (its MLAS kernels are picked by CPUID; it reads no such setting), so its rows and
its int8 peak still use this CPU's AVX-512 / VNNI / AMX and say "NOT capped".

Usage: nice -n 10 python benchmarks/bench_cpu_paths.py [--quick] [--models vitb tiny open-m2d-tiny open-clap-tiny]
           [--threads 1 2] [--clips 2] [--repeats 2] [--real DIR] [--real-max 24] [--attention-int8] [--ort-spin]
           [--ort-profile] [--json FILE] [--auto-cost] [--no-paths] [--cap-avx2]

The README's CPU table is rendered from the JSON of runs committed under ``benchmarks/results/``
(``benchmarks/render_perf_table.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import cpu_model, emit_json, matmul_flops
from bench_embed import best_times, cosines, vit_chunk_flops

HERE = Path(__file__).resolve().parent
SR = 16000
CLIP_S = 10.0
#: model name → (official-layout file name, embed_dim, depth, input frames); 80 mel bins, 16x16 patches.
#: ``micro`` (2 blocks of 64) is for the script's own test.
MODELS = {"vitb": ("m2d_vit_base-80x608p16x16-bench_enconly", 768, 12, 608),
          "tiny": ("m2d_vit_tiny-80x208p16x16-bench_enconly", 192, 12, 208),
          "micro": ("m2d_vit_base-80x208p16x16-micro_enconly", 64, 2, 208)}
#: shipped (packaged) models, measured with their real weights; a CLAP model's audio encoder alone (its projector
#: is left out, as the ONNX paths leave it out)
PACKAGED = ("open-m2d-tiny", "open-clap-tiny")
#: what ``--cap-avx2`` sets (:data:`kikimimi.inference.precision.ISA_CAP_ENV`): torch's own kernels, oneDNN, MKL, FBGEMM
AVX2_CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
CAPPED_NOTE = ("capped to AVX2: torch (ATen, oneDNN, MKL, FBGEMM); ONNX Runtime NOT capped (MLAS picks its kernels "
               "by CPUID and reads no setting for it)")
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
               "amx_tile", "amx_bf16", "amx_int8")


# ------------------------------------------------------------------------------------------------ peaks
def _rate(fn, ops: float, repeats: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return ops * repeats / (time.perf_counter() - start)


def peaks(threads: int, n: int = 2048) -> dict[str, float]:
    """Matmul rates (op/s) of ``[n, n] @ [n, n]`` in float32, bfloat16 (NaN where it is emulated) and int8 at
    ``threads`` threads, now."""
    from kikimimi.inference.precision import cpu_has_native_bf16

    torch.set_num_threads(threads)
    ops = 2.0 * n**3
    out = {"fp32": matmul_flops(n)}
    a, b = torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()
    # emulated bfloat16 (no native kernels, or capped below them) is no peak of anything measured, and takes minutes
    out["bf16"] = _rate(lambda: a @ b, ops) if cpu_has_native_bf16() else float("nan")
    ai = torch.randint(-127, 127, (n, n), dtype=torch.int8)
    bi = torch.randint(-127, 127, (n, n), dtype=torch.int8)
    try:
        out["int8 torch _int_mm"] = _rate(lambda: torch._int_mm(ai, bi), ops)
    except (RuntimeError, AttributeError):
        pass
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        weight = numpy_helper.from_array(np.random.default_rng(0).integers(-127, 127, (n, n)).astype(np.int8), "B")
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "peak",
                                  [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, n])],
                                  [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, n])], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(1).integers(0, 255, (n, n)).astype(np.uint8)
        out["int8 ORT MatMulInteger"] = _rate(lambda: session.run(None, {"A": x}), ops)
    except ImportError:
        pass
    int8 = [v for k, v in out.items() if k.startswith("int8")]
    out["int8"] = max(int8) if int8 else float("nan")
    return out


def ort_profile(onnx_file: Path, chunks: list[np.ndarray], threads: int, runs: int = 3) -> dict[str, float]:
    """Share of ONNX Runtime's node time per operator type (``DynamicQuantizeMatMul``, ``MatMul``, ``Softmax``…) over
    ``runs`` runs of ``chunks`` (``[1, n_mels, Tc]`` each, batched by width, as ``embed`` batches them), after one
    untimed run; the session is set up as :func:`~kikimimi.inference.onnx_runtime.onnx_session` sets it up, with
    profiling on. Largest first."""
    import collections

    import onnxruntime as ort

    from kikimimi.inference.onnx_runtime import INPUT_NAME, spin_by_load

    options = ort.SessionOptions()  # as onnx_session makes them, with profiling
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_by_load(threads) else "0")
    groups: dict[int, list[np.ndarray]] = collections.defaultdict(list)
    for chunk in chunks:
        groups[chunk.shape[-1]].append(chunk)
    batches = [np.concatenate(g) for g in groups.values()]
    warm = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    for batch in batches:
        warm.run(None, {INPUT_NAME: batch})
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            for batch in batches:
                session.run(None, {INPUT_NAME: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values()) or 1
    return {op: t / total for op, t in per_op.most_common()}


# ------------------------------------------------------------------------------------------------ memory
class RssPeak:
    """Peak resident memory (bytes) of this process while the block runs, sampled every 5 ms."""

    def __init__(self) -> None:
        self.peak = self.start = self._rss()
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        try:
            return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssPeak:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


# ------------------------------------------------------------------------------------------------ models
def write_model(name: str, tmp: Path) -> Path | str:
    """The model file of ``name``: a packaged model's name as it is, else an official-layout file written in ``tmp``
    (random weights, seed 0)."""
    if name in PACKAGED:
        return name
    sys.path.insert(0, str(HERE.parent / "tests"))
    import official_layouts as ol

    folder_name, dim, depth, frames = MODELS[name]
    folder = tmp / folder_name
    folder.mkdir(exist_ok=True)
    if not (folder / "w.pth").is_file():
        torch.manual_seed(0)
        torch.save(ol.m2d_encoder_state(embed_dim=dim, depth=depth, input_size=(80, frames)), folder / "w.pth")
    return folder / "w.pth"


def load_fp32(model_path: Path | str):
    """The model at float32 as an AudioEncoder; a CLAP model's audio encoder without its projectors (what the ONNX
    paths export)."""
    from kikimimi.inference.encoder import AudioEncoder, load

    model = load(model_path, device="cpu", precision="fp32")
    if getattr(model.bundle, "audio_proj", None) is None:
        return model
    bundle = dataclasses.replace(model.bundle, audio_proj=None, text_proj=None)
    return AudioEncoder(bundle, device="cpu", precision="fp32")


def encoder_flops(model, waves: list[np.ndarray]) -> float:
    """Forward FLOPs of the encoder (patch embedding and blocks) over the chunks of ``waves``."""
    vit = model.bundle.config["vit"]
    pf, pt = vit["patch_size"]
    total = 0.0
    for wave in waves:
        for chunk in model.encoder.split_chunks(model._normalised_log_mel(wave)):
            tokens = (chunk.shape[-2] // pf) * (chunk.shape[-1] // pt)
            total += vit_chunk_flops(tokens, dim=vit["embed_dim"], depth=vit["depth"], patch_pixels=pf * pt)
    return total


def real_waves(root: str | None, limit: int) -> list[np.ndarray]:
    """Up to ``2 · limit`` real recordings of at least 1 s under ``root`` (a fixed shuffle of the sorted list),
    decoded at 16 kHz and cut to 10 s: half for calibration, half for the cosine."""
    if not root or not Path(root).is_dir():
        return []
    from kikimimi.audio.decode import AudioDecodeError, audio_info, load_audio
    from kikimimi.fileio import collect_audio_files

    files = sorted(collect_audio_files([root]))
    waves = []
    for i in np.random.default_rng(0).permutation(len(files)):
        try:
            if audio_info(files[i]).duration_s < 1.0:
                continue
            waves.append(load_audio(files[i], SR)[0][: int(CLIP_S * SR)])
        except AudioDecodeError:
            continue
        if len(waves) >= 2 * limit:
            break
    return waves


def build_paths(model_path: Path, onnx_dir: Path, names: list[str], calibration, attention_int8: bool,
                ort_spin: bool = False) -> dict:
    """Every path as an AudioEncoder built now (ONNX sessions take the current torch thread count)."""
    import dataclasses

    from kikimimi.inference.cpu_paths import prepare_path
    from kikimimi.inference.encoder import AudioEncoder
    from kikimimi.inference.onnx_runtime import OnnxFrameEncoder, onnx_session, quantize_onnx_int8_static
    from kikimimi.inference.precision import cpu_has_int8_dot

    with RssPeak() as rss:
        base = load_fp32(model_path)
    out, load_mb = {}, {"fp32": (rss.peak - rss.start) / 2**20}
    for name in names:
        with RssPeak() as rss, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bundle, precision = prepare_path(base.bundle, name, onnx_dir, calibration=calibration, copy_encoder=True)
            out[name] = AudioEncoder(bundle, device="cpu", precision=precision)
        load_mb.setdefault(name, (rss.peak - rss.start) / 2**20)
    if attention_int8:
        attn = onnx_dir / "int8-static-attn.onnx"
        if not attn.is_file():
            quantize_onnx_int8_static(onnx_dir / "fp32.onnx", attn, calibration(), attention_int8=True,
                                      reduce_range=not cpu_has_int8_dot())
        config = dict(base.bundle.config, precision="int8")
        bundle = dataclasses.replace(base.bundle, encoder=OnnxFrameEncoder(onnx_session(attn), config), config=config)
        out["ort-int8-static-attn"] = AudioEncoder(bundle, device="cpu", precision="int8")
    if ort_spin and "ort-int8" in out:  # the same file, its idle threads spinning (ONNX Runtime's default) or not
        config = dict(base.bundle.config, precision="int8")
        for name, spin in (("ort-int8-spin", True), ("ort-int8-nospin", False)):
            session = onnx_session(onnx_dir / "int8.onnx", spin=spin)
            bundle = dataclasses.replace(base.bundle, encoder=OnnxFrameEncoder(session, config), config=config)
            out[name] = AudioEncoder(bundle, device="cpu", precision="int8")
    return out, load_mb


def bench_model(name: str, args, tmp: Path, real: list[np.ndarray]) -> dict:
    from kikimimi.inference.cpu_paths import available_paths, calibration_chunks, prepare_path, probe_clips
    from kikimimi.inference.precision import isa_caps

    model_path = write_model(name, tmp)
    onnx_dir = tmp / f"{name}-onnx"
    ref = load_fp32(model_path)
    names = list(available_paths(ref.bundle, "cpu", include_static=True))
    half = len(real) // 2
    if real:
        calib_waves, cos_waves, note = real[half:], real[:half], f"real: {len(real[:half])} clips from {args.real}"
    else:
        calib_waves = probe_clips(2 * ref.encoder.chunk_frames / 100, SR, n=6, seed=1)
        cos_waves, note = probe_clips(CLIP_S, SR, n=8, seed=0), "SYNTHETIC clips (no real audio found)"

    def calibration() -> list[np.ndarray]:
        return calibration_chunks(ref.bundle, calib_waves)

    t0 = time.perf_counter()
    for path in names:  # ONNX export and quantisation, once
        if path.startswith("ort-"):
            prepare_path(ref.bundle, path, onnx_dir, calibration=calibration)
    prep_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(int(CLIP_S * SR)) * 0.1).astype(np.float32) for _ in range(args.clips)]
    flops = encoder_flops(ref, clips)
    result = {"model": name, "weights": "shipped" if name in PACKAGED else "random (official layout)",
              "config": ref.bundle.config["vit"], "export_and_quantise_s": round(prep_s, 1),
              "cosine_on": note, "calibration": "real" if real else "synthetic", "clips": len(clips),
              "gflop_per_clip": flops / len(clips) / 1e9, "threads": []}
    cos_table = None
    for threads in args.threads:
        torch.set_num_threads(threads)
        peak = peaks(threads)
        models, load_mb = build_paths(model_path, onnx_dir, names, calibration, args.attention_int8, args.ort_spin)
        if cos_table is None:  # accuracy does not depend on the thread count: measured once
            want = models["fp32"].embed(cos_waves, SR)
            cos_table = {p: cosines(m.embed(cos_waves, SR), want) for p, m in models.items()}
        fns = {p: (lambda m=m: m.embed(clips, SR, batch_size=8)) for p, m in models.items()}
        memory = {}
        for p, fn in fns.items():  # the warm-up call, alone, for each path's memory
            with RssPeak() as rss:
                fn()
            memory[p] = rss.peak - rss.start
        times = best_times(fns, dict.fromkeys(fns, args.repeats))
        rows = []
        capped = bool(isa_caps())
        for p in models:
            kind = "bf16" if p == "bf16" else "int8" if "int8" in p else "fp32"
            gops = flops / times[p]
            isa = ("NOT capped" if p.startswith("ort-") else "capped to AVX2") if capped else "native"
            rows.append({"path": p, "isa": isa, "clips_per_s": len(clips) / times[p],
                         "audio_s_per_s": len(clips) * CLIP_S / times[p], "x_fp32": times["fp32"] / times[p],
                         "gops": gops / 1e9, "peak_kind": kind,
                         "share_of_peak": gops / peak[kind], "load_rss_mb": load_mb.get(p, float("nan")),
                         "work_rss_mb": memory[p] / 2**20,
                         "cos_min": float(cos_table[p].min()), "cos_mean": float(cos_table[p].mean()),
                         # batches bf16 gave non-finite values for, recomputed in float32 (its speed is not bf16's)
                         "bf16_fallbacks": int(getattr(models[p].encoder, "bf16_fallbacks", 0))})
        entry = {"threads": threads, "peaks_gops": {k: v / 1e9 for k, v in peak.items()}, "rows": rows}
        if args.ort_profile:  # where each ONNX Runtime path spends its time, by operator type
            chunks = calibration_chunks(ref.bundle, clips)
            entry["ort_profile"] = {p: ort_profile(onnx_dir / f"{p.removeprefix('ort-')}.onnx", chunks, threads)
                                    for p in names if p.startswith("ort-")}
            for p, shares in entry["ort_profile"].items():
                print(f"{p} time by operator: " + ", ".join(f"{op} {100 * v:.0f}%" for op, v in
                                                           list(shares.items())[:8]), flush=True)
        result["threads"].append(entry)
        print_table(name, threads, peak, rows, len(clips), flops, note)
    return result


def auto_cost(name: str, args, tmp: Path) -> list[dict]:
    """Seconds ``precision="auto"``'s first load spends choosing a path for model ``name`` at each thread count,
    before the time bound (:data:`THOROUGH`, a fresh cache each time) and now (one cache for every thread count)."""
    from functools import partial

    from kikimimi.inference.cpu_paths import THOROUGH, PathCache, ProbeSettings, choose_cpu_path, measure_paths
    from kikimimi.inference.encoder import AudioEncoder, load

    model_path = write_model(name, tmp)
    base = load(model_path, device="cpu", precision="fp32")
    base.embed([np.zeros(SR, np.float32)], SR)  # the process's first torch call, outside both timings
    shared = PathCache(tmp / f"{name}-auto-now")

    def build(bundle, precision: str):
        return AudioEncoder(bundle, device="cpu", precision=precision)

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        before = PathCache(tmp / f"{name}-auto-before-{threads}")
        runs = (("before", THOROUGH, before), ("now", ProbeSettings(), shared))
        for label, settings, cache in runs:
            reused = label == "now" and threads != args.threads[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                choice = choose_cpu_path(base.bundle, model_path, build, cache=cache,
                                         measure=partial(measure_paths, settings=settings))
                seconds = time.perf_counter() - start
            rows.append({"model": name, "threads": threads, "measurement": label, "onnx_files_reused": reused,
                         "seconds": round(seconds, 2), "chosen": choice.path, "reason": choice.reason,
                         "paths": [dataclasses.asdict(m) for m in choice.measurements]})
    print_auto_cost(rows)
    return rows


def print_auto_cost(rows: list[dict]) -> None:
    print("\n## precision auto: time of the first load's measurement (empty cache; ONNX export included)")
    print("| model | threads | measurement | seconds | × before | chosen | clips/s (timed rounds) per path |")
    print("|---|---:|---|---:|---:|---|---|")
    before = {}
    for r in rows:
        key = (r["model"], r["threads"])
        before.setdefault(key, r["seconds"] if r["measurement"] == "before" else None)
        ratio = f"{r['seconds'] / before[key]:.2f}" if before.get(key) else ""
        label = r["measurement"] + (", ONNX files reused" if r.get("onnx_files_reused") else "")
        paths = ", ".join(f"{m['path']} {m['clips_per_s']:.2f} ({m.get('rounds', '?')})" if m["clips_per_s"] else
                          f"{m['path']} failed" for m in r["paths"])
        print(f"| {r['model']} | {r['threads']} | {label} | {r['seconds']:.1f} | {ratio} | {r['chosen']} | {paths} |",
              flush=True)


def print_table(name: str, threads: int, peak: dict, rows: list[dict], n_clips: int, flops: float, note: str) -> None:
    shown = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in peak.items())
    print(f"\n## {name}, {threads} thread(s): {n_clips} × {CLIP_S:.0f}-s clips, {flops / n_clips / 1e9:.1f} GFLOP "
          f"per clip; matmul peaks (GOP/s): {shown}; cosine on {note}")
    print("| path | clips/s | audio s/s | × fp32 | GOP/s | % of peak | load MB | run MB | cos min | cos mean |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        label = r["path"] if r.get("isa", "native") == "native" else f"{r['path']} [{r['isa']}]"
        print(f"| {label} | {r['clips_per_s']:.2f} | {r['audio_s_per_s']:.1f} | {r['x_fp32']:.2f} | "
              f"{r['gops']:.0f} | {100 * r['share_of_peak']:.0f}% {r['peak_kind']} | {r.get('load_rss_mb', 0):.0f} | "
              f"{r.get('work_rss_mb', r.get('peak_rss_mb', 0)):.0f} | "
              f"{r['cos_min']:.5f} | {r['cos_mean']:.5f} |", flush=True)


def print_from_json(run: dict) -> None:
    """The tables of a run's JSON (``--json``), with the machine line: what the README's table is made from."""
    m = run["machine"]
    print(f"CPU: {m['cpu']} ({m['cores']} cores); flags: {' '.join(m['flags'])}; torch {m['torch']}; "
          f"onnxruntime {m['onnxruntime']}; load average at start {m['load_avg'][0]:.1f}")
    if m.get("isa_caps"):
        print(CAPPED_NOTE)
    for model in run["models"]:
        for t in model["threads"]:
            peak = {k: v * 1e9 for k, v in t["peaks_gops"].items()}
            n = model.get("clips", 1)
            per_clip = model.get("gflop_per_clip", t["rows"][0]["gops"] / t["rows"][0]["clips_per_s"]) * 1e9
            print_table(model["model"], t["threads"], peak, t["rows"], n, n * per_clip, model["cosine_on"])
    if run.get("auto_cost"):
        print_auto_cost(run["auto_cost"])


def main() -> None:
    from kikimimi.checkpoints.home import cache_root

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=[*MODELS, *PACKAGED], default=["tiny", "vitb"])
    ap.add_argument("--threads", type=int, nargs="+", help="thread counts (default 1 2; --quick: 2)")
    ap.add_argument("--clips", type=int, default=2, help="10-s clips per timed call (batch 8; the issue names 8)")
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds per path (best is kept)")
    ap.add_argument("--real", default=str(cache_root() / "datasets"),
                    help="folder of real recordings: calibration (half) and cosine (other half); default the "
                         "open suite's dataset cache")
    ap.add_argument("--real-max", type=int, default=24, help="real clips for the cosine (as many for calibration)")
    ap.add_argument("--attention-int8", action="store_true",
                    help="also the static int8 variant with attention matrix products in int8")
    ap.add_argument("--ort-profile", action="store_true", help="also each ONNX Runtime path's time by operator "
                    "type (ONNX Runtime's profiler, on the timed clips' chunks)")
    ap.add_argument("--ort-spin", action="store_true", help="also ort-int8 with ONNX Runtime's idle threads "
                    "spinning (its own default) and not (kikimimi's sessions spin only on idle cores)")
    ap.add_argument("--quick", action="store_true", help="2 threads (unless --threads), 2 clips, 1 round, 8 real "
                    "clips")
    ap.add_argument("--json", help="write the results here (default: print them last)")
    ap.add_argument("--auto-cost", action="store_true", help="also time precision auto's first measurement, before "
                    "and after its time bound, per model and thread count")
    ap.add_argument("--paths", action=argparse.BooleanOptionalAction, default=True,
                    help="the table of every path (--no-paths: only --auto-cost)")
    ap.add_argument("--cap-avx2", action="store_true", help="run it all with PyTorch capped to AVX2 (ONNX Runtime "
                    "cannot be: its rows say so)")
    ap.add_argument("--from-json", metavar="FILE", help="print the Markdown tables of an earlier run's JSON (e.g. "
                    "for the README) and measure nothing")
    args = ap.parse_args()
    if args.from_json:
        print_from_json(json.loads(Path(args.from_json).read_text()))
        return
    if args.cap_avx2 and not all(os.environ.get(k) == v for k, v in AVX2_CAPS.items()):
        # the caps are read when the libraries start: the run goes on in a child process that has them from birth
        sys.exit(subprocess.call([sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]],
                                 env={**os.environ, **AVX2_CAPS}))
    if args.quick:
        args.clips, args.repeats, args.real_max = 2, 1, 8
    args.threads = args.threads or ([2] if args.quick else [1, 2])

    from kikimimi.inference.precision import cpu_flags, isa_caps

    flags = set(cpu_flags())
    try:
        from importlib.metadata import version

        ort_version = version("onnxruntime")
    except Exception:  # noqa: BLE001
        ort_version = None
    header = {"cpu": cpu_model(), "flags": [f for f in SHOWN_FLAGS if f in flags], "cores": os.cpu_count(),
              "torch": torch.__version__, "capability": str(torch.backends.cpu.get_cpu_capability()),
              "onnxruntime": ort_version, "load_avg": os.getloadavg(), "isa_caps": isa_caps(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(["python", "benchmarks/bench_cpu_paths.py", *sys.argv[1:]])}
    print(f"CPU: {header['cpu']} ({header['cores']} cores); flags: {' '.join(header['flags'])}; torch "
          f"{header['torch']} ({header['capability']}); onnxruntime {ort_version}; load {header['load_avg']}")
    if header["isa_caps"]:
        print(CAPPED_NOTE)
    real = real_waves(args.real, args.real_max) if args.paths else []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        results = [bench_model(name, args, Path(tmp_name), real) for name in args.models] if args.paths else []
        costs = [r for name in args.models for r in auto_cost(name, args, Path(tmp_name))] if args.auto_cost else []
    header["wall_s"] = round(time.perf_counter() - start, 1)
    header["load_avg_end"] = os.getloadavg()
    header["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"machine": header, "models": results, "auto_cost": costs}
    print(f"\nwall {header['wall_s']} s; process peak RSS {header['max_rss_mb']:.0f} MB")
    emit_json(out, args.json)


if __name__ == "__main__":
    main()
