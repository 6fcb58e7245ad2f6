"""`kikimimi embed INPUTS… -m CHECKPOINT -o OUT`: clip or frame embeddings for many files."""

from __future__ import annotations

import argparse
import sys

NAME = "embed"
HELP = "Embed audio files (files, folders, CSV lists) with a checkpoint; resumable and shardable."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files, folders or CSV lists")
    parser.add_argument("-m", "--model", required=True, help="official weight file or kikimimi folder")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--level", choices=("clip", "frame"), default="clip")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--norm-stats", nargs=2, type=float, metavar=("MEAN", "STD"),
                        help="log-mel statistics (needed for BYOL-A files)")
    parser.add_argument("--trust-pickle", action="store_true", help="allow arbitrary pickles (trusted files only)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import kikimimi
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.inference.jobs import run_embed_job, shard_of_environment

    try:
        model = kikimimi.load(args.model, device=args.device, norm_stats=args.norm_stats,
                              trust_pickle=args.trust_pickle)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank, world = shard_of_environment()
    result = run_embed_job(model, args.inputs, args.out, level=args.level, batch_size=args.batch_size,
                           rank=rank, world_size=world, progress=not args.no_progress)
    for source, reason in result.failed:
        print(f"error: '{source}': {reason}", file=sys.stderr)
    print(f"embedded {result.embedded}, already done {result.skipped}, failed {len(result.failed)} "
          f"of {result.found} files → {result.out_dir}")
    return 0 if result.embedded + result.skipped > 0 or result.found == 0 else 1
