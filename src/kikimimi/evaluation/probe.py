"""Linear (or shallow MLP) probe on frozen embeddings, following the EVAR protocol (docs/reference.md §8).

Per fold and seed:

1. ``StandardScaler`` fit on **all** training embeddings (before any hold-out), applied to every part.
2. If the task has no validation split, 10% of training is held out; the split is retried with new seeds
   until every class occurs in both parts (a per-class construction is the last resort).
3. ``nn.Linear(D, C)`` (or ``hidden=(512,)`` → Linear, ReLU, Dropout 0.5, Linear); Adam (β 0.9/0.999,
   eps 1e-8, weight decay 1e-8), constant ``lr``; mini-batches of ``min(200, N)``; up to 200 epochs.
4. Loss: single-label ``mean over N×C of −onehot·log_softmax`` (cross-entropy / C) with an explicit one-hot of
   ``n_classes`` columns, so 2-class tasks are scored correctly; multi-label: BCE with logits.
5. Early stopping on validation accuracy (mAP for multi-label): a checkpoint is kept whenever the score is
   ``>=`` the best so far (ties → later epoch); training stops after ``patience`` epochs without one; the
   best weights are restored for the test.

The score is the mean over folds; ``seeds`` repeat the probe on the same embeddings → mean ± std (ddof 0).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kikimimi.evaluation.embeddings import EmbedFn, FoldEmbeddings, TaskEmbeddings, embed_task
from kikimimi.evaluation.metrics import per_class_accuracy, task_score
from kikimimi.evaluation.tasks import Task

__all__ = [
    "FoldResult",
    "ProbeConfig",
    "ProbeResult",
    "build_probe",
    "evaluate_task",
    "holdout_split",
    "probe_embeddings",
    "train_probe",
]


@dataclass
class ProbeConfig:
    """Probe hyper-parameters (EVAR defaults; ``lr`` 3e-4 for BYOL-A, 3e-5 for M2D)."""

    lr: float = 3e-4
    hidden: tuple[int, ...] = ()
    epochs: int = 200
    patience: int = 20
    batch_size: int = 200
    weight_decay: float = 1e-8
    valid_ratio: float = 0.1
    standard_scaler: bool = True
    holdout_tries: int = 100
    dropout: float = 0.5
    device: str = "cpu"


@dataclass
class FoldResult:
    """One fold × one seed.

    Attributes:
        score: test accuracy (or macro mAP).
        valid_score: best validation score; ``best_epoch`` its 1-based epoch; ``epochs_run`` total epochs.
        y_true: test targets (``[N]`` indices or ``[N, C]`` multi-hot); ``y_score``: test logits ``[N, C]``.
        test_keys: item keys aligned with ``y_true``.
    """

    fold: int
    seed: int
    score: float
    valid_score: float
    best_epoch: int
    epochs_run: int
    y_true: np.ndarray
    y_score: np.ndarray
    test_keys: list[str] = field(default_factory=list)

    @property
    def y_pred(self) -> np.ndarray:
        """Arg-max predictions ``[N]``."""
        return self.y_score.argmax(axis=1)


@dataclass
class ProbeResult:
    """Outcome of a (repeated, k-fold) probe.

    Attributes:
        metric: ``"accuracy"`` or ``"mAP"``.
        score: mean over seeds of the per-seed fold mean; ``std``: std over seeds (ddof 0).
        seed_scores: per-seed fold means; ``fold_scores``: ``{fold: [score per seed]}``.
        per_class_accuracy: ``{class: accuracy}`` on all test predictions, averaged over seeds
            (single-label only; ``nan`` for classes never in a test set).
        predictions: test predictions of the first seed, one dict per item (``key``, ``fold``, ``label``,
            ``prediction`` / ``scores``).
        folds: every :class:`FoldResult`.
        classes: class names; ``settings``: hyper-parameters and seeds.
    """

    metric: str
    score: float
    std: float
    seed_scores: list[float]
    fold_scores: dict[int, list[float]]
    per_class_accuracy: dict[str, float]
    predictions: list[dict]
    folds: list[FoldResult]
    classes: list[str]
    settings: dict


class _StandardScaler:
    """Mean/std standardisation fit on training rows (sklearn semantics: unit std where std > 0)."""

    def __init__(self, x: np.ndarray) -> None:
        from sklearn.preprocessing import StandardScaler

        self._scaler = StandardScaler().fit(x)

    def __call__(self, x: np.ndarray | None) -> np.ndarray | None:
        if x is None or len(x) == 0:
            return x
        return self._scaler.transform(x).astype(np.float32)


def build_probe(dim: int, n_classes: int, hidden: Sequence[int] = (), dropout: float = 0.5) -> nn.Module:
    """``nn.Linear(dim, n_classes)``; with ``hidden`` an MLP (Linear → ReLU → Dropout per hidden layer)."""
    layers: list[nn.Module] = []
    d = dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
        d = h
    layers.append(nn.Linear(d, n_classes))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def _classes_present(y: np.ndarray, multi_label: bool) -> set[int]:
    if multi_label:
        return set(np.nonzero(y.sum(axis=0) > 0)[0].tolist())
    return set(np.unique(y).tolist())


def holdout_split(
    y: np.ndarray, *, multi_label: bool, ratio: float = 0.1, seed: int = 42, tries: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train_idx, valid_idx)`` of a seeded ``ratio`` hold-out in which every class that has at
    least two training items occurs on both sides.

    Random splits (``sklearn.model_selection.train_test_split``, ``random_state = seed + attempt``) are
    retried up to ``tries`` times; if none qualifies, a per-class split is built directly (one or
    ``round(ratio × n)`` items of each class go to validation).
    """
    from sklearn.model_selection import train_test_split

    n = len(y)
    idx = np.arange(n)
    counts = y.sum(axis=0) if multi_label else np.bincount(y)
    need = {int(c) for c in np.nonzero(counts >= 2)[0]}
    n_valid = max(1, int(round(n * ratio)))
    for attempt in range(tries):
        tr, va = train_test_split(idx, test_size=n_valid, random_state=seed + attempt, shuffle=True)
        if need <= _classes_present(y[tr], multi_label) and need <= _classes_present(y[va], multi_label):
            return np.sort(tr), np.sort(va)
    rng = np.random.default_rng(seed)
    valid: set[int] = set()
    for c in sorted(need):
        members = np.nonzero(y[:, c] > 0)[0] if multi_label else np.nonzero(y == c)[0]
        members = [int(m) for m in rng.permutation(members)]
        have = sum(1 for m in members if m in valid)
        want = max(1, int(round(len(members) * ratio)))
        for m in members[:-1]:  # always leave one in training
            if have >= want:
                break
            if m not in valid:
                valid.add(m)
                have += 1
    va = np.array(sorted(valid), dtype=np.int64)
    tr = np.setdiff1d(idx, va)
    return tr, va


@torch.no_grad()
def _predict(model: nn.Module, x: np.ndarray, device: str, batch: int = 4096) -> np.ndarray:
    model.eval()
    outs = [
        model(torch.from_numpy(x[i : i + batch]).to(device)).float().cpu() for i in range(0, len(x), batch)
    ]
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)


def train_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray | None,
    y_valid: np.ndarray | None,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    n_classes: int,
    multi_label: bool = False,
    config: ProbeConfig | None = None,
    seed: int = 42,
    fold: int = 0,
    test_keys: Sequence[str] = (),
) -> FoldResult:
    """Fit one probe and score it on the test part.

    Args:
        x_train, x_valid, x_test: embeddings ``[N, D]``; ``x_valid=None`` → 10% class-complete hold-out.
        y_*: ``[N]`` class indices (single-label) or ``[N, C]`` 0/1 (multi-label).
        n_classes: number of output logits ``C`` (the one-hot width, also for 2-class tasks).
        seed: seeds the hold-out, the initialisation, batch order and dropout.

    Returns:
        :class:`FoldResult` with test score and logits.
    """
    cfg = config or ProbeConfig()
    x_train = np.asarray(x_train, np.float32)
    x_test = np.asarray(x_test, np.float32)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if len(x_train) == 0:
        raise ValueError("the probe got no training embeddings")
    if cfg.standard_scaler:
        scale = _StandardScaler(x_train)  # fit on all training rows, before the hold-out (EVAR)
        x_train, x_test = scale(x_train), scale(x_test)
        x_valid = scale(np.asarray(x_valid, np.float32)) if x_valid is not None else None
    if x_valid is None or len(x_valid) == 0:
        tr, va = holdout_split(
            y_train, multi_label=multi_label, ratio=cfg.valid_ratio, seed=seed, tries=cfg.holdout_tries
        )
        x_valid, y_valid = x_train[va], y_train[va]
        x_train, y_train = x_train[tr], y_train[tr]
    y_valid = np.asarray(y_valid)
    device = cfg.device

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_probe(x_train.shape[1], n_classes, cfg.hidden, cfg.dropout).to(device)
        opt = torch.optim.Adam(
            model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay
        )
        xt = torch.from_numpy(x_train).to(device)
        if multi_label:
            yt = torch.from_numpy(y_train.astype(np.float32)).to(device)
        else:
            yt = (
                nn.functional.one_hot(torch.from_numpy(y_train.astype(np.int64)), n_classes)
                .float()
                .to(device)
            )
        n = len(xt)
        bs = max(1, min(cfg.batch_size, n))
        gen = torch.Generator().manual_seed(seed)
        best_score, best_epoch, best_state, waited, epoch = -np.inf, 0, None, 0, 0
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, bs):
                b = order[start : start + bs].to(device)
                logits = model(xt[b])
                if multi_label:
                    loss = nn.functional.binary_cross_entropy_with_logits(logits, yt[b])
                else:
                    loss = -(yt[b] * torch.log_softmax(logits, dim=-1)).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            val = task_score(y_valid, _predict(model, x_valid, device), multi_label)
            val = -np.inf if np.isnan(val) else val
            if val >= best_score:
                best_score, best_epoch, waited = val, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        logits = _predict(model, x_test, device)
    score = task_score(y_test, logits, multi_label)
    return FoldResult(
        fold, seed, float(score), float(best_score), best_epoch, epoch, y_test, logits, list(test_keys)
    )


def probe_embeddings(
    folds: Sequence[FoldEmbeddings],
    task: Task,
    *,
    config: ProbeConfig | None = None,
    seeds: Sequence[int] = (42,),
    progress: bool = False,
) -> ProbeResult:
    """Run the probe on every fold for every seed (same embeddings) and aggregate.

    Args:
        folds: per-fold embeddings (:func:`kikimimi.evaluation.embeddings.embed_task`).
        task: supplies classes and label encoding.
        seeds: one probe per seed; EVAR's 2-pass protocol uses ``(42, 43, 44)``.
    """
    cfg = config or ProbeConfig()
    classes = task.classes
    n_classes = len(classes)
    multi = task.multi_label
    results: list[FoldResult] = []
    seed_scores: list[float] = []
    fold_scores: dict[int, list[float]] = {}
    per_class_runs: list[np.ndarray] = []
    jobs = [(s, f) for s in seeds for f in folds]
    if progress:
        jobs = tqdm(jobs, desc=f"probe {task.name}", unit="fold")
    by_seed: dict[int, list[FoldResult]] = {}
    for seed, f in jobs:
        y_tr = task.targets(f.train, classes)
        y_va = task.targets(f.valid, classes) if f.valid else None
        y_te = task.targets(f.test, classes)
        r = train_probe(
            f.x_train,
            y_tr,
            f.x_valid if f.valid else None,
            y_va,
            f.x_test,
            y_te,
            n_classes=n_classes,
            multi_label=multi,
            config=cfg,
            seed=seed,
            fold=f.index,
            test_keys=[it.key for it in f.test],
        )
        results.append(r)
        by_seed.setdefault(seed, []).append(r)
        fold_scores.setdefault(f.index, []).append(r.score)
    for seed in seeds:
        rs = by_seed[seed]
        seed_scores.append(float(np.mean([r.score for r in rs])))
        if not multi:
            y_all = np.concatenate([r.y_true for r in rs])
            p_all = np.concatenate([r.y_pred for r in rs])
            per_class_runs.append(per_class_accuracy(y_all, p_all, n_classes))
    per_class: dict[str, float] = {}
    if per_class_runs:
        with np.errstate(invalid="ignore"):
            stacked = np.vstack(per_class_runs)
            mean_pc = np.where(
                np.all(np.isnan(stacked), axis=0),
                np.nan,
                np.nanmean(np.where(np.isnan(stacked), 0, stacked), axis=0),
            )
        per_class = {c: float(v) for c, v in zip(classes, mean_pc, strict=True)}
    predictions: list[dict] = []
    for r in by_seed[seeds[0]]:
        for i, key in enumerate(r.test_keys):
            if multi:
                predictions.append(
                    {
                        "key": key,
                        "fold": r.fold,
                        "label": ",".join(c for c, v in zip(classes, r.y_true[i], strict=True) if v),
                        "scores": r.y_score[i].tolist(),
                    }
                )
            else:
                predictions.append(
                    {
                        "key": key,
                        "fold": r.fold,
                        "label": classes[int(r.y_true[i])],
                        "prediction": classes[int(r.y_pred[i])],
                    }
                )
    settings = {
        **asdict(config or cfg),
        "seeds": list(seeds),
        "n_classes": n_classes,
        "multi_label": multi,
        "n_folds": len(folds),
        "task": task.name,
        "unit_s": task.unit_s,
    }
    settings["hidden"] = list(cfg.hidden)
    return ProbeResult(
        metric="mAP" if multi else "accuracy",
        score=float(np.mean(seed_scores)),
        std=float(np.std(seed_scores)),
        seed_scores=seed_scores,
        fold_scores=fold_scores,
        per_class_accuracy=per_class,
        predictions=predictions,
        folds=results,
        classes=list(classes),
        settings=settings,
    )


def evaluate_task(
    embed_fn: EmbedFn,
    task: Task,
    *,
    sample_rate: int,
    config: ProbeConfig | None = None,
    seeds: Sequence[int] = (42,),
    crop_seed: int = 42,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    model_id: str | None = None,
    progress: bool = False,
) -> tuple[ProbeResult, TaskEmbeddings]:
    """Embed a task (cached, crops seeded by ``crop_seed``) and run the probe for every seed.

    Returns the probe result (its ``settings`` also list unreadable files under ``"errors"``) and the
    embeddings.
    """
    embs = embed_task(
        embed_fn,
        task,
        sample_rate=sample_rate,
        seed=crop_seed,
        batch_size=batch_size,
        cache_dir=cache_dir,
        model_id=model_id,
        progress=progress,
    )
    result = probe_embeddings(embs.folds, task, config=config, seeds=seeds, progress=progress)
    result.settings.update(embs.settings)
    result.settings["errors"] = [f"{k}: {r}" for k, r in embs.errors]
    return result, embs
