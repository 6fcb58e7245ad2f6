"""Peak memory of frame-level embedding of long files: `kikimimi embed --level frame` on generated WAVs.

Each measurement runs in a fresh subprocess (peak RSS from ``resource.getrusage``), on a generated 16 kHz
PCM-16 file of each ``--hours`` duration, with an M2D ViT of ``--size`` (random weights, official layout).
Long files are streamed (``kikimimi.inference.long_files``), so the peak should not grow with the duration;
``--in-memory`` also measures the whole-file path for comparison (memory grows with the duration there).
Target: < 1 GB for any duration with ViT-Base.

Usage: python benchmarks/bench_long_file.py [--hours 1 8] [--size base] [--in-memory] [--threads 2]
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

HERE = Path(__file__).resolve().parent


def write_long_wav(path: Path, hours: float, sample_rate: int = 16000) -> None:
    """A PCM-16 WAV of ``hours`` hours (a swept tone plus noise), written a minute at a time."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    minute = np.arange(sample_rate * 60) / sample_rate
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as f:
        for m in range(int(round(hours * 60))):
            tone = 0.3 * np.sin(2 * np.pi * (200 + 10 * (m % 50)) * minute)
            f.write((tone + 0.05 * rng.standard_normal(minute.size)).astype(np.float32))


def measure(wav: Path, model: Path, out: Path, threads: int, in_memory: bool) -> tuple[float, float, float, str]:
    """(peak RSS in MB, peak RSS once the model is loaded in MB, wall seconds, manifest row) of one
    frame-level embedding job in a subprocess."""
    code = (
        "import resource, sys, torch\n"
        f"torch.set_num_threads({threads})\n"
        "import kikimimi\n"
        "from kikimimi.inference.jobs import run_embed_job\n"
        f"model = kikimimi.load({str(model)!r}, device='cpu')\n"
        "print('LOAD_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        f"r = run_embed_job(model, [{str(wav)!r}], {str(out)!r}, level='frame', "
        f"stream_over_s={1e12 if in_memory else 300.0})\n"
        "assert r.embedded == 1, r.failed\n"
        "print('RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"embedding job failed:\n{proc.stderr[-3000:]}")
    row = (out / "manifest.csv").read_text().splitlines()[1]
    load_kb = float(proc.stdout.split("LOAD_KB")[1].split()[0])
    return float(proc.stdout.split("RSS_KB")[-1].strip()) / 1024.0, load_kb / 1024.0, seconds, row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, nargs="+", default=[1.0, 8.0])
    ap.add_argument("--size", default="base", choices=("tiny", "small", "base"), help="ViT size")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--in-memory", action="store_true", help="also measure the whole-file path")
    ap.add_argument("--tmp", help="folder for the generated files (default: a temporary folder)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "tests"))
    import official_layouts as ol

    from kikimimi.models.vit import VIT_SIZES

    dim, depth, _ = VIT_SIZES[args.size]
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / f"m2d_vit_{args.size}-80x608p16x16-221006-mr7_enconly"
        folder.mkdir()
        torch.save(ol.m2d_encoder_state(embed_dim=dim, depth=depth), folder / "w.pth")  # heads: from the name
        print(f"M2D ViT-{args.size} ({dim}-d, {depth} blocks), frame level, {args.threads} thread(s)")
        for hours in args.hours:
            wav = tmp / f"{hours:g}h.wav"
            write_long_wav(wav, hours)
            modes = [("streamed", False)] + ([("in memory", True)] if args.in_memory else [])
            for label, in_memory in modes:
                out = tmp / f"out-{hours:g}-{label.replace(' ', '')}"
                rss, rss_loaded, seconds, row = measure(wav, folder / "w.pth", out, args.threads, in_memory)
                size = next(out.glob("*.npz")).stat().st_size / 1e6
                print(f"{hours:g} h ({wav.stat().st_size / 1e6:.0f} MB WAV), {label}: peak RSS {rss:.0f} MB "
                      f"(after loading the model: {rss_loaded:.0f} MB), "
                      f"{seconds:.0f} s, output {size:.0f} MB ({row.split(',', 2)[2]} frames,dim)", flush=True)
                for f in out.glob("*.npz"):
                    f.unlink()
            wav.unlink()


if __name__ == "__main__":
    main()
