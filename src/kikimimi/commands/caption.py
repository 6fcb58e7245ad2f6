"""`kikimimi caption [MODEL] AUDIO…`: captions for audio files, folders or CSV lists (long files per window).

MODEL (or ``-m MODEL``) is a captioner folder written by `kikimimi train-captioner` or a registered name; left out,
kikimimi's packaged ``open-captioner-tiny`` is used (one line on stderr says so).

Prints ``file<TAB>caption`` (with ``[start–end s]`` per window for long files), or JSON with ``--json``;
``--csv OUT`` also writes ``file_name,caption`` (the prediction format of `kikimimi eval-captions`). A file
that cannot be read is reported and the others are captioned.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

from kikimimi.commands._options import add_generation_arguments

NAME = "caption"
HELP = "Caption audio with a trained captioner (greedy or beam search; long files per window)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="[MODEL] AUDIO",
                        help="the captioner (a folder written by kikimimi train-captioner, or a model name; leave it "
                             "out, or give it with -m, and kikimimi's packaged open-captioner-tiny is used), then "
                             "audio files, folders (recursive) or CSV lists")
    parser.add_argument("-m", "--model", help="the captioner, instead of the first positional argument")
    parser.set_defaults(_more_positionals="inputs")  # `caption MODEL --beam 1 AUDIO…` (kikimimi.cli)
    add_generation_arguments(parser)
    parser.add_argument("--csv", help="also write file_name,caption to this CSV")


def split_captioner_and_audio(model: str | None, inputs: list[str]) -> tuple[str, list[str]]:
    """``(captioner, audio)`` from ``-m`` and the positional arguments: with ``-m`` every positional is audio; else
    the first positional is the captioner when it names one; else kikimimi's packaged captioner (announced on
    stderr once the audio inputs passed their checks).

    Raises:
        UsageError: a missing audio path or only folders without audio, a captioner with no audio after it, or no
            captioner at all (none given, none packaged).
    """
    from kikimimi.commands._exit import UsageError, check_inputs
    from kikimimi.commands._options import model_or_packaged, names_captioner

    if model:
        check_inputs(inputs)
        return model, inputs
    if names_captioner(inputs[0]):
        if len(inputs) == 1:
            raise UsageError(f"give the audio to caption after the captioner '{inputs[0]}'")
        check_inputs(inputs[1:])
        return inputs[0], inputs[1:]
    check_inputs(inputs)
    name = model_or_packaged(None, "captioner")
    if name is None:
        raise UsageError("no captioner given and kikimimi's packaged open-captioner-tiny is not in this installation: "
                         "give one with -m (a folder written by kikimimi train-captioner)")
    return name, inputs


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import check_model_paths

    args.model, args.audio = split_captioner_and_audio(args.model, args.inputs)  # a missing path: usage error (2)
    check_model_paths([args.model])  # a name is left to the registry
    from kikimimi.fileio import atomic_write_text
    from kikimimi.inference.captioner import caption_files, load_captioner

    captioner = load_captioner(args.model, audio_model=args.audio_model, device=args.device)
    results, errors = caption_files(captioner, args.audio, window_s=args.window_s, beam_size=args.beam,
                                    max_new_tokens=args.max_tokens, progress=not args.json and sys.stderr.isatty())
    for e in errors:
        print(f"error: {e['file']}: {e['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps({"results": [r.to_dict() for r in results], "errors": errors}, indent=2))
    else:
        for r in results:
            if len(r.segments) == 1:
                print(f"{r.file}\t{r.caption}")
            else:
                for seg in r.segments:
                    print(f"{r.file}\t[{seg['start_s']:.1f}–{seg['end_s']:.1f} s]\t{seg['caption']}")
    if args.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file_name", "caption"])
        w.writerows((r.file, r.caption) for r in results)
        atomic_write_text(args.csv, buf.getvalue())
    if errors and not results:
        print("error: no file could be captioned", file=sys.stderr)
        return 1
    return 0
