"""The captions of a caption method's run (M2D-CLAP, M2D2): caption texts or their embedding cache.

M2D-CLAP and M2D2 stage 1 train against caption *embeddings*: ``captions`` is a caption-embedding cache (also
NTT's ``capembs_*.npy``), or a caption table (CSV/JSON, also NTT's ``rawcap_*.csv``) that
:func:`prepare_embedding_cache` first embeds with ``text_encoder`` into
``<run folder>/caption-embeddings-<spec>.safetensors`` (+ ``.info.json`` recording the encoder; reused on
resume). M2D2 stage 2 trains its text encoder and reads the caption *texts* (:func:`load_caption_table`).
NTT's files are matched to the training files by their ``ytid`` key rule (:func:`caption_key_matcher`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from kikimimi.data.caption_cache import CaptionEmbeddingCache, read_cache_info, write_cache_info
from kikimimi.data.captions import CaptionTable
from kikimimi.data.corpus import Corpus
from kikimimi.data.official_lists import (
    caption_source_kind,
    match_official_keys,
    official_embedding_cache,
    read_rawcaps,
)
from kikimimi.models.text_loading import load_text_encoder
from kikimimi.training.distributed import DistInfo, barrier
from kikimimi.training.settings import is_embedding_cache

__all__ = ["caption_key_matcher", "load_caption_table", "prepare_embedding_cache"]


def load_caption_table(path: str) -> CaptionTable:
    """A caption table from a ``.csv`` / ``.json`` caption file, or from official ``rawcap_*.csv`` files (a file or a
    folder of them; keyed by their ``ytid`` keys, :func:`~kikimimi.data.official_lists.read_rawcaps`)."""
    if caption_source_kind(path) == "rawcap":
        captions = read_rawcaps(path)
        # official keys name no file: the table's paths are the keys themselves (only the captions are used)
        return CaptionTable(captions, {k: Path(k) for k in captions}, source=str(path))
    return CaptionTable.load(path)


def caption_key_matcher(captions: str) -> Callable[[Corpus, Sequence[str]], list[str | None]] | None:
    """The official key rule (:func:`~kikimimi.data.official_lists.match_official_keys`) for official caption files
    (``rawcap_*.csv`` / ``capembs_*.npy``, or folders of them); ``None`` (kikimimi's path rule) for other files."""
    if caption_source_kind(captions) is None:
        return None
    return lambda corpus, keys: match_official_keys(corpus.files, list(keys))


def _caption_cache_path(run_dir: Path, spec: str) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in spec).strip("_")[:40] or "text"
    return run_dir / f"caption-embeddings-{slug}.safetensors"


def _spec_key(spec: str) -> str:
    """A text-encoder spec with its path made absolute (``gte:models/gte`` ≡ ``gte:/abs/models/gte``)."""
    kind, sep, rest = str(spec).partition(":")
    if not sep:
        return str(spec)
    path, hash_, suffix = rest.partition("#")
    return f"{kind}:{os.path.abspath(path)}{hash_}{suffix}"


def prepare_embedding_cache(
    captions: str, text_encoder: str | None, run_dir: Path, dist: DistInfo, log: Callable[[str], None] | None = None
) -> tuple[CaptionEmbeddingCache, str, str | None]:
    """Open (or first build, on rank 0, resumably) the caption-embedding cache; ``(cache, path, text encoder)``.

    ``captions`` is a cache (checked against ``text_encoder`` when its side-car records one; the encoder that
    made it is returned when none is given) or a caption table, embedded with ``text_encoder`` into
    ``run_dir`` (an existing cache there is reused; ``path`` says where).

    Args:
        log: called with a line when a table is embedded (``None`` = quiet).

    Raises:
        ValueError: the given cache was made with another text encoder.
    """
    captions, spec = str(captions), text_encoder
    if caption_source_kind(captions) == "capembs":  # NTT's capembs_*.npy as they are
        return official_embedding_cache(captions), captions, spec or "nvembed (official capembs cache)"
    if is_embedding_cache(captions):
        cache = CaptionEmbeddingCache.load(captions)
        info = read_cache_info(captions) or {}
        made_by = info.get("text_encoder") or cache.encoder_name
        if spec and made_by and _spec_key(spec) not in (_spec_key(made_by), _spec_key(cache.encoder_name)):
            raise ValueError(
                f"--captions '{captions}' was made with text encoder {made_by!r}, not --text-encoder {spec!r}"
            )
        return cache, captions, spec or made_by
    cache_path = _caption_cache_path(run_dir, str(spec))
    if dist.is_main and not cache_path.exists():
        encoder = load_text_encoder(str(spec), device=dist.device)
        cache = CaptionEmbeddingCache.build(load_caption_table(captions), encoder, cache_path)
        write_cache_info(cache_path, text_encoder=str(spec), dim=int(cache.dim), captions=captions)
        if log is not None:
            log(f"embedded captions of {captions} with {spec} into {cache_path}")
    barrier()
    return CaptionEmbeddingCache.load(cache_path), str(cache_path), spec
