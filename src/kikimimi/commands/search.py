"""`kikimimi search INDEX "a dog barking" [--top 10]`: segments of a search index ranked for a text query."""

from __future__ import annotations

import argparse
import json
import sys

from kikimimi.commands._options import add_clap_arguments

NAME = "search"
HELP = "Search an audio index (built by `kikimimi index`) with a text query."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", help="index folder written by `kikimimi index`")
    parser.add_argument("query", help="text query, e.g. 'a dog barking'")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("-m", "--model", help="CLAP checkpoint (default: the one that built the index)")
    parser.add_argument("--json", action="store_true")
    add_clap_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.inference.clap import CLAPError, load_clap
    from kikimimi.inference.search import SearchIndex, SearchIndexError, search

    try:
        index = SearchIndex.load(args.index)
        model = load_clap(args.model or index.model, text_encoder=args.text_encoder, device=args.device,
                          precision=args.precision, trust_pickle=args.trust_pickle, accept_licence=args.accept_licence)
        hits = search(index, args.query, model, top=args.top)
    except (SearchIndexError, CheckpointError, CLAPError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"query": args.query, "results": [h.__dict__ for h in hits]}, indent=2))
    else:
        for rank, h in enumerate(hits, start=1):
            where = "" if h.end_s is None else f"  [{h.start_s:.1f}–{h.end_s:.1f} s]"
            print(f"{rank:3d}  {h.score:.4f}  {h.key}{where}")
    return 0
