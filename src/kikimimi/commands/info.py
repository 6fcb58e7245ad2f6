"""`kikimimi info FILE...`: one line of header facts per audio file; bad files reported on stderr."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "info"
HELP = "Show duration, sample rate, channels and format of audio files (folders and CSV lists expand)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="FILE",
                        help="audio files, folders (searched recursively) or CSV lists")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per file (JSON lines) instead of text")
    parser.add_argument("--verify", action="store_true",
                        help="decode every file completely to also catch damaged sample data")


def run(args: argparse.Namespace) -> int:
    """Exit status (kikimimi.commands._exit): 0 when at least one file could be read (the others listed on
    stderr), 1 when none could, 2 for a missing path or inputs without audio files."""
    from kikimimi.commands._exit import batch_status, collect_inputs

    files = collect_inputs(args.inputs)
    from kikimimi.audio.decode import AudioDecodeError, audio_info

    failed = 0
    for path in files:
        try:
            info = audio_info(path, verify=args.verify)
        except AudioDecodeError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"path": str(path), "error": exc.reason, "kind": exc.kind}))
            continue
        if args.json:
            print(json.dumps(info.to_dict()))
        else:
            print(f"{info.path}\t{info.duration_s:.3f} s\t{info.sample_rate} Hz\t{info.channels} ch\t"
                  f"{info.format}/{info.subtype}")
    return batch_status(len(files) - failed, failed)
