"""Front-end throughput and `kikimimi prep` memory benchmark (prints figures; no pass/fail).

1. Seconds of audio per second for the m2d-16k log-mel on 10 minutes of generated audio: our torch front
   end (float32, CPU, one thread by default) vs ``librosa.feature.melspectrogram`` with identical
   parameters + natural log, in the same run. Targets: >= 5x librosa, >= 1000x real time.
2. Peak RSS of ``kikimimi prep`` on a generated 1-hour WAV in a subprocess
   (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``). Target: < 1 GB.

Usage: ``python benchmarks/bench_frontend.py [--threads 1] [--minutes 10] [--hours 1] [--skip-prep]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_audio(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Mixed test material: alternating speech-like, noise bursts and harmonic notes (float32)."""
    from kikimimi.audio.synthetic import make_sound, speech_like

    rng = np.random.default_rng(seed)
    pieces, total, n = [], 0, int(seconds * sample_rate)
    kinds = ("speech", "noise_burst", "harmonic_note", "chirp", "am_tone")
    i = 0
    while total < n:
        kind = kinds[i % len(kinds)]
        if kind == "speech":
            piece = speech_like(5.0, sample_rate, rng)
        else:
            piece = make_sound(kind, 5.0, sample_rate, rng)
        pieces.append(np.asarray(piece, dtype=np.float32))
        total += len(piece)
        i += 1
    return np.concatenate(pieces)[:n]


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_throughput(minutes: float, threads: int, repeats: int) -> None:
    import librosa
    import torch

    from kikimimi.features.frontend import LogMelSpectrogram, get_preset

    torch.set_num_threads(threads)
    c = get_preset("m2d-16k")
    wave = make_audio(minutes * 60.0, c.sample_rate)
    seconds = len(wave) / c.sample_rate
    module = LogMelSpectrogram(c)
    plain = LogMelSpectrogram(c, precision_guard=False)
    x = torch.from_numpy(wave)

    def ours(m=module):
        with torch.inference_mode():
            return m(x)

    def theirs():
        mel = librosa.feature.melspectrogram(
            y=wave, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
            window="hann", center=True, pad_mode="reflect", power=2.0, n_mels=c.n_mels, fmin=c.f_min,
            fmax=c.f_max, htk=False, norm="slaney")
        return np.log(mel + c.eps)

    try:  # same thread count for numpy's BLAS (librosa's mel projection) as for torch
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(threads)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        limits = None
    a, b = ours()[0].numpy(), theirs()  # warm-up (numba JIT in librosa) + agreement check
    t_ours = best_time(ours, repeats)
    t_plain = best_time(lambda: ours(plain), repeats)
    t_librosa = best_time(theirs, repeats)
    if limits is not None:
        limits.unregister()
    print(f"audio: {seconds:.0f} s of generated mixed audio (speech-like, noise bursts, harmonic notes, "
          f"chirps, AM tones) at {c.sample_rate} Hz; threads={threads}; best of {repeats}")
    print(f"kikimimi log_mel (float32, precision guard on) : {seconds / t_ours:9.0f} x real time "
          f"({t_ours * 1000:.0f} ms)")
    print(f"kikimimi log_mel (float32, guard off)          : {seconds / t_plain:9.0f} x real time "
          f"({t_plain * 1000:.0f} ms)")
    print(f"librosa melspectrogram + log                   : {seconds / t_librosa:9.0f} x real time "
          f"({t_librosa * 1000:.0f} ms)")
    print(f"speed ratio kikimimi / librosa (guard on/off)  : {t_librosa / t_ours:9.1f} x / "
          f"{t_librosa / t_plain:.1f} x")
    print(f"max |log-mel difference| vs librosa            : {np.abs(a - b).max():9.2e}")


def bench_prep_memory(hours: float) -> None:
    import soundfile as sf

    sr = 16000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        block = make_audio(600.0, sr, seed=1)
        with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
            for _ in range(int(round(hours * 6))):
                f.write(block)
        size_mb = path.stat().st_size / 1e6
        cmd = [sys.executable, "-m", "kikimimi", "prep", str(path), "-o", str(Path(tmp) / "cache"),
               "--workers", "1", "--quiet"]
        # A tiny launcher runs prep and reports RUSAGE_CHILDREN, so the RSS this (large) benchmark process
        # has at fork time cannot leak into the figure.
        launcher = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
                    "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", launcher, *cmd], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        elapsed = time.perf_counter() - start
        rc_text, peak_text = proc.stdout.split()[-2:]
        returncode, peak_kb = int(rc_text), int(peak_text)  # ru_maxrss is in kilobytes on Linux
        out = np.load(Path(tmp) / "cache" / "long.npy", mmap_mode="r") if returncode == 0 else None
        print(f"kikimimi prep on a {hours:g} h WAV ({size_mb:.0f} MB): exit {returncode}, "
              f"{elapsed:.1f} s wall, peak RSS {peak_kb / 1024:.0f} MB, output shape "
              f"{None if out is None else out.shape}")
        if returncode != 0:
            print(proc.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--minutes", type=float, default=10.0, help="audio length for throughput")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hours", type=float, default=1.0, help="WAV length for the prep memory test")
    parser.add_argument("--skip-prep", action="store_true")
    args = parser.parse_args()
    bench_throughput(args.minutes, args.threads, args.repeats)
    if not args.skip_prep:
        bench_prep_memory(args.hours)


if __name__ == "__main__":
    main()
