"""`kikimimi describe FILE…`: a timeline of a recording (at most ``--parts`` parts: "0:00–4:10 speech; 4:10–5:02
drums …") and a short paragraph, from its evidence (:func:`kikimimi.inference.grounded.describe`); audio with
``--clap``, or the JSON of `kikimimi evidence`. Text, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json

from kikimimi.commands._evidence import add_evidence_arguments, evidence_or_report

NAME = "describe"
HELP = "Describe recordings of any length: a timeline and a short paragraph from their evidence (--clap, or JSON)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="audio files, folders or CSV lists (with --clap), or evidence JSON")
    parser.add_argument("--parts", type=int, default=12, help="most parts in the timeline (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_evidence_arguments(parser, clap_required=False)


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when at least one file is described, 1 when every file failed, 2 on a bad input or model."""
    from pathlib import Path

    from kikimimi.commands._exit import UsageError, batch_status, check_model_paths, check_paths

    check_paths(args.files)
    if args.parts < 1:
        raise UsageError(f"--parts must be at least 1, got {args.parts}")
    jsons = [f for f in args.files if f.lower().endswith(".json") and Path(f).is_file()]
    rest = [f for f in args.files if f not in jsons]
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.fileio import InputListError, collect_audio_files
    from kikimimi.inference.evidence import Evidence, EvidenceError
    from kikimimi.inference.grounded import describe
    from kikimimi.models.text import TextEncoderError

    try:
        audio = collect_audio_files(rest) if rest else []
        items = [Evidence.load(f) for f in jsons]
    except (InputListError, EvidenceError) as exc:
        raise UsageError(str(exc)) from exc
    if rest and not audio:
        raise UsageError(f"no audio files found in {', '.join(rest)}")
    sources = None
    if audio:
        if not args.clap:
            raise UsageError("describing audio needs a CLAP model: --clap MODEL (or give the evidence JSON of "
                             "kikimimi evidence)")
        check_model_paths([args.clap, args.captioner])
        from kikimimi.commands._evidence import EvidenceSources

        try:
            sources = EvidenceSources(args)
        except (CheckpointError, TextEncoderError, ValueError, OSError) as exc:
            raise UsageError(str(exc)) from exc
    results, failed = [], 0
    for item in [*items, *audio]:
        item = evidence_or_report(sources, item, args.json)
        if item is None:
            failed += 1
            continue
        d = describe(item, args.parts)
        results.append(d.to_dict())
        if not args.json:
            print(d.file)
            print("  " + d.text().replace("\n", "\n  "))
    if args.json:
        print(json.dumps({"results": results}, indent=2, ensure_ascii=False))
    return batch_status(len(results), failed)
