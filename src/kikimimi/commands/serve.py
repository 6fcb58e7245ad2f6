"""`kikimimi serve FOLDER_OR_INDEX -m MODEL`: a local sound-search and tagging service with a web page;
`kikimimi serve --db URI [FOLDER]`: the same service on a Milvus database index (`kikimimi index --db URI`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kikimimi.commands._options import (
    MODEL_NAME_HELP,
    add_clap_arguments,
    index_precision,
    model_or_packaged,
    resolve_model,
)

NAME = "serve"
HELP = ("Serve a folder of sounds (or an index) on a local web page: search by text or by example, zero-shot "
        "tags, players that start at the matching second.")

TOKEN_ENV = "KIKIMIMI_SERVE_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="FOLDER_OR_INDEX", nargs="?",
                        help="a folder of audio files (indexed first, incrementally) or an index folder written by "
                             "`kikimimi index`; with --db: the folder the database indexes (optional)")
    parser.add_argument("--db", metavar="URI", help="serve the index kept in a Milvus database (`kikimimi index --db "
                        "URI`): a path ending in .db (Milvus Lite) or http://host:19530 (a Milvus server; its "
                        'credentials from $KIKIMIMI_MILVUS_TOKEN); needs pip install "kikimimi[milvus]"')
    parser.add_argument("--collection", default="kikimimi_segments",
                        help="the Milvus collection holding the index (with --db; default: kikimimi_segments)")
    parser.add_argument("-m", "--model", help="M2D-CLAP checkpoint" + MODEL_NAME_HELP +
                        " (default for an index: the model that built it; for a folder: kikimimi's packaged "
                        "open-clap-tiny)")
    parser.add_argument("--index", metavar="DIR",
                        help="where the index of a FOLDER lives (default: FOLDER/.kikimimi-index)")
    parser.add_argument("--no-update", action="store_true",
                        help="serve the index as it is (no scan of the folder at start)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; any other needs --token)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on, 1-65535 (default 8000)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"shared secret every request must carry, at least 16 characters (default: ${TOKEN_ENV})")
    parser.add_argument("--labels", metavar="FILE",
                        help="default zero-shot labels, one a line (default: the list shipped with kikimimi)")
    parser.add_argument("--captioner", metavar="PATH",
                        help="a captioner (kikimimi.inference.captioner.load_captioner) for the caption endpoints")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted (default 20)")
    parser.add_argument("--max-upload-s", type=float, default=120.0,
                        help="longest uploaded clip accepted, per its header (default 120)")
    parser.add_argument("--max-describe-s", type=float, default=600.0,
                        help="longest indexed file the describe panel describes, per its header (default 600)")
    parser.add_argument("--max-query-chars", type=int, default=300)
    parser.add_argument("--max-labels", type=int, default=64, help="zero-shot labels per request (default 64)")
    parser.add_argument("--header-timeout-s", type=float, default=10.0,
                        help="a connection must send its request headers within this (default 10)")
    parser.add_argument("--body-timeout-s", type=float, default=60.0,
                        help="a request body must arrive whole within this (default 60)")
    parser.add_argument("--max-connections-per-client", type=int, default=32,
                        help="open connections per client address; idle ones are closed first (default 32)")
    parser.add_argument("--workers", type=int, default=1, help="embedding threads (default 1)")
    parser.add_argument("--queue-limit", type=int, default=8,
                        help="embedding jobs that may wait; more get 503 + Retry-After (default 8)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--window-s", type=float, default=10.0, metavar="SECONDS",
                        help="files longer than this are indexed per window (default 10; 0 = whole files)")
    parser.add_argument("--hop-s", type=float, default=5.0, metavar="SECONDS", help="window step (default 5)")
    parser.add_argument("--vector-index", choices=("auto", "numpy", "flat", "hnsw", "hnsw_sq", "ivf"), default="auto",
                        help="vector search kind (auto: exact below --exact-below segments, faiss HNSW above)")
    parser.add_argument("--exact-below", type=int, default=100_000, metavar="ROWS")
    add_clap_arguments(parser)


def _load_captioner(path: str):
    from kikimimi.inference.captioner import load_captioner

    return load_captioner(path)


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 after a clean stop, 2 on a bad setting, model, index or address."""
    from kikimimi.commands._exit import UsageError, check_inputs, check_paths

    if args.target is None and not args.db:
        raise UsageError("serve needs a FOLDER_OR_INDEX, or --db URI")
    if args.target is not None:
        check_paths([args.target], "folder or index")  # a missing path: a usage error (exit 2), nothing written
        if Path(args.target).is_dir() and not (Path(args.target) / "manifest.json").is_file():
            check_inputs([args.target])  # a folder without audio files: a usage error too
        elif args.db:
            raise UsageError(f"'{args.target}': with --db, give the folder of audio the database indexes (or none)")
    from kikimimi.apps.serve.security import BindRefused, check_bind, check_token
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.fileio import OutputInUseError
    from kikimimi.inference.clap import CLAPError, load_clap
    from kikimimi.inference.search import MANIFEST, SearchIndex, SearchIndexError, check_model_space, update_index

    if not 1 <= args.port <= 65535:
        print(f"error: --port {args.port}: not a port number (1-65535)", file=sys.stderr)
        return 2
    for flag, value in (("--header-timeout-s", args.header_timeout_s), ("--body-timeout-s", args.body_timeout_s),
                        ("--max-connections-per-client", args.max_connections_per_client),
                        ("--max-labels", args.max_labels)):
        if not value > 0:
            print(f"error: {flag} {value}: must be above 0", file=sys.stderr)
            return 2
    try:
        check_token(args.token)
        warning = check_bind(args.host, args.token)
    except (BindRefused, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if warning:
        print(warning, file=sys.stderr)
    if args.db:
        return _run_db(args)
    target = Path(args.target)
    try:
        if (target / MANIFEST).is_file():
            index_dir, folder = target, None
            model_arg = args.model or SearchIndex.load(index_dir).model
        elif target.is_dir():
            index_dir, folder = Path(args.index) if args.index else target / ".kikimimi-index", target
            model_arg = model_or_packaged(args.model, "clap")
            if not model_arg:
                raise ValueError(f"'{target}' is a folder of audio: say which model indexes it (-m MODEL)")
        else:
            raise ValueError(f"'{target}': no such folder or index")
        model_id = str(Path(resolve_model(model_arg, args)).resolve())
        model = load_clap(model_id, text_encoder=args.text_encoder, device=args.device,
                          precision=index_precision(args, index_dir), trust_pickle=args.trust_pickle,
                          accept_licence=args.accept_licence)
        if folder is not None and not args.no_update:
            print(f"indexing '{folder}' into '{index_dir}' (only new or changed files are embedded)…", flush=True)
            update = update_index(model, folder, index_dir, model_id=model_id, batch_size=args.batch_size,
                                  window_s=args.window_s, hop_s=args.hop_s, vector_kind=args.vector_index,
                                  exact_below=args.exact_below,
                                  log=lambda line: print(line, end="\r", flush=True))
            for key, reason in update.errors:
                print(f"skipped '{key}': {reason}", file=sys.stderr)
            print(f"added {len(update.added)}, changed {len(update.changed)}, removed {len(update.removed)}, "
                  f"unchanged {len(update.unchanged)}, unreadable {len(update.errors)}")
        if (index_dir / MANIFEST).is_file():  # text queries from another model would return nonsense
            check_model_space(index_dir, model, model_id)
        captioner = _load_captioner(args.captioner) if args.captioner else None
        labels = _read_labels(args.labels)
        app = _build_app(args, model, index_dir, labels, captioner, folder)
    except (SearchIndexError, CheckpointError, CLAPError, OutputInUseError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _listen(args, app)


def _listen(args: argparse.Namespace, app) -> int:
    """Serve ``app`` on ``--host``/``--port`` with the connection limits until Ctrl-C."""
    import uvicorn

    from kikimimi.apps.serve.server import ConnectionLimits, server_config

    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving on http://{shown}:{args.port}/  (API: /docs; Ctrl-C stops)", flush=True)
    limits = ConnectionLimits(header_timeout_s=args.header_timeout_s, per_client=args.max_connections_per_client)
    uvicorn.Server(server_config(app, args.host, args.port, limits)).run()
    return 0


def _read_labels(path: str | None) -> list[str] | None:
    """The labels of ``--labels FILE`` (one a line, ``#`` comments), None without the flag."""
    if not path:
        return None
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    labels = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    if not labels:
        raise ValueError(f"'{path}': no labels in the file")
    return labels


def _run_db(args: argparse.Namespace) -> int:
    """``serve --db URI [FOLDER]``: update the database from FOLDER (unless --no-update), refuse a model of
    another embedding space, then serve the database's index."""
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.inference.clap import CLAPError, load_clap
    from kikimimi.inference.milvus_index import MilvusIndex, MilvusSettings, update_milvus_index
    from kikimimi.inference.search import SearchIndexError, check_space, model_identity

    settings = MilvusSettings(collection=args.collection, token=os.environ.get("KIKIMIMI_MILVUS_TOKEN"))
    folder = Path(args.target) if args.target else None
    try:
        recorded, precision = None, getattr(args, "precision", None)
        try:
            with MilvusIndex.open(args.db, settings) as db:
                recorded, precision = db.model, precision or (db.model_identity or {}).get("precision")
        except SearchIndexError:
            if folder is None:
                raise
        model_arg = args.model or recorded or model_or_packaged(None, "clap")
        if not model_arg:
            raise ValueError(f"'{args.db}': say which model indexes the folder (-m MODEL)")
        model_id = str(Path(resolve_model(model_arg, args)).resolve())
        model = load_clap(model_id, text_encoder=args.text_encoder, device=args.device, precision=precision,
                          trust_pickle=args.trust_pickle, accept_licence=args.accept_licence)
        if folder is not None and not args.no_update:
            print(f"indexing '{folder}' into '{args.db}' (only new or changed files are embedded)…", flush=True)
            update = update_milvus_index(model, folder, args.db, model_id=model_id, settings=settings,
                                         batch_size=args.batch_size, window_s=args.window_s, hop_s=args.hop_s,
                                         log=lambda line: print(line, end="\r", flush=True))
            for key, reason in update.errors:
                print(f"skipped '{key}': {reason}", file=sys.stderr)
            print(f"added {len(update.added)}, changed {len(update.changed)}, removed {len(update.removed)}, "
                  f"unchanged {len(update.unchanged)}, unreadable {len(update.errors)}")
        index = MilvusIndex.open(args.db, settings)
        try:  # text queries from another model would return nonsense
            check_space(index, model_identity(model, model_id), model_id)
        except SearchIndexError:
            index.close()
            raise
        captioner = _load_captioner(args.captioner) if args.captioner else None
        app = _build_app(args, model, args.db, _read_labels(args.labels), captioner, folder, index=index,
                         milvus=settings)
    except (SearchIndexError, CheckpointError, CLAPError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _listen(args, app)


def _build_app(args: argparse.Namespace, model, index_dir: Path | str, labels, captioner, folder: Path | None,
               index=None, milvus=None):
    from kikimimi.apps.serve.app import ServeSettings, create_app
    from kikimimi.apps.serve.security import LOOPBACK_NAMES, is_loopback

    hosts = LOOPBACK_NAMES if is_loopback(args.host) else ("*",)
    settings = ServeSettings(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_upload_s=args.max_upload_s,
                             max_query_chars=args.max_query_chars, max_labels=args.max_labels,
                             body_timeout_s=args.body_timeout_s, workers=args.workers, queue_limit=args.queue_limit,
                             root=None if folder is None else str(folder),
                             token=args.token, allowed_hosts=tuple(hosts), window_s=args.window_s, hop_s=args.hop_s,
                             vector_kind=args.vector_index, exact_below=args.exact_below, batch_size=args.batch_size,
                             max_describe_s=args.max_describe_s)
    return create_app(model, index_dir, labels=labels, captioner=captioner, settings=settings, index=index,
                      milvus=milvus)
