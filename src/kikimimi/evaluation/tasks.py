"""Downstream evaluation tasks in the EVAR layout: item lists, splits / folds, classes and fixed-length crops.

A task is described by a CSV with columns ``file_name``, ``label`` and either ``split`` (``train`` /
``valid`` / ``test``) or ``fold`` (an integer; fold *k* is the test set and every other fold is training,
with no validation part, as EVAR does). Labels joined by commas mark a multi-label task (detected
automatically). Any further columns (e.g. ``recording_id``, ``patient_id``) are kept in ``TaskItem.meta``.
A folder with one sub-folder per class works too (a seeded, stratified train/valid/test split).

Clips are cut to ``unit_samples = int(sample_rate × unit_s)`` samples: a seeded random crop for
training/validation, the first segment for test; shorter clips are zero-padded at the end.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from kikimimi.fileio import AUDIO_EXTENSIONS

__all__ = [
    "SPLITS",
    "TASK_UNIT_S",
    "Fold",
    "Task",
    "TaskError",
    "TaskItem",
    "crop_or_pad",
    "group_split",
    "item_seed",
    "stratified_split",
    "unit_samples",
]

SPLITS = ("train", "valid", "test")

#: Default clip length in seconds per EVAR task key (docs/reference.md §8).
TASK_UNIT_S: dict[str, float] = {
    "esc50": 5.0,
    "us8k": 4.0,
    "spcv2": 1.0,
    "spcv1": 1.0,
    "vc1": 8.2,
    "voxforge": 5.8,
    "cremad": 2.5,
    "cremad_gender": 2.5,
    "gtzan": 30.0,
    "nsynth": 4.0,
    "nspitch": 4.0,
    "nsvelocity": 4.0,
    "surge": 4.0,
    "fsd50k": 7.6358,
    "fsdnoisy18k": 8.25,
    "vocalsound": 4.18,
    "as20k": 10.0,
    "circor": 5.0,
}

class TaskError(ValueError):
    """A task definition (CSV or folder) is malformed; the message names the file and the row."""


@dataclass(frozen=True)
class TaskItem:
    """One audio clip of a task.

    Attributes:
        path: absolute (resolved) audio file path.
        labels: one label (single-label task) or several (multi-label).
        split: ``"train"``, ``"valid"`` or ``"test"`` for split tasks, ``None`` for fold tasks.
        fold: the fold number for cross-validation tasks, else ``None``.
        key: the ``file_name`` as written in the CSV (stable across machines; used in outputs/caches).
        meta: the other CSV columns (e.g. ``recording_id``, ``patient_id``).
    """

    path: Path
    labels: tuple[str, ...]
    split: str | None = None
    fold: int | None = None
    key: str = ""
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        """The single label (the comma-joined labels for a multi-label item)."""
        return ",".join(self.labels)


@dataclass(frozen=True)
class Fold:
    """One train/valid/test arrangement of a task (``valid`` is ``None`` when the task has none)."""

    index: int
    train: list[TaskItem]
    valid: list[TaskItem] | None
    test: list[TaskItem]


def unit_samples(sample_rate: int, unit_s: float) -> int:
    """Fixed clip length in samples, ``int(sample_rate × unit_s)`` (Python truncation, as EVAR)."""
    return int(sample_rate * unit_s)


def crop_or_pad(wave: np.ndarray, n_samples: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Cut a mono waveform ``[samples]`` to exactly ``n_samples``.

    Longer clips: a random crop drawn from ``rng`` (train/valid) or, when ``rng`` is ``None``, the first
    ``n_samples`` (test). Shorter clips are zero-padded at the end. Returns float32 ``[n_samples]``.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"crop_or_pad expects a 1-D waveform, got shape {wave.shape}")
    length = wave.shape[0]
    if length > n_samples:
        start = 0 if rng is None else int(rng.integers(0, length - n_samples + 1))
        return wave[start : start + n_samples].copy()
    if length < n_samples:
        return np.pad(wave, (0, n_samples - length))
    return wave.copy()


def _rounded_split_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Counts per part for ``n`` items and ``ratios`` (train first); the train part keeps ≥ 1 item."""
    total = float(sum(ratios))
    counts = [0] * len(ratios)
    for i in range(1, len(ratios)):
        counts[i] = int(round(n * ratios[i] / total))
    # keep at least one item in the train part, taking from the largest other part
    while n - sum(counts[1:]) < 1 and sum(counts[1:]) > 0:
        j = max(range(1, len(counts)), key=lambda k: counts[k])
        counts[j] -= 1
    counts[0] = n - sum(counts[1:])
    return counts


def stratified_split(
    labels: Sequence[str], ratios: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
) -> list[str]:
    """Seeded split keeping label proportions; returns ``"train"``/``"valid"``/``"test"`` per item.

    Each class is shuffled with ``numpy.random.default_rng(seed)`` and cut by ``ratios`` (rounded per class;
    every class keeps at least one training item).
    """
    if len(ratios) != 3:
        raise ValueError(f"ratios must give (train, valid, test), got {ratios}")
    rng = np.random.default_rng(seed)
    out = [""] * len(labels)
    for label in sorted(set(labels)):
        idx = np.array([i for i, lab in enumerate(labels) if lab == label])
        rng.shuffle(idx)
        counts = _rounded_split_counts(len(idx), ratios)
        bounds = np.cumsum([0, *counts])
        for part, name in enumerate(SPLITS):
            for i in idx[bounds[part] : bounds[part + 1]]:
                out[int(i)] = name
    return out


def group_split(
    groups: Sequence[str], ratios: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
) -> dict[str, str]:
    """Seeded split of distinct group ids (speakers, presets, patients) into train/valid/test.

    Returns ``{group: split}``; items of one group always land in the same split.
    """
    unique = sorted(set(groups))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    counts = _rounded_split_counts(len(unique), ratios)
    bounds = np.cumsum([0, *counts])
    mapping: dict[str, str] = {}
    for part, name in enumerate(SPLITS):
        for i in order[bounds[part] : bounds[part + 1]]:
            mapping[unique[int(i)]] = name
    return mapping


def _infer_unit_s(paths: Sequence[Path], max_files: int = 100, default: float = 5.0) -> float:
    """Median duration (seconds) of up to ``max_files`` readable files, rounded to 10 ms."""
    durations = []
    for path in paths[:max_files]:
        try:
            info = sf.info(str(path))
        except Exception:  # noqa: BLE001 - unreadable headers are simply not counted
            continue
        if info.samplerate > 0 and info.frames > 0:
            durations.append(info.frames / info.samplerate)
    if not durations:
        return default
    return max(0.01, round(float(np.median(durations)), 2))


@dataclass
class Task:
    """A downstream task: items with labels and either fixed splits or numbered folds.

    Attributes:
        name: task key (e.g. ``"esc50"``); selects the default ``unit_s``.
        items: all clips.
        unit_s: clip length in seconds used for crops.
        multi_label: ``True`` when any label field held several comma-joined labels.
        source: the CSV or folder the task came from (for messages).
    """

    name: str
    items: list[TaskItem]
    unit_s: float
    multi_label: bool = False
    source: Path | None = None

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_csv(
        cls,
        csv_path: str | Path,
        *,
        name: str | None = None,
        unit_s: float | None = None,
        audio_root: str | Path | None = None,
    ) -> Task:
        """Read an EVAR-style task CSV.

        Args:
            csv_path: CSV with ``file_name``, ``label`` and ``split`` or ``fold`` columns.
            name: task name (default: the CSV stem).
            unit_s: clip length in seconds (default: :data:`TASK_UNIT_S` for known names, else the median
                duration of up to 100 training files).
            audio_root: folder that relative ``file_name`` values are resolved against (default: the CSV's
                folder).

        Raises:
            TaskError: missing file or columns, unknown split, non-integer fold, empty label or no rows; the
                message names the file and the (1-based, header = line 1) line.
        """
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise TaskError(f"'{csv_path}': task CSV not found")
        root = Path(audio_root) if audio_root is not None else csv_path.parent
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            missing = [c for c in ("file_name", "label") if c not in columns]
            if missing:
                raise TaskError(
                    f"'{csv_path}': missing column(s) {missing}; expected file_name,label and split or fold "
                    f"(found {columns})"
                )
            has_split, has_fold = "split" in columns, "fold" in columns
            if not has_split and not has_fold:
                raise TaskError(f"'{csv_path}': needs a 'split' (train/valid/test) or 'fold' column")
            items: list[TaskItem] = []
            multi = False
            for line, row in enumerate(reader, start=2):
                file_name = (row.get("file_name") or "").strip()
                if not file_name:
                    raise TaskError(f"'{csv_path}' line {line}: empty file_name")
                labels = tuple(s.strip() for s in (row.get("label") or "").split(",") if s.strip())
                if not labels:
                    raise TaskError(f"'{csv_path}' line {line}: empty label for '{file_name}'")
                multi = multi or len(labels) > 1
                split = fold = None
                split_text = (row.get("split") or "").strip().lower() if has_split else ""
                if split_text:
                    split = {"val": "valid", "validation": "valid", "eval": "test"}.get(
                        split_text, split_text
                    )
                    if split not in SPLITS:
                        raise TaskError(
                            f"'{csv_path}' line {line}: unknown split '{split_text}' (train, valid or test)"
                        )
                elif has_fold:
                    fold_text = (row.get("fold") or "").strip()
                    try:
                        fold = int(float(fold_text))
                        if float(fold_text) != fold:
                            raise ValueError
                    except ValueError:
                        raise TaskError(
                            f"'{csv_path}' line {line}: fold must be an integer, got '{fold_text}'"
                        ) from None
                else:
                    raise TaskError(f"'{csv_path}' line {line}: empty split for '{file_name}'")
                path = Path(file_name)
                if not path.is_absolute():
                    path = root / path
                meta = {
                    k: (v or "").strip()
                    for k, v in row.items()
                    if k not in ("file_name", "label", "split", "fold") and k is not None
                }
                items.append(TaskItem(path, labels, split, fold, file_name, meta))
        if not items:
            raise TaskError(f"'{csv_path}': no rows")
        kinds = {it.split is not None for it in items}
        if len(kinds) > 1:
            raise TaskError(f"'{csv_path}': mixes rows with a split and rows with only a fold")
        task_name = name or csv_path.stem
        task = cls(task_name, items, unit_s or 0.0, multi, csv_path)
        if not task.train_labels():
            raise TaskError(f"'{csv_path}': no training rows")
        if unit_s is None:
            task.unit_s = TASK_UNIT_S.get(task_name) or _infer_unit_s(
                [it.path for it in items if it.split in (None, "train")]
            )
        return task

    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        *,
        name: str | None = None,
        unit_s: float | None = None,
        ratios: Sequence[float] = (0.7, 0.1, 0.2),
        seed: int = 0,
    ) -> Task:
        """A task from ``root/<class>/**/<audio files>`` with a seeded stratified split.

        Raises:
            TaskError: ``root`` is missing or holds no class folder with audio files.
        """
        root = Path(root)
        if not root.is_dir():
            raise TaskError(f"'{root}': task folder not found")
        paths: list[Path] = []
        labels: list[str] = []
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for p in sorted(class_dir.rglob("*")):
                if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS:
                    paths.append(p)
                    labels.append(class_dir.name)
        if not paths:
            raise TaskError(
                f"'{root}': no class sub-folders with audio files ({', '.join(AUDIO_EXTENSIONS)})"
            )
        splits = stratified_split(labels, ratios, seed)
        items = [
            TaskItem(p.resolve(), (lab,), s, None, p.relative_to(root).as_posix())
            for p, lab, s in zip(paths, labels, splits, strict=True)
        ]
        task_name = name or root.name
        if unit_s is None:
            unit_s = TASK_UNIT_S.get(task_name) or _infer_unit_s(paths)
        return cls(task_name, items, unit_s, False, root)

    # ----------------------------------------------------------------------------------------- views
    @property
    def is_cv(self) -> bool:
        """``True`` for fold (cross-validation) tasks."""
        return self.items[0].split is None

    @property
    def has_valid(self) -> bool:
        """``True`` when the task brings its own validation split."""
        return any(it.split == "valid" for it in self.items)

    def fold_ids(self) -> list[int]:
        """Sorted fold numbers (``[0]`` for a split task)."""
        if not self.is_cv:
            return [0]
        return sorted({int(it.fold) for it in self.items if it.fold is not None})

    def train_labels(self) -> list[str]:
        """Labels seen in training: the train split, or every item for a fold task."""
        return sorted({lab for it in self.items if it.split in (None, "train") for lab in it.labels})

    @property
    def classes(self) -> list[str]:
        """Sorted unique training labels."""
        return self.train_labels()

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def split_items(self, split: str) -> list[TaskItem]:
        """Items of one split of a split task (``[]`` when absent)."""
        return [it for it in self.items if it.split == split]

    def folds(self, only: Sequence[int] | None = None) -> Iterator[Fold]:
        """Yield ``Fold(index, train, valid | None, test)``.

        Fold tasks: fold *k* → test, all other folds → train, no valid (EVAR). Split tasks: one fold
        (index 0) with the fixed splits; ``valid`` is ``None`` when the task has no validation rows.
        """
        if not self.is_cv:
            valid = self.split_items("valid")
            yield Fold(0, self.split_items("train"), valid or None, self.split_items("test"))
            return
        for k in self.fold_ids():
            if only is not None and k not in only:
                continue
            train = [it for it in self.items if it.fold != k]
            test = [it for it in self.items if it.fold == k]
            yield Fold(k, train, None, test)

    def targets(self, items: Sequence[TaskItem], classes: Sequence[str] | None = None) -> np.ndarray:
        """Encode labels: ``[N]`` int64 class indices, or ``[N, C]`` float32 multi-hot for multi-label.

        Raises:
            TaskError: a single-label item has a label that never occurs in training.
        """
        classes = list(classes if classes is not None else self.classes)
        index = {c: i for i, c in enumerate(classes)}
        if self.multi_label:
            y = np.zeros((len(items), len(classes)), dtype=np.float32)
            for n, it in enumerate(items):
                for lab in it.labels:
                    if lab in index:  # labels never seen in training cannot be scored
                        y[n, index[lab]] = 1.0
            return y
        out = np.empty(len(items), dtype=np.int64)
        for n, it in enumerate(items):
            if it.label not in index:
                raise TaskError(
                    f"'{self.source}': label '{it.label}' of '{it.key}' does not occur in the training data"
                )
            out[n] = index[it.label]
        return out

    def unit_samples(self, sample_rate: int) -> int:
        """``int(sample_rate × unit_s)``."""
        return unit_samples(sample_rate, self.unit_s)


def item_seed(seed: int, role: str, key: str) -> list[int]:
    """Entropy for the per-item crop generator: stable across runs, folds and batch composition."""
    return [int(seed), zlib.crc32(role.encode()), zlib.crc32(key.encode())]
