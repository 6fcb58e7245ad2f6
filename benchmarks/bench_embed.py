"""Embedding throughput and fidelity of every precision path on this machine, all measured in one run.

Paths: float32 torch (the reference), bf16 torch (autocast), int8 torch (dynamic quantisation of the
Linear layers), ONNX Runtime float32 and int8 (``kikimimi export onnx`` files, ``--int8`` for the latter).
For 1 and 2 threads (``--threads``) it prints, next to the plain float32 matmul FLOP/s of the same thread
count (the baseline), one row per path and workload:

- workloads: 10-s clips at batch 1, 10-s clips at batch 8, a batch of 8 clips of mixed lengths;
- clips/s (best of ``--repeats`` interleaved rounds, so a disturbance on a shared machine hits every path
  alike), the ratio to float32 on the same workload and threads, and for float32 the model FLOP/s as a
  fraction of the matmul figure;
- the cosine (min / mean over the workload's clips) of each path's clip embeddings to float32's.

On a CPU without native bfloat16 the bf16 path is emulated (an order of magnitude slower than float32), so
it is timed on the first workload only there.

The model is M2D ViT-Base 80x608 p16x16, random weights in the official layout, unless ``--model`` names a
checkpoint (e.g. a kikimimi-pretrained one). ``--real DIR`` adds the cosine min / mean over up to
``--real-max`` real recordings under DIR; ``--probe-task DIR`` (one sub-folder per class) adds the linear-probe
accuracy of each path (``kikimimi.evaluation.probe.evaluate_task``). Memory of long files:
``benchmarks/bench_long_file.py``. Target: an int8 path at >= 2x float32 clips/s with cosine >= 0.995.

Usage: python benchmarks/bench_embed.py [--threads 1 2] [--repeats 3] [--model CKPT] [--real DIR]
           [--probe-task DIR] [--skip-bf16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import matmul_flops

HERE = Path(__file__).resolve().parent
SR = 16000  # Hz: the generated clips and the decoded recordings are at the model rate
MIXED_S = [1.0, 2.5, 4.0, 6.08, 8.0, 10.0, 12.0, 3.3]


def vit_chunk_flops(tokens: int, dim: int = 768, depth: int = 12, patch_pixels: int = 256) -> float:
    """Forward FLOPs of one chunk of `tokens` patches (+ CLS): patch conv + blocks (2 FLOPs per MAC)."""
    n = tokens + 1
    per_block = 2 * n * dim * (3 * dim + dim + 8 * dim) + 2 * 2 * n * n * dim
    return 2 * tokens * patch_pixels * dim + depth * per_block


def m2d_clip_flops(n_frames: int, unit: int = 608, patch_t: int = 16, grid_f: int = 5) -> float:
    pad = (patch_t - (n_frames % unit % patch_t)) % patch_t
    total, flops = n_frames + pad, 0.0
    for start in range(0, total, unit):
        t_patches = min(unit, total - start) // patch_t
        flops += vit_chunk_flops(grid_f * t_patches)
    return flops


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two ``[N, D]`` arrays (float64)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def best_times(fns: dict[str, Callable[[], object]], repeats: dict[str, int]) -> dict[str, float]:
    """Best wall time of each function over interleaved rounds (after one warm-up call each)."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for r in range(max(repeats.values())):
        for name, fn in fns.items():
            if r < repeats[name]:
                t = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t)
    return best


def default_model(tmp: Path) -> Path:
    sys.path.insert(0, str(HERE.parent / "tests"))
    import official_layouts as ol

    folder = tmp / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    folder.mkdir()
    torch.save(ol.m2d_encoder_state(), folder / "w.pth")
    return folder / "w.pth"


def load_paths(model_path: Path, onnx_fp32: Path, onnx_int8: Path, skip_bf16: bool) -> dict:
    """Every path as a loaded AudioEncoder (ONNX sessions take the current torch thread count)."""
    import kikimimi

    models = {"fp32 torch": kikimimi.load(model_path, device="cpu")}
    if not skip_bf16:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the emulated-bf16 warning: this script measures it
            models["bf16 torch"] = kikimimi.load(model_path, device="cpu", precision="bf16")
    models["int8 torch"] = kikimimi.load(model_path, device="cpu", precision="int8")
    models["ORT fp32"] = kikimimi.load(onnx_fp32)
    models["ORT int8"] = kikimimi.load(onnx_int8)
    return models


def real_clips(root: str, limit: int, sample_rate: int) -> tuple[list[np.ndarray], list[str]]:
    from kikimimi.audio.decode import load_audio
    from kikimimi.fileio import collect_audio_files

    files = sorted(collect_audio_files([root]))
    step = max(1, len(files) // limit)
    chosen = files[::step][:limit]
    return [load_audio(f, sample_rate)[0] for f in chosen], [str(f) for f in chosen]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per path (bf16: at most 1)")
    ap.add_argument("--model", help="checkpoint to measure (default: random ViT-Base in the official layout)")
    ap.add_argument("--real", action="append", default=[], help="folder of real recordings for the cosine report")
    ap.add_argument("--real-max", type=int, default=48, help="recordings taken per --real folder (evenly spaced)")
    ap.add_argument("--probe-task", help="folder with one sub-folder per class: linear-probe accuracy per path")
    ap.add_argument("--skip-bf16", action="store_true", help="leave out bf16 (slow where it is emulated)")
    args = ap.parse_args()

    import kikimimi
    from kikimimi.inference.onnx_runtime import export_onnx, quantize_onnx_int8
    from kikimimi.inference.precision import cpu_has_native_bf16

    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16: {cpu_has_native_bf16()}, quantised engine {torch.backends.quantized.engine}")
    rng = np.random.default_rng(0)
    ten = [(rng.standard_normal(160000) * 0.1).astype(np.float32) for _ in range(8)]
    mixed = [(rng.standard_normal(int(s * 16000)) * 0.1).astype(np.float32) for s in MIXED_S]
    workloads = {"10 s, batch 1": (ten[:2], 1), "10 s, batch 8": (ten, 8), "mixed, batch 8": (mixed, 8)}
    flops = {"10 s, batch 1": 2 * m2d_clip_flops(1001), "10 s, batch 8": 8 * m2d_clip_flops(1001),
             "mixed, batch 8": sum(m2d_clip_flops(int(s * 16000) // 160 + 1) for s in MIXED_S)}

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_path = Path(args.model) if args.model else default_model(tmp)
        print(f"model: {args.model or 'M2D ViT-Base 80x608 p16x16, random weights (official layout)'}")
        t = time.perf_counter()
        onnx_fp32 = export_onnx(kikimimi.load(model_path, device="cpu").bundle, tmp / "fp32.onnx")
        onnx_int8 = quantize_onnx_int8(onnx_fp32, tmp / "int8.onnx")
        print(f"ONNX export + int8 quantisation: {time.perf_counter() - t:.1f} s; files "
              f"{onnx_fp32.stat().st_size / 1e6:.0f} MB / {onnx_int8.stat().st_size / 1e6:.0f} MB")

        rows = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            peak = matmul_flops()
            print(f"\n## {threads} thread(s); float32 matmul baseline: {peak / 1e9:.1f} GFLOP/s")
            models = load_paths(model_path, onnx_fp32, onnx_int8, args.skip_bf16)
            print("| workload | path | clips/s | × fp32 | cos min | cos mean | note |")
            print("|---|---|---:|---:|---:|---:|---|")
            for index, (wname, (clips, batch)) in enumerate(workloads.items()):
                if index == 1 and "bf16 torch" in models and not cpu_has_native_bf16():
                    del models["bf16 torch"]  # emulated: measured on the first workload only (minutes per batch)
                fns = {name: (lambda m=m, c=clips, b=batch: m.embed(c, SR, batch_size=b)) for name, m in models.items()}
                reps = {name: (1 if name.startswith("bf16") else args.repeats) for name in fns}
                times = best_times(fns, reps)
                ref = models["fp32 torch"].embed(clips, SR, batch_size=batch)
                for name, m in models.items():
                    cos = cosines(m.embed(clips, SR, batch_size=batch), ref)
                    cps = len(clips) / times[name]
                    ratio = times["fp32 torch"] / times[name]
                    note = f"{100 * flops[wname] / times[name] / peak:.0f}% of matmul" if name == "fp32 torch" else ""
                    rows.append((threads, wname, name, cps, ratio, cos.min(), cos.mean()))
                    print(f"| {wname} | {name} | {cps:.2f} | {ratio:.2f} | {cos.min():.5f} | {cos.mean():.5f} "
                          f"| {note} |", flush=True)

        if args.real:
            models = load_paths(model_path, onnx_fp32, onnx_int8, args.skip_bf16)
            print("\n## real recordings: cosine of clip embeddings to float32")
            for root in args.real:
                clips, names = real_clips(root, args.real_max, models["fp32 torch"].sample_rate)
                lengths = np.array([len(c) / 16000 for c in clips])
                ref = models["fp32 torch"].embed(clips, SR)
                print(f"{root}: {len(clips)} clips, {lengths.min():.2f}–{lengths.max():.2f} s")
                for name, m in models.items():
                    if name == "fp32 torch":
                        continue
                    cos = cosines(m.embed(clips, SR), ref)
                    print(f"  {name}: cos min {cos.min():.5f} mean {cos.mean():.5f} "
                          f"(worst: {Path(names[int(cos.argmin())]).name})", flush=True)

        if args.probe_task:
            from kikimimi.evaluation.probe import evaluate_task
            from kikimimi.evaluation.tasks import Task

            task = Task.from_folder(args.probe_task)
            models = load_paths(model_path, onnx_fp32, onnx_int8, args.skip_bf16)
            print(f"\n## linear probe on {args.probe_task} ({len(task.items)} clips, "
                  f"classes {', '.join(task.classes)}, crops of {task.unit_s:.2f} s)")
            for name, m in models.items():
                result, _ = evaluate_task(m, task, sample_rate=m.sample_rate, seeds=(42, 43, 44), batch_size=8)
                print(f"  {name}: {result.metric} {result.score:.4f} ± {result.std:.4f} (3 seeds)", flush=True)


if __name__ == "__main__":
    main()
