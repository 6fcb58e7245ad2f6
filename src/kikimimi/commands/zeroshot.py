"""`kikimimi zeroshot MODEL AUDIO… --labels "dog barking,rain,…"`: zero-shot classification with a CLAP model."""

from __future__ import annotations

import argparse
import json
import sys

from kikimimi.commands._options import (
    MODEL_NAME_HELP,
    add_clap_arguments,
    add_results_arguments,
    open_results_log,
    print_missing,
)

NAME = "zeroshot"
HELP = "Zero-shot classify audio files against free-text labels with an M2D-CLAP checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model",
                        help="M2D-CLAP checkpoint (official 2024/2025 file or kikimimi folder)" + MODEL_NAME_HELP)
    parser.add_argument("audio", nargs="+", help="audio files, folders or CSV lists")
    parser.add_argument("--labels", required=True, help="comma-separated class names, e.g. 'dog barking,rain'")
    parser.add_argument("--template", default="{} can be heard", help="caption template ({} = class name)")
    parser.add_argument("--top", type=int, default=5, help="labels shown per file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--batch-files", type=int, default=64, metavar="N",
                        help="files decoded and classified together (bounds memory; default: %(default)s)")
    add_results_arguments(parser)
    add_clap_arguments(parser)


def _load_clap_model(args: argparse.Namespace):
    from kikimimi.inference.clap import load_clap

    return load_clap(args.model, text_encoder=args.text_encoder, device=args.device, precision=args.precision,
                     trust_pickle=args.trust_pickle, accept_licence=args.accept_licence)


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when at least one file is classified, 1 when every file failed, 2 on a bad setting, input
    list or model."""
    from kikimimi.commands._exit import check_inputs

    check_inputs(args.audio)  # a missing path or no audio file: a usage error (exit 2), nothing written
    from kikimimi.audio.decode import AudioDecodeError, load_audio
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.evaluation.zeroshot import zero_shot_classify
    from kikimimi.fileio import InputListError, OutputInUseError, collect_audio_files, require_existing_files
    from kikimimi.inference.clap import CLAPError
    from kikimimi.inference.jobs import job_record
    from kikimimi.inference.results_log import ResultsLogError

    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    if not labels:
        print("error: --labels is empty", file=sys.stderr)
        return 2
    try:
        files = collect_audio_files(args.audio)
        missing = set(require_existing_files(files, args.audio))  # every file missing: InputListError
        model = _load_clap_model(args)
    except (CheckpointError, CLAPError, InputListError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if missing:
        print_missing(files, missing)
    top = max(1, min(args.top, len(labels)))
    settings = {"model": job_record(model.audio, "clip", args.model), "text_encoder": model.text_encoder_description(),
                "labels": labels, "template": args.template, "top": top}
    try:
        results_log = open_results_log(args, NAME, settings, about={"model": args.model})
    except (ResultsLogError, OutputInUseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    todo = [p for p in files if p not in missing and str(p) not in results_log.done]
    results, n_failed = [], len(missing)
    with results_log:
        for first in range(0, len(todo), max(1, args.batch_files)):
            waves, names = [], []
            for path in todo[first:first + max(1, args.batch_files)]:
                try:
                    waves.append(load_audio(path, model.sample_rate)[0])
                    names.append(str(path))
                except AudioDecodeError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    n_failed += 1
            if not waves:
                continue
            try:
                probs, predicted = zero_shot_classify(model, waves, labels, args.template,
                                                      sample_rate=model.sample_rate)
            except (CLAPError, ValueError, ImportError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            for name, p, pred in zip(names, probs, predicted, strict=True):
                order = p.argsort()[::-1][:top]
                result = {"file": name, "predicted": pred,
                          "scores": [{"label": labels[i], "score": round(float(p[i]), 6)} for i in order]}
                results_log.append(result)
                results.append(result)
                if not args.json:
                    print(result["file"])
                    for s in result["scores"]:
                        print(f"  {s['score']:.3f}  {s['label']}")
    if args.json:
        print(json.dumps({"template": args.template, "labels": labels, "results": results}, indent=2))
    if n_failed == len(files):
        print("error: no readable audio file", file=sys.stderr)
        return 1
    return 0
