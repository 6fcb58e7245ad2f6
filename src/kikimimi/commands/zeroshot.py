"""`kikimimi zeroshot MODEL AUDIO… --labels "dog barking,rain,…"`: zero-shot classification with a CLAP model."""

from __future__ import annotations

import argparse
import json
import sys

from kikimimi.commands._options import MODEL_NAME_HELP, add_clap_arguments, print_missing

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
    add_clap_arguments(parser)


def _load_clap_model(args: argparse.Namespace):
    from kikimimi.inference.clap import load_clap

    return load_clap(args.model, text_encoder=args.text_encoder, device=args.device, precision=args.precision,
                     trust_pickle=args.trust_pickle, accept_licence=args.accept_licence)


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when at least one file is classified, 1 when every file failed, 2 on a bad setting, input
    list or model."""
    from kikimimi.audio.decode import AudioDecodeError, load_audio
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.evaluation.zeroshot import zero_shot_classify
    from kikimimi.fileio import InputListError, collect_audio_files, require_existing_files
    from kikimimi.inference.clap import CLAPError

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
    waves, names = [], []
    for path in files:
        if path in missing:
            continue
        try:
            waves.append(load_audio(path, model.sample_rate)[0])
            names.append(str(path))
        except AudioDecodeError as exc:
            print(f"error: {exc}", file=sys.stderr)
    if not waves:
        print("error: no readable audio file", file=sys.stderr)
        return 1
    try:
        probs, predicted = zero_shot_classify(model, waves, labels, args.template, sample_rate=model.sample_rate)
    except (CLAPError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    top = max(1, min(args.top, len(labels)))
    results = []
    for name, p, pred in zip(names, probs, predicted, strict=True):
        order = p.argsort()[::-1][:top]
        results.append({"file": name, "predicted": pred,
                        "scores": [{"label": labels[i], "score": float(p[i])} for i in order]})
    if args.json:
        print(json.dumps({"template": args.template, "labels": labels, "results": results}, indent=2))
    else:
        for r in results:
            print(r["file"])
            for s in r["scores"]:
                print(f"  {s['score']:.3f}  {s['label']}")
    return 0
