"""`kikimimi caption MODEL AUDIO…`: captions for audio files, folders or CSV lists (long files per window).

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
    add_generation_arguments(parser)
    parser.add_argument("audio", nargs="+", help="audio files, folders (recursive) or CSV lists")
    parser.add_argument("--csv", help="also write file_name,caption to this CSV")


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import check_paths

    check_paths([args.model, *args.audio])  # a missing path: usage error (exit 2)
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
