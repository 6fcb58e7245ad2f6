"""`kikimimi zeroshot MODEL AUDIO… --labels "dog barking,rain,…"`: zero-shot classification with a CLAP model."""

from __future__ import annotations

import argparse
import json
import sys

from kikimimi.commands._options import (
    MODEL_NAME_HELP,
    add_clap_arguments,
    add_results_arguments,
    model_or_packaged,
    open_results_log,
    print_missing,
)

NAME = "zeroshot"
HELP = "Zero-shot classify audio files against free-text labels with an M2D-CLAP checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="[MODEL] AUDIO",
                        help="the M2D-CLAP model (official 2024/2025 file or kikimimi folder" + MODEL_NAME_HELP +
                        "; leave it out, or give it with -m, and kikimimi's packaged open-clap-tiny is used), then "
                        "audio files, folders or CSV lists")
    parser.add_argument("-m", "--model", help="the M2D-CLAP model, instead of the first positional argument")
    parser.set_defaults(_more_positionals="inputs")  # `zeroshot MODEL --labels x AUDIO…` (kikimimi.cli)
    parser.add_argument("--labels", required=True, help="comma-separated class names, e.g. 'dog barking,rain'")
    parser.add_argument("--template", default="{} can be heard", help="caption template ({} = class name)")
    parser.add_argument("--top", type=int, default=5, help="labels shown per file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--batch-files", type=int, default=64, metavar="N",
                        help="files decoded and classified together (bounds memory; default: %(default)s)")
    add_results_arguments(parser)
    add_clap_arguments(parser)


def split_model_and_audio(model: str | None, inputs: list[str]) -> tuple[str | None, list[str]]:
    """``(model, audio)`` from ``-m`` and the positional arguments: with ``-m`` every positional is audio; else the
    first positional is the model when more follow and it names one (a registered name, a kikimimi folder with a
    ``config.json``, or a weight file); else the packaged open CLAP (``None`` when it is not installed)."""
    if model:
        return model, inputs
    if len(inputs) > 1 and _names_a_model(inputs[0]):
        return inputs[0], inputs[1:]
    return model_or_packaged(None, "clap"), inputs


def _names_a_model(value: str) -> bool:
    from pathlib import Path

    from kikimimi.checkpoints.registry import find_entry

    path = Path(value)
    if path.is_dir():
        return (path / "config.json").is_file()
    if path.suffix.lower() in (".pth", ".pt", ".ckpt", ".safetensors", ".bin"):
        return True
    return find_entry(value) is not None


def _load_clap_model(args: argparse.Namespace):
    from kikimimi.inference.clap import load_clap

    return load_clap(args.model, text_encoder=args.text_encoder, device=args.device, precision=args.precision,
                     trust_pickle=args.trust_pickle, accept_licence=args.accept_licence)


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when at least one file is classified, 1 when every file failed, 2 on a bad setting, input
    list or model."""
    from kikimimi.commands._exit import UsageError, check_inputs

    args.model, args.audio = split_model_and_audio(args.model, args.inputs)
    if not args.model:
        raise UsageError("no model: pass one (-m MODEL, or MODEL before the audio); kikimimi's packaged "
                         "open-clap-tiny is not installed")
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
