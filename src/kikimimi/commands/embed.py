"""`kikimimi embed INPUTS… -m CHECKPOINT -o OUT`: clip or frame embeddings for many files."""

from __future__ import annotations

import argparse
import sys

from kikimimi.commands._options import MODEL_NAME_HELP, add_accept_licence_argument, add_precision_argument

NAME = "embed"
HELP = "Embed audio files (files, folders, CSV lists) with a checkpoint; resumable and shardable."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files, folders or CSV lists")
    parser.add_argument("-m", "--model", required=True,
                        help="official weight file or kikimimi folder" + MODEL_NAME_HELP)
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--level", choices=("clip", "frame"), default="clip",
                        help="clip: one vector per file (.npy); frame: per-frame vectors + timestamps (.npz) "
                        "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute every output, also when OUT holds embeddings of another model or settings")
    parser.add_argument("--norm-stats", nargs=2, type=float, metavar=("MEAN", "STD"),
                        help="log-mel statistics (needed for BYOL-A files)")
    parser.add_argument("--trust-pickle", action="store_true", help="allow arbitrary pickles (trusted files only)")
    parser.add_argument("--no-progress", action="store_true")
    add_accept_licence_argument(parser)
    add_precision_argument(parser)


def run(args: argparse.Namespace) -> int:
    from kikimimi.commands._exit import check_inputs

    check_inputs(args.inputs)  # a missing path or no audio file: a usage error (exit 2) before OUT is created
    import kikimimi
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.commands._exit import UsageError
    from kikimimi.fileio import OutputInUseError, refuse_if_in_use
    from kikimimi.inference.jobs import run_embed_job, shard_of_environment

    if shard_of_environment()[1] == 1:  # the ranks of a torchrun job share the folder
        try:
            refuse_if_in_use(args.out)  # at once, not after loading the model
        except OutputInUseError as exc:
            raise UsageError(str(exc)) from None
    try:
        model = kikimimi.load(args.model, device=args.device, norm_stats=args.norm_stats,
                              trust_pickle=args.trust_pickle, accept_licence=args.accept_licence,
                              precision=args.precision)
    except (CheckpointError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank, world = shard_of_environment()
    from kikimimi.fileio import OutputInUseError
    from kikimimi.inference.jobs import EmbedOutputMismatch

    try:
        result = run_embed_job(model, args.inputs, args.out, level=args.level, batch_size=args.batch_size,
                               rank=rank, world_size=world, progress=not args.no_progress, overwrite=args.overwrite,
                               model_arg=args.model)
    except (EmbedOutputMismatch, OutputInUseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from kikimimi.fileio import SUMMARY_NAMES

    for source, reason in result.failed[:SUMMARY_NAMES]:
        print(f"error: '{source}': {reason}", file=sys.stderr)
    if len(result.failed) > SUMMARY_NAMES:
        print(f"… and {len(result.failed) - SUMMARY_NAMES:,} more failures, all listed in "
              f"{result.out_dir / ('errors.csv' if world == 1 else f'errors.rank{rank}.csv')}", file=sys.stderr)
    print(f"embedded {result.embedded}, already done {result.skipped}, failed {len(result.failed)} "
          f"of {result.found} files → {result.out_dir}")
    return 0 if result.embedded + result.skipped > 0 or result.found == 0 else 1
