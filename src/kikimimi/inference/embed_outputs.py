"""Reading an ``embed`` output folder (written by :mod:`kikimimi.inference.jobs`) without loading a model.

The folder holds one output per input — clip level ``<key>.npy`` ``[D]``, frame level ``<key>.npz`` — and
``manifest.csv`` with :data:`MANIFEST_COLUMNS`: ``file_name`` (the output, relative to the folder), ``source`` (the
input it came from), ``frames`` (1 at clip level) and ``dim``. This module imports numpy only, so a command that
only reads embeddings (``plot``) does not pay for torch.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MANIFEST_COLUMNS", "MANIFEST_NAME", "EmbedOutput", "load_clip_embeddings", "read_embed_manifest"]

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("file_name", "source", "frames", "dim")


@dataclass(frozen=True)
class EmbedOutput:
    """One row of an ``embed`` manifest: ``path`` (the output file), ``source`` (the input), ``frames``, ``dim``."""

    path: Path
    source: str
    frames: int
    dim: int


def read_embed_manifest(out_dir: str | os.PathLike) -> list[EmbedOutput]:
    """The outputs listed in ``out_dir/manifest.csv``, in its order.

    Raises:
        FileNotFoundError: no manifest (not an ``embed`` folder, or a job that has not finished one).
        ValueError: a manifest without the expected columns or with a malformed row (one line naming the file).
    """
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"'{out_dir}': no {MANIFEST_NAME}; not a `kikimimi embed` output folder")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"'{path}': not an embed manifest (missing column {', '.join(missing)})")
        try:
            return [EmbedOutput(Path(out_dir) / row["file_name"], row["source"], int(row["frames"]), int(row["dim"]))
                    for row in reader]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"'{path}': malformed row ({exc})") from None


def load_clip_embeddings(outputs: list[EmbedOutput]) -> np.ndarray:
    """``[N, D]`` float32: the clip-level embeddings of ``outputs`` (rows of :func:`read_embed_manifest`), stacked.

    Raises:
        ValueError: no outputs, a frame-level output (``.npz``; rerun ``embed --level clip``) or differing dims.
    """
    if not outputs:
        raise ValueError("no embeddings to load (an empty manifest, or no row matched)")
    frame_level = [o.path for o in outputs if o.path.suffix == ".npz"]
    if frame_level:
        raise ValueError(f"'{frame_level[0]}': frame-level embeddings; write clip-level ones with "
                         "`kikimimi embed … --level clip`")
    rows = [np.load(o.path).reshape(-1) for o in outputs]
    dims = {len(r) for r in rows}
    if len(dims) > 1:
        raise ValueError(f"'{outputs[0].path.parent}': embeddings of different sizes {sorted(dims)}")
    return np.stack(rows).astype(np.float32, copy=False)
