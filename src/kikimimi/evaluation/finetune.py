"""EVAR-style fine-tuning of a loaded encoder on a :class:`~kikimimi.evaluation.tasks.Task`
(docs/reference.md §8; ``dur_frames`` §4.1).

Model: the encoder (M2D ViT or BYOL-A CNN, all weights trainable unless ``freeze_embed``) → clip feature
(M2D: time-mean of the ``[T', Fg·D]`` frame features; BYOL-A: its max + mean pooled embedding) →
``BatchNorm1d(affine=False)`` → ``Linear`` (weights N(0, 0.01), bias 0) — the EVAR/official head.

One training step on a batch of waveforms (random ``unit_s`` crops, end-padded when short):
log-mel → mixup (λ ~ Beta(α, α) per item, partner from a permutation, power-domain mixing, labels
mixed alike) → ``(x − mean) / std`` → frequency mask → time mask → per-item random resize crop → model.
Loss: soft-target cross-entropy (``−Σ_c y_c log softmax_c``, mean over the batch), or BCE with logits
for multi-label tasks. The learning rate follows a per-iteration linear warm-up from 0 then a
half-cosine to ``min_lr``; optimisers SGD (momentum 0.9), AdamW (β 0.9/0.95, amsgrad) or LARS;
optional layer-wise lr decay for the ViT (block ``i`` of ``depth`` gets ``decay^(depth − i)``, the
patch embedding ``decay^(depth + 1)``, final norm and head 1).

Inputs of the ViT: with ``dur_frames`` the whole crop is encoded in one pass of up to ``dur_frames``
frames; the positional-embedding table is resampled bicubically to that grid when it is longer than
the pre-training length and truncated when shorter (:func:`set_dur_frames`). Without it, the official
chunking at the pre-training length applies.

Model selection: the validation split (first segment of each clip) is scored after every epoch and the
epoch with the best score (ties → later epoch) gives the test score. A task without a validation split
never selects on test: ``no_valid="holdout"`` carves a class-complete hold-out from training
(:func:`~kikimimi.evaluation.probe.holdout_split`), ``"last_epoch"`` takes the final weights; the result
records which (``selection``).

Determinism and resume: every random draw of epoch ``e`` of fold ``k`` comes from generators seeded by
``(seed, k, e)``; after each epoch ``last.pt`` (model, optimiser, scaler, epoch, history, best score, RNG
state) and, on improvement, ``best.pt`` are written atomically, so a killed run restarted with the same
``out_dir`` continues at the next epoch and ends with the same result.

Run length: ``epochs=None`` (the default) takes :func:`auto_epochs` of each fold's training clips (about
``AUTO_EPOCH_CLIPS`` clips seen, clamped to ``AUTO_EPOCHS``); once the first steps are timed, ``log`` gets
one estimate of the whole run as a range. ``max_minutes`` stops a fold before an epoch that would end past
its share of the time (at least one epoch each); the best epoch so far is kept and the run can be continued
by rerunning with the same ``out_dir`` without the limit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kikimimi.audio.decode import AudioDecodeError, load_audio
from kikimimi.checkpoints import load_encoder, save_kikimimi
from kikimimi.checkpoints.bundle import EncoderBundle
from kikimimi.checkpoints.safe_load import safe_torch_load
from kikimimi.device import resolve_device
from kikimimi.evaluation.encoder_settings import encoder_settings, task_norm_stats
from kikimimi.evaluation.metrics import per_class_accuracy, task_score
from kikimimi.evaluation.probe import holdout_split
from kikimimi.evaluation.tasks import Fold, Task, TaskItem, crop_or_pad
from kikimimi.features.augment import RandomResizeCrop
from kikimimi.features.augment_finetune import mixup_log_mel, random_resize_crop_batch, spec_augment
from kikimimi.features.frontend import LogMelSpectrogram
from kikimimi.features.normstats import NormStats
from kikimimi.fileio import atomic_torch_save
from kikimimi.models.encoder import FrameEncoder
from kikimimi.models.heads import TaggingHead
from kikimimi.models.masking import STRUCTURED_MARKED, gather_tokens, training_mask
from kikimimi.models.vit import AudioViT, resize_pos_embed
from kikimimi.optim import LARS, lr_at_step, set_lr

__all__ = [
    "FINETUNE_RECIPES",
    "OPTIMIZERS",
    "TRAINING_MASK_MODES",
    "SELECTIONS",
    "FinetuneConfig",
    "FinetuneModel",
    "FinetuneResult",
    "auto_epochs",
    "build_finetune_model",
    "build_optimizer",
    "export_finetuned",
    "finetune_lr",
    "finetune_task",
    "layer_decay_param_groups",
    "set_dur_frames",
]

OPTIMIZERS = ("sgd", "adamw", "lars")
#: ``training_mask_mode``: the structured mask of M2D2 (official code: marked rows/columns stay visible), plain
#: random masking, or the structured mask as described (marked rows/columns masked); kikimimi.models.masking
TRAINING_MASK_MODES = ("structured", "random", "structured-masked")
#: Named fine-tuning recipes (``kikimimi finetune --recipe NAME``; given flags win). ``m2d2-stage1.1``: M2D2 stage
#: 1.1, the AudioSet-2M fine-tuning of the stage-1 model before stage 2 (../shared/docs/fact-sheet-m2d2-2026.md §1,
#: ``util/ft-as2m.sh``): 1001-frame input, LARS lr 2.0, 70 epochs with 15 of warm-up, batch 64, mixup 0.5,
#: SpecAugment 30 bins / 192 frames, a structured training mask of 0.5 of the patches, no random resize crop.
FINETUNE_RECIPES: dict[str, dict[str, Any]] = {
    "m2d2-stage1.1": dict(dur_frames=1001, optimizer="lars", lr=2.0, epochs=70, warmup_epochs=15.0, batch_size=64,
                          mixup=0.5, freq_mask=30, time_mask=192, training_mask=0.5,
                          training_mask_mode="structured", rrc=False),
}
SELECTIONS = ("valid", "holdout", "last_epoch")
_DEFAULT_WD = {"sgd": 0.0, "adamw": 1e-4, "lars": 0.0}
AUTO_EPOCH_CLIPS = 2000  # epochs=None: about this many training clips seen per fold ...
AUTO_EPOCHS = (10, 200)  # ... in at least / at most this many epochs


def auto_epochs(n_train: int) -> int:
    """Epochs chosen from the number of training clips when none are given: ``ceil(AUTO_EPOCH_CLIPS / n_train)``
    clamped to ``AUTO_EPOCHS`` — 59 clips → 34 epochs, 8 clips → 200 (the EVAR default), ≥ 200 clips → 10."""
    if n_train < 1:
        raise ValueError(f"need at least one training clip, got {n_train}")
    return int(min(max(math.ceil(AUTO_EPOCH_CLIPS / n_train), AUTO_EPOCHS[0]), AUTO_EPOCHS[1]))


@dataclass
class FinetuneConfig:
    """Fine-tuning hyper-parameters (EVAR ``finetune.py`` names in brackets; defaults = EVAR defaults).

    Attributes:
        lr: base learning rate [``ft_lr``]; recipes: LARS 0.5 (ESC-50, SPCV2, AS20K), AdamW 5e-4 (VC1).
        optimizer: ``"sgd"`` (momentum 0.9), ``"adamw"`` or ``"lars"`` [``--optim``].
        epochs / warmup_epochs: schedule length and linear warm-up, both in epochs [``ft_epochs``, ``warmup_epochs``];
            ``epochs=None``: :func:`auto_epochs` of each fold's training clips (EVAR: 200).
        max_minutes: wall-clock limit of the whole run (``None`` = none); each fold gets an equal share of what is
            left and stops before an epoch that would end past it (at least one epoch), keeping its best epoch.
        min_lr: the cosine's floor (timm's ``lr_min``).
        batch_size: [``ft_bs``].
        weight_decay: ``None`` → 0 for SGD/LARS, 1e-4 for AdamW; never applied to 1-D parameters / biases.
        mixup: Beta α of batch mixup (0 = off) [``mixup``].
        freq_mask / time_mask: SpecAugment maximum widths in mel bins / frames (0 = off).
        rrc: per-item random resize crop [``ft_rrc``].
        lr_decay: layer-wise lr decay for the ViT (1.0 = off).
        freeze_embed: keep the ViT patch embedding fixed [``freeze_embed``].
        dur_frames: ViT input length in frames for one-pass encoding (``None`` = pre-training length).
        unit_s: crop length in seconds (``None`` = the task's).
        no_valid: selection when the task has no validation split: ``"holdout"`` or ``"last_epoch"``.
        holdout_ratio: size of that hold-out.
        norm_stats: ``(mean, std)`` override; ``None`` → the file's (M2D), per task from the first fold's
            training files (BYOL-A, as the EVAR probe).
        folds: fold indices to run (``None`` = all).
        device: ``"cpu"``, ``"cuda"`` … (``"auto"`` picks CUDA when present); ``amp``: float16 autocast on CUDA.
        seed: seeds the head initialisation, hold-out, batch order, crops and every augmentation.
        training_mask: share of the ViT's input patches dropped in training, per chunk (0 = off; M2D2 stage 1.1:
            0.5); the clip feature is then each frequency row's mean over its visible patches (the time mean of
            the frame features when nothing is dropped). training_mask_mode: one of :data:`TRAINING_MASK_MODES`.
    """

    lr: float = 1e-3
    optimizer: str = "sgd"
    epochs: int | None = None
    warmup_epochs: float = 5.0
    min_lr: float = 1e-7
    batch_size: int = 128
    weight_decay: float | None = None
    mixup: float = 0.5
    freq_mask: int = 30
    time_mask: int = 100
    rrc: bool = True
    lr_decay: float = 1.0
    freeze_embed: bool = False
    dur_frames: int | None = None
    unit_s: float | None = None
    no_valid: str = "holdout"
    holdout_ratio: float = 0.1
    norm_stats: tuple[float, float] | None = None
    folds: tuple[int, ...] | None = None
    device: str = "cpu"
    amp: bool = True
    seed: int = 42
    max_minutes: float | None = None
    training_mask: float = 0.0
    training_mask_mode: str = "structured"

    def __post_init__(self) -> None:
        self.optimizer = self.optimizer.lower()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.no_valid not in ("holdout", "last_epoch"):
            raise ValueError(f"no_valid must be 'holdout' or 'last_epoch', got {self.no_valid!r}")
        if (self.epochs is not None and self.epochs < 1) or self.batch_size < 2:
            raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.dur_frames is not None and self.dur_frames < 1:
            raise ValueError(f"dur_frames must be positive, got {self.dur_frames}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}")
        if not 0.0 <= self.training_mask < 1.0 or self.training_mask_mode not in TRAINING_MASK_MODES:
            raise ValueError(f"training_mask must be in [0, 1) and training_mask_mode one of "
                             f"{', '.join(TRAINING_MASK_MODES)}; got {self.training_mask}, {self.training_mask_mode!r}")

    @classmethod
    def from_recipe(cls, recipe: str | None = None, **given: Any) -> FinetuneConfig:
        """The settings of ``recipe`` (a :data:`FINETUNE_RECIPES` name; ``None`` = the defaults) under ``given``.

        Raises:
            ValueError: an unknown recipe or an invalid value.
        """
        if recipe is not None and recipe not in FINETUNE_RECIPES:
            raise ValueError(f"unknown fine-tuning recipe {recipe!r}; choose one of {', '.join(FINETUNE_RECIPES)}")
        return cls(**{**(FINETUNE_RECIPES[recipe] if recipe else {}), **given})

    @property
    def effective_weight_decay(self) -> float:
        return _DEFAULT_WD[self.optimizer] if self.weight_decay is None else float(self.weight_decay)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["norm_stats"] = None if self.norm_stats is None else list(self.norm_stats)
        d["folds"] = None if self.folds is None else list(self.folds)
        d["weight_decay"] = self.effective_weight_decay
        return d


# ------------------------------------------------------------------------------------------ optimiser
def finetune_lr(iteration: int, iters_per_epoch: int, config: FinetuneConfig) -> float:
    """Learning rate for 0-based optimiser step ``iteration``: linear warm-up from 0 over
    ``warmup_epochs · iters_per_epoch`` steps, then a half-cosine from ``lr`` to ``min_lr`` at the end of
    ``epochs · iters_per_epoch`` steps (per-iteration, i.e. fractional epochs as timm's scheduler);
    ``config.epochs`` must be resolved (``None`` → :func:`auto_epochs`) before."""
    if config.epochs is None:
        raise ValueError("finetune_lr needs config.epochs; resolve epochs=None with auto_epochs(n_train) first")
    total = config.epochs * iters_per_epoch
    warmup = int(round(config.warmup_epochs * iters_per_epoch))
    return lr_at_step(iteration, total, config.lr, warmup_steps=min(warmup, total), min_lr=config.min_lr)


def _layer_id(name: str, depth: int) -> int:
    """ViT layer index: 0 = patch embedding / CLS / positions, ``i + 1`` = block ``i``, ``depth + 1`` = rest."""
    if name.startswith(("encoder.patch_embed", "encoder.cls_token", "encoder.pos_embed")):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return depth + 1


def layer_decay_param_groups(model: nn.Module, *, lr_decay: float = 1.0, weight_decay: float = 0.0,
                             depth: int | None = None) -> list[dict]:
    """Parameter groups with ``lr_scale`` = ``lr_decay^(depth + 1 − layer_id)`` (see :func:`_layer_id`)
    and weight decay only on parameters with more than one dimension. Frozen parameters are left out.

    ``depth=None`` (or a non-ViT model) gives every group ``lr_scale`` 1. Each group carries a
    ``"layer"`` key (the layer id) for inspection.
    """
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = _layer_id(name, depth) if depth is not None else 0
        scale = lr_decay ** (depth + 1 - layer) if depth is not None else 1.0
        decay = p.ndim > 1 and not name.endswith(".bias")
        key = (layer, decay)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "lr_scale": float(scale), "layer": layer,
                           "weight_decay": weight_decay if decay else 0.0}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(groups: list[dict], config: FinetuneConfig) -> torch.optim.Optimizer:
    """SGD (momentum 0.9), AdamW (β 0.9/0.95, eps 1e-8, amsgrad) or :class:`LARS` over ``groups``."""
    groups = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8, amsgrad=True)
    return LARS(groups, lr=config.lr, momentum=0.9)


# ------------------------------------------------------------------------------------------ model
def set_dur_frames(encoder: nn.Module, dur_frames: int) -> nn.Module:
    """Make a ViT encode up to ``dur_frames`` frames in one pass (in place; returns ``encoder``).

    The positional table ``[1, 1 + Fg·Tg, D]`` becomes ``[1, 1 + Fg·Tg', D]`` with ``Tg' = dur_frames //
    patch_width``: bicubic resampling (align_corners=False) when longer, the first ``Tg'`` columns when
    shorter (:func:`kikimimi.models.vit.resize_pos_embed`); ``config.input_size`` becomes ``(F, dur_frames)``.
    """
    if not isinstance(encoder, AudioViT):
        raise TypeError(f"dur_frames applies to M2D ViT encoders, got {type(encoder).__name__}")
    cfg = encoder.config
    p = cfg.patch_size[1]
    new_t = dur_frames // p
    if new_t < 1:
        raise ValueError(f"dur_frames {dur_frames} is shorter than one patch ({p} frames)")
    old_grid = cfg.grid_size
    new_grid = (old_grid[0], new_t)
    if new_grid != old_grid:
        with torch.no_grad():
            table = resize_pos_embed(encoder.pos_embed.data, old_grid, new_grid)
        encoder.pos_embed = nn.Parameter(table.contiguous(), requires_grad=False)
    encoder.config = replace(cfg, input_size=(cfg.input_size[0], int(dur_frames)), extras=dict(cfg.extras))
    return encoder


class FinetuneModel(nn.Module):
    """Encoder + EVAR head. ``forward(lms [B, F, T] normalised log-mel) -> logits [B, C]``.

    ``training_mask`` > 0 (a ViT encoder, train mode): each chunk's patches are masked by
    :func:`kikimimi.models.masking.training_mask` (``training_mask_mode``; random draws from the global torch
    generator, which the fine-tuning loop seeds per epoch) before the blocks.
    """

    def __init__(self, encoder: FrameEncoder, n_classes: int, feature_dim: int, *, training_mask: float = 0.0,
                 training_mask_mode: str = "structured") -> None:
        super().__init__()
        self.encoder = encoder
        self.head = TaggingHead(feature_dim, n_classes)
        self.training_mask = float(training_mask)
        self.training_mask_mode = training_mask_mode

    def features(self, lms: torch.Tensor) -> torch.Tensor:
        """Clip features ``[B, feature_dim]``: the encoder's pooling of its frame features (M2D time-mean,
        BYOL-A max + mean); under the training mask, each frequency row's mean over its visible patches."""
        if self.training and self.training_mask > 0 and isinstance(self.encoder, AudioViT):
            return self._masked_features(lms)
        return self.encoder.pool(self.encoder.encode_lms(lms))

    def _masked_features(self, lms: torch.Tensor) -> torch.Tensor:
        """``lms [B, F, T]`` → ``[B, Fg·D]`` (feature index f·D + d, as the frame features) from the visible
        patches of every chunk; a row with no visible patch contributes zeros."""
        vit: AudioViT = self.encoder  # type: ignore[assignment]
        fg = vit.grid_size[0]
        mode = self.training_mask_mode
        sums = counts = None
        for chunk in vit.split_chunks(lms[:, 0] if lms.dim() == 4 else lms):
            tokens = vit.patchify_tokens(chunk.unsqueeze(1))  # [B, Fg·Tc, D], frequency-major
            b, n, d = tokens.shape
            ids = training_mask(b, (fg, n // fg), self.training_mask, structured=mode != "random",
                                marked="masked" if mode == "structured-masked" else STRUCTURED_MARKED[0],
                                device=tokens.device)
            if ids is None:
                ids_visible = torch.arange(n, device=tokens.device).expand(b, -1)
            else:
                ids_visible = ids.visible
            out = vit.run_blocks(gather_tokens(tokens, ids_visible))  # [B, Lv, D]
            rows = (ids_visible // (n // fg)).unsqueeze(-1).expand(-1, -1, d)
            part = torch.zeros(b, fg, d, dtype=out.dtype, device=out.device).scatter_add_(1, rows, out)
            seen = torch.zeros(b, fg, device=out.device).scatter_add_(
                1, ids_visible // (n // fg), torch.ones(ids_visible.shape, device=out.device))
            sums = part if sums is None else sums + part
            counts = seen if counts is None else counts + seen
        mean = sums / counts.clamp(min=1).unsqueeze(-1).to(sums.dtype)
        return mean.reshape(mean.shape[0], -1)

    def forward(self, lms: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(lms))


def build_finetune_model(bundle: EncoderBundle, n_classes: int, config: FinetuneConfig) -> FinetuneModel:
    """A trainable copy of ``bundle.encoder`` with a fresh head (seeded), ``dur_frames`` and freezing applied."""
    encoder = copy.deepcopy(bundle.encoder).cpu()
    if isinstance(encoder, AudioViT):  # one-pass length and a frozen patch embedding are ViT options
        if config.dur_frames is not None:
            set_dur_frames(encoder, config.dur_frames)
        if config.freeze_embed:
            encoder.patch_embed.requires_grad_(False)
    model = FinetuneModel(encoder, n_classes, int(encoder.embedding_dim), training_mask=config.training_mask,
                          training_mask_mode=config.training_mask_mode)
    g = torch.Generator().manual_seed(int(config.seed))
    nn.init.normal_(model.head.linear.weight, std=0.01, generator=g)
    nn.init.zeros_(model.head.linear.bias)
    return model


# ------------------------------------------------------------------------------------------ results
@dataclass
class FinetuneResult:
    """Outcome of fine-tuning on every requested fold.

    Attributes:
        metric: ``"accuracy"`` or ``"mAP"``; ``score``: mean test score over folds; ``std``: over folds (ddof 0).
        fold_scores: ``{fold: test score}``; ``best_epochs``: ``{fold: selected 1-based epoch}``.
        selection: ``"valid"``, ``"holdout"`` or ``"last_epoch"`` — what chose the test epoch.
        per_class_accuracy: ``{class: accuracy}`` over all test predictions (single-label; ``nan`` if absent).
        history: one dict per fold × epoch (``fold``, ``epoch``, ``lr``, ``loss``, ``select_score``).
        predictions: one dict per test item (``key``, ``fold``, ``label``, ``prediction`` | ``scores``).
        model_dirs: ``{fold: kikimimi checkpoint folder}`` of the selected weights (when ``out_dir`` was given).
        settings / classes / errors: hyper-parameters (``epochs``: as resolved), class names, unreadable files.
        stopped_early: ``{fold: last epoch trained}`` of the folds that ``max_minutes`` stopped before their last epoch.
    """

    metric: str
    score: float
    std: float
    fold_scores: dict[int, float]
    best_epochs: dict[int, int]
    selection: str
    per_class_accuracy: dict[str, float]
    history: list[dict]
    predictions: list[dict]
    classes: list[str]
    settings: dict
    errors: list[str] = field(default_factory=list)
    model_dirs: dict[int, str] = field(default_factory=dict)
    stopped_early: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fold_scores"] = {str(k): v for k, v in self.fold_scores.items()}
        d["best_epochs"] = {str(k): v for k, v in self.best_epochs.items()}
        d["model_dirs"] = {str(k): v for k, v in self.model_dirs.items()}
        d["stopped_early"] = {str(k): v for k, v in self.stopped_early.items()}
        return json.loads(json.dumps(d, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# ------------------------------------------------------------------------------------------ data
@dataclass
class _Split:
    waves: list[np.ndarray]
    y: np.ndarray
    keys: list[str]

    def subset(self, idx: np.ndarray) -> _Split:
        return _Split([self.waves[i] for i in idx], self.y[idx], [self.keys[i] for i in idx])


def _load_split(items: Sequence[TaskItem], task: Task, classes: list[str], sample_rate: int,
                errors: list[str]) -> _Split:
    waves, kept = [], []
    for it in items:
        try:
            waves.append(load_audio(it.path, sample_rate)[0])
            kept.append(it)
        except AudioDecodeError as exc:
            errors.append(f"{it.key}: {exc.reason}")
    return _Split(waves, task.targets(kept, classes), [it.key for it in kept])


def _onehot(y: np.ndarray, n_classes: int, multi: bool) -> torch.Tensor:
    if multi:
        return torch.from_numpy(np.asarray(y, np.float32))
    return nn.functional.one_hot(torch.from_numpy(np.asarray(y, np.int64)), n_classes).float()


class _Inputs:
    """Waveform crops → normalised log-mel ``[B, F, T]`` on the device."""

    def __init__(self, bundle: EncoderBundle, stats, unit: int, device: torch.device) -> None:
        self.frontend = LogMelSpectrogram(bundle.frontend).to(device)
        self.stats, self.unit, self.device = stats, unit, device

    def log_mel(self, waves: Sequence[np.ndarray], rng: np.random.Generator | None) -> torch.Tensor:
        """Raw (unnormalised) log-mel of crops: random (``rng``) or first segment (``None``)."""
        batch = np.stack([crop_or_pad(w, self.unit, rng) for w in waves])
        with torch.no_grad():
            return self.frontend(torch.from_numpy(batch).to(self.device))

    def normalise(self, lms: torch.Tensor) -> torch.Tensor:
        return (lms - self.stats.mean) / self.stats.std


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"


class _Eta:
    """Times the optimiser steps and validation passes of a run and reports one estimate of its total wall time,
    as a range (fastest … slowest measured step; the first step, which pays one-off set-up, is left out once
    there are others), after ``min_steps`` steps and one validation pass."""

    def __init__(self, log: Callable[[str], None] | None, min_steps: int = 3, cap_s: float | None = None) -> None:
        self.log, self.min_steps, self.cap_s = log, min_steps, cap_s
        self.start = time.monotonic()
        self.steps: list[float] = []
        self.evals: list[float] = []
        self.total_steps = self.total_evals = 0
        self.done = log is None

    def plan(self, steps: int, evals: int) -> None:
        """Add work still to do (called per fold, before its first epoch)."""
        self.total_steps += steps
        self.total_evals += evals

    def step(self, seconds: float) -> None:
        self.steps.append(seconds)
        self._maybe_report()

    def evaluated(self, seconds: float) -> None:
        self.evals.append(seconds)
        self._maybe_report()

    def _maybe_report(self) -> None:
        if self.done or len(self.steps) < min(self.min_steps, self.total_steps):
            return
        if self.total_evals and not self.evals:
            return
        self.done = True
        steps = self.steps[1:] if len(self.steps) > 1 else self.steps
        evals = self.evals or [0.0]
        left_s = max(self.total_steps - len(self.steps), 0)
        left_e = max(self.total_evals - len(self.evals), 0)
        elapsed = time.monotonic() - self.start
        lo = elapsed + left_s * min(steps) + left_e * min(evals)
        hi = elapsed + left_s * max(steps) + left_e * max(evals)
        span = _minutes(lo) if _minutes(lo) == _minutes(hi) else f"{_minutes(lo)} – {_minutes(hi)}"
        cap = "" if self.cap_s is None or hi <= self.cap_s else f"; --max-minutes stops it at {_minutes(self.cap_s)}"
        self.log(f"estimate: {span} in all ({self.total_steps} steps; measured {min(steps):.1f}–"
                 f"{max(steps):.1f} s per step){cap}")


@dataclass(frozen=True)
class _FoldContext:
    """What every fold of one fine-tuning run shares: the model source, settings, inputs and reporting."""

    bundle: EncoderBundle
    cfg: FinetuneConfig
    inputs: _Inputs
    classes: list[str]
    multi: bool
    selection: str
    device: torch.device
    use_amp: bool
    progress: bool
    callback: Callable[[dict], None] | None
    eta: _Eta | None = None

    def autocast(self):
        """float16 autocast on CUDA when AMP is on; a no-op context on the CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp)
        return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def _predict(model: FinetuneModel, fixed: torch.Tensor, batch_size: int, autocast) -> np.ndarray:
    model.eval()
    outs = []
    for start in range(0, len(fixed), batch_size):
        with autocast():
            outs.append(model(fixed[start:start + batch_size]).float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, model.head.linear.out_features), np.float32)


# ------------------------------------------------------------------------------------------ main loop
def _resolve_bundle(bundle_or_path: Any) -> EncoderBundle:
    if isinstance(bundle_or_path, EncoderBundle):
        return bundle_or_path
    if hasattr(bundle_or_path, "bundle") and isinstance(bundle_or_path.bundle, EncoderBundle):
        return bundle_or_path.bundle
    return load_encoder(bundle_or_path)


def _fingerprint(config: FinetuneConfig, bundle: EncoderBundle, fold: Fold, stats) -> str:
    keep = {k: v for k, v in config.to_dict().items() if k not in ("device", "amp", "folds", "max_minutes")}
    if not config.training_mask:  # runs written before the training mask existed resume
        keep = {k: v for k, v in keep.items() if k not in ("training_mask", "training_mask_mode")}
    h = hashlib.sha256(json.dumps(keep, sort_keys=True).encode())
    h.update(json.dumps(bundle.config, sort_keys=True, default=str).encode())
    h.update(f"{stats.mean:.8f},{stats.std:.8f}|{fold.index}".encode())
    for part in (fold.train, fold.valid or [], fold.test):
        h.update(("|".join(f"{it.key}:{it.label}" for it in part) + "#").encode())
    return h.hexdigest()[:16]


def _epoch_rngs(seed: int, fold: int, epoch: int) -> tuple[np.random.Generator, torch.Generator, int]:
    rng = np.random.default_rng([int(seed), int(fold), int(epoch)])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, gen, int(rng.integers(2**62))


def finetune_task(bundle_or_path: Any, task: Task, config: FinetuneConfig | None = None,
                  out_dir: str | Path | None = None, *, progress: bool = False,
                  callback: Callable[[dict], None] | None = None,
                  log: Callable[[str], None] | None = None) -> FinetuneResult:
    """Fine-tune a copy of the encoder on every (requested) fold of ``task`` and score the test split.

    Args:
        bundle_or_path: an :class:`EncoderBundle`, an :class:`~kikimimi.inference.encoder.AudioEncoder` or a path.
        task: the downstream task (split or fold CSV).
        config: hyper-parameters (:class:`FinetuneConfig`).
        out_dir: where ``fold<k>/last.pt`` (resume), ``fold<k>/best.pt`` and ``fold<k>/model`` (the selected
            weights in kikimimi format) go; ``None`` keeps everything in memory (no resume).
        progress: tqdm bar over epochs.
        callback: called after each epoch (after its checkpoint is written) with ``{"fold", "epoch",
            "loss", "select_score", "lr"}``; an exception raised there stops the run (resumable).
        log: receives one-line messages for the user: the epochs chosen, one estimate of the run's wall time
            (a range, from its first timed steps) and a ``max_minutes`` stop.

    Returns:
        :class:`FinetuneResult`.
    """
    cfg = config or FinetuneConfig()
    deadline = time.monotonic() + 60.0 * cfg.max_minutes if cfg.max_minutes is not None else None
    bundle = _resolve_bundle(bundle_or_path)
    device = resolve_device(cfg.device)
    use_amp = bool(cfg.amp and device.type == "cuda")
    classes = task.classes
    multi = task.multi_label
    sr = int(bundle.frontend.sample_rate)
    unit = int(sr * (cfg.unit_s if cfg.unit_s is not None else task.unit_s))
    folds = [f for f in task.folds() if cfg.folds is None or f.index in cfg.folds]
    if not folds:
        raise ValueError(f"task '{task.name}' has none of the requested folds {cfg.folds}")
    preset = encoder_settings(bundle.encoder).task_norm_stats_preset
    if cfg.norm_stats is not None:
        stats = NormStats(float(cfg.norm_stats[0]), float(cfg.norm_stats[1]))
    elif preset is not None:
        stats = task_norm_stats(folds[0].train, preset)
    else:
        stats = bundle.norm_stats
    selection = "valid" if task.has_valid else cfg.no_valid
    errors: list[str] = []
    out = Path(out_dir) if out_dir is not None else None
    fold_scores: dict[int, float] = {}
    best_epochs: dict[int, int] = {}
    history: list[dict] = []
    predictions: list[dict] = []
    model_dirs: dict[int, str] = {}
    y_true_all, y_pred_all = [], []
    inputs = _Inputs(bundle, stats, unit, device)
    context = _FoldContext(bundle, cfg, inputs, list(classes), multi, selection, device, use_amp, progress, callback,
                           _Eta(log, cap_s=None if cfg.max_minutes is None else 60.0 * cfg.max_minutes))
    fold_epochs: dict[int, int] = {}
    stopped: dict[int, int] = {}

    for n_fold, fold in enumerate(folds):
        fold_dir = out / f"fold{fold.index}" if out is not None else None
        train = _load_split(fold.train, task, classes, sr, errors)
        test = _load_split(fold.test, task, classes, sr, errors)
        if selection == "valid":
            select = _load_split(fold.valid or [], task, classes, sr, errors)
        elif selection == "holdout":
            tr, va = holdout_split(train.y, multi_label=multi, ratio=cfg.holdout_ratio, seed=cfg.seed)
            train, select = train.subset(tr), train.subset(va)
        else:
            select = _Split([], train.y[:0], [])
        if len(train.waves) < 2:
            raise ValueError(f"task '{task.name}' fold {fold.index}: fewer than 2 readable training clips")
        if selection != "last_epoch" and not select.waves:
            raise ValueError(f"task '{task.name}' fold {fold.index}: the {selection} split has no readable clips")
        fold_cfg = cfg
        if cfg.epochs is None:
            fold_cfg = replace(cfg, epochs=auto_epochs(len(train.waves)))
            if log is not None and n_fold == 0:
                log(f"{len(train.waves)} training clips: {fold_cfg.epochs} epochs (about {AUTO_EPOCH_CLIPS} clips "
                    f"seen, {AUTO_EPOCHS[0]}–{AUTO_EPOCHS[1]} epochs; --epochs N to choose)")
        fold_epochs[fold.index] = int(fold_cfg.epochs)
        stop_at = None if deadline is None else time.monotonic() + (deadline - time.monotonic()) / (len(folds) - n_fold)
        model, best_epoch, fold_history, last_epoch = _train_fold(
            replace(context, cfg=fold_cfg), fold, train, select, fold_dir, _fingerprint(fold_cfg, bundle, fold, stats),
            stop_at=stop_at, folds_left=len(folds) - n_fold)
        if last_epoch < fold_cfg.epochs:
            stopped[fold.index] = last_epoch
            if log is not None:
                log(f"fold {fold.index}: stopped after epoch {last_epoch} of {fold_cfg.epochs} (--max-minutes "
                    f"{cfg.max_minutes:g}); kept the best epoch, {best_epoch}"
                    + ("; rerun with the same output folder to continue" if out is not None else ""))
        history += fold_history
        best_epochs[fold.index] = best_epoch
        fixed_test = inputs.normalise(inputs.log_mel(test.waves, None)) if test.waves else None
        logits = (_predict(model, fixed_test, cfg.batch_size, context.autocast) if fixed_test is not None
                  else np.zeros((0, len(classes)), np.float32))
        fold_scores[fold.index] = float(task_score(test.y, logits, multi))
        for i, key in enumerate(test.keys):
            if multi:
                label = ",".join(c for c, v in zip(classes, test.y[i], strict=True) if v)
                predictions.append({"key": key, "fold": fold.index, "label": label, "scores": logits[i].tolist()})
            else:
                predictions.append({"key": key, "fold": fold.index, "label": classes[int(test.y[i])],
                                    "prediction": classes[int(logits[i].argmax())]})
        if not multi and len(test.y):
            y_true_all.append(test.y)
            y_pred_all.append(logits.argmax(axis=1))
        if fold_dir is not None:
            model_dirs[fold.index] = str(export_finetuned(model, bundle, classes, fold_dir / "model", stats=stats,
                                                          info={"task": task.name, "fold": fold.index,
                                                                "metric": "mAP" if multi else "accuracy",
                                                                "score": fold_scores[fold.index],
                                                                "selection": selection}, multi_label=multi))
    per_class: dict[str, float] = {}
    if y_true_all:
        pc = per_class_accuracy(np.concatenate(y_true_all), np.concatenate(y_pred_all), len(classes))
        per_class = {c: float(v) for c, v in zip(classes, pc, strict=True)}
    scores = list(fold_scores.values())
    settings = {**cfg.to_dict(), "epochs": max(fold_epochs.values()), "task": task.name, "unit_s": unit / sr,
                "unit_samples": unit,
                "sample_rate": sr, "family": bundle.family, "norm_stats": [stats.mean, stats.std],
                "n_classes": len(classes), "multi_label": multi, "selection": selection,
                "model_source": bundle.config.get("source"), "device": str(device), "amp": use_amp}
    return FinetuneResult(
        metric="mAP" if multi else "accuracy", score=float(np.mean(scores)), std=float(np.std(scores)),
        fold_scores=fold_scores, best_epochs=best_epochs, selection=selection, per_class_accuracy=per_class,
        history=history, predictions=predictions, classes=classes, settings=settings, errors=errors,
        model_dirs=model_dirs, stopped_early=stopped)


def _train_fold(context: _FoldContext, fold: Fold, train: _Split, select: _Split, fold_dir: Path | None,
                fingerprint: str, *, stop_at: float | None = None,
                folds_left: int = 1) -> tuple[FinetuneModel, int, list[dict], int]:
    """Train one fold (resuming from ``fold_dir/last.pt``) for ``context.cfg.epochs`` (resolved) epochs, or until
    the next epoch would end after ``stop_at`` (``time.monotonic()``; at least one epoch is trained).

    Returns:
        the selected model, its epoch, the history, and the last epoch trained.
    """
    bundle, cfg, inputs, classes, multi = context.bundle, context.cfg, context.inputs, context.classes, context.multi
    selection, device, use_amp, progress, callback = (context.selection, context.device, context.use_amp,
                                                      context.progress, context.callback)
    autocast = context.autocast
    n_classes = len(classes)
    model = build_finetune_model(bundle, n_classes, cfg).to(device)
    depth = len(model.encoder.blocks) if isinstance(model.encoder, AudioViT) else None  # layer-wise decay: ViT
    groups = layer_decay_param_groups(model, lr_decay=cfg.lr_decay, weight_decay=cfg.effective_weight_decay,
                                      depth=depth)
    optimizer = build_optimizer(groups, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    y_train = _onehot(train.y, n_classes, multi)
    n = len(train.waves)
    bs = min(cfg.batch_size, n)
    iters = n // bs + (1 if n % bs > 1 else 0)  # a trailing batch of one item is dropped (BatchNorm)
    fixed_select = inputs.normalise(inputs.log_mel(select.waves, None)) if select.waves else None

    start_epoch, history, best_score, best_epoch, best_state = 1, [], -math.inf, 0, None
    last_path = fold_dir / "last.pt" if fold_dir is not None else None
    best_path = fold_dir / "best.pt" if fold_dir is not None else None
    if last_path is not None and last_path.is_file():
        state = safe_torch_load(last_path)
        if state.get("fingerprint") != fingerprint:
            raise ValueError(f"'{last_path}': checkpoint of a different run (model, task or settings changed); "
                             "use another output folder or delete it")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        start_epoch = int(state["epoch"]) + 1
        history = list(state["history"])
        best_score, best_epoch = float(state["best_score"]), int(state["best_epoch"])
        if best_epoch and best_path is not None and best_path.is_file():
            best_state = safe_torch_load(best_path)["model"]

    if context.eta is not None and not context.eta.total_steps and start_epoch <= cfg.epochs:  # planned once
        todo = cfg.epochs + 1 - start_epoch
        context.eta.plan(todo * iters * folds_left, todo * folds_left if fixed_select is not None else 0)
    epochs: Iterable[int] = range(start_epoch, cfg.epochs + 1)
    if progress:
        epochs = tqdm(epochs, desc=f"finetune fold {fold.index}", unit="epoch", initial=start_epoch - 1,
                      total=cfg.epochs)
    rrc = RandomResizeCrop() if cfg.rrc else None
    last_epoch, epoch_times = start_epoch - 1, []
    for epoch in epochs:
        if stop_at is not None and epoch_times and time.monotonic() + max(epoch_times) > stop_at:
            break
        epoch_start = time.monotonic()
        rng, gen, torch_seed = _epoch_rngs(cfg.seed, fold.index, epoch)
        model.train()
        order = rng.permutation(n)
        losses = []
        lr = cfg.lr
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(torch_seed)  # dropout (BYOL-A) draws from the global generator
            for it in range(iters):
                step_start = time.monotonic()
                idx = order[it * bs:(it + 1) * bs]
                lms = inputs.log_mel([train.waves[i] for i in idx], rng)
                y = y_train[idx].to(device)
                lms, y, _, _ = mixup_log_mel(lms, y, cfg.mixup, rng)
                x = spec_augment(inputs.normalise(lms), cfg.freq_mask, cfg.time_mask, gen)
                if rrc is not None:
                    x = random_resize_crop_batch(x, gen, rrc)
                lr = finetune_lr((epoch - 1) * iters + it, iters, cfg)
                set_lr(optimizer, lr)
                with autocast():
                    logits = model(x).float()
                if multi:
                    loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
                else:
                    loss = -(y * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
                if context.eta is not None:
                    context.eta.step(time.monotonic() - step_start)
        if fixed_select is not None:
            eval_start = time.monotonic()
            score = task_score(select.y, _predict(model, fixed_select, cfg.batch_size, autocast), multi)
            score = -math.inf if math.isnan(score) else score
            if context.eta is not None:
                context.eta.evaluated(time.monotonic() - eval_start)
        else:
            score = float("nan")
        row = {"fold": fold.index, "epoch": epoch, "lr": lr, "loss": float(np.mean(losses)),
               "select_score": None if math.isinf(score) or math.isnan(score) else float(score)}
        history.append(row)
        if selection == "last_epoch" or score >= best_score:
            best_score = score if selection != "last_epoch" else best_score
            best_epoch = epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if best_path is not None:
                atomic_torch_save({"model": best_state, "epoch": epoch, "score": score}, best_path)
        if last_path is not None:
            atomic_torch_save({"fingerprint": fingerprint, "model": model.state_dict(),
                               "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                               "epoch": epoch, "history": history, "best_score": best_score,
                               "best_epoch": best_epoch, "rng": torch.get_rng_state()}, last_path)
        if callback is not None:
            callback(dict(row))
        last_epoch = epoch
        epoch_times.append(time.monotonic() - epoch_start)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, best_epoch, history, last_epoch


def export_finetuned(model: FinetuneModel, bundle: EncoderBundle, classes: Sequence[str], out_dir: str | Path, *,
                     stats=None, info: dict | None = None, multi_label: bool = False) -> Path:
    """Write the fine-tuned encoder + head as a kikimimi checkpoint (``model.safetensors`` + ``config.json``).

    The config records ``head`` ``{in_dim, n_classes, pooling, classes, activation}`` (``activation``: the
    training loss's — ``"softmax"`` for a single-label task, ``"sigmoid"`` for a multi-label one; ``kikimimi tag``
    reads the names and the activation from here) and, for a ViT, the (possibly ``dur_frames``-changed)
    ``input_size``; ``info`` lands under ``config["finetune"]``.
    """
    config = json.loads(json.dumps(bundle.config, default=str))
    # the file holds the fine-tuned encoder and the head (as EVAR's stage-1.1 file): a CLAP model's projectors and text
    # side are not fine-tuned nor written, so their descriptions go too (M2D2 stage 2 builds a fresh projector)
    for key in ("audio_proj", "text_proj", "text_encoder", "logit_scale"):
        config.pop(key, None)
    if isinstance(model.encoder, AudioViT):  # dur_frames may have changed the input size
        config["vit"] = model.encoder.config.to_dict()
    head = model.head
    config["head"] = {"in_dim": int(head.linear.in_features), "n_classes": int(head.linear.out_features),
                      "pooling": encoder_settings(model.encoder).pooling, "classes": list(classes),
                      "activation": "sigmoid" if multi_label else "softmax"}
    config["finetune"] = dict(info or {})
    encoder = copy.deepcopy(model.encoder).cpu().eval()
    out_bundle = EncoderBundle(family=bundle.family, encoder=encoder, frontend=bundle.frontend,
                               norm_stats=stats or bundle.norm_stats, config=config,
                               head=copy.deepcopy(head).cpu().eval())
    return save_kikimimi(out_bundle, out_dir)
