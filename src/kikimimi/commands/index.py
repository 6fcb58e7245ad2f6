"""`kikimimi index DIR -m MODEL -o INDEX`: build or update a text-searchable index of a folder's audio."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kikimimi.commands._options import add_clap_arguments

NAME = "index"
HELP = "Index a folder's audio in CLAP space for `kikimimi search` (incremental: only new/changed files)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="folder of audio files (searched recursively)")
    parser.add_argument("-m", "--model", required=True, help="M2D-CLAP checkpoint")
    parser.add_argument("-o", "--out", required=True, help="index folder (created or updated)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rebuild", action="store_true", help="discard the existing index and embed everything")
    add_clap_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.inference.clap import CLAPError, load_clap
    from kikimimi.inference.search import SearchIndexError, update_index

    model_id = str(Path(args.model).resolve())
    try:
        model = load_clap(model_id, text_encoder=args.text_encoder, device=args.device,
                          trust_pickle=args.trust_pickle)
        update = update_index(model, args.folder, args.out, model_id=model_id, batch_size=args.batch_size,
                              rebuild=args.rebuild)
    except (SearchIndexError, CheckpointError, CLAPError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key, reason in update.errors:
        print(f"error: '{key}': {reason}", file=sys.stderr)
    print(f"added {len(update.added)}, changed {len(update.changed)}, removed {len(update.removed)}, "
          f"unchanged {len(update.unchanged)}, unreadable {len(update.errors)} → {args.out}")
    return 0
