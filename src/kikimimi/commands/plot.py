"""`kikimimi plot EMBEDDINGS --labels CSV -o out.png`: t-SNE (or UMAP) map of any embedding file by class."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

NAME = "plot"
HELP = "Draw a t-SNE cluster map of an embedding file (.npy rows, or an `embed` output folder) by class."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("embeddings", help=".npy [N, D] (rows in --labels order) or a `kikimimi embed` folder")
    parser.add_argument("--labels", required=True, help="CSV with file_name,label (row order, or matched by name)")
    parser.add_argument("-o", "--out", required=True, help="output PNG")
    parser.add_argument("--title", default=None)
    parser.add_argument("--method", choices=("tsne", "umap"), default="tsne",
                        help="2-D map: t-SNE, or UMAP (optional: pip install umap-learn)")


def _read_labels(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "label" not in rows[0]:
        raise ValueError(f"'{path}': needs a 'label' column")
    return rows


def run(args: argparse.Namespace) -> int:
    import numpy as np  # here, not at the top: `kikimimi --help` stays fast

    from kikimimi.commands._exit import check_paths

    check_paths([args.embeddings, args.labels])  # a missing path: usage error (exit 2)
    from kikimimi.evaluation.cluster_plot import plot_clusters

    try:
        rows = _read_labels(Path(args.labels))
        src = Path(args.embeddings)
        if src.is_dir():  # an `embed` output folder: match its manifest to the label rows by file stem
            from kikimimi.inference.embed_outputs import load_clip_embeddings, read_embed_manifest

            label_of = {Path(r["file_name"]).stem: r["label"] for r in rows}
            outputs = [o for o in read_embed_manifest(src) if Path(o.source).stem in label_of]
            emb = load_clip_embeddings(outputs)
            labels = [label_of[Path(o.source).stem] for o in outputs]
        else:
            emb = np.load(src)
            labels = [r["label"] for r in rows]
            if len(labels) != len(emb):
                raise ValueError(f"'{src}' has {len(emb)} rows but '{args.labels}' has {len(labels)} labels")
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        out = plot_clusters({args.title or src.stem: (emb, labels)}, args.out, method=args.method)
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
