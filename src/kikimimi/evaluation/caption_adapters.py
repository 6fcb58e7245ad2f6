"""Captions CSVs for retrieval: reading ours, and writing them from AudioCaps / Clotho trees on disk.

Our captions CSV has columns ``file_name,caption`` — one row per caption, several rows per audio file
(``caption_1 … caption_K`` columns are read too); relative ``file_name`` values are resolved against the
CSV's folder (or ``audio_root``). Every CSV here, ours and the datasets' metadata, is read by
:func:`kikimimi.data.captions.read_caption_rows`; retrieval keeps the rows in file order.

===========  ==============================================================================================
adapter      layout expected under ``root``
===========  ==============================================================================================
audiocaps    ``[audiocaps_dataset/]{train,val,test}.csv`` (audiocap_id, youtube_id, start_time, caption);
             audio ``<youtube_id>.wav`` or ``Y<youtube_id>.wav`` (any audio extension) in ``audio_dir`` or in
             one of ``<split>/``, ``audio/<split>/``, ``audio/``, ``audiocaps_dataset/<split>/``, ``root``
===========  ==============================================================================================
clotho       ``clotho_captions_{development,validation,evaluation}.csv`` (file_name, caption_1..caption_5);
             audio in ``audio_dir`` or one of ``<split>/``, ``clotho_audio_<split>/``, ``audio/<split>/``
===========  ==============================================================================================

Clips whose audio is missing (common for AudioCaps: YouTube removals) are left out and reported in
``CaptionSet.missing``; metadata problems raise :class:`kikimimi.data.captions.CaptionError` naming the
file and line.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kikimimi.data.captions import CaptionError, read_caption_rows
from kikimimi.fileio import AUDIO_EXTENSIONS, atomic_write_text

__all__ = [
    "CAPTION_ADAPTERS",
    "CaptionSet",
    "adapt_audiocaps",
    "adapt_clotho",
    "group_captions",
    "read_captions_csv",
    "write_captions_csv",
]


@dataclass
class CaptionSet:
    """``rows``: ``(absolute audio path, caption)`` pairs; ``missing``: metadata entries with no audio file."""

    rows: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def read_captions_csv(path: str | os.PathLike, *, audio_root: str | os.PathLike | None = None) -> CaptionSet:
    """Read a ``file_name,caption`` CSV (several rows per file allowed) into rows in file order; audio file
    existence is not checked.

    Raises:
        CaptionError: as :func:`~kikimimi.data.captions.read_caption_rows`, or no caption rows.
    """
    path = Path(path)
    root = Path(audio_root) if audio_root is not None else path.parent
    out = CaptionSet()
    for row in read_caption_rows(path):
        p = Path(row.name).expanduser()
        audio = p if p.is_absolute() else root / p
        out.rows.extend((audio, caption) for caption in row.captions)
    if not out.rows:
        raise CaptionError(f"'{path}': no caption rows")
    return out


def group_captions(rows: Sequence[tuple[Path, str]]) -> tuple[list[Path], list[str], list[int]]:
    """``(audio files in first-seen order, captions, caption → audio index)``."""
    files: list[Path] = []
    index: dict[str, int] = {}
    captions, owner = [], []
    for path, caption in rows:
        key = os.path.normpath(os.path.abspath(path))
        if key not in index:
            index[key] = len(files)
            files.append(Path(path))
        captions.append(caption)
        owner.append(index[key])
    return files, captions, owner


def write_captions_csv(captions: CaptionSet | Sequence[tuple[Path, str]], out_csv: str | os.PathLike) -> Path:
    """Write ``file_name,caption`` rows atomically; paths under the CSV's folder are written relative to it."""
    out_csv = Path(out_csv)
    rows = captions.rows if isinstance(captions, CaptionSet) else list(captions)
    base = out_csv.parent.resolve()
    buf: list[list[str]] = [["file_name", "caption"]]
    for path, caption in rows:
        p = Path(path).resolve()
        try:
            name = p.relative_to(base).as_posix()
        except ValueError:
            name = str(p)
        buf.append([name, caption])
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(buf)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_csv, text.getvalue())
    return out_csv


def _audio_index(folders: Sequence[Path]) -> dict[str, Path]:
    """Stem → file for audio files directly inside the first folders that exist (earlier folders win)."""
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS:
                found.setdefault(p.stem, p.resolve())
                found.setdefault(p.name, p.resolve())
    return found


def adapt_audiocaps(root: str | os.PathLike, *, split: str = "test",
                    audio_dir: str | os.PathLike | None = None) -> CaptionSet:
    """AudioCaps ``<split>.csv`` → captions; audio looked up as ``<youtube_id>`` or ``Y<youtube_id>``."""
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise CaptionError(f"'{root}': AudioCaps split must be train, val or test, got '{split}'")
    meta_dir = root / "audiocaps_dataset" if (root / "audiocaps_dataset").is_dir() else root
    meta = meta_dir / f"{split}.csv"
    rows = read_caption_rows(meta, name_columns=("youtube_id",))
    folders = [Path(audio_dir)] if audio_dir is not None else [
        root / split, root / "audio" / split, root / "audio", meta_dir / split, root]
    if audio_dir is not None and not Path(audio_dir).is_dir():
        raise CaptionError(f"'{audio_dir}': audio folder not found")
    audio = _audio_index(folders)
    out = CaptionSet()
    for row in rows:
        path = audio.get(row.name) or audio.get(f"Y{row.name}")
        if path is None:
            out.missing.append(row.name)
            continue
        out.rows.extend((path, caption) for caption in row.captions)
    out.missing = sorted(set(out.missing))
    return out


_CLOTHO_SPLITS = ("development", "validation", "evaluation")


def adapt_clotho(root: str | os.PathLike, *, split: str = "evaluation",
                 audio_dir: str | os.PathLike | None = None) -> CaptionSet:
    """Clotho ``clotho_captions_<split>.csv`` (file_name, caption_1..caption_N) → captions."""
    root = Path(root)
    if split not in _CLOTHO_SPLITS:
        raise CaptionError(f"'{root}': Clotho split must be one of {', '.join(_CLOTHO_SPLITS)}, got '{split}'")
    meta = root / f"clotho_captions_{split}.csv"
    rows = read_caption_rows(meta, name_columns=("file_name",))
    if audio_dir is not None and not Path(audio_dir).is_dir():
        raise CaptionError(f"'{audio_dir}': audio folder not found")
    folders = [Path(audio_dir)] if audio_dir is not None else [
        root / split, root / f"clotho_audio_{split}", root / "audio" / split, root / f"clotho_audio_{split}" / split]
    audio = _audio_index(folders)
    out = CaptionSet()
    for row in rows:
        path = audio.get(row.name)
        if path is None:
            out.missing.append(row.name)
            continue
        out.rows.extend((path, c) for c in row.captions)
    return out


CAPTION_ADAPTERS: dict[str, Callable[..., CaptionSet]] = {"audiocaps": adapt_audiocaps, "clotho": adapt_clotho}
