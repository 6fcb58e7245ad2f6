"""`kikimimi ask MODEL AUDIO… "question"`: the captioner's language model answers a question about each clip
(the audio prefix and the question in the model's chat format)."""

from __future__ import annotations

import argparse
import json
import sys

from kikimimi.commands._options import add_generation_arguments

NAME = "ask"
HELP = "Ask a trained captioner a question about audio clips."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_generation_arguments(parser)
    parser.add_argument("audio", nargs="+", help="audio files, folders or CSV lists")
    parser.add_argument("question", help="the question (quote it)")


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import check_paths

    check_paths([args.model, *args.audio])  # a missing path: usage error (exit 2)
    from kikimimi.inference.captioner import caption_files, load_captioner

    if not args.question.strip():
        print("error: the question is empty", file=sys.stderr)
        return 2
    captioner = load_captioner(args.model, audio_model=args.audio_model, device=args.device)
    results, errors = caption_files(captioner, args.audio, question=args.question, window_s=args.window_s,
                                    beam_size=args.beam, max_new_tokens=args.max_tokens)
    for e in errors:
        print(f"error: {e['file']}: {e['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps({"question": args.question, "results": [r.to_dict() for r in results], "errors": errors},
                         indent=2))
    else:
        for r in results:
            print(f"{r.file}\t{r.caption}")
    return 1 if errors and not results else 0
