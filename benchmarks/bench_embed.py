"""Embedding throughput on this machine (CPU, float32), all figures measured in one run.

- plain float32 matmul FLOP/s (the baseline);
- M2D ViT-Base (80x608 p16x16, random weights in the official layout) on 10-s clips, batch 8: clips/s
  and model FLOP/s as a fraction of the matmul figure (target >= 80 %);
- a batch of clips of different lengths: seconds against the same FLOPs done by equal-length batches
  (grouping by length means no padding is computed);
- BYOL-A v1 d2048 on 10-s clips: clips/s;
- peak RSS of `kikimimi embed` on a generated 1-hour file in a subprocess (target < 2 GB).

Usage: python benchmarks/bench_embed.py [--threads N] [--repeats 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import matmul_flops

HERE = Path(__file__).resolve().parent


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


def _model(tmp: Path, folder: str, state: dict) -> Path:
    d = tmp / folder
    d.mkdir()
    torch.save(state, d / "w.pth")
    return d / "w.pth"


def _time(fn, repeats: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def peak_rss_embed_one_hour(tmp: Path, model_path: Path) -> float:
    import soundfile as sf

    wav = tmp / "hour.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(wav, "w", samplerate=16000, channels=1, subtype="PCM_16") as f:
        for _ in range(60):
            f.write((rng.standard_normal(16000 * 60) * 0.1).astype(np.float32))
    code = ("import resource, sys; from kikimimi.cli import main; "
            f"rc = main(['embed', {str(wav)!r}, '-m', {str(model_path)!r}, '-o', {str(tmp / 'out')!r}, "
            "'--level', 'frame', '--no-progress', '--device', 'cpu']); "
            "print('RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.split("RSS_KB")[-1].strip()) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE.parent / "tests"))
    import official_layouts as ol

    import kikimimi

    peak = matmul_flops()
    print(f"threads {args.threads}; float32 matmul: {peak / 1e9:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        m2d_path = _model(tmp, "m2d_vit_base-80x608p16x16-221006-mr7_enconly", ol.m2d_encoder_state())
        m2d = kikimimi.load(m2d_path, device="cpu")
        rng = np.random.default_rng(0)
        clips = [(rng.standard_normal(160000) * 0.1).astype(np.float32) for _ in range(8)]
        sec = _time(lambda: m2d.embed(clips, batch_size=8), args.repeats)
        flops = 8 * m2d_clip_flops(1001)
        print(f"M2D ViT-Base, 8 x 10-s clips: {sec:.2f} s → {8 / sec:.2f} clips/s, "
              f"{flops / sec / 1e9:.1f} GFLOP/s = {100 * flops / sec / peak:.0f}% of matmul")

        lengths_s = [1.0, 2.5, 4.0, 6.08, 8.0, 10.0, 12.0, 3.3]
        mixed = [(rng.standard_normal(int(s * 16000)) * 0.1).astype(np.float32) for s in lengths_s]
        sec_mixed = _time(lambda: m2d.embed(mixed, batch_size=8), args.repeats)
        flops_mixed = sum(m2d_clip_flops(int(s * 16000) // 160 + 1) for s in lengths_s)
        padded = 8 * m2d_clip_flops(int(max(lengths_s) * 16000) // 160 + 1)
        print(f"M2D mixed lengths {lengths_s}: {sec_mixed:.2f} s, {flops_mixed / sec_mixed / 1e9:.1f} GFLOP/s "
              f"= {100 * flops_mixed / sec_mixed / peak:.0f}% of matmul on padding-free FLOPs "
              f"(padding to the longest would cost {padded / flops_mixed:.2f}× the FLOPs)")

        byola_path = tmp / "AudioNTT2020-BYOLA-64x96d2048.pth"
        torch.save(ol.byola_v1(2048), byola_path)
        byola = kikimimi.load(byola_path, device="cpu", norm_stats=(-9.0, 4.5))
        sec_b = _time(lambda: byola.embed(clips, batch_size=8), args.repeats)
        print(f"BYOL-A v1 d2048, 8 x 10-s clips: {sec_b:.2f} s → {8 / sec_b:.1f} clips/s")

        if not args.skip_rss:
            rss = peak_rss_embed_one_hour(tmp, m2d_path)
            print(f"peak RSS of `kikimimi embed --level frame` on a 1-hour file: {rss:.0f} MB")


if __name__ == "__main__":
    main()
