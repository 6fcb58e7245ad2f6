"""Heart-murmur screening on frozen embeddings (CirCor 2022 style, docs/reference.md §8).

Pipeline: each recording is cut into fixed ``segment_s`` (5 s) segments (the last one zero-padded at the
end) → one embedding per segment → a small head (BatchNorm1d without affine, then an MLP with hidden
``(128,)``) trained with class-weighted cross-entropy → segment logits averaged per recording → arg-max
recording label → patient label by rule: *Present* if any recording is Present, else *Unknown* if any is
Unknown, else *Absent*. Scores: PhysioNet 2022 weighted accuracy (Present 5, Unknown 3, Absent 1) and UAR
with per-class recall, at recording and patient level.

Class weights = class-balanced (``N / (C · N_c)`` over training segments) × ``class_factors``. The default
factors are ``sqrt([1, 3, 5])`` in Present/Unknown/Absent order as the brief documents it; they are
configurable because the class order behind the original setting is not verified.

Input: a CSV with ``file_name,label,recording_id,patient_id,split`` (e.g. the ``circor`` adapter output).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kikimimi.audio.decode import load_audio
from kikimimi.evaluation.embeddings import EmbedFn, LoadFn
from kikimimi.evaluation.metrics import confusion_matrix, per_class_accuracy, uar, weighted_accuracy
from kikimimi.evaluation.tasks import Task

__all__ = [
    "MURMUR_CLASSES",
    "HeartConfig",
    "HeartResult",
    "Recording",
    "SegmentEmbeddings",
    "class_weights",
    "embed_recordings",
    "patient_decision",
    "read_heart_csv",
    "recording_logits",
    "run_heart",
    "score_labels",
    "segment_recording",
    "train_head",
]

MURMUR_CLASSES: tuple[str, ...] = ("Present", "Unknown", "Absent")
_MURMUR_WEIGHTS = {"Present": 5.0, "Unknown": 3.0, "Absent": 1.0}


@dataclass
class HeartConfig:
    """Settings of the heart-sound app (defaults follow the EMBC 2025 app: SGD, bs 1024, 50 epochs)."""

    segment_s: float = 5.0
    hidden: tuple[int, ...] = (128,)
    classes: tuple[str, ...] = MURMUR_CLASSES
    class_factors: dict[str, float] = field(
        default_factory=lambda: {"Present": 1.0, "Unknown": math.sqrt(3.0), "Absent": math.sqrt(5.0)}
    )
    class_balanced: bool = True
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) or "adam"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 1024
    epochs: int = 50
    dropout: float = 0.0
    cosine_schedule: bool = True
    embed_batch_size: int = 64
    device: str = "cpu"


@dataclass(frozen=True)
class Recording:
    """One recording: audio ``path``, murmur ``label``, ids and split."""

    key: str
    path: Path
    label: str
    recording_id: str
    patient_id: str
    split: str


def read_heart_csv(csv_path: str | Path, *, audio_root: str | Path | None = None) -> list[Recording]:
    """Read ``file_name,label,recording_id,patient_id,split`` rows (missing ids default to the file stem).

    Raises:
        kikimimi.evaluation.tasks.TaskError: malformed CSV (names the file and line).
    """
    task = Task.from_csv(csv_path, unit_s=5.0, audio_root=audio_root)
    if task.is_cv:
        raise ValueError(f"'{csv_path}': the heart app needs a 'split' column (train/valid/test), not folds")
    out = []
    for it in task.items:
        rec = it.meta.get("recording_id") or it.path.stem
        pid = it.meta.get("patient_id") or rec
        out.append(Recording(it.key, it.path, it.label, rec, pid, str(it.split)))
    return out


def segment_recording(wave: np.ndarray, sample_rate: int, segment_s: float = 5.0) -> np.ndarray:
    """Split ``[samples]`` into ``[S, int(sample_rate × segment_s)]`` consecutive segments; the last one is
    zero-padded at the end (a recording shorter than one segment gives one padded segment)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"segment_recording expects a 1-D waveform, got shape {wave.shape}")
    n = int(sample_rate * segment_s)
    if n <= 0:
        raise ValueError(f"segment length must be positive, got {segment_s} s at {sample_rate} Hz")
    count = max(1, math.ceil(wave.shape[0] / n))
    padded = np.zeros(count * n, dtype=np.float32)
    padded[: wave.shape[0]] = wave
    return padded.reshape(count, n)


def patient_decision(labels: Iterable[str]) -> str:
    """Patient label from its recordings: Present if any Present, else Unknown if any Unknown, else Absent."""
    labels = set(labels)
    if "Present" in labels:
        return "Present"
    if "Unknown" in labels:
        return "Unknown"
    return "Absent"


def class_weights(
    y: np.ndarray, n_classes: int, factors: Sequence[float], *, balanced: bool = True
) -> np.ndarray:
    """Loss weights ``[C]``: ``N / (C · N_c)`` (when ``balanced``; 0-count classes get 1) × ``factors``."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    if balanced:
        base = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 1.0)
    else:
        base = np.ones(n_classes)
    return (base * np.asarray(factors, dtype=np.float64)).astype(np.float32)


@dataclass
class SegmentEmbeddings:
    """Segment embeddings ``x`` ``[S, D]`` with ``rec_index`` ``[S]`` into ``recordings`` (readable ones)."""

    x: np.ndarray
    rec_index: np.ndarray
    recordings: list[Recording]
    errors: list[tuple[str, str]]


def embed_recordings(
    embed_fn: EmbedFn,
    recordings: Sequence[Recording],
    *,
    sample_rate: int,
    segment_s: float = 5.0,
    batch_size: int = 64,
    load_fn: LoadFn | None = None,
    progress: bool = False,
) -> SegmentEmbeddings:
    """Embed every ``segment_s`` segment of every recording; unreadable files are skipped and reported."""
    if load_fn is None:
        load_fn = load_audio

    rows: list[np.ndarray] = []
    rec_index: list[int] = []
    kept: list[Recording] = []
    errors: list[tuple[str, str]] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            out = np.asarray(embed_fn(list(pending), sample_rate), dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != len(pending):
                raise ValueError(f"embedding function returned shape {out.shape} for {len(pending)} segments")
            rows.append(out)
            pending.clear()

    iterator = recordings
    if progress:
        iterator = tqdm(recordings, desc="embed recordings", unit="rec")
    for rec in iterator:
        try:
            wave, sr = load_fn(rec.path, sample_rate)
            wave = np.asarray(wave, dtype=np.float32)
            if wave.ndim != 1:
                wave = wave.mean(axis=0)
        except Exception as e:  # noqa: BLE001 - unreadable recordings are reported, not fatal
            errors.append((rec.key, f"{type(e).__name__}: {e}"))
            continue
        segs = segment_recording(wave, sample_rate, segment_s)
        for s in segs:
            pending.append(s)
            rec_index.append(len(kept))
            if len(pending) >= batch_size:
                flush()
        kept.append(rec)
    flush()
    x = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
    return SegmentEmbeddings(x, np.asarray(rec_index, dtype=np.int64), kept, errors)


def _head(dim: int, n_classes: int, hidden: Sequence[int], dropout: float) -> nn.Module:
    layers: list[nn.Module] = [nn.BatchNorm1d(dim, affine=False)]
    d = dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = h
    layers.append(nn.Linear(d, n_classes))
    for m in layers:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


@torch.no_grad()
def _logits(model: nn.Module, x: np.ndarray, device: str) -> np.ndarray:
    model.eval()
    if len(x) == 0:
        return np.zeros((0, 0), np.float32)
    return model(torch.from_numpy(np.asarray(x, np.float32)).to(device)).float().cpu().numpy()


def recording_logits(segment_logits: np.ndarray, rec_index: np.ndarray, n_recordings: int) -> np.ndarray:
    """Mean of segment logits per recording: ``[S, C]`` + ``[S]`` → ``[R, C]``."""
    out = np.zeros((n_recordings, segment_logits.shape[1]), np.float64)
    counts = np.bincount(rec_index, minlength=n_recordings).astype(np.float64)
    np.add.at(out, rec_index, segment_logits)
    return (out / np.maximum(counts, 1)[:, None]).astype(np.float32)


def score_labels(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> dict:
    """``{"w_acc", "uar", "recall": {class: r}, "confusion": [[...]], "n"}``; ``w_acc`` is ``None`` unless
    the classes are the murmur classes."""
    index = {c: i for i, c in enumerate(classes)}
    t = np.array([index[v] for v in y_true], dtype=np.int64)
    p = np.array([index[v] for v in y_pred], dtype=np.int64)
    rec = per_class_accuracy(t, p, len(classes))
    w_acc = None
    if set(classes) <= set(_MURMUR_WEIGHTS):
        w_acc = weighted_accuracy(list(y_true), list(y_pred), _MURMUR_WEIGHTS)
    return {
        "w_acc": w_acc,
        "uar": uar(t, p, len(classes)),
        "recall": {c: float(r) for c, r in zip(classes, rec, strict=True)},
        "confusion": confusion_matrix(t, p, len(classes)).tolist(),
        "n": int(len(t)),
    }


def reference_lines(y_true: Sequence[str], majority: str, classes: Sequence[str]) -> dict:
    """Chance (uniform guess: ``1/C`` for W.acc and UAR alike) and the scores of always answering the
    training majority class ``majority``: ``{"chance", "majority_class", "majority_w_acc", "majority_uar"}``."""
    m = score_labels(y_true, [majority] * len(y_true), classes)
    return {"chance": 1.0 / len(classes), "majority_class": majority, "majority_w_acc": m["w_acc"],
            "majority_uar": m["uar"]}


def _patient_level(
    recs: Sequence[Recording], rec_pred: Sequence[str]
) -> tuple[list[str], list[str], list[str]]:
    truth: dict[str, str] = {}
    preds: dict[str, list[str]] = {}
    for r, p in zip(recs, rec_pred, strict=True):
        truth.setdefault(r.patient_id, r.label)
        preds.setdefault(r.patient_id, []).append(p)
    pids = sorted(truth)
    return pids, [truth[k] for k in pids], [patient_decision(preds[k]) for k in pids]


def train_head(
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    config: HeartConfig,
    *,
    seed: int = 0,
    select: Callable[[nn.Module], float] | None = None,
) -> tuple[nn.Module, dict]:
    """Train the segment head with weighted cross-entropy.

    Args:
        x: segment embeddings ``[S, D]``; y: class indices ``[S]``; weights: per-class loss weights ``[C]``.
        select: optional ``model -> score`` called after every epoch; the best (``>=``, later epoch wins on
            ties) weights are restored at the end. Without it the last epoch is kept.

    Returns:
        ``(model, info)`` with ``info = {"best_epoch", "best_score"}``.
    """
    n_classes = len(weights)
    cfg = config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _head(x.shape[1], n_classes, cfg.hidden, cfg.dropout).to(cfg.device)
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(
                model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        elif cfg.optimizer == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")
        xt = torch.from_numpy(np.asarray(x, np.float32)).to(cfg.device)
        yt = torch.from_numpy(np.asarray(y, np.int64)).to(cfg.device)
        loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(np.asarray(weights, np.float32)).to(cfg.device))
        n = len(xt)
        bs = max(2, min(cfg.batch_size, n))  # BatchNorm needs ≥ 2 rows
        steps_per_epoch = max(1, n // bs)
        total = steps_per_epoch * cfg.epochs
        gen = torch.Generator().manual_seed(seed)
        best, best_epoch, best_state, step = -math.inf, cfg.epochs, None, 0
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = torch.randperm(n, generator=gen)
            for k in range(steps_per_epoch):  # drop the last partial batch (BatchNorm)
                if cfg.cosine_schedule:
                    for g in opt.param_groups:
                        g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
                b = order[k * bs : (k + 1) * bs].to(cfg.device)
                loss = loss_fn(model(xt[b]), yt[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            if select is not None:
                score = select(model)
                score = -math.inf if score is None or np.isnan(score) else score
                if score >= best:
                    best, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
        if best_state is not None:
            model.load_state_dict(best_state)
    return model, {"best_epoch": best_epoch, "best_score": None if best == -math.inf else float(best)}


@dataclass
class HeartResult:
    """Test scores at recording and patient level, predictions, settings and unreadable files."""

    recording_metrics: dict
    patient_metrics: dict
    recording_predictions: list[dict]
    patient_predictions: list[dict]
    settings: dict
    errors: list[tuple[str, str]]


def run_heart(
    recordings: str | Path | Sequence[Recording],
    embed_fn: EmbedFn,
    *,
    sample_rate: int,
    config: HeartConfig | None = None,
    seed: int = 0,
    audio_root: str | Path | None = None,
    load_fn: LoadFn | None = None,
    segments: SegmentEmbeddings | None = None,
    progress: bool = False,
) -> HeartResult:
    """Train on the ``train`` split, select the epoch by patient-level W.acc (UAR for non-murmur labels) on
    ``valid`` when present, and score ``test``.

    Args:
        recordings: a heart CSV path or :class:`Recording` list.
        embed_fn: segment waveforms at ``sample_rate`` → ``[B, D]``.
        segments: precomputed :func:`embed_recordings` output (skips extraction; reuse across seeds).
    """
    cfg = config or HeartConfig()
    recs = (
        read_heart_csv(recordings, audio_root=audio_root)
        if isinstance(recordings, (str, Path))
        else list(recordings)
    )
    classes = list(cfg.classes)
    unknown = sorted({r.label for r in recs} - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the configured classes {classes}")
    seg = segments or embed_recordings(
        embed_fn,
        recs,
        sample_rate=sample_rate,
        segment_s=cfg.segment_s,
        batch_size=cfg.embed_batch_size,
        load_fn=load_fn,
        progress=progress,
    )
    index = {c: i for i, c in enumerate(classes)}
    seg_split = np.array([seg.recordings[i].split for i in seg.rec_index])
    seg_y = np.array([index[seg.recordings[i].label] for i in seg.rec_index], dtype=np.int64)

    def part(split: str):
        rec_ids = [i for i, r in enumerate(seg.recordings) if r.split == split]
        mask = seg_split == split
        remap = {old: new for new, old in enumerate(rec_ids)}
        ri = np.array([remap[i] for i in seg.rec_index[mask]], dtype=np.int64)
        return seg.x[mask], ri, [seg.recordings[i] for i in rec_ids]

    x_tr = seg.x[seg_split == "train"]
    y_tr = seg_y[seg_split == "train"]
    if len(x_tr) < 2:
        raise ValueError("the heart app needs at least two training segments")
    factors = [float(cfg.class_factors.get(c, 1.0)) for c in classes]
    weights = class_weights(y_tr, len(classes), factors, balanced=cfg.class_balanced)

    def predict(model: nn.Module, x: np.ndarray, ri: np.ndarray, rs: list[Recording]):
        logits = recording_logits(_logits(model, x, cfg.device), ri, len(rs))
        return logits, [classes[int(k)] for k in logits.argmax(axis=1)]

    select = None
    x_va, ri_va, recs_va = part("valid")
    if recs_va:

        def select(model: nn.Module) -> float:
            _, pred = predict(model, x_va, ri_va, recs_va)
            _, truth, pat = _patient_level(recs_va, pred)
            m = score_labels(truth, pat, classes)
            return m["w_acc"] if m["w_acc"] is not None else m["uar"]

    model, info = train_head(x_tr, y_tr, weights, cfg, seed=seed, select=select)
    x_te, ri_te, recs_te = part("test")
    if not recs_te:
        raise ValueError("no readable test recordings")
    logits, rec_pred = predict(model, x_te, ri_te, recs_te)
    rec_metrics = score_labels([r.label for r in recs_te], rec_pred, classes)
    pids, truth, pat_pred = _patient_level(recs_te, rec_pred)
    pat_metrics = score_labels(truth, pat_pred, classes)
    majority = classes[int(np.bincount(y_tr, minlength=len(classes)).argmax())]
    for metrics, labels in ((rec_metrics, [r.label for r in recs_te]), (pat_metrics, truth)):
        metrics["reference"] = reference_lines(labels, majority, classes)
    rec_rows = [
        {
            "key": r.key,
            "recording_id": r.recording_id,
            "patient_id": r.patient_id,
            "label": r.label,
            "prediction": p,
            "logits": lg.tolist(),
        }
        for r, p, lg in zip(recs_te, rec_pred, logits, strict=True)
    ]
    pat_rows = [
        {"patient_id": k, "label": t, "prediction": p} for k, t, p in zip(pids, truth, pat_pred, strict=True)
    ]
    settings = {
        **asdict(cfg),
        "seed": seed,
        "sample_rate": sample_rate,
        "class_weights": weights.tolist(),
        **info,
    }
    settings["hidden"], settings["classes"] = list(cfg.hidden), classes
    return HeartResult(rec_metrics, pat_metrics, rec_rows, pat_rows, settings, seg.errors)
