"""`kikimimi index DIR -m MODEL -o INDEX`: build or update a text-searchable index of a folder's audio;
`kikimimi index --check INDEX`: verify an index (exit 0 sound, 1 corrupted); `kikimimi index --compact INDEX`:
drop the tombstones of its HNSW graph now. On a Milvus database (INDEX a ``.db`` path or ``http://host:19530``),
``--check`` verifies the rows against their files and repairs them, ``--compact`` runs the database's compaction."""

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

NAME = "index"
HELP = "Index a folder's audio in CLAP space for `kikimimi search` (incremental: only new/changed files)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", help="folder of audio files (searched recursively)")
    parser.add_argument("-m", "--model", help="M2D-CLAP checkpoint" + MODEL_NAME_HELP +
                        " (default: kikimimi's packaged open-clap-tiny)")
    parser.add_argument("-o", "--out", help="index folder (created or updated; required to build, unless --db)")
    parser.add_argument("--db", metavar="URI", help="keep the index in a Milvus database instead of a folder: a local "
                        "path ending in .db (Milvus Lite, embedded, no server) or http://host:19530 (a Milvus server "
                        'or cluster); needs pip install "kikimimi[milvus]"')
    parser.add_argument("--collection", default="kikimimi_segments", help="Milvus collection holding the index "
                        "(with --db; default: kikimimi_segments)")
    parser.add_argument("--db-index", choices=("HNSW", "FLAT", "IVF_FLAT", "AUTOINDEX"), default="HNSW",
                        help="Milvus vector index (with --db; default HNSW; FLAT = exact search)")
    parser.add_argument("--check", metavar="INDEX", help="only verify the index folder INDEX (checksums, row counts, "
                        "vector index): exit 0 when sound, 1 with a one-line reason when corrupted. A Milvus database "
                        "(a .db path or http://host:19530, --collection): its rows are checked against their files "
                        "(missing, changed, unreadable, outside the folder) and repaired — rows of missing files "
                        "deleted, changed files embedded again (-m, default: the model that built it); exit 0 when "
                        "sound or repaired, 1 when something is left")
    parser.add_argument("--no-repair", action="store_true",
                        help="with --check on a database: only report (exit 1 when a row needs repair)")
    parser.add_argument("--compact", metavar="INDEX", help="only compact the index folder INDEX: rebuild its HNSW "
                        "graph without the removed segments it still holds (updates do it when they pass a quarter "
                        "of the graph); on a Milvus database: run its compaction now (deleted rows leave storage)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rebuild", action="store_true", help="discard the existing index and embed everything")
    parser.add_argument("--save-every-s", type=float, default=60.0, metavar="SECONDS",
                        help="save the progress this often while embedding, so that a killed run resumes where it "
                             "stopped (default: 60; 0 = after every batch)")
    add_segment_arguments(parser)
    add_clap_arguments(parser)


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    """Segmenting and vector-index flags (``kikimimi serve`` has its own copy: commands import no command)."""
    parser.add_argument("--window-s", type=float, default=10.0, metavar="SECONDS",
                        help="files longer than this are indexed per window of this length (default: 10; 0 = whole "
                             "files)")
    parser.add_argument("--hop-s", type=float, default=5.0, metavar="SECONDS",
                        help="step between windows of a long file (default: 5)")
    parser.add_argument("--vector-index", choices=("auto", "numpy", "flat", "hnsw", "hnsw_sq", "ivf"),
                        default="auto",
                        help="vector search: auto = exact (faiss flat, or numpy without faiss) below --exact-below "
                             "segments, faiss HNSW above (8-bit scalar-quantised, hnsw_sq, when the float32 graph "
                             "would take over a quarter of the RAM or KIKIMIMI_VECTOR_MEMORY_MB), efSearch "
                             "calibrated to recall@10 >= 0.95; the choice and the measured recall are recorded in "
                             "the manifest")
    parser.add_argument("--exact-below", type=int, default=100_000, metavar="ROWS",
                        help="segments from which --vector-index auto switches to approximate search")


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when at least one file is indexed, 1 when every file failed, 2 on a bad setting or model.
    With ``--check``: 0 when the index is sound, 1 when it is corrupted or unreadable."""
    if args.check or args.compact:
        from kikimimi.inference.milvus_index import is_database_uri

        if is_database_uri(args.check or args.compact):
            return _check_db(args) if args.check else _compact_db(args)
    if args.check:
        from kikimimi.inference.search import check_index

        problem = check_index(args.check)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        print(f"'{args.check}': the index is sound")
        return 0
    if args.compact:
        from kikimimi.fileio import OutputInUseError
        from kikimimi.inference.search import SearchIndexError, compact_index

        try:
            done = compact_index(args.compact)
        except (SearchIndexError, OutputInUseError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"'{args.compact}': {done['rows']} segments, {done['dropped']} removed segments dropped from the graph")
        return 0
    if args.folder and (args.out or args.db):
        args.model = model_or_packaged(args.model, "clap")
    missing = [flag for flag, value in (("FOLDER", args.folder), ("-m/--model", args.model),
                                        ("-o/--out or --db", args.out or args.db)) if not value]
    if missing:
        print(f"error: building an index needs {', '.join(missing)} (or pass --check INDEX)", file=sys.stderr)
        return 2
    from kikimimi.commands._exit import UsageError, check_inputs

    check_inputs([args.folder])  # a missing folder or one without audio: a usage error (exit 2), no index
    if args.db:
        if args.out:
            raise UsageError("give -o/--out (an index folder) or --db (a Milvus database), not both")
        return _run_db(args)
    from kikimimi.fileio import OutputInUseError, refuse_if_in_use

    try:
        refuse_if_in_use(args.out)  # at once, not after loading the model
    except OutputInUseError as exc:
        raise UsageError(str(exc)) from None
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.inference.clap import CLAPError, load_clap
    from kikimimi.inference.search import SearchIndexError, update_index

    try:
        model_id = str(Path(resolve_model(args.model, args)).resolve())
        model = load_clap(model_id, text_encoder=args.text_encoder, device=args.device,
                          precision=index_precision(args, args.out), trust_pickle=args.trust_pickle)
        update = update_index(model, args.folder, args.out, model_id=model_id, batch_size=args.batch_size,
                              rebuild=args.rebuild, save_every_s=args.save_every_s, window_s=args.window_s,
                              hop_s=args.hop_s, vector_kind=args.vector_index, exact_below=args.exact_below)
    except (SearchIndexError, CheckpointError, CLAPError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _report(update, str(args.out))


def _run_db(args: argparse.Namespace) -> int:
    """``kikimimi index FOLDER --db URI``: the same update into a Milvus collection."""
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.inference.clap import CLAPError, load_clap
    from kikimimi.inference.milvus_index import MilvusSettings, update_milvus_index
    from kikimimi.inference.search import SearchIndexError

    try:
        settings = MilvusSettings(collection=args.collection, index_type=args.db_index,
                                  token=os.environ.get("KIKIMIMI_MILVUS_TOKEN"))
        model_id = str(Path(resolve_model(args.model, args)).resolve())
        model = load_clap(model_id, text_encoder=args.text_encoder, device=args.device,
                          precision=_db_precision(args, settings), trust_pickle=args.trust_pickle)
        update = update_milvus_index(model, args.folder, args.db, model_id=model_id, settings=settings,
                                     batch_size=args.batch_size, rebuild=args.rebuild, window_s=args.window_s,
                                     hop_s=args.hop_s)
    except (SearchIndexError, CheckpointError, CLAPError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _report(update, f"{args.db} ({args.collection})")


def _db_settings(args: argparse.Namespace):
    from kikimimi.inference.milvus_index import MilvusSettings

    return MilvusSettings(collection=args.collection, token=os.environ.get("KIKIMIMI_MILVUS_TOKEN"))


def _check_db(args: argparse.Namespace) -> int:
    """``--check URI``: one line per row problem, then what was repaired (exit 0: sound or repaired, 1: problems
    left, 2: the database cannot be opened or the model is refused)."""
    from kikimimi.checkpoints import CheckpointError
    from kikimimi.inference.clap import CLAPError, load_clap
    from kikimimi.inference.milvus_index import MilvusIndex, check_milvus_index, repair_milvus_index
    from kikimimi.inference.search import SearchIndexError

    uri, settings = args.check, _db_settings(args)
    dest = f"'{uri}' ({args.collection})"
    try:
        found = check_milvus_index(uri, settings)
        for line in found.problems():
            print(f"error: {line}", file=sys.stderr)
        if found.sound:
            print(f"{dest}: the index is sound ({found.files} files, {found.rows} segments)")
            return 0
        if args.no_repair:
            print(f"{dest}: {len(found.problems())} of {found.files} files need repair (--no-repair: nothing "
                  "changed)")
            return 1
        model = model_id = None
        if found.changed:
            with MilvusIndex.open(uri, settings) as db:
                recorded = db.model
                precision = getattr(args, "precision", None) or (db.model_identity or {}).get("precision")
            model_id = str(Path(resolve_model(args.model or recorded, args)).resolve())
            model = load_clap(model_id, text_encoder=args.text_encoder, device=args.device, precision=precision,
                              trust_pickle=args.trust_pickle)
        done = repair_milvus_index(uri, found, settings, model=model, model_id=model_id,
                                   batch_size=args.batch_size)
    except (SearchIndexError, CheckpointError, CLAPError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key, reason in done.not_repaired:
        print(f"error: '{key}': not repaired: {reason}", file=sys.stderr)
    print(f"{dest}: repaired — rows of {len(done.removed)} files removed, {len(done.re_embedded)} files embedded "
          f"again, {len(done.not_repaired)} left")
    return 1 if done.not_repaired else 0


def _compact_db(args: argparse.Namespace) -> int:
    """``--compact URI``: the database's compaction, reported in one line."""
    from kikimimi.inference.milvus_index import compact_milvus_index
    from kikimimi.inference.search import SearchIndexError

    try:
        done = compact_milvus_index(args.compact, _db_settings(args))
    except (SearchIndexError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"'{args.compact}' ({args.collection}): compaction job {done['job']} {done['state']} in "
          f"{done['seconds']:g} s; {done['rows']} segments")
    return 0 if str(done["state"]).lower().endswith("completed") else 1


def _report(update, dest: str) -> int:
    """One line per unreadable file, the counts, and the exit code of the batch rule (1: nothing indexed)."""
    for key, reason in update.errors:
        print(f"error: '{key}': {reason}", file=sys.stderr)
    print(f"added {len(update.added)}, changed {len(update.changed)}, removed {len(update.removed)}, "
          f"unchanged {len(update.unchanged)}, unreadable {len(update.errors)} → {dest}")
    if update.errors and not (update.added or update.changed or update.unchanged):
        print("error: no file could be indexed", file=sys.stderr)
        return 1
    return 0


def _db_precision(args: argparse.Namespace, settings: object) -> str | None:
    """``--precision`` when given, else the one the database's index recorded (as :func:`index_precision` does for
    a folder), else ``None``."""
    from kikimimi.inference.milvus_index import MilvusIndex
    from kikimimi.inference.search import SearchIndexError

    if getattr(args, "precision", None):
        return args.precision
    try:
        with MilvusIndex.open(args.db, settings) as db:
            return (db.model_identity or {}).get("precision")
    except SearchIndexError:
        return None
