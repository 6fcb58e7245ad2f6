"""Downstream evaluation tasks in the EVAR layout: item lists, splits / folds, classes and fixed-length crops.

A task is described by a CSV with columns ``file_name``, ``label`` and either ``split`` (``train`` /
``valid`` / ``test``) or ``fold`` (an integer; fold *k* is the test set and every other fold is training,
with no validation part, as EVAR does). Labels joined by commas mark a multi-label task (detected
automatically). Any further columns (e.g. ``recording_id``, ``patient_id``) are kept in ``TaskItem.meta``.
A folder with one sub-folder per class works too (a seeded, stratified train/valid/test split).

Clips are cut to ``unit_samples = int(sample_rate × unit_s)`` samples: a seeded random crop for
training/validation, the first segment for test; shorter clips are zero-padded at the end. Unless given, the
clip length is EVAR's for a known task name (:data:`TASK_UNIT_S`), else the 95th percentile of the durations
of **all** the task's files (read from the headers with ``soundfile.info``), capped at :data:`MAX_UNIT_S`.

Each task reports one metric (:data:`kikimimi.evaluation.metrics.METRICS`): the ``--metric`` flag, else the
``metric`` key of an optional sidecar ``<csv stem>.task.json`` next to the CSV (which may also give ``unit_s``),
else :data:`TASK_METRIC` for a known name, ``wacc`` for the murmur classes (Present / Unknown / Absent),
``mAP`` for multi-label tasks and ``accuracy`` otherwise.
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from kikimimi.fileio import AUDIO_EXTENSIONS

__all__ = [
    "MAX_UNIT_S",
    "SPLITS",
    "TASK_METRIC",
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

#: Longest clip length chosen from the durations (seconds); EVAR's longest task unit is GTZAN's 30 s.
MAX_UNIT_S = 30.0

#: Percentile of the file durations that sets the clip length of a task without a known default.
UNIT_PERCENTILE = 95.0

#: Metric per known task name (heart-sound work reports UAR; the CirCor murmur task W.acc).
TASK_METRIC: dict[str, str] = {"circor": "wacc", "physionet2016": "uar", "bmdhs": "uar"}

_METRIC_NAMES = ("accuracy", "uar", "wacc", "mAP")
_MURMUR_CLASSES = {"Present", "Unknown", "Absent"}

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


def file_duration_s(path: Path) -> float | None:
    """Duration in seconds from the file header (``soundfile.info``), ``None`` when unreadable."""
    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - unreadable headers are counted as unknown
        return None
    if info.samplerate <= 0 or info.frames <= 0:
        return None
    return info.frames / info.samplerate


def unit_from_durations(durations: Sequence[float], percentile: float = UNIT_PERCENTILE,
                        cap_s: float = MAX_UNIT_S, default: float = 5.0) -> float:
    """Clip length in seconds: the ``percentile`` of ``durations`` rounded up to 10 ms, at most ``cap_s``
    (``default`` when there is no duration)."""
    if not durations:
        return default
    value = float(np.percentile(np.asarray(durations, np.float64), percentile))
    return min(cap_s, max(0.01, math.ceil(round(value * 100, 6)) / 100))


def _read_sidecar(csv_path: Path) -> dict:
    """The optional ``<csv stem>.task.json`` beside a task CSV (``{"metric": ..., "unit_s": ...}``)."""
    side = csv_path.with_name(csv_path.stem + ".task.json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TaskError(f"'{side}': not readable JSON ({exc})") from None
    if not isinstance(data, dict) or set(data) - {"metric", "unit_s"}:
        raise TaskError(f"'{side}': expected an object with the keys 'metric' and/or 'unit_s', got {data!r}")
    return data


@dataclass
class Task:
    """A downstream task: items with labels and either fixed splits or numbered folds.

    Attributes:
        name: task key (e.g. ``"esc50"``); selects the default ``unit_s``.
        items: all clips.
        unit_s: clip length in seconds used for crops.
        multi_label: ``True`` when any label field held several comma-joined labels.
        source: the CSV or folder the task came from (for messages).
        metric: the reported metric (``accuracy``, ``uar``, ``wacc``, ``mAP``); empty → :meth:`default_metric`.
        unit_rule: how ``unit_s`` was chosen (stated in reports).
    """

    name: str
    items: list[TaskItem]
    unit_s: float
    multi_label: bool = False
    source: Path | None = None
    metric: str = ""
    unit_rule: str = "given"
    _durations: dict[str, float | None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.set_metric(self.metric or None)

    def set_metric(self, metric: str | None) -> None:
        """Set the reported metric (``None`` → :meth:`default_metric`).

        Raises:
            TaskError: unknown metric, a single-label metric on a multi-label task (or the reverse), or
                ``wacc`` without the murmur classes.
        """
        metric = metric or self.default_metric()
        if metric not in _METRIC_NAMES:
            raise TaskError(f"task '{self.name}': unknown metric '{metric}' (choose {', '.join(_METRIC_NAMES)})")
        if self.multi_label != (metric == "mAP"):
            kind = "multi-label" if self.multi_label else "single-label"
            raise TaskError(f"task '{self.name}' is {kind}: metric '{metric}' does not apply "
                            f"({'mAP' if self.multi_label else 'accuracy, uar or wacc'})")
        if metric == "wacc" and not set(self.classes) <= _MURMUR_CLASSES:
            raise TaskError(f"task '{self.name}': wacc needs the murmur classes Present/Unknown/Absent, "
                            f"got {self.classes}")
        self.metric = metric

    def default_metric(self) -> str:
        """mAP (multi-label), else :data:`TASK_METRIC` by name, else wacc for murmur classes, else accuracy."""
        if self.multi_label:
            return "mAP"
        if self.name in TASK_METRIC:
            return TASK_METRIC[self.name]
        classes = set(self.classes)
        if "Present" in classes and classes <= _MURMUR_CLASSES:
            return "wacc"
        return "accuracy"

    def durations(self) -> dict[str, float | None]:
        """``{item key: duration in seconds or None (unreadable header)}`` for every item (cached)."""
        if self._durations is None:
            self._durations = {it.key: file_duration_s(it.path) for it in self.items}
        return self._durations

    def infer_unit_s(self) -> None:
        """Set ``unit_s`` from the durations of all items (:func:`unit_from_durations`) and ``unit_rule``."""
        known = [d for d in self.durations().values() if d is not None]
        self.unit_s = unit_from_durations(known)
        self.unit_rule = (f"{UNIT_PERCENTILE:g}th percentile of {len(known)} file durations, capped at "
                          f"{MAX_UNIT_S:g} s" if known else "default (no readable file header)")

    def length_summary(self, sample_rate: int = 16000) -> dict[str, int]:
        """How many clips ``unit_s`` crops, pads or fits (``unknown``: unreadable header), at ``sample_rate``."""
        n_unit = self.unit_samples(sample_rate)
        out = {"cropped": 0, "padded": 0, "exact": 0, "unknown": 0}
        for d in self.durations().values():
            if d is None:
                out["unknown"] += 1
                continue
            n = int(round(d * sample_rate))
            out["cropped" if n > n_unit else "padded" if n < n_unit else "exact"] += 1
        return out

    def check_labels(self) -> None:
        """Refuse a single-label task whose valid/test items carry labels that no training item has.

        Raises:
            TaskError: names the labels and where they occur (one line).
        """
        if self.multi_label:
            return  # EVAR scores multi-label tasks on the training classes only
        for fold in self.folds():
            seen = {it.label for it in fold.train}
            parts = {"valid": fold.valid or [], "test": fold.test}
            for part, items in parts.items():
                missing = sorted({it.label for it in items} - seen)
                if missing:
                    where = f"fold {fold.index} test" if self.is_cv else f"the {part} split"
                    raise TaskError(f"task '{self.name}' ({self.source}): label(s) {missing} occur in {where} but "
                                    "not in its training data; a probe cannot predict them — move some of those "
                                    "clips to train or drop them")

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_csv(
        cls,
        csv_path: str | Path,
        *,
        name: str | None = None,
        unit_s: float | None = None,
        audio_root: str | Path | None = None,
        metric: str | None = None,
    ) -> Task:
        """Read an EVAR-style task CSV (and its optional ``<stem>.task.json`` sidecar).

        Args:
            csv_path: CSV with ``file_name``, ``label`` and ``split`` or ``fold`` columns.
            name: task name (default: the CSV stem).
            unit_s: clip length in seconds (default: the sidecar's ``unit_s``, :data:`TASK_UNIT_S` for known
                names, else the 95th percentile of all file durations, capped at :data:`MAX_UNIT_S`).
            metric: reported metric (default: the sidecar's, else :meth:`default_metric`).
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
        if not {lab for it in items if it.split in (None, "train") for lab in it.labels}:
            raise TaskError(f"'{csv_path}': no training rows")
        side = _read_sidecar(csv_path)
        task = cls(task_name, items, unit_s or 0.0, multi, csv_path, metric or side.get("metric", ""))
        task._choose_unit(unit_s, side.get("unit_s"))
        return task

    def _choose_unit(self, given: float | None, sidecar: float | None) -> None:
        if given is not None:
            self.unit_s, self.unit_rule = float(given), "given (--unit-s)"
        elif sidecar is not None:
            self.unit_s, self.unit_rule = float(sidecar), "from the task's .task.json"
        elif self.name in TASK_UNIT_S:
            self.unit_s, self.unit_rule = TASK_UNIT_S[self.name], f"EVAR's unit for '{self.name}'"
        else:
            self.infer_unit_s()

    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        *,
        name: str | None = None,
        unit_s: float | None = None,
        ratios: Sequence[float] = (0.7, 0.1, 0.2),
        seed: int = 0,
        metric: str | None = None,
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
        task = cls(name or root.name, items, unit_s or 0.0, False, root, metric or "")
        task._choose_unit(unit_s, None)
        return task

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
