"""`kikimimi data open-corpus OUT`: build the open corpus (Debian package audio + kikimimi's own sounds)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "data"
HELP = "Build data sets: `data open-corpus OUT` gathers every openly licensed recording installable through " \
       "Debian's packages into 16 kHz segments with a manifest, licences and captions."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="WHAT", required=True)
    p = sub.add_parser("open-corpus", help="build (or resume) the open corpus in OUT",
                       description="Build (or resume) the open corpus: apt-get download + dpkg-deb -x of the "
                                   "audio packages (nothing installed but the renderers fluidsynth and timidity), "
                                   "16 kHz mono segments, manifest.jsonl, corpus.csv, captions.csv, build.json. "
                                   "The first run's and the open suite's test clips are held out and checked.")
    p.add_argument("out", metavar="OUT", nargs="?", help="output folder")
    p.add_argument("--licences", choices=("all", "permissive"), default="all",
                   help="'permissive' leaves out GPL, LGPL, GFDL, CC BY-SA and unknown licences (default: all)")
    p.add_argument("--cache", type=Path, default=None,
                   help="package and render cache (default: $KIKIMIMI_HOME/open-corpus)")
    p.add_argument("--deb-dir", type=Path, default=None, help="folder with already downloaded .deb files")
    p.add_argument("--only", default=None, metavar="NAMES",
                   help="comma-separated source names (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the sources and exit")
    p.add_argument("--no-network", action="store_true", help="never call apt-get (fail when a package is missing)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out task splits (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    from kikimimi.data.open_corpus import SOURCES, build_open_corpus, format_table

    if args.list:
        for spec in SOURCES:
            print(f"{spec.name:<36} {spec.package or '(generated)'}")
        return 0
    if not args.out:
        print("kikimimi data: error: open-corpus needs OUT, the output folder", file=sys.stderr)
        return 2
    if args.cache is None:
        from kikimimi.checkpoints.home import cache_root  # (loads torch through kikimimi.checkpoints)

        args.cache = cache_root() / "open-corpus"
    cache = args.cache
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    corpus = build_open_corpus(args.out, licences=args.licences, cache=cache, only=only,
                               allow_network=not args.no_network, deb_dir=args.deb_dir, seed=args.seed, log=log)
    print(format_table(corpus.table))
    print(f"\n{corpus.hours:.2f} h after de-duplication ({corpus.files} files, {corpus.segments} segments) in "
          f"{corpus.root}; skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(corpus.skipped.items())))
    print(f"leak check: none of {corpus.test_clips_checked} test clips of the first run and the open suite is in it")
    return 0
