"""The frozen caption-embedding cache M2D-CLAP / M2D2 stage 1 train with (a ``kikimimi`` safetensors file).

:class:`CaptionEmbeddingCache` holds the pre-computed text embeddings the official M2D-CLAP pipeline trains
with: float16 ``[n_captions, D]`` per file key of a :class:`~kikimimi.data.captions.CaptionTable`, in one
safetensors file whose JSON metadata (key ``kikimimi_caption_cache``) records the format, the encoder name
and the width D; training draws one caption per item at random (:meth:`~CaptionEmbeddingCache.sample`).
:meth:`~CaptionEmbeddingCache.build` is resumable: finished shards are kept in ``<out>.partial/`` next to the
output and a rerun only embeds what is missing; the final file is written atomically. A side-car
``<stem>.info.json`` (:func:`write_cache_info`) records which text-encoder spec made the cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as save_safetensors
from tqdm.auto import tqdm

from kikimimi.data.captions import CaptionTable
from kikimimi.fileio import atomic_write_bytes, atomic_write_json
from kikimimi.models.text import TextEncoder

__all__ = ["CaptionCacheError", "CaptionEmbeddingCache", "cache_info_path", "read_cache_info", "write_cache_info"]

_CACHE_FORMAT = "kikimimi-caption-embeddings"
_CACHE_VERSION = 1
_META_KEY = "kikimimi_caption_cache"


class CaptionCacheError(ValueError):
    """A caption-embedding cache cannot be read or does not fit; the message names the file."""


def _partial_dir(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".partial")


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
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
    data = save_safetensors(dict(arrays), metadata={_META_KEY: json.dumps(meta, ensure_ascii=False)})
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
        digests = {k: table.caption_digest(k) for k in table.keys}
        arrays: dict[str, np.ndarray] = {}
        for key, (digest, arr) in done.items():
            if digests.get(key) == digest and arr.shape[0] == len(table.captions(key)):
                arrays[key] = arr
        todo = [k for k in table.keys if k not in arrays]

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


# --------------------------------------------------------------------------------------------
# Provenance side-car
# --------------------------------------------------------------------------------------------


def cache_info_path(cache: str | Path) -> Path:
    """Side-car JSON describing a caption-embedding cache: ``<cache stem>.info.json`` beside it."""
    p = Path(cache)
    return p.with_name(p.stem + ".info.json")


def write_cache_info(cache: str | Path, *, text_encoder: str, dim: int, captions: str | None = None, **extra) -> Path:
    """Record which text encoder (spec) made ``cache``, its width and the caption source (atomic JSON)."""
    info = {"text_encoder": text_encoder, "dim": int(dim), "captions": captions, **extra}
    path = cache_info_path(cache)
    atomic_write_json(path, info)
    return path


def read_cache_info(cache: str | Path) -> dict[str, Any] | None:
    """The side-car written by :func:`write_cache_info`, or ``None`` when there is none."""
    path = cache_info_path(cache)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"'{path}': unreadable caption-cache description: {err}") from None
    return data if isinstance(data, dict) else None
