"""`kikimimi search INDEX "a dog barking" [--top 10] [--segments]`: the files of a search index ranked for a
text query (each file's best segment and how many of its segments matched), or the flat segment list.

Several queries in one call load the model once: ``--queries FILE`` (one query per line) or ``-`` as QUERY
(one per line on stdin); blank lines are skipped, an empty or blank QUERY is refused (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys

from kikimimi.commands._exit import DONE, UsageError, check_paths
from kikimimi.commands._options import add_clap_arguments, index_precision

NAME = "search"
HELP = "Search an audio index (built by `kikimimi index`) with a text query; results per file by default."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", help="index folder written by `kikimimi index`, or the Milvus database of "
                        "`kikimimi index --db URI` (a path ending in .db, or http://host:19530)")
    parser.add_argument("query", nargs="?",
                        help="text query, e.g. 'a dog barking'; '-' reads one query per line from stdin")
    parser.add_argument("--queries", metavar="FILE", help="a text file with one query per line (blank lines skipped)")
    parser.add_argument("--top", type=int, default=10, help="results per query: files, or segments with "
                        "--segments (default: 10)")
    parser.add_argument("--segments", action="store_true",
                        help="list the best segments (a long file may fill the list) instead of the best files")
    parser.add_argument("-m", "--model", help="CLAP checkpoint (default: the one that built the index)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON: one object per query (indented for a single query)")
    db = parser.add_argument_group("Milvus database indexes (`kikimimi index --db URI`)")
    db.add_argument("--collection", default="kikimimi_segments", help="collection holding the index")
    db.add_argument("--path-prefix", help="only files whose key (path relative to the indexed folder) starts with "
                    "this, or whose path does when it is absolute")
    db.add_argument("--min-duration-s", type=float, help="only files at least this long (seconds)")
    db.add_argument("--max-duration-s", type=float, help="only files at most this long (seconds)")
    db.add_argument("--tag", action="append", default=[], help="only files with this tag (repeat: all of them)")
    add_clap_arguments(parser)


def _queries(args: argparse.Namespace) -> list[str]:
    """The queries asked for, stripped; raises :class:`UsageError` for none, an empty one or both sources."""
    if args.queries is not None and args.query is not None:
        raise UsageError("give a QUERY or --queries FILE, not both")
    if args.queries is not None:
        check_paths([args.queries], "file")
        with open(args.queries, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        source = f"'{args.queries}'"
    elif args.query == "-":
        lines, source = [line.strip() for line in sys.stdin], "stdin"
    elif args.query is None:
        raise UsageError("no query: give a QUERY, '-' (queries on stdin) or --queries FILE")
    else:
        if not args.query.strip():
            raise UsageError("empty search query: give some words, e.g. 'a dog barking'")
        return [args.query.strip()]
    queries = [q for q in lines if q]
    if not queries:
        raise UsageError(f"no queries in {source} (one query per line)")
    return queries


def _print_text(query: str, hits, segments: bool, several: bool) -> None:
    if several:
        print(f"# {query}")
    for rank, h in enumerate(hits, start=1):
        where = "" if h.end_s is None else f"  [{h.start_s:.1f}–{h.end_s:.1f} s]"
        if segments:
            print(f"{rank:3d}  {h.score:.4f}  {h.key}{where}")
        else:
            of = "" if h.segments is None else f" of {h.segments}"
            print(f"{rank:3d}  {h.score:.4f}  {h.key}{where}  ({h.matched}{of} segments matched)")


def run(args: argparse.Namespace) -> int:
    if args.top <= 0:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    from kikimimi.inference.milvus_index import is_database_uri

    database = is_database_uri(args.index)
    filters = args.path_prefix or args.tag or args.min_duration_s is not None or args.max_duration_s is not None
    if filters and not database:
        raise UsageError("--path-prefix, --min/max-duration-s and --tag filter a Milvus database index "
                         "(`kikimimi index --db URI`)")
    if not database:
        check_paths([args.index], "index folder")
    queries = _queries(args)

    from kikimimi.checkpoints import CheckpointError
    from kikimimi.inference.clap import CLAPError, load_clap
    from kikimimi.inference.search import SearchIndex, SearchIndexError, search_many

    try:
        if database:
            results = _search_db(args, queries)
        else:
            index = SearchIndex.load(args.index)
            model = load_clap(args.model or index.model, text_encoder=args.text_encoder, device=args.device,
                              precision=index_precision(args, args.index), trust_pickle=args.trust_pickle,
                              accept_licence=args.accept_licence)
            results = search_many(index, queries, model, top=args.top, segments=args.segments,
                                  model_id=args.model or index.model)
    except (SearchIndexError, CheckpointError, CLAPError, ImportError, OSError) as exc:
        raise UsageError(str(exc)) from exc
    several = len(queries) > 1
    for query, hits in zip(queries, results, strict=True):
        if args.json:
            rows = [dict(h.__dict__) for h in hits]
            doc = {"query": query, "per": "segment" if args.segments else "file", "results": rows}
            print(json.dumps(doc) if several else json.dumps(doc, indent=2))
        else:
            _print_text(query, hits, args.segments, several)
    return DONE


def _search_db(args: argparse.Namespace, queries: list[str]) -> list:
    """The results of ``queries`` in the Milvus database ``args.index`` (model: ``-m`` or the one that built it)."""
    import os

    from kikimimi.inference.clap import load_clap
    from kikimimi.inference.milvus_index import MilvusIndex, MilvusSettings, SearchFilter, search

    where = SearchFilter(args.path_prefix, args.min_duration_s, args.max_duration_s, tuple(args.tag))
    settings = MilvusSettings(collection=args.collection, token=os.environ.get("KIKIMIMI_MILVUS_TOKEN"))
    with MilvusIndex.open(args.index, settings) as index:
        model = load_clap(args.model or index.model, text_encoder=args.text_encoder, device=args.device,
                          precision=args.precision or (index.model_identity or {}).get("precision"),
                          trust_pickle=args.trust_pickle, accept_licence=args.accept_licence)
        return [search(index, q, model, top=args.top, segments=args.segments, model_id=args.model or index.model,
                       where=where) for q in queries]
