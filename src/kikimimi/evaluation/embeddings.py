"""Clip-embedding extraction for task splits, with seeded EVAR crops and an ``.npz`` cache.

An *embedding function* maps a list of 1-D float32 waveforms (all at ``sample_rate`` Hz) to ``[B, D]``.
Training and validation items get a seeded random crop of ``unit_samples`` samples, test items the first
segment; short clips are zero-padded at the end (:func:`kikimimi.evaluation.tasks.crop_or_pad`). The crop of
an item depends only on ``(seed, role, item key)``, so results do not depend on batching or fold order.

Files that cannot be read are skipped and reported (``SplitEmbeddings.errors``); they never abort a run.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kikimimi.audio.decode import load_audio
from kikimimi.evaluation.tasks import Task, TaskItem, crop_or_pad, item_seed, unit_samples
from kikimimi.fileio import atomic_write_bytes

__all__ = [
    "EmbedFn",
    "FoldEmbeddings",
    "SplitEmbeddings",
    "TaskEmbeddings",
    "embed_task",
    "extract_embeddings",
    "fingerprint",
]

EmbedFn = Callable[[list[np.ndarray], int], np.ndarray]
LoadFn = Callable[[Path, int], tuple[np.ndarray, int]]


@dataclass
class SplitEmbeddings:
    """Embeddings of a list of items.

    Attributes:
        embeddings: ``[N_ok, D]`` float32, one row per readable item, in input order.
        keys: the item keys of those rows.
        errors: ``(key, reason)`` for every item that could not be read (skipped).
        from_cache: ``True`` when loaded from the ``.npz`` cache.
    """

    embeddings: np.ndarray
    keys: list[str]
    errors: list[tuple[str, str]] = field(default_factory=list)
    from_cache: bool = False

    def rows_for(self, items: Sequence[TaskItem]) -> tuple[np.ndarray, list[TaskItem]]:
        """Rows for ``items`` (those that were readable), in the order of ``items``."""
        index = {k: i for i, k in enumerate(self.keys)}
        kept = [it for it in items if it.key in index]
        rows = np.array([index[it.key] for it in kept], dtype=np.int64)
        dim = self.embeddings.shape[1] if self.embeddings.ndim == 2 else 0
        x = self.embeddings[rows] if len(rows) else np.zeros((0, dim), np.float32)
        return x, kept


def fingerprint(
    *,
    model_id: str,
    task_name: str,
    split: str,
    fold: int | None,
    unit_s: float,
    seed: int,
    sample_rate: int,
    keys: Sequence[str],
) -> str:
    """Hex SHA-1 of everything that determines a cached embedding array (incl. the item keys)."""
    payload = {
        "model_id": model_id,
        "task": task_name,
        "split": split,
        "fold": fold,
        "unit_s": float(unit_s),
        "seed": int(seed),
        "sample_rate": int(sample_rate),
        "keys": hashlib.sha1("\n".join(keys).encode()).hexdigest(),
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _cache_path(
    cache_dir: Path, model_id: str, task_name: str, split: str, fold: int | None, fp: str
) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model_id}-{task_name}-{split}-f{fold}")[-120:]
    return cache_dir / f"embs-{safe}-{fp[:16]}.npz"


def _load_cache(path: Path) -> SplitEmbeddings | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            emb = z["embeddings"].astype(np.float32)
            keys = [str(k) for k in z["keys"]]
            errors = list(
                zip((str(k) for k in z["error_keys"]), (str(r) for r in z["error_reasons"]), strict=True)
            )
    except (OSError, KeyError, ValueError):
        return None  # a damaged cache is recomputed
    return SplitEmbeddings(emb, keys, errors, from_cache=True)


def _save_cache(path: Path, result: SplitEmbeddings) -> None:
    buf = io.BytesIO()
    np.savez(
        buf,
        embeddings=result.embeddings,
        keys=np.array(result.keys, dtype=str),
        error_keys=np.array([k for k, _ in result.errors], dtype=str),
        error_reasons=np.array([r for _, r in result.errors], dtype=str),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def extract_embeddings(
    embed_fn: EmbedFn,
    items: Sequence[TaskItem],
    *,
    sample_rate: int,
    unit_s: float,
    random_crop: bool,
    seed: int = 42,
    role: str = "train",
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    model_id: str | None = None,
    task_name: str = "",
    split: str = "",
    fold: int | None = None,
    load_fn: LoadFn | None = None,
    progress: bool = False,
) -> SplitEmbeddings:
    """Embed ``items`` with fixed-length crops.

    Args:
        embed_fn: waveforms (list of ``[unit_samples]`` float32) at ``sample_rate`` → ``[B, D]``.
        items: clips to embed.
        sample_rate: model rate in Hz (audio is resampled on load).
        unit_s: crop length in seconds; ``unit_samples = int(sample_rate × unit_s)``.
        random_crop: seeded random crop (train/valid) if ``True``, else the first segment (test).
        seed: crop seed; ``role`` separates the crop streams of different splits.
        batch_size: clips per ``embed_fn`` call.
        cache_dir: folder for ``.npz`` caches (needs ``model_id``); ``None`` disables caching.
        model_id: identifies the model in the cache fingerprint.
        task_name, split, fold: identify the item list in the cache name/fingerprint.
        load_fn: ``(path, sample_rate) -> (wave [samples], sr)``; default :func:`kikimimi.audio.decode.load_audio`.
        progress: show a tqdm bar.

    Returns:
        :class:`SplitEmbeddings`; unreadable files are listed in ``errors`` and skipped.

    Raises:
        ValueError: ``cache_dir`` without ``model_id``, or ``embed_fn`` returned a wrong shape.
    """
    keys = [it.key or str(it.path) for it in items]
    cache_file = None
    if cache_dir is not None:
        if not model_id:
            raise ValueError("an embedding cache needs a model_id to fingerprint the model")
        fp = fingerprint(
            model_id=model_id,
            task_name=task_name,
            split=split,
            fold=fold,
            unit_s=unit_s,
            seed=seed,
            sample_rate=sample_rate,
            keys=keys,
        )
        cache_file = _cache_path(Path(cache_dir), model_id, task_name, split, fold, fp)
        if cache_file.is_file():
            cached = _load_cache(cache_file)
            if cached is not None:
                return cached

    load = load_fn or load_audio
    n_unit = unit_samples(sample_rate, unit_s)
    chunks: list[np.ndarray] = []
    ok_keys: list[str] = []
    errors: list[tuple[str, str]] = []
    batch: list[np.ndarray] = []
    batch_keys: list[str] = []

    def flush() -> None:
        if not batch:
            return
        out = np.asarray(embed_fn(list(batch), sample_rate), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise ValueError(
                f"embedding function returned shape {out.shape} for a batch of {len(batch)}; want [B, D]"
            )
        chunks.append(out)
        ok_keys.extend(batch_keys)
        batch.clear()
        batch_keys.clear()

    iterator = zip(items, keys, strict=True)
    if progress:
        iterator = tqdm(iterator, total=len(items), desc=f"embed {task_name} {split}".strip(), unit="clip")
    for it, key in iterator:
        try:
            wave, sr = load(it.path, sample_rate)
            wave = np.asarray(wave, dtype=np.float32)
            if wave.ndim != 1:
                wave = wave.mean(axis=0)
            if sr != sample_rate:
                raise ValueError(f"loader returned {sr} Hz, expected {sample_rate} Hz")
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not fatal
            errors.append((key, f"{type(e).__name__}: {e}"))
            continue
        rng = np.random.default_rng(item_seed(seed, role, key)) if random_crop else None
        batch.append(crop_or_pad(wave, n_unit, rng))
        batch_keys.append(key)
        if len(batch) >= batch_size:
            flush()
    flush()
    emb = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 0), np.float32)
    result = SplitEmbeddings(emb, ok_keys, errors)
    if cache_file is not None:
        _save_cache(cache_file, result)
    return result


@dataclass
class FoldEmbeddings:
    """Embeddings of one fold; item lists hold only readable items, aligned with the rows."""

    index: int
    x_train: np.ndarray
    train: list[TaskItem]
    x_valid: np.ndarray | None
    valid: list[TaskItem] | None
    x_test: np.ndarray
    test: list[TaskItem]


@dataclass
class TaskEmbeddings:
    """Per-fold embeddings of a task plus the list of unreadable files ``(key, reason)``."""

    task: Task
    folds: list[FoldEmbeddings]
    errors: list[tuple[str, str]]
    settings: dict


def embed_task(
    embed_fn: EmbedFn,
    task: Task,
    *,
    sample_rate: int,
    seed: int = 42,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    model_id: str | None = None,
    folds: Sequence[int] | None = None,
    load_fn: LoadFn | None = None,
    progress: bool = False,
) -> TaskEmbeddings:
    """Embed every fold of ``task``: random crops for train/valid, first segment for test.

    A cross-validation task is embedded once per crop kind over all items (split ``"cv-train"`` with
    random crops, ``"cv-test"`` with first segments) and every fold takes its rows from those two arrays:
    identical to per-fold extraction (crops depend on the item only) at a fraction of the cost.
    """
    common = dict(
        sample_rate=sample_rate,
        unit_s=task.unit_s,
        seed=seed,
        batch_size=batch_size,
        cache_dir=cache_dir,
        model_id=model_id,
        task_name=task.name,
        load_fn=load_fn,
        progress=progress,
    )
    out: list[FoldEmbeddings] = []
    errors: dict[str, str] = {}
    if task.is_cv:
        tr = extract_embeddings(
            embed_fn, task.items, random_crop=True, role="train", split="cv-train", **common
        )
        te = extract_embeddings(
            embed_fn, task.items, random_crop=False, role="test", split="cv-test", **common
        )
        errors.update(tr.errors)
        errors.update(te.errors)
        for fold in task.folds(folds):
            x_tr, it_tr = tr.rows_for(fold.train)
            x_te, it_te = te.rows_for(fold.test)
            out.append(FoldEmbeddings(fold.index, x_tr, it_tr, None, None, x_te, it_te))
    else:
        (fold,) = list(task.folds())
        parts = {}
        for name, items in (("train", fold.train), ("valid", fold.valid), ("test", fold.test)):
            if items is None:
                parts[name] = (None, None)
                continue
            res = extract_embeddings(
                embed_fn, items, random_crop=name != "test", role=name, split=name, fold=None, **common
            )
            errors.update(res.errors)
            parts[name] = res.rows_for(items)
        out.append(FoldEmbeddings(0, *parts["train"], *parts["valid"], *parts["test"]))
    settings = {
        "task": task.name,
        "unit_s": task.unit_s,
        "sample_rate": sample_rate,
        "crop_seed": seed,
        "model_id": model_id,
    }
    return TaskEmbeddings(task, out, sorted(errors.items()), settings)
