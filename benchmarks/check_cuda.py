"""CUDA paths checked, not assumed: AMP pre-training steps, a 2-process torchrun run, embedding per precision.

On a machine with a GPU (default mode, < 5 minutes on one modern GPU):

1. M2D ViT-Base (80x608, batch 32) and BYOL-A v1 d2048 (64x96, batch 64): a few optimiser steps each in
   float32, AMP bf16 and AMP fp16 with a gradient scaler, from the same initial weights and the same batches.
   Asserts finite losses and a first-step loss within ``--loss-rtol`` of float32's; reports samples/s.
2. ``torchrun --nproc_per_node=2 -m kikimimi pretrain`` (M2D) with the NCCL backend and AMP: asserts finite
   logged losses and identical parameters on both ranks (``KIKIMIMI_DEBUG_PARAM_HASH``). NCCL needs one GPU per
   rank; with a single GPU the run falls back to gloo on the CPU and says so.
3. ``kikimimi.load`` with each precision (fp32 and bf16 on the GPU; int8 runs on the CPU only): clip
   embeddings of 10-s clips (2-s clips in the dry run), cosine to float32 (asserted ≥ ``--cos-min``), clips/s.

``--dry-run`` (automatic without CUDA) runs the same code paths tiny on the CPU — gloo instead of NCCL, CPU
autocast for bf16/fp16 — so CI exercises the script (``tests/benchmarks/test_check_cuda.py``). Exit status 0 when every
check passed, 1 otherwise; the last line is a JSON summary.

Usage: python benchmarks/check_cuda.py [--dry-run] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(name: str, kwargs: dict, batches: list[torch.Tensor], amp: str, device: torch.device,
                seed: int = 0) -> tuple[list[float], float]:
    """Losses of ``len(batches)`` AdamW steps of method ``name`` under ``amp`` (off | bf16 | fp16) and samples/s
    of the steps after the first. The same ``seed`` gives the same initial weights and random draws."""
    from kikimimi.methods import build_method

    torch.manual_seed(seed)
    method = build_method(name, **kwargs).to(device).train()
    opt = torch.optim.AdamW(method.parameters(), lr=1e-4)
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    losses, t0 = [], None
    for step, lms in enumerate(batches):
        if step == 1:
            _sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = method({"lms": lms.to(device)})["loss"]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        method.on_after_step(step + 1, len(batches))
        losses.append(float(loss.detach().float()))
    _sync(device)
    rate = (len(batches) - 1) * batches[0].shape[0] / (time.perf_counter() - t0) if t0 else float("nan")
    return losses, rate


def check_pretraining(device: torch.device, dry: bool, steps: int, loss_rtol: float) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    if dry:
        setups = [("m2d", dict(size="tiny", input_size=(80, 32)), (2, 80, 32)),
                  ("byola", dict(d=64, proj_hidden=64, proj_dim=32), (4, 64, 96))]
    else:
        setups = [("m2d", dict(size="base"), (32, 80, 608)),
                  ("byola", dict(d=2048), (64, 64, 96))]
    results = []
    for name, kwargs, shape in setups:
        batches = [torch.randn(*shape, generator=gen) * 2 - 5 for _ in range(steps)]
        ref = None
        for amp in ("off", "bf16", "fp16"):
            losses, rate = train_steps(name, kwargs, batches, amp, device)
            finite = all(math.isfinite(v) for v in losses)
            if amp == "off":
                ref = losses[0]
            rel = abs(losses[0] - ref) / max(abs(ref), 1e-12)
            ok = finite and rel <= loss_rtol
            results.append(dict(check=f"pretrain {name} amp={amp}", ok=ok, losses=[round(v, 5) for v in losses],
                                first_loss_rel_to_fp32=round(rel, 5), samples_per_s=round(rate, 2)))
            print(f"pretrain {name:6s} amp={amp:4s}: losses {', '.join(f'{v:.4f}' for v in losses)}; first step "
                  f"{rel:.2e} from fp32; {rate:.1f} samples/s -> {'ok' if ok else 'FAILED'}", flush=True)
    return results


def check_torchrun(device: torch.device, dry: bool, tmp: Path) -> dict:
    from kikimimi.audio.synthetic import make_dataset

    use_nccl = device.type == "cuda" and torch.cuda.device_count() >= 2
    note = "nccl" if use_nccl else ("gloo on the CPU (NCCL needs 2 GPUs; this machine has "
                                    f"{torch.cuda.device_count()})" if device.type == "cuda" else "gloo (dry run)")
    make_dataset(tmp / "audio", n_per_class=2 if dry else 8, duration_s=0.8 if dry else 6.5,
                 classes=("tone", "noise_burst", "chirp"))
    # a CPU fallback runs tiny: the point there is the process-group path, not speed
    size, frames, batch, steps = ("base", "608", "16", "10") if use_nccl else ("tiny", "32", "2", "3")
    amp = "bf16" if use_nccl else "off"
    args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kikimimi", "pretrain",
            "--method", "m2d", "--size", size, "--input-frames", frames, "--data", str(tmp / "audio"),
            "--out", str(tmp / "runs"), "--steps", steps, "--batch-size", batch,
            "--device", "cuda" if use_nccl else "cpu", "--amp", amp, "--norm-samples", "8",
            "--min-epoch-size", "8", "--no-progress", "--log-every", "1", "--warmup-steps", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", KIKIMIMI_DEBUG_PARAM_HASH=str(tmp / "hashes"))
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600, cwd=tmp)
    seconds = time.perf_counter() - t
    result = dict(check=f"torchrun 2 processes, {note}, amp={amp}", ok=False, seconds=round(seconds, 1))
    if proc.returncode:
        result["error"] = proc.stderr[-2000:]
        print(f"torchrun: FAILED (exit {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
        return result
    hashes = [f.read_text().strip() for f in sorted((tmp / "hashes").glob("param-hash-rank*.txt"))]
    (run,) = list((tmp / "runs").iterdir())
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    rates = [r["samples_per_s"] for r in records if "samples_per_s" in r]
    ok = len(hashes) == 2 and hashes[0] == hashes[1] and bool(losses) and all(math.isfinite(v) for v in losses)
    result.update(ok=ok, losses=losses, samples_per_s=rates[-1] if rates else None, ranks_identical=ok)
    print(f"torchrun 2 processes ({note}, amp={amp}): losses {losses}, ranks identical: "
          f"{len(hashes) == 2 and hashes[0] == hashes[1]}, {seconds:.0f} s -> {'ok' if ok else 'FAILED'}", flush=True)
    return result


def check_embedding(device: torch.device, dry: bool, tmp: Path, cos_min: float) -> list[dict]:
    sys.path.insert(0, str(HERE.parent / "tests"))
    import official_layouts as ol

    import kikimimi

    folder = tmp / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    folder.mkdir()
    torch.save(ol.m2d_encoder_state(**(dict(embed_dim=64, depth=2) if dry else {})), folder / "w.pth")
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(32000 if dry else 160000) * 0.1).astype(np.float32) for _ in range(2 if dry else 32)]
    runs = [("fp32", device), ("bf16", device), ("int8", torch.device("cpu"))]
    ref, results = None, []
    for precision, dev in runs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # emulated bf16 on a CPU is expected in the dry run
            model = kikimimi.load(folder / "w.pth", device=str(dev), precision=precision, size=None)
        model.embed(clips[:2], 16000, batch_size=8)
        _sync(dev)
        t = time.perf_counter()
        emb = model.embed(clips, 16000, batch_size=8 if dev.type == "cpu" else 32)
        _sync(dev)
        rate = len(clips) / (time.perf_counter() - t)
        if ref is None:
            ref = emb
        cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
        ok = bool(np.isfinite(emb).all() and cos.min() >= cos_min)
        results.append(dict(check=f"embed {precision} on {dev}", ok=ok, cos_min=round(float(cos.min()), 6),
                            clips_per_s=round(rate, 2)))
        print(f"embed {precision} on {dev}: cos to fp32 min {cos.min():.5f}, {rate:.1f} clips/s -> "
              f"{'ok' if ok else 'FAILED'}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny CPU run of the same paths (automatic without CUDA)")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per AMP mode (default 5; dry run 2)")
    ap.add_argument("--loss-rtol", type=float, default=0.05, help="first-step loss tolerance against float32")
    ap.add_argument("--cos-min", type=float, default=0.99, help="minimum cosine of embeddings to float32")
    ap.add_argument("--skip-torchrun", action="store_true")
    args = ap.parse_args(argv)
    dry = args.dry_run or not torch.cuda.is_available()
    device = torch.device("cpu") if dry else torch.device("cuda")
    steps = args.steps or (2 if dry else 5)
    where = "dry run on the CPU" if dry else torch.cuda.get_device_name(device)
    print(f"check_cuda: {where}; torch {torch.__version__}", flush=True)
    t = time.perf_counter()
    results = check_pretraining(device, dry, steps, args.loss_rtol)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_torchrun:
            (tmp / "ddp").mkdir()
            results.append(check_torchrun(device, dry, tmp / "ddp"))
        (tmp / "emb").mkdir()
        results.extend(check_embedding(device, dry, tmp / "emb", args.cos_min))
    ok = all(r["ok"] for r in results)
    print(json.dumps({"mode": "dry-run" if dry else "cuda", "device": where, "ok": ok,
                      "seconds": round(time.perf_counter() - t, 1), "checks": results}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
