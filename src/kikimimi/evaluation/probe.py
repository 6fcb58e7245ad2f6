"""Probes on frozen embeddings: the EVAR-style linear probe and a logistic-regression probe (docs/usage.md,
"Evaluation").

Per fold and seed, both probes:

1. fit ``StandardScaler`` on **all** training embeddings (before any hold-out) and apply it to every part;
2. if the task has no validation split, hold out 10% of training; the split is retried with new seeds until
   every class occurs in both parts (a per-class construction is the last resort);
3. select their hyper-parameter on the validation part with the task's metric
   (:mod:`kikimimi.evaluation.metrics`) and score the selected model on test.

``probe="linear"`` (EVAR, docs/reference.md §8): ``nn.Linear(D, C)`` (or ``hidden=(512,)`` → Linear, ReLU,
Dropout 0.5, Linear); Adam (β 0.9/0.999, eps 1e-8, weight decay 1e-8), constant lr, mini-batches of
``min(200, N)``, up to 200 epochs; loss ``mean over N×C of −onehot·log_softmax`` (cross-entropy / C) with an
explicit one-hot of ``n_classes`` columns, BCE with logits for multi-label; early stopping with patience 20 and
the best weights restored. Two departures from EVAR, both measured (docs/usage.md, "Evaluation"):

- EVAR fixes one lr per model family (3e-4 BYOL-A, 3e-5 M2D); kikimimi trains one probe per lr of
  :data:`DEFAULT_LR_GRID` and keeps the one with the lowest validation loss (with ``early_stop="metric"``: the
  best validation score), the same rule for every model (``lr=`` pins one value);
- EVAR stops on the validation *score*, whose plateaus on small validation sets stop the probe long before it
  fits; kikimimi stops on the validation loss (``early_stop="metric"`` restores EVAR's rule; ties → later epoch).

``probe="logistic"``: scikit-learn ``LogisticRegression`` with ``C`` chosen on validation
(:mod:`kikimimi.evaluation.logistic`).

The score is the mean over folds; ``seeds`` repeat the probe on the same embeddings → mean ± std (ddof 0).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kikimimi.evaluation.embeddings import EmbedFn, FoldEmbeddings, TaskEmbeddings, embed_task
from kikimimi.evaluation.extras import require
from kikimimi.evaluation.logistic import DEFAULT_C_GRID, fit_logistic
from kikimimi.evaluation.metrics import (
    chance_score,
    majority_score,
    metric_score,
    murmur_weighted_accuracy,
    per_class_accuracy,
    uar,
)
from kikimimi.evaluation.tasks import Task

__all__ = [
    "DEFAULT_LR_GRID",
    "PROBES",
    "FoldResult",
    "ProbeConfig",
    "ProbeResult",
    "build_probe",
    "evaluate_task",
    "holdout_split",
    "probe_embeddings",
    "train_probe",
]


#: Learning rates the linear probe tries (one probe each; the best on validation is kept).
DEFAULT_LR_GRID: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2)

#: Probe protocols.
PROBES = ("linear", "logistic")


@dataclass
class ProbeConfig:
    """Probe hyper-parameters (EVAR's, except the lr: ``None`` searches ``lr_grid`` on validation, and the
    early-stopping signal).

    ``probe``: ``"linear"`` or ``"logistic"``; ``c_grid``: the logistic probe's ``C`` values.
    ``early_stop``: ``"loss"`` (validation cross-entropy, the default) or ``"metric"`` (EVAR: the validation
    score; on small validation sets its plateaus stop training early, docs/usage.md).
    """

    lr: float | None = None
    lr_grid: tuple[float, ...] = DEFAULT_LR_GRID
    probe: str = "linear"
    c_grid: tuple[float, ...] = DEFAULT_C_GRID
    early_stop: str = "loss"
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
        score: test score under the task's metric.
        valid_score: best validation score; ``best_epoch`` its 1-based epoch; ``epochs_run`` total epochs
            (logistic probe: 0).
        y_true: test targets (``[N]`` indices or ``[N, C]`` multi-hot); ``y_score``: test logits ``[N, C]``.
        test_keys: item keys aligned with ``y_true``.
        chosen: the selected hyper-parameter (``{"lr": …}`` or ``{"C": …}``) and the validation score of each
            candidate (``"valid_scores"``).
        scores: the test score under every metric that applies (accuracy and UAR, W.acc for murmur classes).
        reference: ``{"chance": …, "majority": …}`` on this test part.
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
    chosen: dict = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)

    @property
    def y_pred(self) -> np.ndarray:
        """Arg-max predictions ``[N]``."""
        return self.y_score.argmax(axis=1)


@dataclass
class ProbeResult:
    """Outcome of a (repeated, k-fold) probe.

    Attributes:
        metric: the task's metric (``accuracy``, ``uar``, ``wacc`` or ``mAP``); ``probe``: ``linear`` / ``logistic``.
        score: mean over seeds of the per-seed fold mean; ``std``: std over seeds (ddof 0).
        seed_scores: per-seed fold means; ``fold_scores``: ``{fold: [score per seed]}``.
        per_class_accuracy: ``{class: accuracy}`` on all test predictions, averaged over seeds
            (single-label only; ``nan`` for classes never in a test set).
        predictions: test predictions of the first seed, one dict per item (``key``, ``fold``, ``label``,
            ``prediction`` / ``scores``).
        folds: every :class:`FoldResult`.
        classes: class names; ``settings``: hyper-parameters, seeds and the choice per fold and seed
            (``settings["chosen"]``).
        scores: mean test score under every applicable metric; ``reference``: mean chance / majority lines.
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
    probe: str = "linear"
    scores: dict[str, float] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)


class _StandardScaler:
    """Mean/std standardisation fit on training rows (sklearn semantics: unit std where std > 0)."""

    def __init__(self, x: np.ndarray) -> None:
        self._scaler = require("sklearn.preprocessing").StandardScaler().fit(x)

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
    train_test_split = require("sklearn.model_selection").train_test_split

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


def _fit_linear(x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray, *,
                lr: float, n_classes: int, multi_label: bool, metric: str, classes: Sequence[str],
                cfg: ProbeConfig, seed: int) -> tuple[nn.Module, float, float, int, int]:
    """Train one linear probe at ``lr`` with early stopping → ``(model, valid score, valid loss, best epoch,
    epochs run)``; the model holds the best weights."""
    device = cfg.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_probe(x_train.shape[1], n_classes, cfg.hidden, cfg.dropout).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
        xt = torch.from_numpy(x_train).to(device)
        yt = _targets(y_train, n_classes, multi_label).to(device)
        n = len(xt)
        bs = max(1, min(cfg.batch_size, n))
        gen = torch.Generator().manual_seed(seed)
        yv = _targets(y_valid, n_classes, multi_label)
        best_crit, best_score, best_loss, best_epoch, best_state, waited, epoch = -np.inf, -np.inf, 0.0, 0, None, 0, 0
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, bs):
                b = order[start : start + bs].to(device)
                loss = _loss(model(xt[b]), yt[b], multi_label)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            val_logits = _predict(model, x_valid, device)
            val, val_loss = _valid_scores(val_logits, y_valid, yv, metric, classes, multi_label)
            crit = -val_loss if cfg.early_stop == "loss" else val
            if crit >= best_crit:
                best_crit, best_score, best_loss, best_epoch, waited = crit, val, val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
    return model, float(best_score), float(best_loss), best_epoch, epoch


def _valid_scores(logits: np.ndarray, y_valid: np.ndarray, y_valid_t: torch.Tensor, metric: str,
                  classes: Sequence[str], multi_label: bool) -> tuple[float, float]:
    """``(validation score (−inf for nan), validation loss)`` of ``logits`` ``[N, C]``."""
    val = metric_score(metric, y_valid, logits, classes)
    val = -np.inf if np.isnan(val) else float(val)
    if not len(logits):
        return val, 0.0
    return val, float(_loss(torch.from_numpy(np.asarray(logits, np.float32)), y_valid_t, multi_label))


def _fit_linear_grid(x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray, *,
                     lrs: Sequence[float], n_classes: int, multi_label: bool, metric: str, classes: Sequence[str],
                     cfg: ProbeConfig, seed: int) -> list[tuple[nn.Linear, float, float, int, int]]:
    """:func:`_fit_linear` for every lr of ``lrs`` at once (no hidden layer): one weight pair per lr, one Adam
    parameter group each, the same seeded initialisation and batch order, each with its own early stopping.
    The result equals separate runs; the shared batches only save the per-step overhead. Returns one
    ``(model, valid score, valid loss, best epoch, epochs run)`` per lr."""
    device = cfg.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        init = build_probe(x_train.shape[1], n_classes)  # the same draw as each separate run
    weights = [nn.Parameter(init.weight.detach().clone().to(device)) for _ in lrs]
    biases = [nn.Parameter(init.bias.detach().clone().to(device)) for _ in lrs]
    opt = torch.optim.Adam([{"params": [w, b], "lr": float(lr)} for w, b, lr in zip(weights, biases, lrs, strict=True)],
                           betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
    xt, xv = torch.from_numpy(x_train).to(device), torch.from_numpy(x_valid).to(device)
    yt = _targets(y_train, n_classes, multi_label).to(device)
    n, g = len(xt), len(lrs)
    bs = max(1, min(cfg.batch_size, n))
    gen = torch.Generator().manual_seed(seed)
    yv = _targets(y_valid, n_classes, multi_label)
    best = [(-np.inf, -np.inf, 0.0, 0, None)] * g  # (criterion, score, loss, epoch, (w, b))
    waited, ran, done = [0] * g, [0] * g, [False] * g
    for epoch in range(1, cfg.epochs + 1):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            b = order[start : start + bs].to(device)
            logits = torch.einsum("nd,gcd->gnc", xt[b], torch.stack(weights)) + torch.stack(biases)[:, None]
            loss = sum(_loss(logits[k], yt[b], multi_label) for k in range(g))  # independent members
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            val_logits = torch.einsum("nd,gcd->gnc", xv, torch.stack(weights)) + torch.stack(biases)[:, None]
        for k in range(g):
            if done[k]:
                continue
            ran[k] = epoch
            val, val_loss = _valid_scores(val_logits[k].float().cpu().numpy(), y_valid, yv, metric, classes,
                                          multi_label)
            crit = -val_loss if cfg.early_stop == "loss" else val
            if crit >= best[k][0]:
                best[k] = (crit, val, val_loss, epoch, (weights[k].detach().clone(), biases[k].detach().clone()))
                waited[k] = 0
            else:
                waited[k] += 1
                done[k] = waited[k] >= cfg.patience
        if all(done):
            break
    out = []
    for k in range(g):
        model = build_probe(x_train.shape[1], n_classes).to(device)
        _, val, val_loss, best_epoch, state = best[k]
        state = state or (weights[k].detach(), biases[k].detach())
        with torch.no_grad():
            model.weight.copy_(state[0])
            model.bias.copy_(state[1])
        out.append((model, float(val), float(val_loss), best_epoch, ran[k]))
    return out


def _targets(y: np.ndarray, n_classes: int, multi_label: bool) -> torch.Tensor:
    if multi_label:
        return torch.from_numpy(np.asarray(y, np.float32))
    return nn.functional.one_hot(torch.from_numpy(np.asarray(y, np.int64)), n_classes).float()


def _loss(logits: torch.Tensor, target: torch.Tensor, multi_label: bool) -> torch.Tensor:
    if multi_label:
        return nn.functional.binary_cross_entropy_with_logits(logits, target)
    return -(target * torch.log_softmax(logits, dim=-1)).mean()  # EVAR: cross-entropy / C


def _all_scores(metric: str, y_true: np.ndarray, logits: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Test scores under every metric that applies (single-label: accuracy, UAR and, for murmur classes, W.acc)."""
    if metric == "mAP":
        return {"mAP": metric_score("mAP", y_true, logits, classes)}
    y_pred = logits.argmax(axis=1)
    out = {"accuracy": metric_score("accuracy", y_true, logits, classes), "uar": uar(y_true, y_pred, len(classes))}
    if set(classes) <= {"Present", "Unknown", "Absent"} and "Present" in classes:
        out["wacc"] = murmur_weighted_accuracy(y_true, y_pred, list(classes))
    return out


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
    metric: str | None = None,
    classes: Sequence[str] | None = None,
) -> FoldResult:
    """Fit one probe (``config.probe``; the linear one per lr of the grid unless ``config.lr`` is set), select on
    validation and score the selection on the test part.

    Args:
        x_train, x_valid, x_test: embeddings ``[N, D]``; ``x_valid=None`` → 10% class-complete hold-out.
        y_*: ``[N]`` class indices (single-label) or ``[N, C]`` 0/1 (multi-label).
        n_classes: number of output logits ``C`` (the one-hot width, also for 2-class tasks).
        seed: seeds the hold-out, the initialisation, batch order and dropout.
        metric: selection and test metric (default: accuracy, mAP for multi-label).
        classes: class names (default ``"0" … "C-1"``; W.acc needs the murmur names).

    Returns:
        :class:`FoldResult` with test score and logits.
    """
    cfg = config or ProbeConfig()
    if cfg.probe not in PROBES:
        raise ValueError(f"unknown probe {cfg.probe!r}; choose one of {', '.join(PROBES)}")
    metric = metric or ("mAP" if multi_label else "accuracy")
    classes = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
    x_train = np.asarray(x_train, np.float32)
    x_test = np.asarray(x_test, np.float32)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if len(x_train) == 0:
        raise ValueError("the probe got no training embeddings")
    if cfg.standard_scaler:
        scale = _StandardScaler(x_train)  # fit on all training rows, before the hold-out (EVAR)
        x_train, x_test = scale(x_train), scale(x_test)
        x_valid = scale(np.asarray(x_valid, np.float32)) if x_valid is not None else None
    y_all_train = y_train
    if x_valid is None or len(x_valid) == 0:
        tr, va = holdout_split(
            y_train, multi_label=multi_label, ratio=cfg.valid_ratio, seed=seed, tries=cfg.holdout_tries
        )
        x_valid, y_valid = x_train[va], y_train[va]
        x_train, y_train = x_train[tr], y_train[tr]
    y_valid = np.asarray(y_valid)
    x_valid = np.asarray(x_valid, np.float32)
    common = dict(n_classes=n_classes, metric=metric, classes=classes, multi_label=multi_label)
    if cfg.probe == "logistic":
        fit = fit_logistic(x_train, y_train, x_valid, y_valid, x_test, c_grid=cfg.c_grid, **common)
        logits, best_score, best_epoch, epochs_run = fit.test_logits, fit.valid_score, 0, 0
        chosen = {"C": fit.c, "valid_scores": fit.valid_scores}
    else:
        grid = (cfg.lr,) if cfg.lr is not None else tuple(cfg.lr_grid)
        best = None
        tried: dict[float, float] = {}
        if cfg.hidden:
            fits = [_fit_linear(x_train, y_train, x_valid, y_valid, lr=lr, cfg=cfg, seed=seed, **common)
                    for lr in grid]
        else:
            fits = _fit_linear_grid(x_train, y_train, x_valid, y_valid, lrs=grid, cfg=cfg, seed=seed, **common)
        for lr, (model, val, val_loss, b_ep, ran) in zip(grid, fits, strict=True):
            tried[float(lr)] = val
            better = (-val_loss, val) > (-best[2], best[1]) if cfg.early_stop == "loss" and best else None
            if best is None or (better if better is not None else (val, -val_loss) > (best[1], -best[2])):
                best = (model, val, val_loss, b_ep, ran, float(lr))
        assert best is not None, "lr_grid is empty"
        model, best_score, _, best_epoch, epochs_run, lr = best
        logits = _predict(model, x_test, cfg.device)
        chosen = {"lr": lr, "valid_scores": tried}
    score = metric_score(metric, y_test, logits, classes)
    reference = {"chance": chance_score(metric, y_test, n_classes),
                 "majority": majority_score(metric, y_all_train, y_test, classes)}
    return FoldResult(fold, seed, float(score), float(best_score), best_epoch, epochs_run, y_test, logits,
                      list(test_keys), chosen, _all_scores(metric, y_test, logits, classes), reference)


def _probe_fold(f: FoldEmbeddings, task: Task, cfg: ProbeConfig, seed: int) -> FoldResult:
    """:func:`train_probe` on one fold's embeddings with the task's targets, metric and classes."""
    classes = task.classes
    return train_probe(
        f.x_train,
        task.targets(f.train, classes),
        f.x_valid if f.valid else None,
        task.targets(f.valid, classes) if f.valid else None,
        f.x_test,
        task.targets(f.test, classes),
        n_classes=len(classes),
        multi_label=task.multi_label,
        config=cfg,
        seed=seed,
        fold=f.index,
        test_keys=[it.key for it in f.test],
        metric=task.metric,
        classes=classes,
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

    The probe kind is ``config.probe``; the metric is ``task.metric``.
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
        jobs = tqdm(jobs, desc=f"{cfg.probe} probe {task.name}", unit="fold")
    by_seed: dict[int, list[FoldResult]] = {}
    # The logistic probe has no seeded part when the fold has a validation split (lbfgs is deterministic; the
    # seed only draws the hold-out of a fold without one), so every seed reuses the first seed's fit.
    seedless: dict[int, FoldResult] = {}
    for seed, f in jobs:
        if f.index in seedless:
            r = replace(seedless[f.index], seed=seed)
        else:
            r = _probe_fold(f, task, cfg, seed)
            if cfg.probe == "logistic" and f.valid:
                seedless[f.index] = r
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
        **asdict(cfg),
        "seeds": list(seeds),
        "n_classes": n_classes,
        "multi_label": multi,
        "metric": task.metric,
        "n_folds": len(folds),
        "task": task.name,
        "unit_s": task.unit_s,
        "chosen": [{"fold": r.fold, "seed": r.seed, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                    "valid_score": r.valid_score, **r.chosen} for r in results],
    }
    settings["hidden"] = list(cfg.hidden)
    if cfg.probe == "logistic":  # settings of the other protocol would only mislead
        for key in ("lr", "lr_grid", "hidden", "epochs", "patience", "batch_size", "weight_decay", "dropout"):
            settings.pop(key, None)
    else:
        settings.pop("c_grid", None)
    score_names = list(results[0].scores) if results else []
    return ProbeResult(
        metric=task.metric,
        score=float(np.mean(seed_scores)),
        std=float(np.std(seed_scores)),
        seed_scores=seed_scores,
        fold_scores=fold_scores,
        per_class_accuracy=per_class,
        predictions=predictions,
        folds=results,
        classes=list(classes),
        settings=settings,
        probe=cfg.probe,
        scores={m: _seed_mean(by_seed, seeds, lambda r, m=m: r.scores[m]) for m in score_names},
        reference={k: _seed_mean(by_seed, seeds, lambda r, k=k: r.reference[k]) for k in ("chance", "majority")},
    )


def _seed_mean(by_seed: dict[int, list[FoldResult]], seeds: Sequence[int], value) -> float:
    """Mean over seeds of the fold mean of ``value(fold result)``."""
    return float(np.mean([np.mean([value(r) for r in by_seed[s]]) for s in seeds]))


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
