"""`kikimimi evidence FILE… --clap MODEL -o OUT`: per segment, the zero-shot tags, loudness, silence (and captions)
of recordings of any length, with file-level summaries, saved as JSON (:mod:`kikimimi.inference.evidence`).

``-o`` is a ``.json`` file for one input, else a folder that receives ``NAME.evidence.json`` per input. The
evidence is what `kikimimi ask --evidence-in` answers questions from.
"""

from __future__ import annotations

import argparse
import sys

from kikimimi.commands._evidence import add_evidence_arguments

NAME = "evidence"
HELP = ("Evidence about recordings of any length (streamed): per-segment CLAP tags, loudness, silence, captions; "
        "summaries; JSON.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="audio files, folders (searched recursively) or CSV lists")
    parser.add_argument("-o", "--out", required=True, metavar="OUT",
                        help="a .json file (one input) or a folder (NAME.evidence.json per input)")
    parser.add_argument("--quiet", action="store_true", help="print only the written paths")
    add_evidence_arguments(parser, clap_required=True)


def _out_paths(files, out: str):
    """The JSON path of each input file (unique names in a folder, or ``out`` itself for one .json)."""
    from pathlib import Path

    from kikimimi.commands._exit import UsageError

    target = Path(out)
    if target.suffix.lower() == ".json":
        if len(files) != 1:
            raise UsageError(f"-o {out}: a .json file holds one input's evidence; give a folder for {len(files)} "
                             "files")
        return [target]
    paths, used = [], set()
    for f in files:
        name, n = f"{Path(f).stem}.evidence.json", 1
        while name in used:
            n += 1
            name = f"{Path(f).stem}-{n}.evidence.json"
        used.add(name)
        paths.append(target / name)
    return paths


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when at least one file's evidence is written, 1 when every file failed, 2 on a bad setting,
    input or model."""
    from kikimimi.commands._exit import UsageError, batch_status, check_model_paths, collect_inputs

    files = collect_inputs(args.files)
    check_model_paths([args.clap, args.captioner])
    outs = _out_paths(files, args.out)
    from kikimimi.audio.decode import AudioDecodeError
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.commands._evidence import EvidenceSources
    from kikimimi.inference.grounded import evidence_text
    from kikimimi.models.text import TextEncoderError

    try:
        sources = EvidenceSources(args)
    except (CheckpointError, TextEncoderError, ValueError, OSError) as exc:  # CLAPError, CaptionerError: ValueError
        raise UsageError(str(exc)) from exc
    done = failed = 0
    for path, out in zip(files, outs, strict=True):
        try:
            ev = sources.evidence(path)
        except (AudioDecodeError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        ev.save(out)
        done += 1
        print(out)
        if not args.quiet:
            print("  " + evidence_text(ev, max_lines=12, max_tags=5).replace("\n", "\n  "))
    return batch_status(done, failed)
