"""Throughput a user sees: audio-hours embedded per wall-clock hour, end to end through ``kikimimi embed``.

Each measurement is one ``kikimimi embed`` process (``OMP_NUM_THREADS=--threads``; decoding, the log-mel front end,
the encoder and the written ``.npy`` / ``.npz`` files and manifest all included, so is the process start and the
model load), on generated 16 kHz PCM-16 WAVs:

- ``long-clip``: one ``--hours`` file (default 1 h) at clip level (one vector);
- ``long-frame``: the same file at frame level (per-frame vectors and timestamps, streamed);
- ``folder-clip``: a folder of ``--n-clips`` short files of ``--clip-s`` seconds (default 10,000 × 5 s) at clip level.

Per model (``--models``: the shipped ``open-m2d-tiny`` and ``open-clap-tiny`` (its audio side), ``vitb`` = M2D
ViT-Base 80x608 p16x16 with random weights in the official layout, as ``bench_cpu_paths.py`` builds it; ``micro``:
a 2-block ViT for the script's own test) it prints and stores: audio seconds, wall seconds, × real time (audio-hours
per wall-clock hour), the process start-up (an ``embed`` of one 1-s file with the model, cache warm) and × real time
without it, the process's CPU seconds (user + system, ``wait4``) and audio seconds per CPU second with and without
the start-up's (the figure a loaded machine disturbs least; at 1 thread it is what one free core would give), the
process's peak RSS, the files written, and the precision the run used.

``--precision auto`` (the default, as for a user): the first load's measurement is made before the timed runs, by
a warm-up ``embed`` of one 1-s file in the run's own ``KIKIMIMI_HOME`` (its seconds are reported as
``first_load_s``), so the timed runs read the cached choice, whose line (``precision auto: …``) is stored.

Goal (issue 34): the shipped tiny model at >= 500× real time at clip level on 2 cores; the table prints the ratio.
Header: CPU model and flags, threads, torch and ONNX Runtime versions, load average at start and end (a loaded
machine's figures are lower bounds). ``--json FILE`` stores the run; ``--from-json FILE`` prints its table (the one
home of any README table of these figures).

Usage: nice -n 10 python benchmarks/bench_throughput.py [--models open-m2d-tiny open-clap-tiny vitb] [--hours 1]
           [--n-clips 10000] [--clip-s 5] [--threads 2] [--precision auto] [--workloads long-clip long-frame
           folder-clip] [--tmp DIR] [--json FILE] [--from-json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SR = 16000
GOAL_X = 500.0  #: × real time at clip level for the shipped tiny model on 2 cores (issue 34)
GOAL_MODEL = "open-m2d-tiny"
WORKLOADS = ("long-clip", "long-frame", "folder-clip")
SHIPPED = ("open-m2d-tiny", "open-clap-tiny")
BUILT = ("vitb", "tiny", "micro")  # random weights in the official layout (bench_cpu_paths.MODELS)


def write_clips(folder: Path, n: int, seconds: float, seed: int = 0) -> float:
    """``n`` PCM-16 WAVs of ``seconds`` at 16 kHz (tones, noise and silence of varying level) in ``folder``;
    returns the audio seconds written."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    for i in range(n):
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) * (i % 7 != 0)
        wave = wave + 10 ** rng.uniform(-3, -1) * rng.standard_normal(t.size)
        sf.write(folder / f"c{i:06d}.wav", wave.astype(np.float32), SR, subtype="PCM_16")
    return n * t.size / SR


def model_arg(name: str, tmp: Path) -> str:
    """What ``kikimimi embed -m`` gets for ``name``: the registered name, or an official-layout file written now."""
    if name in SHIPPED:
        return name
    from bench_cpu_paths import write_model

    return str(write_model(name, tmp))


def run_embed(model: str, inputs: list[str], out: Path, level: str, threads: int, precision: str,
              env: dict[str, str]) -> dict:
    """One ``kikimimi embed`` process: wall seconds, its peak RSS (MB), files written, the precision line."""
    cmd = [sys.executable, "-m", "kikimimi", "-v", "embed", "-m", model, "-o", str(out), "--level", level,
           "--no-progress", "--precision", precision, *inputs]
    env = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"kikimimi embed failed ({proc.returncode}): {' '.join(cmd)}\n{output[-3000:]}")
    line = next((m.group(0) for m in re.finditer(r"precision auto: [^\n]*", output)), None)
    files = sum(1 for p in out.iterdir() if p.suffix in (".npy", ".npz"))
    return {"wall_s": seconds, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "files": files,
            "precision_line": line or f"precision {precision}"}


def bench_model(name: str, args, tmp: Path, inputs: dict[str, tuple[list[str], float]], env: dict) -> dict:
    """Every workload of ``args.workloads`` for model ``name``, after a warm-up that fills the precision cache."""
    model = model_arg(name, tmp)
    one = tmp / "one"
    if not one.is_dir():
        write_clips(one, 1, 1.0, seed=7)
    first = None  # auto: the first load measures the paths and caches the choice; the timed runs read it
    if args.precision == "auto":
        first = run_embed(model, [str(one)], tmp / f"{name}-first", "clip", args.threads, args.precision, env)
    startup = run_embed(model, [str(one)], tmp / f"{name}-startup", "clip", args.threads, args.precision, env)
    result = {"model": name, "precision": args.precision, "precision_line": startup["precision_line"],
              "first_load_s": round((first or startup)["wall_s"], 2), "startup_s": round(startup["wall_s"], 2),
              "startup_cpu_s": round(startup["cpu_s"], 2), "rows": []}
    print(f"\n## {name}: {result['precision_line']}; first load (auto's measurement included) "
          f"{result['first_load_s']:.1f} s, start-up {startup['wall_s']:.1f} s", flush=True)
    print(HEAD)
    print(RULE)
    for workload in args.workloads:
        files, audio_s = inputs[workload]
        level = "frame" if workload == "long-frame" else "clip"
        out = tmp / f"{name}-{workload}"
        r = run_embed(model, files, out, level, args.threads, args.precision, env)
        steady = r["wall_s"] - startup["wall_s"]  # only where the work outweighs the start-up and its noise
        work_cpu = r["cpu_s"] - startup["cpu_s"]  # CPU seconds: what a loaded machine disturbs least
        row = {"workload": workload, "level": level, "audio_s": audio_s, "wall_s": round(r["wall_s"], 2),
               "x_real_time": audio_s / r["wall_s"],
               "x_real_time_after_startup": audio_s / steady if steady > r["wall_s"] / 2 else None,
               "cpu_s": round(r["cpu_s"], 2), "x_real_time_per_cpu_s": audio_s / max(r["cpu_s"], 1e-9),
               "x_real_time_per_cpu_s_after_startup": audio_s / work_cpu if work_cpu > r["cpu_s"] / 10 else None,
               "peak_rss_mb": round(r["peak_rss_mb"], 1), "files": r["files"]}
        result["rows"].append(row)
        print_row(name, row)
        for f in out.iterdir():  # keep the disk use bounded: 10,000 outputs per model otherwise
            if f.suffix in (".npy", ".npz"):
                f.unlink()
    return result


HEAD = ("| model | workload | audio h | wall s | × real time | × after start-up | CPU s | × per CPU-s | "
        "× per CPU-s after start-up | peak RSS MB | files | vs goal 500× |")
RULE = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"


def print_row(name: str, row: dict) -> None:
    goal = ""
    if name == GOAL_MODEL and row["level"] == "clip":
        goal = f"{row['x_real_time'] / GOAL_X:.2f}× the goal"
    after = "—" if row["x_real_time_after_startup"] is None else f"{row['x_real_time_after_startup']:.0f}"
    per_cpu = row.get("x_real_time_per_cpu_s_after_startup")
    cpu = (f"{row['cpu_s']:.1f} | {row['x_real_time_per_cpu_s']:.0f} | "
           f"{'—' if per_cpu is None else f'{per_cpu:.0f}'}") if "cpu_s" in row else "| |"
    print(f"| {name} | {row['workload']} | {row['audio_s'] / 3600:.2f} | {row['wall_s']:.1f} | "
          f"{row['x_real_time']:.0f} | {after} | {cpu} | {row['peak_rss_mb']:.0f} | "
          f"{row['files']} | {goal} |", flush=True)


def print_from_json(run: dict) -> None:
    """The table of a run's JSON (``--json``), with its machine line."""
    m = run["machine"]
    print(f"CPU: {m['cpu']} ({m['cores']} cores); flags: {' '.join(m['flags'])}; {m['threads']} thread(s); torch "
          f"{m['torch']}; onnxruntime {m['onnxruntime']}; load average {m['load_avg'][0]:.1f} at start, "
          f"{m['load_avg_end'][0]:.1f} at end")
    print(HEAD)
    print(RULE)
    for model in run["models"]:
        for row in model["rows"]:
            print_row(model["model"], row)
    for model in run["models"]:
        print(f"- {model['model']}: {model['precision_line']} (first load {model['first_load_s']:.1f} s, start-up "
              f"{model['startup_s']:.1f} s, {model.get('startup_cpu_s', float('nan')):.1f} CPU s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[*SHIPPED, "vitb"], choices=[*SHIPPED, *BUILT])
    ap.add_argument("--hours", type=float, default=1.0, help="length of the long file, whole minutes (default 1 h)")
    ap.add_argument("--n-clips", type=int, default=10000, help="short files in the folder (default 10,000)")
    ap.add_argument("--clip-s", type=float, default=5.0, help="length of each short file in seconds (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each embed process (default 2)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "int8"))
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    ap.add_argument("--tmp", help="folder for the generated audio and outputs (default: a temporary folder)")
    ap.add_argument("--json", help="write the results here (default: print them last)")
    ap.add_argument("--from-json", metavar="FILE", help="print the table of an earlier run's JSON; measure nothing")
    args = ap.parse_args()
    if args.from_json:
        print_from_json(json.loads(Path(args.from_json).read_text()))
        return
    sys.path.insert(0, str(HERE))
    import torch
    from _common import cpu_model, emit_json
    from bench_cpu_paths import SHOWN_FLAGS

    from kikimimi.inference.precision import cpu_flags

    try:
        from importlib.metadata import version

        ort_version = version("onnxruntime")
    except Exception:  # noqa: BLE001
        ort_version = None
    flags = set(cpu_flags())
    machine = {"cpu": cpu_model(), "flags": [f for f in SHOWN_FLAGS if f in flags], "cores": os.cpu_count(),
               "threads": args.threads, "torch": torch.__version__, "onnxruntime": ort_version,
               "load_avg": os.getloadavg()}
    print(f"CPU: {machine['cpu']} ({machine['cores']} cores); flags: {' '.join(machine['flags'])}; "
          f"{args.threads} thread(s); torch {torch.__version__}; onnxruntime {ort_version}; "
          f"load average {machine['load_avg'][0]:.1f}")
    start = time.perf_counter()
    if args.tmp:
        Path(args.tmp).mkdir(parents=True, exist_ok=True)  # a named scratch folder may not exist yet
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "KIKIMIMI_HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("KIKIMIMI_PRECISION", None)
        inputs: dict[str, tuple[list[str], float]] = {}
        if {"long-clip", "long-frame"} & set(args.workloads):
            from bench_long_file import write_long_wav

            wav = tmp / "long.wav"
            write_long_wav(wav, args.hours)
            import soundfile as sf

            seconds = sf.info(str(wav)).duration
            inputs["long-clip"] = inputs["long-frame"] = ([str(wav)], seconds)
        if "folder-clip" in args.workloads:
            t = time.perf_counter()
            audio_s = write_clips(tmp / "clips", args.n_clips, args.clip_s)
            inputs["folder-clip"] = ([str(tmp / "clips")], audio_s)
            print(f"wrote {args.n_clips} × {args.clip_s:g}-s WAVs in {time.perf_counter() - t:.0f} s")
        results = [bench_model(name, args, tmp, inputs, env) for name in args.models]
    machine["load_avg_end"] = os.getloadavg()
    machine["wall_s"] = round(time.perf_counter() - start, 1)
    run = {"machine": machine, "settings": {"hours": args.hours, "n_clips": args.n_clips, "clip_s": args.clip_s,
                                            "precision": args.precision}, "models": results}
    print()
    print_from_json(run)
    emit_json(run, args.json)


if __name__ == "__main__":
    main()
