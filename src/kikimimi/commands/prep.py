"""`kikimimi prep INPUTS... -o CACHE`: convert audio into a cache of log-mel .npy files (resumable)."""

from __future__ import annotations

import argparse
import os
import sys

NAME = "prep"
HELP = ("Convert audio files, folders or CSV lists into log-mel .npy files plus manifest.csv "
        "(parallel, resumable; bad files go to errors.csv).")


#: the front-end presets (``kikimimi.features.frontend.PRESETS``; named here so that --help imports no torch;
#: tests/commands/test_cli_speed.py checks that the two agree)
PRESET_NAMES = ("byola", "m2d-16k", "m2d-32k")


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="audio files, folders (searched recursively) or CSV lists")
    parser.add_argument("-o", "--output", required=True, metavar="CACHE",
                        help="cache folder for the .npy files, manifest.csv, errors.csv and prep.json")
    parser.add_argument("--preset", default="m2d-16k", choices=PRESET_NAMES,
                        help="front-end preset (default: m2d-16k)")
    parser.add_argument("--workers", type=int, default=_default_workers(),
                        help="parallel worker processes, one torch thread each (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                        help="storage type of the log-mel arrays (default: float32)")
    parser.add_argument("--limit-s", type=float, default=None, metavar="SECONDS",
                        help="convert only the first SECONDS of each file")
    parser.add_argument("--strict", action="store_true",
                        help="exit with an error status if any file failed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute every file, also when CACHE holds other settings or another job's outputs")


def run(args: argparse.Namespace) -> int:
    """Exit status (kikimimi.commands._exit): 0 when at least one file is in the cache (failures listed), 1 when
    every file failed, 2 for a missing input path, inputs without audio files or a bad setting (nothing created)."""
    from kikimimi.commands._exit import check_inputs

    check_inputs(args.inputs)  # a missing path or no audio file: a usage error before CACHE is created
    from kikimimi.features.prep_cache import PrepError, prep_cache
    from kikimimi.fileio import InputListError

    try:
        result = prep_cache(args.inputs, args.output, args.preset, workers=args.workers, dtype=args.dtype,
                            limit_s=args.limit_s, progress=not args.quiet, overwrite=args.overwrite)
    except (PrepError, InputListError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"{result.found} input files: {result.converted} converted, {result.skipped} already "
              f"cached, {len(result.failed)} failed; manifest: {result.manifest_path} "
              f"({result.manifest_rows} rows)", file=sys.stderr)
    if result.failed:
        for source, error in result.failed[:5]:
            print(f"failed: {source}: {error}", file=sys.stderr)
        if len(result.failed) > 5:
            print(f"... {len(result.failed) - 5} more", file=sys.stderr)
        print(f"all failures: {result.errors_path}", file=sys.stderr)
    if result.manifest_rows == 0:
        print("error: nothing could be converted", file=sys.stderr)
        return 1
    if args.strict and result.failed:
        return 1
    return 0
