"""BYOL-A v1/v2 pre-training objective ([BYOL-A], TASLP 2023; docs/reference.md §7.2).

Input: ``batch["lms"]`` ``[B, F, T]`` log-mel. Pre-normalisation (``pre_norm``):

- ``"precomputed"`` (v2 default, ``PrecomputedNorm``): the batch is **already normalised** with scalar
  corpus statistics (the data pipeline does this);
- ``"running"`` (v1 default, ``RunningNorm``): the batch holds **raw** log-mel and the method normalises
  it item by item with running statistics (:class:`~kikimimi.methods.running_norm.RunningNorm`), updated
  in training mode until ``max_update_epochs · epoch_samples`` items have been seen (the v1 recipe uses
  ``epoch_samples = 2 × number of training files``). Unlike the official per-DataLoader-worker module,
  there is one deterministic set of statistics per process, saved in ``state_dict()``.

Per step: two views per item via :class:`~kikimimi.features.augment.BYOLAAugment` (v1: mixup 0.4 →
random resize crop; v2: mixup 0.2 → RRC → random linear fader), joint post-normalisation, then BYOL:
online = encoder → projector → predictor, target = encoder copy → projector copy (no grad); loss =
``2 − 2·cos(pred(A), target(B)) + 2 − 2·cos(pred(B), target(A))``, mean over the batch. Both views go
through the networks as one ``2B`` batch (BatchNorm statistics over both views).

EMA: :meth:`BYOLA.on_after_step` after each optimiser step (``step`` = optimiser steps done so far,
1-based; unused because the decay is constant) averages *parameters only* with τ = 0.99; BatchNorm
buffers of the target evolve with its own forward passes.

Randomness: augmentation draws come from ``self.generator`` when set with :meth:`BYOLA.set_generator`,
otherwise from the global torch RNG; the encoders' dropout always uses the global torch RNG. The
mixup memory bank is part of ``state_dict()`` (extra state of ``augment.mixup``), so a resumed run
continues with the same bank. The bank only grows in training mode. Likewise the running
pre-normalisation statistics (extra state of ``running_norm``) are saved and restored, and only update in
training mode.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from kikimimi.features.augment import BYOLAAugment
from kikimimi.methods.ema import ema_update_modules_
from kikimimi.methods.losses import byol_symmetric_loss
from kikimimi.methods.running_norm import RunningNorm
from kikimimi.models.byola import AudioNTT2020, AudioNTT2022
from kikimimi.optim import weight_decay_param_groups

__all__ = ["BYOLA", "BYOLMLP", "DEFAULT_D", "OFFICIAL_LR"]

_DEFAULTS = {
    1: {"d": 512, "mixup_ratio": 0.4, "lr": 3e-4, "pre_norm": "running"},
    2: {"d": 3072, "mixup_ratio": 0.2, "lr": 1e-4, "pre_norm": "precomputed"},
}
PRE_NORM_MODES = ("running", "precomputed")
#: official Adam learning rate per version (docs/reference.md §7.2)
OFFICIAL_LR = {version: d["lr"] for version, d in _DEFAULTS.items()}
#: encoder output size ``d`` per version when none is given (v2: 1024 conv + 2048 MLP features)
DEFAULT_D = {version: d["d"] for version, d in _DEFAULTS.items()}


class BYOLMLP(nn.Sequential):
    """BYOL projector/predictor MLP, ``[B, in]`` → ``[B, out]``.

    Linear(in→hidden) → BatchNorm1d → ReLU → Linear(hidden→out).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


class BYOLA(nn.Module):
    """BYOL-A pre-training module.

    Args:
        version: 1 (``AudioNTT2020``, mixup 0.4, lr 3e-4) or 2 (``AudioNTT2022``, mixup 0.2 + fader, lr 1e-4).
        d: encoder output dimension (default 512 for v1, 3072 for v2).
        n_mels: mel bins ``F`` of the input.
        proj_hidden: projector/predictor hidden width (4096).
        proj_dim: projection size (256).
        ema_decay: constant target decay τ (0.99).
        mixup_ratio: override the version's mixup ratio.
        n_memory: mixup bank capacity (2048 items).
        fader_gain: v2 random linear fader gain (1.0; ``None`` = 1.0).
        lr: recommended Adam learning rate exposed in :meth:`config_dict` (default per version).
        input_frames: crop length ``T`` in frames (96 = 0.95 s at 10 ms hop) — recorded in the config only.
        pre_norm: ``"running"`` (v1 default: raw log-mel in, :class:`RunningNorm` inside the method) or
            ``"precomputed"`` (v2 default: the batch is already normalised).
        epoch_samples: ``RunningNorm`` update budget per epoch (v1 recipe: 2 × training files;
            ``None`` = never stop updating). Ignored with ``"precomputed"``.
        max_update_epochs: ``RunningNorm`` freezes after ``max_update_epochs · epoch_samples`` updates (10).
        mlp_lr_scale: learning-rate multiplier of the encoder's MLP (``encoder.fc.*``); 1.0 is the official
            recipe, 0.0 keeps the MLP at its initialisation (kikimimi's short-run setting, see
            :data:`kikimimi.methods.recipes.SHORT_RUN_BYOLA_MLP_LR_SCALE`). Projector, predictor and the
            conv stack always train at the full rate.
    """

    default_optimizer = "adam"
    #: a pre-training run pairs items with no captions, starts from no stage-1 encoder and also writes the
    #: encoder's official state dict alone (``AudioNTT2020-BYOLA-64x96d512.pth``, the release format)
    caption_input: str | None = None
    trains_on_stage1 = False
    exports_encoder_state_dict = True

    @staticmethod
    def export_kwargs(settings: Any) -> dict[str, Any]:
        """What reading the run's checkpoint back needs besides the file: nothing (the sizes are in the weights)."""
        return {}
    #: keys of :meth:`config_dict` that are not constructor arguments (ignored by ``build_method``)
    config_only_keys = frozenset({"method", "version", "encoder", "default_optimizer", "weight_decay", "batch_size"})

    def __init__(
        self,
        version: int = 1,
        d: int | None = None,
        *,
        n_mels: int = 64,
        proj_hidden: int = 4096,
        proj_dim: int = 256,
        ema_decay: float = 0.99,
        mixup_ratio: float | None = None,
        n_memory: int = 2048,
        fader_gain: float | None = 1.0,
        lr: float | None = None,
        input_frames: int = 96,
        pre_norm: str | None = None,
        epoch_samples: int | None = None,
        max_update_epochs: int = 10,
        mlp_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if version not in _DEFAULTS:
            raise ValueError(f"BYOL-A version must be 1 or 2, got {version!r}")
        defaults = _DEFAULTS[version]
        pre_norm = defaults["pre_norm"] if pre_norm is None else str(pre_norm)
        if pre_norm not in PRE_NORM_MODES:
            raise ValueError(f"BYOL-A pre_norm must be 'running' or 'precomputed', got {pre_norm!r}")
        self.pre_norm = pre_norm
        self.version = version
        self.d = int(d if d is not None else defaults["d"])
        self.n_mels = int(n_mels)
        self.proj_hidden = int(proj_hidden)
        self.proj_dim = int(proj_dim)
        self.ema_decay = float(ema_decay)
        self.lr = float(lr if lr is not None else defaults["lr"])
        self.input_frames = int(input_frames)
        if not mlp_lr_scale >= 0:
            raise ValueError(f"BYOL-A mlp_lr_scale must be >= 0, got {mlp_lr_scale!r}")
        self.mlp_lr_scale = float(mlp_lr_scale)
        self.generator: torch.Generator | None = None
        self.last_tau: float | None = None

        encoder_cls = AudioNTT2020 if version == 1 else AudioNTT2022
        self.encoder = encoder_cls(n_mels=self.n_mels, d=self.d)
        self.projector = BYOLMLP(self.d, self.proj_hidden, self.proj_dim)
        self.predictor = BYOLMLP(self.proj_dim, self.proj_hidden, self.proj_dim)
        # channels_last weights: mkldnn/cuDNN convolutions and max-pooling run ~1.5x faster on this layout
        # (measured on CPU, benchmarks/bench_pretrain.py); exported tensors are made contiguous again.
        self.encoder.to(memory_format=torch.channels_last)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in list(self.target_encoder.parameters()) + list(self.target_projector.parameters()):
            p.requires_grad_(False)
        self.augment = BYOLAAugment(
            version,
            mixup_ratio=mixup_ratio if mixup_ratio is not None else defaults["mixup_ratio"],
            n_memory=n_memory,
            fader_gain=1.0 if fader_gain is None else fader_gain,
        )
        # only present in "running" mode, so precomputed-mode state dicts keep their old keys
        self.running_norm: RunningNorm | None = (
            RunningNorm(epoch_samples, max_update_epochs) if pre_norm == "running" else None
        )

    @classmethod
    def from_settings(
        cls, settings: Any, *, epoch_samples: int | None = None, **_run_facts: Any
    ) -> BYOLA:
        """The BYOL-A of a pre-training run: version 2 for ``settings.method == "byola2"``, else 1; 64 bins ×
        ``input_frames``, ``byola_dim`` (``None`` = the version's d), ``lr``, ``pre_norm`` (``None`` =
        ``precomputed``, what runs saved before the setting existed did) and ``mlp_lr_scale`` (``None`` = 1).

        Args:
            epoch_samples: the running pre-normalisation's epoch (v1 recipe: 2 × training files); needed with
                ``pre_norm: "running"``.
            **_run_facts: what the run measured that other methods need (``norm_stats``: BYOL-A normalises in
                the data pipeline or with running statistics); unused here.
        """
        kw: dict[str, Any] = {"n_mels": 64, "input_frames": int(settings.input_frames), "lr": settings.lr}
        kw["pre_norm"] = settings.pre_norm or "precomputed"
        if kw["pre_norm"] == "running":
            kw["epoch_samples"] = int(epoch_samples)
        if settings.byola_dim:
            kw["d"] = int(settings.byola_dim)
        if settings.mlp_lr_scale is not None:  # absent from settings saved before the option existed
            kw["mlp_lr_scale"] = float(settings.mlp_lr_scale)
        return cls(2 if settings.method == "byola2" else 1, **kw)

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Use ``generator`` (CPU) for the augmentations; ``None`` returns to the global torch RNG."""
        self.generator = generator

    def _online(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, 1, F, T]`` → predictions ``[N, proj_dim]``."""
        return self.predictor(self.projector(self.encoder(x)))

    @torch.no_grad()
    def _target(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, 1, F, T]`` → target projections ``[N, proj_dim]`` (no grad)."""
        return self.target_projector(self.target_encoder(x)).detach()

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One BYOL-A step.

        Args:
            batch: ``{"lms": [B, F, T]}`` log-mel (float32), ``F == n_mels``, ``B ≥ 2`` in training mode
                (BatchNorm); raw with ``pre_norm="running"``, already normalised with ``"precomputed"``.

        Returns:
            ``{"loss": scalar}`` (plus ``ema_tau`` once an EMA update happened).
        """
        lms = batch["lms"]
        if lms.dim() != 3 or lms.shape[1] != self.n_mels:
            raise ValueError(
                f"BYOL-A expects batch['lms'] of shape [B, {self.n_mels}, T] (log-mel), got {tuple(lms.shape)}"
            )
        if self.running_norm is not None:  # v1 pre-normalisation, item by item, before any augmentation
            lms = self.running_norm(lms, update=self.training)
        view_a, view_b = self.augment(lms, self.generator, update_bank=self.training)
        b = lms.shape[0]
        views = torch.cat([view_a, view_b]).unsqueeze(1)  # [2B, 1, F, T]
        views = views.contiguous(memory_format=torch.channels_last)
        pred = self._online(views)
        target = self._target(views)
        loss = byol_symmetric_loss(pred[:b], pred[b:], target[:b], target[b:])
        out: dict[str, torch.Tensor] = {"loss": loss}
        if self.last_tau is not None:
            out["ema_tau"] = torch.tensor(self.last_tau, dtype=torch.float64)
        return out

    @torch.no_grad()
    def on_after_step(self, step: int, total_steps: int) -> None:
        """EMA of target encoder+projector parameters (τ = ``ema_decay``) after optimiser step ``step``."""
        del step, total_steps  # constant decay
        ema_update_modules_(self.target_encoder, self.encoder, self.ema_decay)
        ema_update_modules_(self.target_projector, self.projector, self.ema_decay)
        self.last_tau = self.ema_decay

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser groups over the online networks (targets are frozen and excluded).

        BYOL-A uses Adam without weight decay; if a decay is given, 1-D params and biases are exempt.
        With ``mlp_lr_scale != 1`` each group is split in two: the encoder's MLP (``encoder.fc.*``) with
        ``lr_scale = mlp_lr_scale`` (the trainer multiplies the scheduled lr by a group's ``lr_scale``) and
        the rest with ``lr_scale`` 1. With 1.0 the groups are the unsplit ones, as in runs saved before.
        """
        groups = weight_decay_param_groups(self, weight_decay)
        if self.mlp_lr_scale == 1.0:
            return groups
        mlp = {id(p) for p in self.encoder.fc.parameters()}
        split = []
        for group in groups:
            rest = [p for p in group["params"] if id(p) not in mlp]
            in_mlp = [p for p in group["params"] if id(p) in mlp]
            split += [{**group, "params": ps, "lr_scale": scale}
                      for ps, scale in ((rest, 1.0), (in_mlp, self.mlp_lr_scale)) if ps]
        return split

    def config_dict(self) -> dict:
        """JSON-able settings, including the recommended optimiser (``adam``, lr 3e-4 v1 / 1e-4 v2)."""
        return {
            "method": "byola" if self.version == 1 else "byola2",
            "version": self.version,
            "encoder": type(self.encoder).__name__,
            "d": self.d,
            "n_mels": self.n_mels,
            "input_frames": self.input_frames,
            "pre_norm": self.pre_norm,
            "epoch_samples": self.running_norm.epoch_samples if self.running_norm is not None else None,
            "max_update_epochs": self.running_norm.max_update_epochs if self.running_norm is not None else 10,
            "proj_hidden": self.proj_hidden,
            "proj_dim": self.proj_dim,
            "ema_decay": self.ema_decay,
            "mixup_ratio": self.augment.mixup.ratio,
            "n_memory": self.augment.mixup.n_memory,
            "fader_gain": self.augment.fader.gain if self.augment.fader is not None else None,
            "mlp_lr_scale": self.mlp_lr_scale,
            "default_optimizer": self.default_optimizer,
            "lr": self.lr,
            "weight_decay": 0.0,
            "batch_size": 256,
        }

    def export_official_state_dict(self) -> dict[str, torch.Tensor]:
        """Online encoder state dict with the official ``features.*`` / ``fc.*`` keys."""
        return {k: v.detach().contiguous().clone() for k, v in self.encoder.state_dict().items()}

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
        """Initialise the online *and* target encoders from an official encoder state dict.

        Accepts plain ``features.*``/``fc.*`` dicts or ones wrapped in ``state_dict``/``model``; other keys
        are ignored and returned. Projector/predictor keep their current weights.

        Raises:
            KeyError / ValueError: missing tensors or mismatched shapes (wrong ``version`` or ``d``).
        """
        for wrapper in ("state_dict", "model"):
            if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
                state_dict = state_dict[wrapper]
        own = self.encoder.state_dict()
        picked = {k: v for k, v in state_dict.items() if k in own}
        ignored = [k for k in state_dict if k not in own]
        missing = [k for k in own if k not in picked]
        if missing:
            raise KeyError(
                f"BYOL-A state dict lacks {len(missing)} encoder tensors, e.g. {missing[:5]}; "
                f"is it a version-{self.version} encoder file?"
            )
        bad = [k for k in own if tuple(own[k].shape) != tuple(picked[k].shape)]
        if bad:
            raise ValueError(
                f"BYOL-A state dict shapes do not fit version {self.version}, d={self.d}: "
                f"{[(k, tuple(picked[k].shape), tuple(own[k].shape)) for k in bad[:3]]}"
            )
        self.encoder.load_state_dict(picked, strict=True)
        self.target_encoder.load_state_dict(picked, strict=True)
        return ignored
