"""`kikimimi retrieval MODEL CAPTIONS.csv`: audio↔text retrieval metrics (R@k, mAP@10, ranks) of a CLAP model.

``CAPTIONS`` is a ``file_name,caption`` CSV (several rows per file), or with ``--dataset audiocaps|clotho``
the dataset root, converted on the fly (``--write-csv`` keeps the converted list).
"""

from __future__ import annotations

import argparse
import json
import sys

from kikimimi.commands._options import MODEL_NAME_HELP, add_clap_arguments

NAME = "retrieval"
HELP = "Audio-text retrieval metrics (both directions) of an M2D-CLAP checkpoint on captioned audio."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="M2D-CLAP checkpoint" + MODEL_NAME_HELP)
    parser.add_argument("captions", help="captions CSV (file_name,caption), or a dataset root with --dataset")
    parser.add_argument("--dataset", choices=("audiocaps", "clotho"), help="read an AudioCaps/Clotho tree")
    parser.add_argument("--split", help="dataset split (default: test for AudioCaps, evaluation for Clotho)")
    parser.add_argument("--audio-dir", help="dataset audio folder (default: searched under the root)")
    parser.add_argument("--audio-root", help="folder relative file_name values are resolved against")
    parser.add_argument("--write-csv", help="also write the captions list as file_name,caption CSV")
    parser.add_argument("-o", "--out", help="write the metrics JSON here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--batch-size", type=int, default=8)
    add_clap_arguments(parser)


def _all_unreadable(rows, sample_rate: int) -> list[tuple[str, str]] | None:
    """``(path, reason)`` for every audio file of ``rows`` when none of them decodes, else None."""
    from kikimimi.audio.decode import AudioDecodeError, load_audio
    from kikimimi.evaluation.caption_adapters import group_captions

    reasons = []
    for path in group_captions(rows)[0]:
        try:
            load_audio(path, sample_rate)
        except AudioDecodeError as exc:
            reasons.append((str(path), exc.reason))
        else:
            return None
    return reasons


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when at least one clip is scored, 1 when every audio file failed, 2 on a bad setting or
    model."""
    from kikimimi.commands._exit import check_model_paths, check_paths

    check_model_paths([args.model])  # a missing path: usage error (exit 2)
    check_paths([args.captions])
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.data.captions import CaptionError
    from kikimimi.evaluation.caption_adapters import (
        CAPTION_ADAPTERS,
        read_captions_csv,
        write_captions_csv,
    )
    from kikimimi.evaluation.retrieval import evaluate_retrieval, format_retrieval_table
    from kikimimi.fileio import atomic_write_json, require_existing_files
    from kikimimi.inference.clap import CLAPError, load_clap

    try:
        if args.dataset:
            split = args.split or {"audiocaps": "test", "clotho": "evaluation"}[args.dataset]
            captions = CAPTION_ADAPTERS[args.dataset](args.captions, split=split, audio_dir=args.audio_dir)
            if captions.missing:
                print(f"note: {len(captions.missing)} clips of the metadata have no audio file and are skipped",
                      file=sys.stderr)
        else:
            captions = read_captions_csv(args.captions, audio_root=args.audio_root)
        if not captions.rows:
            print("error: no captioned audio found", file=sys.stderr)
            return 2
        require_existing_files([p for p, _ in captions.rows], [args.captions])  # none exists: fail fast
        if args.write_csv:
            write_captions_csv(captions, args.write_csv)
        model = load_clap(args.model, text_encoder=args.text_encoder, device=args.device, precision=args.precision,
                          trust_pickle=args.trust_pickle, accept_licence=args.accept_licence)
        try:
            metrics = evaluate_retrieval(model, captions.rows, batch_size=args.batch_size)
        except ValueError:
            unreadable = _all_unreadable(captions.rows, int(model.sample_rate))
            if unreadable is None:
                raise
            for path, reason in unreadable:
                print(f"error: '{path}': {reason}", file=sys.stderr)
            print("error: no captioned audio file could be read", file=sys.stderr)
            return 1
    except (CaptionError, CheckpointError, CLAPError, ValueError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, reason in metrics["errors"]:
        print(f"error: '{path}': {reason}", file=sys.stderr)
    if args.out:
        atomic_write_json(args.out, metrics)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{metrics['n_audio']} clips, {metrics['n_captions']} captions")
        print(format_retrieval_table(metrics))
    return 0
