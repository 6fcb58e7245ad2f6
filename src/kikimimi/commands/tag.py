"""`kikimimi tag FILE… -m CHECKPOINT --labels class_labels_indices.csv`: AudioSet tagging with a
fine-tuned checkpoint's 527-way head, over sliding windows for long files.

The official AudioSet fine-tuned heads output classes in **sorted-MID order** (docs/reference.md §5),
not in the CSV's index order: the labels CSV (``index,mid,display_name``) is sorted by ``mid`` to name
the outputs.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from kikimimi.commands._options import (
    MODEL_NAME_HELP,
    add_accept_licence_argument,
    add_precision_argument,
    add_results_arguments,
    open_results_log,
    print_missing,
)

NAME = "tag"
HELP = "Tag audio with an AudioSet fine-tuned checkpoint (sliding windows over long files)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="audio files, folders (searched recursively) or CSV lists")
    parser.add_argument("-m", "--model", required=True,
                        help="fine-tuned checkpoint with a tagging head" + MODEL_NAME_HELP)
    parser.add_argument("--labels", required=True, help="class_labels_indices.csv (index,mid,display_name)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=10.0, help="window length in seconds")
    parser.add_argument("--hop-s", type=float, default=5.0, help="hop between windows in seconds")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trust-pickle", action="store_true")
    add_results_arguments(parser)
    add_accept_licence_argument(parser)
    add_precision_argument(parser)


def read_labels_sorted_by_mid(path: str | Path) -> list[str]:
    """Display names in sorted-MID order (the order of the official AudioSet heads)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"mid", "display_name"} <= set(rows[0]):
        raise ValueError(f"'{path}': expected columns index,mid,display_name")
    return [r["display_name"] for r in sorted(rows, key=lambda r: r["mid"])]


def windows(n_samples: int, sample_rate: int, window_s: float, hop_s: float) -> list[tuple[int, int]]:
    """(start, end) sample ranges covering the clip; one window when the clip is shorter than it."""
    win, hop = int(window_s * sample_rate), max(1, int(hop_s * sample_rate))
    if n_samples <= win:
        return [(0, n_samples)]
    starts = list(range(0, n_samples - win + 1, hop))
    if starts[-1] + win < n_samples:
        starts.append(n_samples - win)
    return [(s, s + win) for s in starts]


def tag_waveform(model, wave: np.ndarray, window_s: float, hop_s: float) -> list[tuple[float, float, np.ndarray]]:
    """Per window: (start s, end s, sigmoid probabilities [n_classes]) from the model's head."""
    import torch

    head = model.bundle.head.to(model.device).eval()
    spans = windows(len(wave), model.sample_rate, window_s, hop_s)
    clips = model.embed([wave[s:e] for s, e in spans], model.sample_rate)
    with torch.inference_mode():
        probs = torch.sigmoid(head(torch.from_numpy(clips).to(model.device))).cpu().numpy()
    return [(s / model.sample_rate, e / model.sample_rate, p) for (s, e), p in zip(spans, probs, strict=True)]


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when at least one file is tagged, 1 when every file failed, 2 on a bad setting or model."""
    import kikimimi
    from kikimimi.audio.decode import AudioDecodeError, load_audio
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.fileio import InputListError, OutputInUseError, collect_audio_files, require_existing_files
    from kikimimi.inference.jobs import job_record
    from kikimimi.inference.results_log import ResultsLogError

    try:
        files = collect_audio_files(args.files)
        missing = set(require_existing_files(files, args.files))  # every file missing: InputListError
        model = kikimimi.load(args.model, device=args.device, trust_pickle=args.trust_pickle,
                              accept_licence=args.accept_licence, precision=args.precision)
        labels = read_labels_sorted_by_mid(args.labels)
    except (CheckpointError, InputListError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if model.bundle.head is None:
        print(f"error: '{args.model}' has no tagging head (use an AudioSet fine-tuned checkpoint)", file=sys.stderr)
        return 2
    n_out = model.bundle.head.linear.out_features
    if n_out != len(labels):
        print(f"error: the head has {n_out} outputs but '{args.labels}' lists {len(labels)} classes",
              file=sys.stderr)
        return 2
    if not files:
        print(f"error: no audio files found in {args.files}", file=sys.stderr)
        return 2
    if missing:
        print_missing(files, missing)
    failed = len(missing)
    settings = {"model": job_record(model, "clip"), "labels": labels, "top_k": args.top_k,
                "window_s": args.window_s, "hop_s": args.hop_s}
    try:
        results = open_results_log(args, NAME, settings)
    except (ResultsLogError, OutputInUseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with results:
        for path in files:
            if path in missing or str(path) in results.done:
                continue
            try:
                wave, _ = load_audio(path, model.sample_rate)
            except AudioDecodeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(path)
            record = {"file": str(path), "windows": []}
            for start, end, probs in tag_waveform(model, wave, args.window_s, args.hop_s):
                top = np.argsort(-probs)[: args.top_k]
                print(f"  {start:7.2f}-{end:7.2f} s  " + ", ".join(f"{labels[i]} {probs[i]:.3f}" for i in top))
                record["windows"].append({"start_s": round(start, 3), "end_s": round(end, 3),
                                          "tags": [{"label": labels[i], "score": round(float(probs[i]), 6)}
                                                   for i in top]})
            results.append(record)
    if failed == len(files):
        print("error: no file could be tagged", file=sys.stderr)
        return 1
    return 0
