"""M2D (masked modeling duo) pre-training objective ([M2D], TASLP 2024; docs/reference.md §7.1, §5).

Networks
- online encoder: :class:`kikimimi.models.vit.AudioViT` (``self.encoder``);
- target: ``target_blocks`` + ``target_norm`` (own random init, *not* a copy), sharing the online
  encoder's ``patch_embed``, ``pos_embed`` and ``cls_token`` (the very same tensors); updated only by EMA;
- predictor: ``decoder_embed`` (D→Dp), ``mask_token``, frozen sin-cos ``decoder_pos_embed``,
  ``decoder_blocks``, ``decoder_norm``, ``decoder_pred`` (Dp→D).

Step (``forward``): patch-embed + pos for all L patches → mask (``mask_strategy``, below) → online encoder on CLS +
visible → predictor on the full grid → predictions at the masked positions ``[B, Lm, D]``; target
(no grad) on CLS + masked patch embeddings → ``[B, Lm, D]``; loss = ``norm_mse`` (2 − 2·cos after
per-token standardisation of the target).

Masking (``mask_strategy``, :data:`MASK_STRATEGIES`): ``random`` (the released M2D, unstructured) or one of the
informed strategies of NTT's IJCNN 2026 masking paper (../shared/docs/fact-sheet-m2d2-2026.md §5;
:mod:`kikimimi.models.masking`): ``dwm`` (dispersion-weighted: each input patch's mean absolute deviation as its
weight to be masked), ``var`` (the same with the variance), ``sgim`` (object-centric: the patches least similar to
the two clusters of the online encoder's unmasked features are masked), ``ibm`` (inverse block: 5 × 5 blocks mark
the visible region). The informed ones hand back ``h`` of their choice to random masking, the hint ratio of
:func:`~kikimimi.models.masking.hint_ratio` set before each epoch (:meth:`M2D.set_progress`): 1 (plain random
masking) until ``hint_start_epoch`` (official 50), then ``1 − (e/E)^k`` (``hint_k``, official 2), or the constant
``hint_ratio``. Every strategy keeps ``int(L(1 − r))`` patches visible.

Randomness: masks come from ``self.generator`` when set with :meth:`M2D.set_generator` (a CPU
``torch.Generator``), otherwise from the global torch RNG (the trainer checkpoints that state).

EMA: call :meth:`M2D.on_after_step` after every optimiser step with ``step`` = number of optimiser steps
done so far (1 after the first update); τ is :func:`kikimimi.methods.ema.ema_tau` at ``step − 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from kikimimi.methods.ema import ema_tau, ema_update_
from kikimimi.methods.losses import norm_mse_loss
from kikimimi.models.masking import (
    MaskIds,
    dispersion_masking,
    gather_tokens,
    inverse_block_masking,
    object_centric_masking,
    random_masking,
)
from kikimimi.models.masking import hint_ratio as hint_schedule
from kikimimi.models.vit import VIT_SIZES, AudioViT, Block, ViTConfig, init_vit_weights, sincos_pos_embed_2d
from kikimimi.optim import weight_decay_param_groups

__all__ = ["M2D", "PREDICTOR_SIZES", "DEFAULT_NORM_STATS", "MASK_STRATEGIES", "HINT_DEFAULTS"]

#: default predictor (dim, depth) per ViT size
PREDICTOR_SIZES: dict[str, tuple[int, int]] = {
    "tiny": (128, 2),
    "small": (256, 4),
    "base": (512, 8),
    "large": (512, 8),
}
#: scalar log-mel (mean, std) stored as ``norm_stats`` when none is given (docs/reference.md §3)
DEFAULT_NORM_STATS: tuple[float, float] = (-7.1, 4.2)
MASK_MODES = ("unstructured",)
#: ``mask_strategy`` of M2D, M2D-CLAP and M2D2 stage 1: ``random`` (released M2D) and the IJCNN 2026 strategies
#: (official flags ``--weighted_mask``, ``--var_weighted_mask``, ``--obj_cent_mask``, ``--block_mask``)
MASK_STRATEGIES = ("random", "dwm", "var", "sgim", "ibm")
#: official hint schedule defaults: ``--masking_start_epoch 50``, ``--masking_hint_k 2``, no ``--abs_hint_ratio``
HINT_DEFAULTS: dict[str, float | int | None] = {"hint_start_epoch": 50, "hint_k": 2.0, "hint_ratio": None}


def _init_mae_(module: nn.Module) -> None:
    """MAE-style init of every submodule (see :func:`kikimimi.models.vit.init_vit_weights`)."""
    module.apply(init_vit_weights)


class M2D(nn.Module):
    """M2D pre-training module.

    Args:
        size: ViT size name (``tiny``, ``small``, ``base``, ``large``).
        input_size: log-mel crop ``(F, T)`` in (mel bins, frames), e.g. ``(80, 608)`` or ``(80, 208)``.
        patch_size: ``(f, t)`` patch size in (bins, frames).
        sample_rate: sample rate in Hz recorded in the encoder config.
        mask_ratio: fraction of masked patches (0.7 released default).
        mask_mode: only ``"unstructured"`` is supported.
        mask_strategy: one of :data:`MASK_STRATEGIES` (``"random"``, the released M2D).
        hint_start_epoch / hint_k / hint_ratio: the hint schedule of the informed strategies (official 50, 2,
            ``None``; :func:`~kikimimi.models.masking.hint_ratio`); ``hint_ratio`` ≥ 0 = a constant ratio.
        decoder_dim / decoder_depth / decoder_heads: predictor width, depth, heads (defaults from
            :data:`PREDICTOR_SIZES`; heads = ``decoder_dim // 32``).
        ema_taus: ``(tau0, tau1)`` linear EMA schedule.
        norm_stats: ``(mean, std)`` of the log-mel normalisation, exported as ``norm_stats`` [2].
        vit_config: a full :class:`ViTConfig` overriding ``size``/``input_size``/``patch_size``.
    """

    #: what a pre-training run pairs each item with: ``None`` (nothing), ``"embeddings"`` (caption embeddings)
    #: or ``"texts"`` (caption texts, for a method that trains its text encoder)
    caption_input: str | None = None
    #: whether the run starts from a stage-1 encoder (``init_from``) whose sizes and statistics it takes
    trains_on_stage1 = False
    #: whether the run also writes the encoder's official state dict alone (the BYOL-A release format)
    exports_encoder_state_dict = False
    #: the ``mask_strategy`` values of this method (a run's settings are checked against them)
    mask_strategies = MASK_STRATEGIES
    #: keys of :meth:`config_dict` that are not constructor arguments (ignored by ``build_method``)
    config_only_keys = frozenset(
        {
            "method",
            "embed_dim",
            "depth",
            "num_heads",
            "mlp_ratio",
            "default_optimizer",
            "betas",
            "weight_decay",
            "blr",
            "grad_clip",
        }
    )

    def __init__(
        self,
        size: str = "base",
        input_size: Sequence[int] = (80, 608),
        patch_size: Sequence[int] = (16, 16),
        *,
        sample_rate: int = 16000,
        mask_ratio: float = 0.7,
        mask_mode: str = "unstructured",
        mask_strategy: str = "random",
        hint_start_epoch: int = 50,
        hint_k: float = 2.0,
        hint_ratio: float | None = None,
        decoder_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_heads: int | None = None,
        ema_taus: Sequence[float] = (0.99995, 0.99999),
        norm_stats: Sequence[float] | None = None,
        vit_config: ViTConfig | None = None,
    ) -> None:
        super().__init__()
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode {mask_mode!r} is not supported; choose one of {MASK_MODES}")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if mask_strategy not in MASK_STRATEGIES:
            raise ValueError(f"mask_strategy must be one of {', '.join(MASK_STRATEGIES)}, got {mask_strategy!r}")
        if hint_k <= 0 or hint_start_epoch < 0:
            raise ValueError(f"hint_k must be > 0 and hint_start_epoch >= 0, got {hint_k} and {hint_start_epoch}")
        if vit_config is None:
            vit_config = ViTConfig.from_size(
                size,
                input_size=tuple(int(v) for v in input_size),
                patch_size=tuple(int(v) for v in patch_size),
                sample_rate=int(sample_rate),
            )
        self.size = size
        self.vit_config = vit_config
        self.mask_ratio = float(mask_ratio)
        self.mask_mode = mask_mode
        self.mask_strategy = str(mask_strategy)
        self.hint_start_epoch = int(hint_start_epoch)
        self.hint_k = float(hint_k)
        self.hint_ratio = None if hint_ratio is None or hint_ratio < 0 else float(hint_ratio)
        #: run length in epochs and optimiser steps of the hint schedule (:meth:`set_schedule`)
        self.run_epochs: float = 1.0
        self.run_steps: int = 1
        #: the hint ratio of the epoch in progress (:meth:`set_progress`)
        self.hint = 1.0
        self.set_progress(0)
        self.ema_taus = (float(ema_taus[0]), float(ema_taus[1]))
        self.generator: torch.Generator | None = None
        self.last_tau: float | None = None

        dim = vit_config.embed_dim
        default_dp, default_depth = PREDICTOR_SIZES.get(size, PREDICTOR_SIZES["base"])
        dp = int(decoder_dim or default_dp)
        self.decoder_depth = int(decoder_depth or default_depth)
        self.decoder_heads = int(decoder_heads or max(1, dp // 32))
        if dp % self.decoder_heads:
            raise ValueError(f"decoder_dim {dp} is not divisible by decoder_heads {self.decoder_heads}")
        self.decoder_dim = dp
        fg, tg = vit_config.grid_size

        # online encoder (patch_embed, pos_embed, cls_token, blocks, norm)
        self.encoder = AudioViT(vit_config)

        # predictor
        self.decoder_embed = nn.Linear(dim, dp)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dp))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed_2d(dp, fg, tg, cls_token=True), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(dp, self.decoder_heads, vit_config.mlp_ratio, norm_eps=1e-6) for _ in range(self.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(dp, eps=1e-6)
        self.decoder_pred = nn.Linear(dp, dim)

        # target network (shares patch_embed / pos_embed / cls_token with self.encoder)
        self.target_blocks = nn.ModuleList(
            [Block(dim, vit_config.num_heads, vit_config.mlp_ratio, norm_eps=1e-6) for _ in range(vit_config.depth)]
        )
        self.target_norm = nn.LayerNorm(dim, eps=1e-6)

        stats = DEFAULT_NORM_STATS if norm_stats is None else tuple(float(v) for v in norm_stats)
        if len(stats) != 2:
            raise ValueError(f"norm_stats must be (mean, std), got {norm_stats!r}")
        self.register_buffer("norm_stats", torch.tensor(stats, dtype=torch.float32))

        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            _init_mae_(module)
        _init_mae_(self.target_blocks)
        _init_mae_(self.target_norm)
        nn.init.normal_(self.mask_token, std=0.02)
        for p in self.target_parameters():
            p.requires_grad_(False)

    @staticmethod
    def settings_kwargs(settings: Any, norm_stats: Sequence[float]) -> dict[str, Any]:
        """Constructor arguments from a run's settings: ``size``, 80 bins × ``input_frames``, ``patch_size``,
        ``sample_rate``, ``mask_ratio`` and the resolved ``ema_taus`` (a pair, not ``"auto"``)."""
        return dict(
            size=settings.size,
            input_size=(80, int(settings.input_frames)),
            patch_size=tuple(settings.patch_size),
            sample_rate=int(settings.sample_rate),
            mask_ratio=float(settings.mask_ratio),
            mask_strategy=getattr(settings, "mask_strategy", None) or "random",
            **{k: v if getattr(settings, k, None) is None else getattr(settings, k) for k, v in HINT_DEFAULTS.items()},
            ema_taus=tuple(float(t) for t in settings.ema_taus),
            norm_stats=list(norm_stats),
        )

    @staticmethod
    def export_kwargs(settings: Any) -> dict[str, Any]:
        """What reading the run's checkpoint back needs besides the file (:func:`kikimimi.checkpoints.load_encoder`
        keywords): the ViT sizes and sample rate of the settings."""
        return dict(size=settings.size, input_size=(80, int(settings.input_frames)),
                    patch_size=tuple(settings.patch_size), sample_rate=int(settings.sample_rate))

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        *,
        norm_stats: Sequence[float],
        run_epochs: float | None = None,
        run_steps: int | None = None,
        start_step: int = 0,
        **_run_facts: Any,
    ) -> M2D:
        """The M2D of a pre-training run.

        Args:
            settings: the run's :class:`~kikimimi.training.settings.PretrainSettings` (read by attribute; see
                :meth:`settings_kwargs`). norm_stats: the run's log-mel ``(mean, std)``.
            run_epochs / run_steps: the run's length in epochs (fractional for a run given in steps) and optimiser
                steps, for the hint schedule (:meth:`set_schedule`); start_step: the step a resumed run continues
                from.
            **_run_facts: what the run measured that other methods need (``text_dim``, ``epoch_samples``);
                unused here.
        """
        method = cls(**cls.settings_kwargs(settings, norm_stats))
        method.apply_run_length(run_epochs, run_steps, start_step)
        return method

    # ------------------------------------------------------------------ helpers
    def set_generator(self, generator: torch.Generator | None) -> None:
        """Use ``generator`` (CPU) for masking; ``None`` returns to the global torch RNG."""
        self.generator = generator

    def set_schedule(self, run_epochs: float, run_steps: int, *, start_step: int = 0) -> None:
        """The run's length for the hint schedule: ``run_epochs`` epochs (fractional for a run given in steps) in
        ``run_steps`` optimiser steps; then :meth:`set_progress` at ``start_step``."""
        if run_epochs <= 0 or run_steps < 1:
            raise ValueError(f"run_epochs must be > 0 and run_steps >= 1, got {run_epochs} and {run_steps}")
        self.run_epochs, self.run_steps = float(run_epochs), int(run_steps)
        self.set_progress(start_step)

    def apply_run_length(self, run_epochs: float | None, run_steps: int | None, start_step: int = 0) -> None:
        """:meth:`set_schedule` when the run's length is known (both given), else nothing."""
        if run_epochs is not None and run_steps is not None:
            self.set_schedule(run_epochs, run_steps, start_step=start_step)

    def set_progress(self, step: int) -> None:
        """Set :attr:`hint` for the step after ``step`` optimiser steps: epoch ``e = ⌊E · step / S⌋`` of
        ``E`` = ``run_epochs`` in ``S`` = ``run_steps`` (the official schedule is set before each epoch)."""
        epoch = int(self.run_epochs * step / self.run_steps + 1e-9)
        self.hint = hint_schedule(epoch, self.run_epochs, start_epoch=self.hint_start_epoch, k=self.hint_k,
                                  absolute=self.hint_ratio)

    def draw_mask(self, lms: torch.Tensor, tokens: torch.Tensor) -> MaskIds:
        """The mask of one step by :attr:`mask_strategy` (the informed ones with the hint ratio :attr:`hint`).

        Args:
            lms: normalised log-mel ``[B, F, T]`` (DWM reads each patch's dispersion from it).
            tokens: patch embeddings + positions ``[B, L, D]`` (SGIM encodes them all, without grad).
        """
        b, n = tokens.shape[:2]
        kw = dict(generator=self.generator, device=tokens.device)
        strategy = self.mask_strategy
        if strategy == "random":
            return random_masking(b, n, self.mask_ratio, **kw)
        if strategy in ("dwm", "var"):
            kind = "mad" if strategy == "dwm" else "var"
            return dispersion_masking(lms, self.vit_config.patch_size, self.mask_ratio, kind=kind, h=self.hint, **kw)
        if strategy == "ibm":
            return inverse_block_masking(b, self.vit_config.grid_size, self.mask_ratio, h=self.hint, **kw)
        if self.hint >= 1.0:  # sgim, plain random masking: no need to encode the whole input
            return random_masking(b, n, self.mask_ratio, **kw)
        with torch.no_grad():
            x = torch.cat([self._cls(b), tokens], dim=1)
            for blk in self.encoder.blocks:
                x = blk(x)
            features = self.encoder.norm(x)[:, 1:]
        return object_centric_masking(features, self.mask_ratio, h=self.hint, **kw)

    def target_parameters(self) -> list[nn.Parameter]:
        """Target-network parameters (``target_blocks`` then ``target_norm``), in name order."""
        return list(self.target_blocks.parameters()) + list(self.target_norm.parameters())

    def _online_counterparts(self) -> list[nn.Parameter]:
        """Online parameters matching :meth:`target_parameters` one by one."""
        return list(self.encoder.blocks.parameters()) + list(self.encoder.norm.parameters())

    def _cls(self, batch_size: int) -> torch.Tensor:
        """CLS token plus its positional embedding, ``[B, 1, D]``."""
        return (self.encoder.cls_token + self.encoder.pos_embed[:, :1]).expand(batch_size, -1, -1)

    def _check_input(self, lms: torch.Tensor) -> None:
        expected = tuple(self.vit_config.input_size)
        if lms.dim() != 3 or tuple(lms.shape[1:]) != expected:
            raise ValueError(
                f"M2D expects batch['lms'] of shape [B, {expected[0]}, {expected[1]}] (normalised log-mel), "
                f"got {tuple(lms.shape)}; crop the data to the model input_size"
            )

    def encode_visible(self, tokens: torch.Tensor, ids: MaskIds) -> torch.Tensor:
        """Online encoder on CLS + visible tokens: ``tokens [B, L, D]`` → normed latent ``[B, 1 + Lv, D]``."""
        x = torch.cat([self._cls(tokens.shape[0]), gather_tokens(tokens, ids.visible)], dim=1)
        for blk in self.encoder.blocks:
            x = blk(x)
        return self.encoder.norm(x)

    def predict(self, latent: torch.Tensor, ids: MaskIds) -> torch.Tensor:
        """Predictor: latent ``[B, 1 + Lv, D]`` → predictions at the masked positions ``[B, Lm, D]``."""
        x = self.decoder_embed(latent)
        b, n_vis = x.shape[0], x.shape[1] - 1
        n_total = ids.restore.shape[1]
        mask_tokens = self.mask_token.expand(b, n_total - n_vis, -1)
        grid = torch.cat([x[:, 1:], mask_tokens], dim=1)
        grid = gather_tokens(grid, ids.restore)  # back to patch order
        x = torch.cat([x[:, :1], grid], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        return gather_tokens(x, ids.masked)

    @torch.no_grad()
    def encode_target(self, tokens: torch.Tensor, ids: MaskIds) -> torch.Tensor:
        """Target network on CLS + masked tokens: ``tokens [B, L, D]`` → ``[B, Lm, D]`` (CLS dropped)."""
        x = torch.cat([self._cls(tokens.shape[0]), gather_tokens(tokens, ids.masked)], dim=1).detach()
        for blk in self.target_blocks:
            x = blk(x)
        return self.target_norm(x)[:, 1:]

    # ------------------------------------------------------------------ method interface
    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One M2D step.

        Args:
            batch: ``{"lms": [B, F, T]}`` normalised log-mel (float32), ``(F, T) == input_size``.

        Returns:
            ``loss`` (scalar), ``visible_tokens`` ``[B, Lv, D]`` (online outputs of the visible patches,
            CLS dropped; not a logging scalar) and, once an EMA update happened, ``ema_tau`` (scalar,
            the τ of the last update).
        """
        lms = batch["lms"]
        self._check_input(lms)
        tokens = self.encoder.patchify_tokens(lms.unsqueeze(1))  # [B, L, D]
        ids = self.draw_mask(lms, tokens)
        latent = self.encode_visible(tokens, ids)
        pred = self.predict(latent, ids)
        target = self.encode_target(tokens, ids)
        loss = norm_mse_loss(pred, target)
        out: dict[str, torch.Tensor] = {"loss": loss, "visible_tokens": latent[:, 1:]}
        if self.last_tau is not None:
            out["ema_tau"] = torch.tensor(self.last_tau, dtype=torch.float64)
        return out

    @torch.no_grad()
    def on_after_step(self, step: int, total_steps: int) -> None:
        """EMA update of the target after optimiser step ``step`` (1-based) of ``total_steps``; the hint ratio of
        the next step (:meth:`set_progress`)."""
        tau = ema_tau(step - 1, total_steps, *self.ema_taus)
        ema_update_(self.target_parameters(), self._online_counterparts(), tau)
        self.last_tau = tau
        self.set_progress(step)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on ≥2-D weights only; frozen tensors (target, pos embeds) excluded."""
        return weight_decay_param_groups(self, weight_decay)

    def config_dict(self) -> dict:
        """JSON-able description of the method and its recommended optimiser settings."""
        cfg = self.vit_config
        return {
            "method": "m2d",
            "size": self.size,
            "input_size": list(cfg.input_size),
            "patch_size": list(cfg.patch_size),
            "sample_rate": int(cfg.sample_rate),
            "embed_dim": int(cfg.embed_dim),
            "depth": int(cfg.depth),
            "num_heads": int(cfg.num_heads),
            "mlp_ratio": float(cfg.mlp_ratio),
            "mask_ratio": self.mask_ratio,
            "mask_mode": self.mask_mode,
            "mask_strategy": self.mask_strategy,
            "hint_start_epoch": self.hint_start_epoch,
            "hint_k": self.hint_k,
            "hint_ratio": self.hint_ratio,
            "decoder_dim": self.decoder_dim,
            "decoder_depth": self.decoder_depth,
            "decoder_heads": self.decoder_heads,
            "ema_taus": list(self.ema_taus),
            "norm_stats": [float(v) for v in self.norm_stats.tolist()],
            "default_optimizer": "adamw",
            "betas": [0.9, 0.95],
            "weight_decay": 0.05,
            "blr": 3e-4,
            "grad_clip": 3.0,
        }

    # ------------------------------------------------------------------ official checkpoints
    def export_official_state_dict(self) -> dict[str, torch.Tensor]:
        """Full-model state dict with the official key names (docs/reference.md §5), incl. ``norm_stats``."""
        out: dict[str, torch.Tensor] = {}
        for key, value in self.state_dict().items():
            name = key[len("encoder.") :] if key.startswith("encoder.") else key
            out[name] = value.detach().clone()
        return out

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
        """Initialise online, target and predictor from an official full M2D state dict.

        Accepts the checkpoint dict itself (``{"model": ...}``) or the inner state dict. A missing
        ``norm_stats`` keeps the current value. Keys this module does not have (e.g. M2D-X
        ``offline_predictor.*``, CLAP ``audio_proj.*``) are ignored and returned.

        Raises:
            KeyError: required tensors are missing (e.g. an encoder-only file).
            ValueError: shapes differ (wrong size, input_size, patch_size or decoder depth/dim).
        """
        if "model" in state_dict and isinstance(state_dict["model"], Mapping):
            state_dict = state_dict["model"]
        own = self.state_dict()
        enc_keys = {k[len("encoder.") :] for k in own if k.startswith("encoder.")}
        mapped: dict[str, torch.Tensor] = {}
        ignored: list[str] = []
        for key, value in state_dict.items():
            target_key = f"encoder.{key}" if key in enc_keys else key
            if target_key in own:
                mapped[target_key] = value
            else:
                ignored.append(key)
        if "norm_stats" not in mapped:
            mapped["norm_stats"] = own["norm_stats"]
        missing = [k.removeprefix("encoder.") for k in own if k not in mapped]
        if missing:
            raise KeyError(
                f"official M2D state dict lacks {len(missing)} tensors, e.g. {missing[:5]}; a full training "
                "checkpoint (checkpoint-*.pth with target_* and decoder_* keys) is needed, and the "
                f"predictor depth must match (this model has {self.decoder_depth} decoder blocks)"
            )
        bad = [
            f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in mapped.items()
            if tuple(v.shape) != tuple(own[k].shape)
        ]
        if bad:
            raise ValueError(
                "official M2D state dict does not fit this model (check size, input_size, patch_size, "
                f"decoder_dim): {bad[:3]}"
            )
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in mapped.items()}, strict=True)
        return ignored

    @classmethod
    def from_official_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], *, input_size: Sequence[int] = (80, 608), **kwargs
    ) -> M2D:
        """Build an M2D whose sizes are read from an official full state dict, then load it.

        Width/depth/heads come from ``cls_token``/``blocks.N``; patch size from ``patch_embed.proj.weight``;
        predictor width/depth from ``mask_token``/``decoder_blocks.N``. ``input_size`` (F, T) cannot be
        inferred from the tensors and must match the file (default 80x608).
        """
        if "model" in state_dict and isinstance(state_dict["model"], Mapping):
            state_dict = state_dict["model"]
        try:
            dim = int(state_dict["cls_token"].shape[-1])
            patch = tuple(int(v) for v in state_dict["patch_embed.proj.weight"].shape[-2:])
            dp = int(state_dict["mask_token"].shape[-1])
        except KeyError as err:
            raise KeyError(f"not an official full M2D state dict: missing {err}") from None
        depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
        dec_depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("decoder_blocks."))
        size = next((name for name, (d, dep, _h) in VIT_SIZES.items() if d == dim and dep == depth), None)
        if size is None:
            raise ValueError(f"no ViT size with embed_dim={dim} and depth={depth}")
        model = cls(
            size,
            input_size=input_size,
            patch_size=patch,
            decoder_dim=dp,
            decoder_depth=dec_depth,
            **kwargs,
        )
        model.load_official_state_dict(state_dict)
        return model
