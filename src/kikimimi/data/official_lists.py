"""NTT's M2D-CLAP / M2D2 data files read as they are (../shared/docs/fact-sheet-m2d2-2026.md §2–§3).

Three kinds of files come with the official recipe:

- **caption files** ``rawcap_<set>.csv``: index column ``ytid`` (the lookup key) and one caption column, or
  several (``caption_1 … caption_K``; Clotho has 5, ACalt4 4). :func:`read_rawcaps` reads one or more of them
  (or a folder of them) into key → captions.
- **file lists** ``files_<sets>.csv`` over ``*_lms`` trees: one ``file_name`` (or first) column naming log-mel
  ``.npy`` files (or audio files), relative to the CSV's folder. :func:`read_file_list` maps each row to its file;
  listed files that are missing are reported by name (one warning) and skipped, batch-style.
- **caption-embedding caches** ``capembs_<set>.npy``: NV-Embed-v2 embeddings (4096-d, float16), either the
  official pickled dict key → ``[D]`` or ``[K, D]`` (read with an unpickler that rebuilds numpy arrays and
  nothing else: no arbitrary code runs), or a plain ``[N, D]`` array aligned with the rows of the
  ``rawcap_<set>.csv`` beside it. :func:`read_caption_embeddings` validates shapes and counts;
  :func:`official_embedding_cache` wraps them as a :class:`~kikimimi.data.caption_cache.CaptionEmbeddingCache`.

Keys (:func:`official_key_candidates`, the official lookup rule): a file's caption key is its name's first 11
characters (the YouTube ID of AudioSet files) when a caption file has that key, else the folder tag + the file
stem, where the tag is the WavCaps source folder without ``_flac`` (empty for other folders: VGGSound
``<ytid>_<start>``, AudioCaps ``Y<id>``, Clotho stems). ``:`` and ``?`` become ``_`` in every key (Clotho).
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kikimimi.data.caption_cache import CaptionEmbeddingCache
from kikimimi.data.captions import CaptionError, read_caption_rows
from kikimimi.fileio import InputListError, collect_audio_files, summarise_names

__all__ = [
    "CAPEMBS_PREFIX",
    "FILES_PREFIX",
    "OFFICIAL_TEXT_DIM",
    "RAWCAP_PREFIX",
    "YTID_LENGTH",
    "FileList",
    "OfficialDataError",
    "caption_source_kind",
    "is_lms_list",
    "match_official_keys",
    "normalise_key",
    "official_embedding_cache",
    "official_key_candidates",
    "read_caption_embeddings",
    "read_file_list",
    "read_rawcaps",
]

RAWCAP_PREFIX = "rawcap_"
FILES_PREFIX = "files_"
CAPEMBS_PREFIX = "capembs_"
#: characters of the YouTube ID at the start of an AudioSet file name
YTID_LENGTH = 11
#: width of NV-Embed-v2, the text side of the official stage-1 caches
OFFICIAL_TEXT_DIM = 4096
#: the WavCaps source folders end in this; the rest of the folder name is the key's tag
_WAVCAPS_SUFFIX = "_flac"


class OfficialDataError(ValueError):
    """An official data file (caption CSV, file list, caption-embedding cache) cannot be used; one line naming it."""


# ---------------------------------------------------------------------------------------------- keys
def normalise_key(key: str) -> str:
    """A caption key as the lookup compares it: stripped, ``:`` and ``?`` replaced by ``_`` (Clotho names)."""
    return str(key).strip().replace(":", "_").replace("?", "_")


def official_key_candidates(path: str | os.PathLike) -> tuple[str, ...]:
    """The official lookup keys of a training file, in order: the first 11 characters of its stem, then folder tag +
    stem (tag = the parent folder without ``_flac`` for WavCaps' ``<Source>_flac`` folders, else empty).

    ``audioset_lms/unbal/--aE2O5G5WE_0.000.npy`` → ``("--aE2O5G5WE", "--aE2O5G5WE_0.000")``;
    ``wavcaps_lms/FreeSound_flac/123.npy`` → ``("123", "FreeSound123")``.
    """
    p = Path(path)
    parent = p.parent.name
    tag = parent[: -len(_WAVCAPS_SUFFIX)] if parent.endswith(_WAVCAPS_SUFFIX) else ""
    keys = (normalise_key(p.stem[:YTID_LENGTH]), normalise_key(tag + p.stem))
    return tuple(dict.fromkeys(keys))


def match_official_keys(files: Sequence[str | os.PathLike], available: Sequence[str]) -> list[str | None]:
    """For each file, the first of :func:`official_key_candidates` among ``available`` (``None`` when none is)."""
    known = set(available)
    return [next((k for k in official_key_candidates(f) if k in known), None) for f in files]


# ---------------------------------------------------------------------------------------------- caption CSVs
def _rawcap_files(source: str | os.PathLike) -> list[Path]:
    p = Path(source)
    if p.is_dir():
        found = sorted(p.glob(f"{RAWCAP_PREFIX}*.csv"))
        if not found:
            raise OfficialDataError(f"'{p}': no {RAWCAP_PREFIX}*.csv caption files in this folder")
        return found
    if not p.is_file():
        raise OfficialDataError(f"'{p}': caption file not found")
    return [p]


def _rows_any_columns(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """Rows of a ``ytid``-indexed CSV whose caption columns have other names: every other column is a caption."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if "ytid" not in header:
            raise OfficialDataError(f"'{path}': no 'ytid' column (columns {header}); not an official caption file")
        col = header.index("ytid")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not any(c.strip() for c in row):
                continue
            key = row[col].strip() if col < len(row) else ""
            caps = tuple(c.strip() for i, c in enumerate(row) if i != col and c.strip())
            if not key or not caps:
                raise OfficialDataError(f"'{path}' line {line}: empty ytid or no caption")
            rows.append((key, caps))
    return rows


def _read_one_rawcap(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    try:
        return [(r.name, r.captions) for r in read_caption_rows(path, name_columns=("ytid",))]
    except CaptionError as err:
        if "lack" not in str(err):  # a malformed file, not just other caption-column names
            raise OfficialDataError(str(err)) from None
    try:
        return _rows_any_columns(path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise OfficialDataError(f"'{path}': not a readable caption CSV ({err})") from None


def read_rawcaps(sources: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, list[str]]:
    """Captions per (normalised) key from official ``rawcap_*.csv`` files, a folder of them, or several of either.

    A key in several rows or files gets all their captions, in file and row order.

    Raises:
        OfficialDataError: a missing file, a folder without caption files, no ``ytid`` column, an empty key or a
            row without a caption (naming the file and line), no rows at all.
    """
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    out: dict[str, list[str]] = {}
    files = [f for s in items for f in _rawcap_files(s)]
    for path in files:
        for key, caps in _read_one_rawcap(path):
            out.setdefault(normalise_key(key), []).extend(caps)
    if not out:
        raise OfficialDataError(f"'{files[0] if files else sources}': no caption rows")
    return out


# ---------------------------------------------------------------------------------------------- file lists
@dataclass
class FileList:
    """The files of an official ``files_*.csv`` list: ``files`` that exist (list order), ``missing`` row paths."""

    source: Path
    files: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)


def is_lms_list(path: str | os.PathLike) -> bool:
    """True for a CSV file list whose first listed file is a ``.npy`` log-mel (an official ``files_*.csv``)."""
    p = Path(path)
    if not (p.is_file() and p.suffix.lower() == ".csv"):
        return False
    with p.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        rows = [r for r in csv.reader(io.StringIO(fh.read(65536))) if r and r[0].strip()]
    return any(r[0].strip().lower().endswith(".npy") for r in rows[:2])


def read_file_list(path: str | os.PathLike, *, warn: bool = True) -> FileList:
    """Map each row of an official ``files_*.csv`` (column ``file_name``, else the first) to its file, relative to
    the CSV's folder (``data/files_A_S.csv`` → ``data/audioset_lms/…``).

    Missing files are collected in :attr:`FileList.missing` and, with ``warn``, named in one ``UserWarning``
    (the first 20 names and how many more); the run goes on without them.

    Raises:
        OfficialDataError: the CSV cannot be read, or none of its files exists.
    """
    path = Path(path)
    try:
        listed = collect_audio_files([path])
    except InputListError as err:
        raise OfficialDataError(str(err)) from None
    out = FileList(path)
    for f in listed:
        (out.files if f.is_file() else out.missing).append(f)
    if not out.files:
        raise OfficialDataError(
            f"'{path}': none of its {len(listed)} listed files exists (e.g. '{listed[0]}'); paths are relative to "
            "the list's folder"
        )
    if out.missing and warn:
        names = ", ".join(summarise_names([str(m) for m in out.missing]))
        warnings.warn(
            f"'{path}': {len(out.missing)} of {len(listed)} listed files are missing and skipped: {names}",
            UserWarning,
            stacklevel=2,
        )
    return out


# ---------------------------------------------------------------------------------------------- embeddings
class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, strings, numbers and numpy arrays/dtypes only: every other global is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle hook
        if (module, name) in self._ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a caption-embedding cache")


def _load_npy(path: Path) -> np.ndarray | dict:
    """A ``.npy`` file: a numeric array as is, or the dict of an object array (restricted unpickling)."""
    with path.open("rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            _shape, _order, dtype = read_header(fh)
        except ValueError as err:
            raise OfficialDataError(f"'{path}': not a .npy file ({err})") from None
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False, mmap_mode="r")
        try:
            obj = _ArraysOnly(fh).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as err:
            raise OfficialDataError(f"'{path}': refused or unreadable pickled cache ({err})") from None
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise OfficialDataError(f"'{path}': a pickled cache must hold a dict key -> array, got {type(obj).__name__}")
    return obj


def _capembs_files(source: Path) -> list[Path]:
    if source.is_dir():
        found = sorted(source.glob("*.npy"))
        if not found:
            raise OfficialDataError(f"'{source}': no .npy caption-embedding caches in this folder")
        return found
    if not source.is_file():
        raise OfficialDataError(f"'{source}': caption-embedding cache not found")
    return [source]


def _aligned_caption_file(npy: Path) -> Path:
    name = npy.stem[len(CAPEMBS_PREFIX) :] if npy.stem.startswith(CAPEMBS_PREFIX) else npy.stem
    for folder in (npy.parent, npy.parent.parent, npy.parent.parent.parent):
        candidate = folder / f"{RAWCAP_PREFIX}{name}.csv"
        if candidate.is_file():
            return candidate
    raise OfficialDataError(
        f"'{npy}': a plain [N, D] cache needs its caption file {RAWCAP_PREFIX}{name}.csv beside "
        "it (or one or two folders up) to know each row's key"
    )


def read_caption_embeddings(
    source: str | os.PathLike, *, captions: str | os.PathLike | None = None, dim: int | None = None
) -> dict[str, np.ndarray]:
    """Caption embeddings per (normalised) key from official ``capembs_*.npy`` caches → float16 ``[n, D]`` each.

    ``source`` is a cache or a folder of them (all ``*.npy``, sorted; keys in several are combined). A pickled dict
    (the official format) gives ``[D]`` or ``[K, D]`` per key. A plain ``[N, D]`` array is aligned with its caption
    file (``captions``, default ``rawcap_<set>.csv`` beside it or up to two folders up): N must be its number of
    rows (one embedding per row) or of captions (rows' captions in order).

    Raises:
        OfficialDataError: a missing/unreadable file, a refused pickle, a shape that is not ``[N, D]``, N not the
            caption file's count, widths that differ (or differ from ``dim``), values not finite in float16.
    """
    out: dict[str, list[np.ndarray]] = {}
    width = dim
    for path in _capembs_files(Path(source)):
        data = _load_npy(path)
        if isinstance(data, dict):
            pairs = [(str(k), np.asarray(v)) for k, v in data.items()]
        else:
            if data.ndim != 2:
                raise OfficialDataError(f"'{path}': shape {tuple(data.shape)}, expected [N, D] caption embeddings")
            cap_file = Path(captions) if captions is not None else _aligned_caption_file(path)
            rows = _read_one_rawcap(cap_file)
            n_caps = sum(len(c) for _, c in rows)
            if data.shape[0] == len(rows):
                pairs = [(k, data[i]) for i, (k, _) in enumerate(rows)]
            elif data.shape[0] == n_caps:
                pairs, start = [], 0
                for k, caps in rows:
                    pairs.append((k, data[start : start + len(caps)]))
                    start += len(caps)
            else:
                raise OfficialDataError(
                    f"'{path}': {data.shape[0]} embeddings but its caption file '{cap_file}' has {len(rows)} rows "
                    f"({n_caps} captions)"
                )
        for key, arr in pairs:
            arr = arr.reshape(1, -1) if arr.ndim == 1 else arr
            if arr.ndim != 2 or arr.shape[0] < 1:
                raise OfficialDataError(f"'{path}': '{key}' has shape {arr.shape}, expected [D] or [K, D]")
            if width is None:
                width = int(arr.shape[1])
            if arr.shape[1] != width:
                raise OfficialDataError(f"'{path}': '{key}' is {arr.shape[1]}-d, expected {width}-d")
            half = np.asarray(arr, dtype=np.float16)
            if not np.isfinite(half).all():
                raise OfficialDataError(f"'{path}': '{key}' has values that are not finite in float16")
            out.setdefault(normalise_key(key), []).append(half)
    if not out:
        raise OfficialDataError(f"'{source}': no caption embeddings")
    return {k: np.ascontiguousarray(np.concatenate(v)) for k, v in out.items()}


def official_embedding_cache(source: str | os.PathLike, **kwargs) -> CaptionEmbeddingCache:
    """:func:`read_caption_embeddings` as a :class:`CaptionEmbeddingCache` (encoder name records the source)."""
    arrays = read_caption_embeddings(source, **kwargs)
    dim = int(next(iter(arrays.values())).shape[1])
    name = f"official capembs ({'NV-Embed-v2' if dim == OFFICIAL_TEXT_DIM else f'{dim}-d'}) {Path(source).resolve()}"
    return CaptionEmbeddingCache(arrays, encoder_name=name, dim=dim, meta={"official_source": str(source)}, path=source)


# ---------------------------------------------------------------------------------------------- what a path is
def caption_source_kind(path: str | os.PathLike) -> str | None:
    """``"rawcap"`` (official caption CSVs: a ``rawcap_*.csv`` / a CSV with a ``ytid`` column / a folder of them),
    ``"capembs"`` (a ``.npy`` cache or a folder of them), or ``None`` (not an official caption source)."""
    p = Path(path)
    if p.is_dir():
        if any(p.glob(f"{RAWCAP_PREFIX}*.csv")):
            return "rawcap"
        return "capembs" if any(p.glob("*.npy")) else None
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return "capembs"
    if suffix == ".csv":
        if p.name.startswith(RAWCAP_PREFIX):
            return "rawcap"
        if p.is_file():
            with p.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
                header = next(csv.reader(io.StringIO(fh.readline())), [])
            if "ytid" in [h.strip().lower() for h in header]:
                return "rawcap"
    return None
