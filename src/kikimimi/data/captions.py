"""Caption data for audio-language training: caption tables, label captions and a caption-embedding cache.

- :class:`CaptionTable` maps stable file keys (:func:`kikimimi.fileio.relative_key` against the list's
  folder) to one or more captions, read from a CSV (``file_name`` + ``caption``, several rows per file, or
  ``caption_1 … caption_K`` columns) or a JSON list.
- :func:`label_caption` / :func:`captions_from_labels` turn class labels into AudioSet-style captions
  ("The sound of A, B, and C.", fact sheet §5.1).
- :class:`CaptionEmbeddingCache` holds the frozen, pre-computed text embeddings the official M2D-CLAP
  pipeline trains with: float16 ``[n_captions, D]`` per file key in one safetensors file (JSON metadata with
  the encoder name and width); training draws one caption per item at random (:meth:`~CaptionEmbeddingCache.sample`).
  :meth:`~CaptionEmbeddingCache.build` is resumable: finished shards are kept next to the output and a rerun
  only embeds what is missing; the final file is written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kikimimi.fileio import atomic_write_bytes, relative_key

if TYPE_CHECKING:  # pragma: no cover
    from kikimimi.models.text import TextEncoder

__all__ = [
    "DEFAULT_LABEL_TEMPLATES",
    "CaptionCacheError",
    "CaptionEmbeddingCache",
    "CaptionError",
    "CaptionTable",
    "captions_from_labels",
    "join_labels",
    "label_caption",
]

#: AudioSet-style label caption (M2D-CLAP 2024): "The sound of A, B, and C."
DEFAULT_LABEL_TEMPLATES = ("The sound of {labels}.",)

_CACHE_FORMAT = "kikimimi-caption-embeddings"
_CACHE_VERSION = 1
_META_KEY = "kikimimi_caption_cache"


class CaptionError(ValueError):
    """A caption list (CSV / JSON / task CSV) is malformed; the message names the file and the row or item."""


class CaptionCacheError(ValueError):
    """A caption-embedding cache cannot be read or does not fit; the message names the file."""


# --------------------------------------------------------------------------------------------
# Label captions
# --------------------------------------------------------------------------------------------


def join_labels(labels: Sequence[str]) -> str:
    """``["A"]`` → ``"A"``; ``["A", "B"]`` → ``"A and B"``; ``["A", "B", "C"]`` → ``"A, B, and C"`` (serial comma).

    Raises:
        ValueError: no (non-blank) label.
    """
    names = [str(s).strip() for s in labels if str(s).strip()]
    if not names:
        raise ValueError("no labels to put into a caption")
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return ", ".join(names[:-1]) + f", and {names[-1]}"


def label_caption(labels: Sequence[str], template: str = DEFAULT_LABEL_TEMPLATES[0]) -> str:
    """AudioSet-style caption: "The sound of A." / "The sound of A and B." / "The sound of A, B, and C.".

    ``template`` is a format string with ``{labels}`` (the :func:`join_labels` phrase).
    """
    return template.format(labels=join_labels(labels))


# --------------------------------------------------------------------------------------------
# Caption table
# --------------------------------------------------------------------------------------------

_CAPTION_COL = re.compile(r"^caption_?(\d+)$")


class CaptionTable:
    """File keys → captions (and audio paths).

    Args:
        captions: key → list of captions (at least one non-empty caption per key).
        paths: key → audio file path (absolute); keys must match ``captions``.
        source: where the table came from (for messages).

    Attributes:
        keys: sorted unique file keys.
        paths: audio paths in :attr:`keys` order.
    """

    def __init__(
        self, captions: Mapping[str, Sequence[str]], paths: Mapping[str, str | os.PathLike], source: str = "<memory>"
    ) -> None:
        if set(captions) != set(paths):
            diff = sorted(set(captions) ^ set(paths))[:5]
            raise CaptionError(f"'{source}': captions and paths have different keys, e.g. {diff}")
        self.source = str(source)
        self._captions: dict[str, list[str]] = {}
        for key in sorted(captions):
            caps = [str(c) for c in captions[key]]
            if not caps or any(not c.strip() for c in caps):
                raise CaptionError(f"'{source}': '{key}' has an empty caption or none at all")
            self._captions[key] = caps
        self._paths = {k: Path(paths[k]) for k in self._captions}

    # -- readers --------------------------------------------------------------------------------

    @classmethod
    def from_csv(cls, path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> CaptionTable:
        """Read a CSV with ``file_name`` and ``caption`` and/or ``caption_1 … caption_K`` columns.

        Several rows may name the same file (their captions are added in row order); empty ``caption_k``
        cells are skipped. Relative ``file_name`` values are resolved against the CSV's folder; keys are
        :func:`relative_key` against ``root`` (default: the CSV's folder). Column names are case-insensitive;
        ``audio`` or ``path`` may stand for ``file_name``.

        Raises:
            CaptionError: missing file or columns, a row without file name or without any caption, no rows.
        """
        path = Path(path)
        if not path.is_file():
            raise CaptionError(f"'{path}': caption list not found")
        base = path.resolve().parent
        key_root = Path(root) if root is not None else base
        captions: dict[str, list[str]] = {}
        paths: dict[str, Path] = {}
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh)
                header = next(reader, None)
                if header is None:
                    raise CaptionError(f"'{path}': empty caption list")
                cols = [h.strip().lower() for h in header]
                file_col = next((cols.index(c) for c in ("file_name", "audio", "path") if c in cols), None)
                cap_cols = [i for i, c in enumerate(cols) if c == "caption"]
                numbered = sorted(
                    ((int(m.group(1)), i) for i, c in enumerate(cols) if (m := _CAPTION_COL.match(c))),
                )
                cap_cols += [i for _, i in numbered]
                if file_col is None or not cap_cols:
                    raise CaptionError(
                        f"'{path}': columns {header} lack file_name and caption (or caption_1..caption_K)"
                    )
                for line, row in enumerate(reader, start=2):
                    if not any(cell.strip() for cell in row):
                        continue
                    if len(row) > len(cols):
                        raise CaptionError(f"'{path}' line {line}: {len(row)} fields but the header has {len(cols)}")
                    name = row[file_col].strip() if file_col < len(row) else ""
                    if not name:
                        raise CaptionError(f"'{path}' line {line}: empty file_name")
                    caps = [row[i].strip() for i in cap_cols if i < len(row) and row[i].strip()]
                    if not caps:
                        raise CaptionError(f"'{path}' line {line}: no caption for '{name}'")
                    audio = Path(name) if os.path.isabs(name) else base / name
                    key = relative_key(audio, key_root)
                    captions.setdefault(key, []).extend(caps)
                    paths[key] = audio
        except UnicodeDecodeError as exc:
            raise CaptionError(f"'{path}': not UTF-8 text ({exc})") from exc
        except csv.Error as exc:
            raise CaptionError(f"'{path}': malformed CSV ({exc})") from exc
        if not captions:
            raise CaptionError(f"'{path}': no caption rows")
        return cls(captions, paths, source=str(path))

    @classmethod
    def from_json(cls, path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> CaptionTable:
        """Read a JSON list of ``{"file_name"|"audio": str, "caption": str | "captions": [str, …]}`` objects.

        A top-level ``{"data": [...]}`` wrapper is accepted. Paths and keys as :meth:`from_csv`; items naming
        the same file are merged.

        Raises:
            CaptionError: unreadable JSON, not a list, or an item (named by its index) without file or captions.
        """
        path = Path(path)
        if not path.is_file():
            raise CaptionError(f"'{path}': caption list not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CaptionError(f"'{path}': not valid JSON ({exc})") from exc
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise CaptionError(f"'{path}': expected a JSON list of caption items, got {type(data).__name__}")
        base = path.resolve().parent
        key_root = Path(root) if root is not None else base
        captions: dict[str, list[str]] = {}
        paths: dict[str, Path] = {}
        for i, item in enumerate(data):
            where = f"'{path}' item {i}"
            if not isinstance(item, dict):
                raise CaptionError(f"{where}: expected an object, got {type(item).__name__}")
            name = item.get("file_name", item.get("audio"))
            if not isinstance(name, str) or not name.strip():
                raise CaptionError(f"{where}: missing 'file_name' (or 'audio')")
            caps: Any = item.get("captions", item.get("caption"))
            if isinstance(caps, str):
                caps = [caps]
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                raise CaptionError(f"{where}: 'caption' must be a string or 'captions' a list of strings")
            caps = [c.strip() for c in caps if c.strip()]
            if not caps:
                raise CaptionError(f"{where}: no caption for '{name}'")
            name = name.strip()
            audio = Path(name) if os.path.isabs(name) else base / name
            key = relative_key(audio, key_root)
            captions.setdefault(key, []).extend(caps)
            paths[key] = audio
        if not captions:
            raise CaptionError(f"'{path}': no caption items")
        return cls(captions, paths, source=str(path))

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> CaptionTable:
        """:meth:`from_json` for ``.json`` files, else :meth:`from_csv`."""
        return cls.from_json(path, **kwargs) if str(path).lower().endswith(".json") else cls.from_csv(path, **kwargs)

    # -- access ---------------------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        """Sorted unique file keys."""
        return list(self._captions)

    @property
    def paths(self) -> list[Path]:
        """Audio paths in :attr:`keys` order."""
        return [self._paths[k] for k in self._captions]

    def path(self, key: str) -> Path:
        """The audio path of ``key`` (``KeyError`` if unknown)."""
        return self._paths[key]

    def captions(self, key: str) -> list[str]:
        """The captions of ``key`` (a copy; ``KeyError`` if unknown)."""
        return list(self._captions[key])

    @property
    def n_captions(self) -> int:
        """Total number of captions."""
        return sum(len(c) for c in self._captions.values())

    def items(self) -> Iterable[tuple[str, list[str]]]:
        """``(key, captions)`` pairs in key order."""
        return ((k, list(v)) for k, v in self._captions.items())

    def fingerprint(self) -> str:
        """SHA-1 over keys and captions: equal tables give equal fingerprints."""
        h = hashlib.sha1()
        for key, caps in self._captions.items():
            h.update(_caption_digest(key, caps).encode())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self._captions)

    def __contains__(self, key: object) -> bool:
        return key in self._captions

    def __repr__(self) -> str:
        return f"CaptionTable({len(self)} files, {self.n_captions} captions, source={self.source!r})"


def _caption_digest(key: str, captions: Sequence[str]) -> str:
    return hashlib.sha1(json.dumps([key, list(captions)], ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def captions_from_labels(
    task_csv: str | os.PathLike,
    templates: Sequence[str] | None = None,
    *,
    splits: Sequence[str] | None = None,
    label_names: Mapping[str, str] | None = None,
    underscores_to_spaces: bool = True,
    root: str | os.PathLike | None = None,
) -> CaptionTable:
    """Label captions for an EVAR-style task CSV (``file_name,label[,split|fold]``, multi-labels comma-joined).

    Each file gets one caption per template (format strings with ``{labels}``, default
    :data:`DEFAULT_LABEL_TEMPLATES` → "The sound of A, B, and C."). Labels are mapped through ``label_names``
    (e.g. AudioSet MID → display name) and, by default, ``_`` becomes a space ("noise_burst" → "noise burst").
    ``splits`` keeps only rows whose ``split`` is listed (e.g. ``("train",)`` so evaluation clips stay unseen).

    Raises:
        CaptionError: missing file or columns, an empty label (naming the line), a template without
            ``{labels}``, or no rows left.
    """
    path = Path(task_csv)
    templates = tuple(templates) if templates is not None else DEFAULT_LABEL_TEMPLATES
    if not templates:
        raise CaptionError(f"'{path}': no caption templates")
    for t in templates:
        if "{labels}" not in t:
            raise CaptionError(f"caption template {t!r} has no '{{labels}}' placeholder")
    if not path.is_file():
        raise CaptionError(f"'{path}': task CSV not found")
    base = path.resolve().parent
    key_root = Path(root) if root is not None else base
    wanted = None if splits is None else {s.strip().lower() for s in splits}
    captions: dict[str, list[str]] = {}
    paths: dict[str, Path] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "file_name" not in fields or "label" not in fields:
                raise CaptionError(f"'{path}': needs file_name and label columns, found {reader.fieldnames}")
            if wanted is not None and "split" not in fields:
                raise CaptionError(f"'{path}': splits={sorted(wanted)} given but the CSV has no split column")
            for line, raw in enumerate(reader, start=2):
                row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if isinstance(v, str)}
                if not any(row.values()):
                    continue
                name = row.get("file_name", "")
                if not name:
                    raise CaptionError(f"'{path}' line {line}: empty file_name")
                if wanted is not None and row.get("split", "").lower() not in wanted:
                    continue
                labels = [s.strip() for s in row.get("label", "").split(",") if s.strip()]
                if not labels:
                    raise CaptionError(f"'{path}' line {line}: empty label for '{name}'")
                if label_names is not None:
                    labels = [label_names.get(lab, lab) for lab in labels]
                if underscores_to_spaces:
                    labels = [lab.replace("_", " ") for lab in labels]
                audio = Path(name) if os.path.isabs(name) else base / name
                key = relative_key(audio, key_root)
                captions.setdefault(key, []).extend(label_caption(labels, t) for t in templates)
                paths[key] = audio
    except UnicodeDecodeError as exc:
        raise CaptionError(f"'{path}': not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise CaptionError(f"'{path}': malformed CSV ({exc})") from exc
    if not captions:
        raise CaptionError(f"'{path}': no rows" + (f" in splits {sorted(wanted)}" if wanted else ""))
    return CaptionTable(captions, paths, source=str(path))


# --------------------------------------------------------------------------------------------
# Caption-embedding cache
# --------------------------------------------------------------------------------------------


def _partial_dir(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".partial")


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            raw_meta = fh.metadata() or {}
            arrays = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CaptionCacheError(f"'{path}': not a readable safetensors file ({exc})") from exc
    if _META_KEY not in raw_meta:
        raise CaptionCacheError(f"'{path}': no kikimimi caption-cache metadata; build it with CaptionEmbeddingCache")
    try:
        meta = json.loads(raw_meta[_META_KEY])
    except json.JSONDecodeError as exc:
        raise CaptionCacheError(f"'{path}': corrupt caption-cache metadata ({exc})") from exc
    return arrays, meta


def _write_safetensors(path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    from safetensors.numpy import save

    data = save(dict(arrays), metadata={_META_KEY: json.dumps(meta, ensure_ascii=False)})
    atomic_write_bytes(path, data)


class CaptionEmbeddingCache:
    """Pre-computed caption embeddings: file key → float16 ``[n_captions, D]``.

    Args:
        arrays: key → ``[n, D]`` float16 array (n ≥ 1).
        encoder_name: the :attr:`TextEncoder.name` that produced them.
        dim: D.
        meta: extra metadata (kept as read).
        path: file the cache came from, if any.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        encoder_name: str,
        dim: int,
        meta: Mapping[str, Any] | None = None,
        path: str | os.PathLike | None = None,
    ) -> None:
        where = f"'{path}'" if path is not None else "caption cache"
        self._arrays: dict[str, np.ndarray] = {}
        for key in sorted(arrays):
            a = np.asarray(arrays[key])
            if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != dim:
                raise CaptionCacheError(f"{where}: '{key}' has shape {a.shape}, expected [n>=1, {dim}]")
            if a.dtype != np.float16:
                raise CaptionCacheError(f"{where}: '{key}' is {a.dtype}, expected float16")
            self._arrays[key] = a
        self._encoder_name = str(encoder_name)
        self._dim = int(dim)
        self.meta = dict(meta or {})
        self.path = None if path is None else Path(path)

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return self._dim

    @property
    def encoder_name(self) -> str:
        """Name of the text encoder the embeddings came from."""
        return self._encoder_name

    def keys(self) -> list[str]:
        """Sorted file keys."""
        return list(self._arrays)

    def get(self, key: str) -> np.ndarray:
        """All caption embeddings of ``key``: ``[n_captions, D]`` float16 (``KeyError`` naming the key if absent)."""
        try:
            return self._arrays[key]
        except KeyError:
            raise KeyError(f"no caption embeddings for '{key}' in {self.path or 'the cache'}") from None

    def sample(self, key: str, rng: np.random.Generator) -> np.ndarray:
        """One caption embedding of ``key`` drawn uniformly with ``rng`` → ``[D]`` float16."""
        emb = self.get(key)
        return emb[int(rng.integers(emb.shape[0]))]

    def sample_many(self, keys: Sequence[str], rng: np.random.Generator) -> np.ndarray:
        """:meth:`sample` for each key → ``[len(keys), D]`` float16."""
        out = np.empty((len(keys), self._dim), dtype=np.float16)
        for i, key in enumerate(keys):
            out[i] = self.sample(key, rng)
        return out

    def __len__(self) -> int:
        return len(self._arrays)

    def __contains__(self, key: object) -> bool:
        return key in self._arrays

    def __repr__(self) -> str:
        return f"CaptionEmbeddingCache({len(self)} keys, dim={self._dim}, encoder={self._encoder_name!r})"

    # -- persistence ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> CaptionEmbeddingCache:
        """Read a cache written by :meth:`build` / :meth:`save`.

        Raises:
            CaptionCacheError: missing/unreadable file, no or wrong metadata, shapes or dtypes that do not fit.
        """
        path = Path(path)
        if not path.is_file():
            raise CaptionCacheError(f"'{path}': caption-embedding cache not found")
        arrays, meta = _read_safetensors(path)
        if meta.get("format") != _CACHE_FORMAT:
            raise CaptionCacheError(f"'{path}': not a caption-embedding cache (format {meta.get('format')!r})")
        try:
            dim, name = int(meta["dim"]), str(meta["encoder"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CaptionCacheError(f"'{path}': metadata lacks encoder/dim ({exc})") from exc
        return cls(arrays, encoder_name=name, dim=dim, meta=meta, path=path)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the cache atomically as one safetensors file (one tensor per key, JSON metadata)."""
        path = Path(path)
        meta = {**self.meta, **self._base_meta(self._encoder_name, self._dim)}
        meta["n_keys"] = len(self)
        meta["n_captions"] = int(sum(a.shape[0] for a in self._arrays.values()))
        _write_safetensors(path, self._arrays, meta)
        self.meta, self.path = meta, path
        return path

    @staticmethod
    def _base_meta(encoder_name: str, dim: int) -> dict[str, Any]:
        return {"format": _CACHE_FORMAT, "version": _CACHE_VERSION, "encoder": encoder_name, "dim": int(dim),
                "dtype": "float16"}

    @classmethod
    def build(
        cls,
        table: CaptionTable,
        encoder: TextEncoder,
        out_path: str | os.PathLike,
        batch_size: int = 64,
        progress: bool = False,
        *,
        shard_keys: int = 512,
    ) -> CaptionEmbeddingCache:
        """Embed every caption of ``table`` with ``encoder`` and write the cache to ``out_path`` (resumable).

        Work is done ``shard_keys`` files at a time; each finished shard is written atomically to
        ``<out_path>.partial/`` with a digest of its captions, so a killed run continues where it stopped
        (shards made by another encoder, or for changed captions, are not reused). When every key is
        embedded the shards are merged into ``out_path`` (atomic write) and the folder is removed. An existing
        ``out_path`` for the same encoder and captions is returned as is.

        Args:
            table: the captions.
            encoder: a :class:`~kikimimi.models.text.TextEncoder`; its ``name`` and ``dim`` go into the metadata.
            out_path: the ``.safetensors`` file to write.
            batch_size: texts per encoder call.
            progress: show a tqdm bar (keys) on stderr.
            shard_keys: files per resumable shard.

        Raises:
            CaptionCacheError: the encoder returns a wrong shape or values that do not fit float16.
        """
        if shard_keys < 1:
            raise ValueError(f"shard_keys must be >= 1, got {shard_keys}")
        out_path = Path(out_path)
        name, dim = encoder.name, int(encoder.dim)
        fingerprint = table.fingerprint()
        if out_path.is_file():
            try:
                existing = cls.load(out_path)
            except CaptionCacheError:
                existing = None
            if (
                existing is not None
                and existing.encoder_name == name
                and existing.dim == dim
                and existing.meta.get("table_fingerprint") == fingerprint
            ):
                return existing

        part = _partial_dir(out_path)
        done = cls._read_shards(part, name, dim)
        digests = {k: _caption_digest(k, table.captions(k)) for k in table.keys}
        arrays: dict[str, np.ndarray] = {}
        for key, (digest, arr) in done.items():
            if digests.get(key) == digest and arr.shape[0] == len(table.captions(key)):
                arrays[key] = arr
        todo = [k for k in table.keys if k not in arrays]

        from tqdm.auto import tqdm

        bar = tqdm(total=len(table), initial=len(table) - len(todo), disable=not progress, unit="file",
                   desc="caption embeddings")
        try:
            n_shard = cls._next_shard_index(part)
            for start in range(0, len(todo), shard_keys):
                keys = todo[start : start + shard_keys]
                texts = [c for k in keys for c in table.captions(k)]
                emb = encoder.encode(texts, batch_size=batch_size)
                emb = np.asarray(emb.detach().cpu().numpy() if hasattr(emb, "detach") else emb, dtype=np.float32)
                if emb.shape != (len(texts), dim):
                    raise CaptionCacheError(
                        f"'{out_path}': encoder {name!r} returned shape {emb.shape} for {len(texts)} texts, "
                        f"expected ({len(texts)}, {dim})"
                    )
                half = emb.astype(np.float16)
                if not np.isfinite(half).all():
                    raise CaptionCacheError(
                        f"'{out_path}': encoder {name!r} gave values that are not finite in float16 "
                        f"(max |x| = {float(np.abs(emb).max()):.4g})"
                    )
                shard: dict[str, np.ndarray] = {}
                offset = 0
                for k in keys:
                    n = len(table.captions(k))
                    shard[k] = np.ascontiguousarray(half[offset : offset + n])
                    offset += n
                meta = {**cls._base_meta(name, dim), "digests": {k: digests[k] for k in keys}}
                part.mkdir(parents=True, exist_ok=True)
                _write_safetensors(part / f"shard-{n_shard:06d}.safetensors", shard, meta)
                n_shard += 1
                arrays.update(shard)
                bar.update(len(keys))
        finally:
            bar.close()

        cache = cls({k: arrays[k] for k in table.keys}, encoder_name=name, dim=dim,
                    meta={"table_fingerprint": fingerprint, "table_source": table.source})
        cache.save(out_path)
        shutil.rmtree(part, ignore_errors=True)
        return cache

    @staticmethod
    def _next_shard_index(part: Path) -> int:
        if not part.is_dir():
            return 0
        numbers = [int(m.group(1)) for p in part.glob("shard-*.safetensors")
                   if (m := re.match(r"shard-(\d+)\.safetensors$", p.name))]
        return max(numbers, default=-1) + 1

    @staticmethod
    def _read_shards(part: Path, name: str, dim: int) -> dict[str, tuple[str, np.ndarray]]:
        """Finished shards of an interrupted build: key → (caption digest, array); other encoders' shards dropped."""
        out: dict[str, tuple[str, np.ndarray]] = {}
        if not part.is_dir():
            return out
        stale = False
        for shard in sorted(part.glob("shard-*.safetensors")):
            try:
                arrays, meta = _read_safetensors(shard)
            except CaptionCacheError:
                stale = True
                continue
            if meta.get("encoder") != name or int(meta.get("dim", -1)) != dim:
                stale = True
                continue
            digests = meta.get("digests") or {}
            for key, arr in arrays.items():
                if key in digests and arr.ndim == 2 and arr.shape[1] == dim and arr.dtype == np.float16:
                    out[key] = (str(digests[key]), arr)
        if stale:
            warnings.warn(f"'{part}': ignoring unreadable shards or shards made by another text encoder",
                          stacklevel=3)
        return out

