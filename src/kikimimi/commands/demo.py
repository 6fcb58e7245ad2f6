"""`kikimimi demo`: the whole pipeline, as far as it exists, on generated audio (no downloads).

Stages (each skipped when its output already exists, so an interrupted demo resumes):

1. generate a labelled set of synthetic sounds (`kikimimi.synthetic`);
2. convert it to an M2D 16 kHz log-mel cache (`kikimimi prep`) and summarise the log-mels;
3. pre-train a tiny M2D and a tiny BYOL-A on an unlabelled pool of generated sounds drawn from
   only some of the classes (`kikimimi pretrain`), so the evaluation also sees classes that
   pre-training never heard;
4. embed the labelled set with both pre-trained encoders (`kikimimi.load`) and evaluate them with the
   EVAR linear probe against a log-mel statistics baseline and the same networks at random
   initialisation; write `report.md`, `scores.csv` and a t-SNE cluster plot.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import Counter
from pathlib import Path

import numpy as np

NAME = "demo"
HELP = "Run the end-to-end demo pipeline on generated audio (no downloads)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--clips-per-class", type=int, default=40, help="generated clips per sound class")
    parser.add_argument("--duration-s", type=float, default=3.0, help="clip duration in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes for prep")
    parser.add_argument("--m2d-steps", type=int, default=150, help="tiny M2D pre-training steps")
    parser.add_argument("--byola-steps", type=int, default=100, help="tiny BYOL-A pre-training steps")


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(t0: float) -> None:
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)


def generate_audio(out: Path, clips_per_class: int, duration_s: float, seed: int) -> Path:
    """Stage 1: write the synthetic labelled set; returns its `labels.csv`."""
    from kikimimi.synthetic import make_dataset

    csv_path = out / "audio" / "labels.csv"
    if not csv_path.exists():
        make_dataset(out / "audio", n_per_class=clips_per_class, duration_s=duration_s, seed=seed)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    classes = Counter(r["label"] for r in rows)
    splits = Counter(r["split"] for r in rows)
    print(f"   {len(rows)} clips of {duration_s:g} s in {len(classes)} classes: "
          + ", ".join(f"{c} ({n})" for c, n in sorted(classes.items())))
    print("   splits: " + ", ".join(f"{s} {n}" for s, n in sorted(splits.items())))
    return csv_path


def log_mel_cache(out: Path, labels_csv: Path, workers: int) -> Path:
    """Stage 2: M2D 16 kHz log-mel cache of every clip; prints a per-class summary."""
    from kikimimi.prep import prep_cache, read_manifest

    cache = out / "logmel-m2d-16k"
    result = prep_cache([labels_csv], cache, preset="m2d-16k", workers=workers)
    print(f"   cache {cache}: {result.converted} converted, {result.skipped} already there, "
          f"{len(result.failed)} failed")
    rows = read_manifest(cache)
    with open(labels_csv, newline="") as f:
        label_of = {Path(r["file_name"]).stem: r["label"] for r in csv.DictReader(f)}
    per_class: dict[str, list[np.ndarray]] = {}
    for row in rows:
        mel = np.load(cache / row["file_name"], mmap_mode="r")
        per_class.setdefault(label_of.get(Path(row["source"]).stem, "?"), []).append(np.asarray(mel))
    print(f"   {'class':<14} {'clips':>5} {'frames':>7} {'mean':>8} {'std':>7}")
    for label, mels in sorted(per_class.items()):
        stacked = np.stack(mels)
        frames = stacked.shape[-1]
        print(f"   {label:<14} {len(mels):>5} {frames:>7} {stacked.mean():>8.3f} {stacked.std():>7.3f}")
    return cache


#: Classes in the unlabelled pre-training pool; the others are only ever seen at evaluation time.
PRETRAIN_CLASSES = ("tone", "chirp", "noise_burst", "harmonic_note", "silence")


def pretrain_pool(out: Path, duration_s: float, seed: int, clips_per_class: int = 40) -> Path:
    """Unlabelled pre-training audio (different seed from the labelled set, subset of classes)."""
    from kikimimi.synthetic import make_dataset

    csv_path = out / "pretrain-audio" / "labels.csv"
    if not csv_path.exists():
        make_dataset(out / "pretrain-audio", n_per_class=clips_per_class, duration_s=duration_s,
                     seed=seed + 1000, classes=PRETRAIN_CLASSES)
    print(f"   pre-training pool: {clips_per_class * len(PRETRAIN_CLASSES)} clips of {duration_s:g} s "
          f"from {', '.join(PRETRAIN_CLASSES)}")
    return csv_path


def pool_cache(out: Path, pool_csv: Path, preset: str, workers: int) -> Path:
    """Log-mel cache of the pre-training pool for one front-end preset (training reads crops from it)."""
    from kikimimi.prep import prep_cache

    cache = out / f"pretrain-logmel-{preset}"
    prep_cache([pool_csv], cache, preset=preset, workers=workers)
    return cache


def pretrain(out: Path, pool_csv: Path, method: str, run_name: str, steps: int, extra: list[str]) -> Path:
    """Run (or resume, or reuse) one `kikimimi pretrain` job; returns its run folder."""
    from kikimimi.cli import main as cli_main

    parent = out / "pretrain"
    run_dir = parent / run_name
    if (run_dir / "kikimimi" / "config.json").exists():
        print(f"   {run_dir} already trained")
        return run_dir
    argv = ["pretrain", "--method", method, "--data", str(pool_csv), "--out", str(parent),
            "--run-name", run_name, "--steps", str(steps), "--save-every", str(max(steps // 3, 1)),
            "--min-epoch-size", "1000", "--norm-samples", "500", "--no-progress", *extra]
    if any(run_dir.glob("checkpoint-*.pth")):
        argv += ["--resume", str(run_dir)]
    code = cli_main(argv)
    if code:
        raise SystemExit(f"pre-training {method} failed with exit code {code}")
    return run_dir


def evaluate(out: Path, labels_csv: Path, m2d_run: Path, byola_run: Path) -> None:
    """Stage 4: probe both pre-trained encoders and the baselines; report, confusion matrices, t-SNE maps."""
    from kikimimi.evaluation.report import model_specs, run_evaluation
    from kikimimi.evaluation.tasks import Task

    task = Task.from_csv(labels_csv, name="synthetic8", unit_s=2.0)
    unseen = sorted(set(task.classes) - set(PRETRAIN_CLASSES))
    print(f"   task: {task.n_classes} classes ({', '.join(unseen)} never heard in pre-training), "
          f"{len(task.split_items('train'))} train / {len(task.split_items('valid'))} valid / "
          f"{len(task.split_items('test'))} test clips")
    # BYOL-A statistics come from the task's training split; M2D keeps the statistics in its file.
    # One probe lr for every model keeps this small comparison like for like.
    specs = model_specs([str(m2d_run / "kikimimi"), str(byola_run / "kikimimi")], lr=3e-4)
    run_evaluation(specs, [task], out / "report", seeds=(42, 43, 44),
                   log=lambda line: print("   " + line, flush=True))
    print(f"   wrote {out / 'report' / 'report.md'} (+ report.json, scores.csv, synthetic8/*.png)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    t0 = _stage("1. Generate a labelled set of synthetic sounds")
    labels_csv = generate_audio(out, args.clips_per_class, args.duration_s, args.seed)
    _done(t0)

    t0 = _stage("2. Convert to log-mel (M2D 16 kHz front end)")
    log_mel_cache(out, labels_csv, args.workers)
    _done(t0)

    t0 = _stage("3. Pre-train a tiny M2D and a tiny BYOL-A on unlabelled generated audio")
    pool_csv = pretrain_pool(out, args.duration_s, args.seed)
    m2d_cache = pool_cache(out, pool_csv, "m2d-16k", args.workers)
    m2d_run = pretrain(out, m2d_cache, "m2d", "m2d_vit_tiny-80x208p16x16-demo", args.m2d_steps,
                       ["--size", "tiny", "--input-frames", "208", "--batch-size", "32", "--blr", "1e-2",
                        "--warmup-steps", "10"])
    byola_cache = pool_cache(out, pool_csv, "byola", args.workers)
    byola_run = pretrain(out, byola_cache, "byola", "AudioNTT2020-BYOLA-64x96d512-demo", args.byola_steps,
                         ["--batch-size", "32", "--byola-dim", "512"])
    _done(t0)

    t0 = _stage("4. Embed and evaluate (linear probe, held-out clips, 3 classes unseen in pre-training)")
    evaluate(out, labels_csv, m2d_run, byola_run)
    _done(t0)

    print(f"\nDemo finished in {time.perf_counter() - start:.1f} s; outputs in {out}")
    return 0
