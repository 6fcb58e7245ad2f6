"""Pre-training throughput on this machine: M2D ViT-Base and BYOL-A steps, and the data pipeline.

Prints, all measured in this run:
- a plain float32 matmul's FLOP/s (the baseline every fraction refers to);
- M2D ViT-Base (80x608, mask 0.7) training step: samples/s and the FLOP/s of the work the method
  needs — online encoder on visible tokens, target on masked tokens (forward only), predictor on all
  tokens — as a fraction of the matmul figure (target >= 50 %);
- BYOL-A v1 d512 training step (two views, online + target, augmentations included): samples/s;
- the data pipeline (crops from a prep cache and from audio files) in samples/s against what one
  M2D-Base step consumes.

Usage: python benchmarks/bench_pretrain.py [--batch 16] [--steps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import matmul_flops


def transformer_flops(tokens: int, dim: int, depth: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of `depth` pre-norm blocks on `tokens` tokens (matmuls only; 2 FLOPs per MAC)."""
    per_block = 2 * tokens * dim * (3 * dim + dim + 2 * mlp_ratio * dim) + 2 * 2 * tokens * tokens * dim
    return depth * per_block


def m2d_step_flops(batch: int, dim=768, depth=12, pred_dim=512, pred_depth=8, n_patches=190,
                   mask_ratio=0.7, patch_pixels=256) -> float:
    """Training FLOPs of one M2D step (backward ≈ 2× forward for trained parts)."""
    visible = int(n_patches * (1 - mask_ratio))
    masked = n_patches - visible
    patch = 2 * n_patches * patch_pixels * dim
    online = transformer_flops(visible + 1, dim, depth)
    predictor = transformer_flops(n_patches + 1, pred_dim, pred_depth) + 2 * (visible + 1) * dim * pred_dim \
        + 2 * n_patches * pred_dim * dim
    target = transformer_flops(masked + 1, dim, depth)
    return batch * (3 * (patch + online + predictor) + target)


def time_steps(method, batch: dict, steps: int) -> float:
    opt = torch.optim.AdamW(method.parameters(), lr=1e-4)
    def one(i: int) -> None:
        out = method(batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.on_after_step(i + 1, 1000)
    one(0)
    t = time.perf_counter()
    for i in range(steps):
        one(i + 1)
    return (time.perf_counter() - t) / steps


def bench_data(batch_size: int, n_items: int = 128) -> tuple[float, float]:
    from kikimimi.audio.synthetic import make_dataset
    from kikimimi.data.corpus import CropDataset, resolve_corpus
    from kikimimi.features.prep_cache import prep_cache

    with tempfile.TemporaryDirectory() as tmp:
        csv_path = make_dataset(Path(tmp) / "audio", n_per_class=n_items // 8, duration_s=10.0)
        prep_cache([csv_path], Path(tmp) / "cache", preset="m2d-16k")
        rates = []
        for corpus_path in (Path(tmp) / "cache", csv_path):
            ds = CropDataset(resolve_corpus([corpus_path]), 608, frontend="m2d-16k", norm_stats=None)
            t = time.perf_counter()
            for i in range(len(ds)):
                ds[(0, i)]
            rates.append(len(ds) / (time.perf_counter() - t))
    return rates[0], rates[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from kikimimi.methods import build_method

    peak = matmul_flops()
    print(f"threads {args.threads}; float32 matmul: {peak / 1e9:.1f} GFLOP/s")

    m2d = build_method("m2d", size="base")
    step_s = time_steps(m2d, {"lms": torch.randn(args.batch, 80, 608)}, args.steps)
    flops = m2d_step_flops(args.batch)
    print(f"M2D ViT-Base 80x608 batch {args.batch}: {step_s:.2f} s/step, {args.batch / step_s:.2f} samples/s, "
          f"{flops / step_s / 1e9:.1f} GFLOP/s = {100 * flops / step_s / peak:.0f}% of matmul")
    m2d_rate = args.batch / step_s
    del m2d

    byola = build_method("byola")
    step_s = time_steps(byola, {"lms": torch.randn(args.batch * 4, 64, 96)}, args.steps)
    print(f"BYOL-A v1 d512 64x96 batch {args.batch * 4}: {step_s:.2f} s/step, "
          f"{args.batch * 4 / step_s:.1f} samples/s")
    del byola

    cache_rate, audio_rate = bench_data(args.batch)
    print(f"data pipeline, one process: {cache_rate:.0f} crops/s from a prep cache, {audio_rate:.0f} crops/s "
          f"from 10-s audio files; M2D-Base consumes {m2d_rate:.1f} samples/s → "
          f"{cache_rate / m2d_rate:.0f}× / {audio_rate / m2d_rate:.0f}× headroom per data worker")


if __name__ == "__main__":
    main()
