"""`kikimimi tag FILE… -m MODEL [--labels LABELS]`: tagging with a model's classifier head over sliding windows.

Any head works: one written by ``kikimimi finetune`` brings its class names and its activation (softmax for a
single-label task, sigmoid for a multi-label one); an official AudioSet head (527 outputs in sorted-MID order,
sigmoids) is named by ``--labels class_labels_indices.csv``. ``--labels`` also takes a plain list of names
(:func:`kikimimi.inference.tagging.read_label_list`).
"""

from __future__ import annotations

import argparse
import sys

from kikimimi.commands._options import (
    MODEL_NAME_HELP,
    add_accept_licence_argument,
    add_precision_argument,
    add_results_arguments,
    open_results_log,
    print_missing,
)

NAME = "tag"
HELP = "Tag audio with a model's classifier head (fine-tuned or AudioSet; sliding windows over long files)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="audio files, folders (searched recursively) or CSV lists")
    parser.add_argument("-m", "--model", required=True,
                        help="fine-tuned checkpoint with a tagging head" + MODEL_NAME_HELP)
    parser.add_argument("--labels", metavar="LABELS",
                        help="class names in output order: AudioSet's class_labels_indices.csv (sorted by mid), "
                             "a file with one name per line or comma-separated, or NAME,NAME,...; "
                             "default: the names stored with the head (kikimimi finetune)")
    parser.add_argument("--activation", choices=("auto", "softmax", "sigmoid"), default="auto",
                        help="how logits become probabilities (auto: the head's own, stored by kikimimi finetune; "
                             "sigmoid for heads that store none, like AudioSet's)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=10.0, help="window length in seconds")
    parser.add_argument("--hop-s", type=float, default=5.0, help="hop between windows in seconds")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trust-pickle", action="store_true")
    add_results_arguments(parser)
    add_accept_licence_argument(parser)
    add_precision_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when at least one file is tagged, 1 when every file failed, 2 on a bad setting or model."""
    import numpy as np  # here, not at the top: `kikimimi --help` stays fast

    from kikimimi.commands._exit import check_inputs

    check_inputs(args.files)  # a missing path or no audio file: a usage error (exit 2), nothing written
    import kikimimi
    from kikimimi.audio.decode import AudioDecodeError, load_audio
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.fileio import InputListError, OutputInUseError, collect_audio_files, require_existing_files
    from kikimimi.inference.jobs import NON_FINITE, job_record
    from kikimimi.inference.results_log import ResultsLogError
    from kikimimi.inference.tagging import head_activation, head_classes, read_label_list, tag_waveform

    try:
        files = collect_audio_files(args.files)
        missing = set(require_existing_files(files, args.files))  # every file missing: InputListError
        model = kikimimi.load(args.model, device=args.device, trust_pickle=args.trust_pickle,
                              accept_licence=args.accept_licence, precision=args.precision)
        labels = read_label_list(args.labels) if args.labels else head_classes(model.bundle.config)
        activation = head_activation(model.bundle.config) if args.activation == "auto" else args.activation
    except (CheckpointError, InputListError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if model.bundle.head is None:
        print(f"error: '{args.model}' has no tagging head (use a model written by kikimimi finetune or an AudioSet "
              "fine-tuned checkpoint)", file=sys.stderr)
        return 2
    if labels is None:
        print(f"error: '{args.model}' stores no class names; pass --labels (a names file, NAME,NAME,... or "
              "AudioSet's class_labels_indices.csv)", file=sys.stderr)
        return 2
    n_out = model.bundle.head.linear.out_features
    if n_out != len(labels):
        print(f"error: the head has {n_out} outputs but {args.labels or 'the model'!r} lists {len(labels)} classes",
              file=sys.stderr)
        return 2
    if not files:
        print(f"error: no audio files found in {args.files}", file=sys.stderr)
        return 2
    if missing:
        print_missing(files, missing)
    failed = len(missing)
    settings = {"model": job_record(model, "clip", args.model), "labels": labels, "top_k": args.top_k,
                "window_s": args.window_s, "hop_s": args.hop_s, "activation": activation}
    try:
        results = open_results_log(args, NAME, settings, about={"model": args.model})
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
            tagged = tag_waveform(model, wave, args.window_s, args.hop_s, activation)
            if not all(np.isfinite(probs).all() for _s, _e, probs in tagged):  # never written as a result
                print(f"error: '{path}': {NON_FINITE}", file=sys.stderr)
                failed += 1
                continue
            print(path)
            record = {"file": str(path), "windows": []}
            for start, end, probs in tagged:
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
