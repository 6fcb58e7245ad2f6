"""Caption-aware pre-training data for M2D-CLAP / M2D2: log-mel crops paired with one caption each.

:class:`CaptionCropDataset` wraps a :class:`kikimimi.data.corpus.CropDataset` and adds, per item, either

- ``text_emb`` ``[Dt]`` float32 — one of the pre-computed caption embeddings of the item's file
  (embedding mode, M2D-CLAP / M2D2 stage 1; the source is e.g. a
  ``kikimimi.data.caption_cache.CaptionEmbeddingCache`` or any object with ``get(key) -> [n, Dt]``), or
- ``caption_index`` (0-d int64) — the index of one of the file's captions in :attr:`CaptionCropDataset.
  caption_texts` (text mode, M2D2 stage 2, where a trainable text encoder embeds the strings).

Which caption: item ``i`` of epoch ``e`` draws it with ``np.random.default_rng((seed, e, i,
CAPTION_RNG_KEY))`` — a function of the data seed, epoch and index only, like the crop, so resumed runs
see exactly the same (crop, caption) pairs.

Keys: a file's caption key is the first of its candidate names found among the caption keys — the path
relative to its corpus source (``sub/a.wav``), the same without the suffix (``sub/a``), the file name
(``a.wav``) and the stem (``a``); a cache's ``.npy`` therefore matches captions keyed by the original
audio name. :func:`filter_captioned` reports files without captions (``missing="error"``, the default)
or drops them with a warning (``missing="skip"``).

Caveat: if an unreadable file is replaced by another (see :meth:`CropDataset.raw_item`), the caption
still belongs to the indexed file; remove broken files from caption-paired corpora.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from kikimimi.data.corpus import Corpus, CropDataset

__all__ = [
    "CAPTION_RNG_KEY",
    "MISSING_MODES",
    "CaptionCropDataset",
    "candidate_keys",
    "match_caption_keys",
    "filter_captioned",
    "caption_lists",
]

#: fourth entropy word of the caption generators (keeps them apart from the crop generators)
CAPTION_RNG_KEY = 0xCA9
MISSING_MODES = ("error", "skip")


# ---------------------------------------------------------------------------------------------- keys
def _source_roots(corpus: Corpus) -> list[Path]:
    roots = []
    for src in corpus.sources:
        p = Path(src)
        roots.append(p if p.is_dir() else p.parent)
    return roots


def candidate_keys(path: Path, roots: Sequence[Path]) -> list[str]:
    """Caption-key candidates of ``path`` in priority order (relative path, without suffix, name, stem)."""
    out: list[str] = []
    for root in roots:
        try:
            rel = Path(path).resolve().relative_to(Path(root).resolve())
        except ValueError:
            continue
        out += [rel.as_posix(), rel.with_suffix("").as_posix()]
        break
    p = Path(path)
    out += [p.name, p.stem]
    return list(dict.fromkeys(out))


def match_caption_keys(corpus: Corpus, available: Iterable[str]) -> list[str | None]:
    """For each corpus file, its caption key among ``available`` (``None`` when none matches).

    A caption key also matches with its suffix removed, so ``sub/dog.npy`` (a prep cache) finds
    ``sub/dog.wav`` (captions keyed by the audio file), and by its file name or stem alone when no other caption
    key shares it (``/elsewhere/cache/sub/dog.npy`` finds ``audio/sub/dog.wav``); exact matches win.
    """
    keys = [str(k) for k in available]
    lookup = {k: k for k in keys}
    for k in keys:
        lookup.setdefault(Path(k).with_suffix("").as_posix(), k)
    # a file whose folder is not below the caption table's (a prep cache, or a view listing another cache's
    # files) still finds a key by its name or stem, when exactly one caption key has that name or stem
    for short in (lambda k: Path(k).name, lambda k: Path(k).stem):
        counts = Counter(short(k) for k in keys)
        for k in keys:
            if counts[short(k)] == 1:
                lookup.setdefault(short(k), k)
    roots = _source_roots(corpus)
    found: list[str | None] = []
    for f in corpus.files:
        found.append(next((lookup[k] for k in candidate_keys(f, roots) if k in lookup), None))
    return found


def filter_captioned(
    corpus: Corpus,
    available: Iterable[str],
    missing: str = "error",
    *,
    source: str = "captions",
    match: Callable[[Corpus, list[str]], list[str | None]] | None = None,
) -> tuple[Corpus, list[str]]:
    """Keep the files that have captions: ``(corpus, keys)`` with one caption key per kept file.

    Args:
        corpus: the training corpus.
        available: caption keys (e.g. ``cache.keys()``).
        missing: ``"error"`` → raise listing the files without captions; ``"skip"`` → drop them with a
            :class:`UserWarning` naming how many and the first few.
        source: the caption file named in messages.
        match: ``match(corpus, keys)`` → each file's key or ``None`` (default :func:`match_caption_keys`; the
            official ``ytid`` rule is :func:`kikimimi.data.official_lists.match_official_keys`).

    Raises:
        ValueError: files without captions (``missing="error"``), or no file has a caption.
    """
    if missing not in MISSING_MODES:
        raise ValueError(f"missing must be one of {MISSING_MODES}, got {missing!r}")
    keys = (match or match_caption_keys)(corpus, list(available))
    lacking = [str(f) for f, k in zip(corpus.files, keys, strict=True) if k is None]
    if lacking and len(lacking) == len(corpus.files):
        raise ValueError(
            f"'{source}': none of the {len(lacking)} training files has a caption (e.g. {lacking[0]}); caption "
            "keys must be the file path relative to the data folder / CSV / cache, the file name or its stem"
        )
    if lacking and missing == "error":
        shown = "\n  ".join(lacking[:10])
        more = f"\n  … and {len(lacking) - 10} more" if len(lacking) > 10 else ""
        raise ValueError(
            f"'{source}': {len(lacking)} of {len(corpus.files)} training files have no caption:\n  {shown}{more}\n"
            "add captions for them or pass --missing-captions skip to train without them"
        )
    if lacking:
        warnings.warn(
            f"'{source}': skipping {len(lacking)} of {len(corpus.files)} training files without a caption "
            f"(e.g. {', '.join(lacking[:3])})",
            UserWarning,
            stacklevel=2,
        )
    kept = [(f, k) for f, k in zip(corpus.files, keys, strict=True) if k is not None]
    new = Corpus(corpus.kind, [f for f, _ in kept], corpus.preset, list(corpus.sources))
    return new, [str(k) for _, k in kept]


def caption_lists(table: Any) -> dict[str, list[str]]:
    """Caption strings per key from a mapping ``key -> str | list[str]`` or a caption table object.

    Tables (e.g. :class:`kikimimi.data.captions.CaptionTable`) are read through their ``items()``.
    """
    if not callable(getattr(table, "items", None)):
        raise TypeError(f"cannot read captions from a {type(table).__name__} (needs items())")
    items = list(table.items())
    out: dict[str, list[str]] = {}
    for key, value in items:
        texts = [value] if isinstance(value, str) else [str(v) for v in value]
        texts = [t for t in texts if t.strip()]
        if texts:
            out[str(key)] = texts
    return out


# ---------------------------------------------------------------------------------------------- dataset
def _embedding_dim(source: Any, key: str) -> int:
    dim = getattr(source, "dim", None)
    if dim is not None and not callable(dim):
        return int(dim)
    return int(np.asarray(source.get(key)).shape[-1])


class CaptionCropDataset(Dataset):
    """:class:`CropDataset` items plus one caption per item (see module docstring).

    Args:
        base: the crop dataset; every file of ``base.corpus`` needs a caption (use :func:`filter_captioned`
            first to drop or report the others).
        embeddings: embedding mode — object with ``get(key) -> [n, Dt]`` (e.g. a ``CaptionEmbeddingCache``
            or a ``dict``); ``dim`` is read from it when present.
        captions: text mode — caption strings per key (mapping or caption table, see :func:`caption_lists`).
        keys: caption key of every corpus file (default: matched with :func:`match_caption_keys`).
        source: name used in error messages (the caption file).

    ``dataset[(epoch, i)]`` → ``{"lms": [F, T], "text_emb": [Dt] float32}`` or
    ``{"lms": [F, T], "caption_index": int64}``.
    """

    def __init__(
        self,
        base: CropDataset,
        *,
        embeddings: Any = None,
        captions: Any = None,
        keys: Sequence[str] | None = None,
        source: str = "captions",
    ) -> None:
        if (embeddings is None) == (captions is None):
            raise ValueError("give exactly one of embeddings= (caption embeddings) or captions= (caption texts)")
        self.base = base
        self.source = source
        self.mode = "embedding" if embeddings is not None else "text"
        self.embeddings = embeddings
        lists = caption_lists(captions) if captions is not None else None
        available = list(embeddings.keys()) if embeddings is not None else list(lists)
        if keys is None:
            matched = match_caption_keys(base.corpus, available)
        else:
            if len(keys) != len(base.corpus):
                raise ValueError(f"keys has {len(keys)} entries for {len(base.corpus)} corpus files")
            have = set(available)
            matched = [k if k in have else None for k in keys]
        lacking = [str(f) for f, k in zip(base.corpus.files, matched, strict=True) if k is None]
        if lacking:
            raise ValueError(
                f"'{source}': {len(lacking)} training files have no caption (e.g. {lacking[:3]}); "
                "use kikimimi.data.caption_pairs.filter_captioned to report or skip them"
            )
        self.keys: list[str] = [str(k) for k in matched]
        self.caption_texts: list[str] = []
        self._spans: dict[str, tuple[int, int]] = {}
        if lists is not None:
            for key in dict.fromkeys(self.keys):
                start = len(self.caption_texts)
                self.caption_texts.extend(lists[key])
                self._spans[key] = (start, len(lists[key]))
            self.text_dim: int | None = None
        else:
            self.text_dim = _embedding_dim(embeddings, self.keys[0])

    # -- pass-throughs used by the CLI / trainer
    def __len__(self) -> int:
        return len(self.base)

    @property
    def corpus(self) -> Corpus:
        return self.base.corpus

    @property
    def n_mels(self) -> int | None:
        return self.base.n_mels

    @property
    def crop_frames(self) -> int:
        return self.base.crop_frames

    def caption_rng(self, epoch: int, index: int) -> np.random.Generator:
        """``np.random.default_rng((seed, epoch, index, CAPTION_RNG_KEY))`` — the item's caption generator."""
        return np.random.default_rng((self.base.seed, int(epoch), int(index), CAPTION_RNG_KEY))

    def caption_of(self, epoch: int, index: int) -> str | np.ndarray:
        """The caption drawn for item ``index`` of ``epoch``: its text (text mode) or embedding ``[Dt]``."""
        key = self.keys[int(index) % len(self.base.corpus)]
        rng = self.caption_rng(epoch, index)
        if self.mode == "text":
            start, count = self._spans[key]
            return self.caption_texts[start + int(rng.integers(count))]
        return self._embedding_row(key, rng)

    def _embedding_row(self, key: str, rng: np.random.Generator) -> np.ndarray:
        arr = np.asarray(self.embeddings.get(key))
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(f"'{self.source}': caption embeddings of {key!r} have shape {arr.shape}, expected [n, D]")
        if arr.shape[1] != self.text_dim:
            raise ValueError(
                f"'{self.source}': caption embeddings of {key!r} are {arr.shape[1]}-d, expected {self.text_dim}"
            )
        return np.asarray(arr[int(rng.integers(arr.shape[0]))], dtype=np.float32)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else key
        item = self.base[(int(epoch), int(index))]
        file_key = self.keys[int(index) % len(self.base.corpus)]
        rng = self.caption_rng(int(epoch), int(index))
        if self.mode == "text":
            start, count = self._spans[file_key]
            item["caption_index"] = torch.tensor(start + int(rng.integers(count)), dtype=torch.int64)
        else:
            item["text_emb"] = torch.from_numpy(self._embedding_row(file_key, rng).copy())
        return item
