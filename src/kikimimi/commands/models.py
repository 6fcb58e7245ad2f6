"""`kikimimi models list|info NAME|fetch NAME…|path NAME|remove NAME`: pretrained models by name."""

from __future__ import annotations

import argparse
import json
import sys

from kikimimi.commands._options import add_accept_licence_argument

NAME = "models"
HELP = "List, inspect, download, locate and remove pretrained models known by name (official releases)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="every model: name, family, rate, dims, size, licence, cached or not")
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    p = sub.add_parser("info", help="everything known about one model (URL, paper, licence, hashes, cache)")
    p.add_argument("name")
    p = sub.add_parser("fetch", help="download, verify and cache models (before going offline)")
    p.add_argument("names", nargs="+", metavar="NAME")
    add_accept_licence_argument(p)
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("path", help="print the cached weight file / folder of a model")
    p.add_argument("name")
    p = sub.add_parser("remove", help="delete a model from the cache")
    p.add_argument("names", nargs="+", metavar="NAME")


def _size(entry, record) -> str:
    if record is not None and record.get("source_size"):
        return _human(int(record["source_size"]))
    if entry.size_bytes:
        return _human(entry.size_bytes)
    return entry.approx_size.split(" (", 1)[0] if entry.approx_size else "?"


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _row(entry) -> dict:
    from kikimimi.checkpoints.hub import cached_weights, read_record

    record = None if entry.is_local else read_record(entry)
    weights = cached_weights(entry)
    if entry.packaged:  # the folder ships with kikimimi: present when its weight file is
        weights = weights / "model.safetensors" if weights is not None else None
        weights = weights if weights is not None and weights.is_file() else None
        record = {"source_size": weights.stat().st_size} if weights is not None else None
    return {"name": entry.name, "family": entry.family, "sample_rate": entry.sample_rate,
            "embedding_dim": entry.embedding_dim, "head": entry.head, "size": _size(entry, record),
            "licence": entry.licence, "cached": weights is not None, "packaged": entry.packaged}


def _where(row: dict) -> str:
    """The ``cached`` cell: yes / no, or for a model shipped inside kikimimi ``packaged`` (``missing`` when this
    installation lacks its folder)."""
    if row["packaged"]:
        return "packaged" if row["cached"] else "missing"
    return "yes" if row["cached"] else "no"


def _list(args: argparse.Namespace) -> int:
    from kikimimi.checkpoints.registry import LICENCES, list_models

    rows = [_row(e) for e in list_models()]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    header = ("name", "family", "rate", "dims", "head", "size", "licence", "cached")
    table = [header] + [(r["name"], r["family"], f"{r['sample_rate'] // 1000} kHz" if r["sample_rate"] else "?",
                         str(r["embedding_dim"] or "?"), r["head"] or "-", r["size"],
                         LICENCES[r["licence"]].spdx or r["licence"], _where(r)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _info(args: argparse.Namespace) -> int:
    from kikimimi.checkpoints.hub import cached_weights, download_url, manual_path, read_record
    from kikimimi.checkpoints.registry import PAPERS, get_entry

    entry = get_entry(args.name)
    record = None if entry.is_local else read_record(entry)
    size = _row(entry)["size"] if entry.packaged else ""
    lic = entry.licence_info
    lines = [
        ("name", entry.name),
        ("description", entry.description),
        ("family", entry.family),
        ("sample rate", f"{entry.sample_rate} Hz"),
        ("input", f"{entry.input_size[0]} mels x {entry.input_size[1]} frames"
                  + (f", patch {entry.patch_size[0]}x{entry.patch_size[1]}" if entry.patch_size else "")),
        ("embedding dim", str(entry.embedding_dim)),
        ("head", entry.head or "none"),
        ("layout", entry.layout),
        ("paper", PAPERS.get(entry.paper, entry.paper) or "-"),
        ("url", entry.url if entry.is_local else download_url(entry)),
        ("kind", entry.kind + (f" (weight file inside: {entry.inner})" if entry.inner else "")),
        ("size", size if entry.packaged else
         _size(entry, record) + (f" ({entry.approx_size}, documented)" if entry.approx_size else "")),
        ("sha256", entry.sha256 or (f"{record['source_sha256']} (recorded on first download)" if record
                                    else "no SHA256SUMS in this installation" if entry.packaged
                                    else "not published; recorded on first download")),
        ("licence", f"{lic.title} [{entry.licence}]{' — acceptance needed' if lic.gated else ''}"),
        ("licence summary", lic.summary),
        ("licence text", lic.url or "-"),
        ("cached", str(cached_weights(entry) or "no")) if not entry.packaged else
        ("packaged", f"yes, {entry.url} (no download)" if _row(entry)["cached"]
                     else "missing from this installation"),
    ]
    if not entry.is_local and entry.kind != "folder":
        lines.append(("manual download", f"put the file at {manual_path(entry)}"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from kikimimi.checkpoints.hub import fetch

    failed = 0
    for name in args.names:
        try:
            print(fetch(name, accept_licence=args.accept_licence, progress=not args.no_progress))
        except ValueError as exc:  # CheckpointError / FetchError / UnknownModelError
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def _path(args: argparse.Namespace) -> int:
    from kikimimi.checkpoints.hub import cached_weights
    from kikimimi.checkpoints.registry import get_entry

    entry = get_entry(args.name)
    path = cached_weights(entry)
    if path is None:
        print(f"error: '{entry.name}' is not cached; run `kikimimi models fetch {entry.name}`", file=sys.stderr)
        return 1
    print(path)
    return 0


def _remove(args: argparse.Namespace) -> int:
    from kikimimi.checkpoints.hub import remove

    failed = 0
    for name in args.names:
        try:
            print(f"removed {name}" if remove(name) else f"{name}: not cached")
        except ValueError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    actions = {"list": _list, "info": _info, "fetch": _fetch, "path": _path, "remove": _remove}
    try:
        return actions[args.action](args)
    except ValueError as exc:  # unknown name (UnknownModelError), unreadable registry file
        print(f"error: {exc}", file=sys.stderr)
        return 2
