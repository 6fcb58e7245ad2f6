"""M2D-CLAP (2024) pre-training objective: M2D plus CLAP on the same forward pass ([M2D-CLAP], Interspeech
2024; docs/reference.md §7.3).

Audio side (``sem_mode``, ../shared/docs/fact-sheet-m2d2-2026.md §2): the online encoder outputs of the *visible*
patches (CLS dropped; returned by :meth:`M2D.forward` as ``visible_tokens``) →

- ``sem_mode`` 0 (the 2024 M2D-CLAP): their mean → ``audio_proj`` (:class:`~kikimimi.models.projectors.
  MLPAudioProjector`, D→D→D; 768 for ViT-Base, the encoder width for other sizes);
- ``sem_mode`` 1–4 (M2D2 stage 1, official default 1): the **unpooled** visible-token sequence (57 of 190 tokens at
  mask 0.7) → the semantic-token projector (:class:`~kikimimi.models.projectors.SemanticProjector`, depth/MLP ratio
  1/1, 2/1, 3/2, 4/2), keys ``audio_proj.sem_token``, ``audio_proj.sem_blocks.N.*``, ``audio_proj.norm.*``.
Text side: frozen pre-computed caption embeddings ``batch["text_emb"]`` ``[B, Dt]`` (e.g. GTE-base
mean-pooled, or LLM-based sentence embeddings for M2D2 stage 1) → ``text_proj`` (``nn.Linear(Dt, D)``)
only when ``Dt ≠ D`` (identity otherwise, as the official 2024 file).

Loss = ``L_M2D + clap_weight · InfoNCE`` (``clap_weight`` 0.01 by default) with global-batch negatives
under DDP (:func:`kikimimi.methods.clap.clip_infonce`). After every optimiser step: the M2D EMA update
and the clamp of ``logit_scale`` to ``[0, ln 100]``.

State-dict keys are the official ones: the M2D keys plus ``logit_scale`` (0-d), ``audio_proj.0.*``,
``audio_proj.2.*`` (mode 0) or the semantic projector's keys (modes 1–4), and ``text_proj.*`` when present.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from kikimimi.methods.clap import clamp_logit_scale_, clip_infonce, new_logit_scale
from kikimimi.methods.m2d import M2D
from kikimimi.models.projectors import SEMANTIC_MODES, MLPAudioProjector, SemanticProjector, linear_text_projection

__all__ = ["M2DCLAP", "CLAP_KEYS_PREFIXES"]

#: official key prefixes added by M2D-CLAP on top of the M2D keys
CLAP_KEYS_PREFIXES = ("audio_proj.", "text_proj.", "logit_scale")


class M2DCLAP(M2D):
    """M2D + CLAP pre-training module.

    Args:
        size / input_size / patch_size / ...: as :class:`~kikimimi.methods.m2d.M2D`.
        text_dim: width ``Dt`` of the caption embeddings in ``batch["text_emb"]``; ``None`` = the encoder
            width (no ``text_proj``).
        clap_weight: weight of the CLAP loss (official 0.01).
        method_name: label written to :meth:`config_dict` (``"m2d_clap"``, or ``"m2d2_stage1"``).
        text_encoder: informational spec of the text encoder that produced the embeddings (recorded in
            :meth:`config_dict`, e.g. ``"gte:/models/gte-base"`` or ``"llm:/models/nv-embed#eos"``).
        sem_mode: audio projector: 0 = the 2024 MLP on the mean of the visible tokens (default), 1–4 = the
            semantic-token projector on the unpooled visible tokens (M2D2 stage 1: 1).
        **m2d_kwargs: the remaining :class:`M2D` arguments.
    """

    config_only_keys = M2D.config_only_keys
    caption_input = "embeddings"

    def __init__(
        self,
        size: str = "base",
        input_size: Sequence[int] = (80, 608),
        patch_size: Sequence[int] = (16, 16),
        *,
        text_dim: int | None = None,
        clap_weight: float = 0.01,
        method_name: str = "m2d_clap",
        text_encoder: str | None = None,
        sem_mode: int = 0,
        **m2d_kwargs,
    ) -> None:
        if int(sem_mode) != 0 and int(sem_mode) not in SEMANTIC_MODES:
            raise ValueError(f"sem_mode must be 0 (2024 MLP) or one of {sorted(SEMANTIC_MODES)}, got {sem_mode}")
        super().__init__(size, input_size, patch_size, **m2d_kwargs)
        dim = self.vit_config.embed_dim
        self.text_dim = int(text_dim) if text_dim is not None else dim
        if self.text_dim <= 0:
            raise ValueError(f"text_dim must be positive, got {text_dim}")
        if clap_weight < 0:
            raise ValueError(f"clap_weight must be >= 0, got {clap_weight}")
        self.clap_weight = float(clap_weight)
        self.method_name = str(method_name)
        self.text_encoder_spec = text_encoder
        self.sem_mode = int(sem_mode)
        if self.sem_mode == 0:
            self.audio_proj: nn.Module = MLPAudioProjector(dim)
        else:
            depth, ratio = SEMANTIC_MODES[self.sem_mode]
            self.audio_proj = SemanticProjector(dim, depth=depth, mlp_ratio=ratio)
        self.text_proj = linear_text_projection(self.text_dim, dim) if self.text_dim != dim else None
        self.logit_scale = new_logit_scale()

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        *,
        norm_stats: Sequence[float],
        text_dim: int | None = None,
        run_epochs: float | None = None,
        run_steps: int | None = None,
        start_step: int = 0,
        **_run_facts: Any,
    ) -> M2DCLAP:
        """The M2D-CLAP (or M2D2 stage 1: ``settings.method``) of a pre-training run: the M2D settings
        (:meth:`M2D.settings_kwargs`), ``clap_weight`` (``None`` = the official 0.01) and ``text_encoder``;
        ``text_dim`` = the width of the run's caption embeddings (``None`` = the encoder width); the run length
        of the hint schedule as in :meth:`M2D.from_settings`."""
        weight = settings.clap_weight if settings.clap_weight is not None else 0.01
        method = cls(**cls.settings_kwargs(settings, norm_stats), text_dim=text_dim, clap_weight=float(weight),
                     text_encoder=settings.text_encoder, method_name=settings.method,
                     sem_mode=int(settings.sem_mode or 0))
        method.apply_run_length(run_epochs, run_steps, start_step)
        return method

    # ------------------------------------------------------------------ embeddings
    def audio_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N, D]`` (training: the visible ones) → ``[B, D]``: ``audio_proj`` of their mean
        (``sem_mode`` 0) or of the whole sequence (the semantic projector)."""
        if self.sem_mode == 0:
            return self.audio_proj(tokens.mean(dim=1))
        return self.audio_proj(tokens)

    def text_embedding(self, text_emb: torch.Tensor) -> torch.Tensor:
        """Caption embeddings ``[B, Dt]`` → ``[B, D]`` (``text_proj`` when ``Dt ≠ D``)."""
        if text_emb.dim() != 2 or text_emb.shape[1] != self.text_dim:
            raise ValueError(
                f"M2D-CLAP expects batch['text_emb'] of shape [B, {self.text_dim}], got {tuple(text_emb.shape)}; "
                "the caption-embedding cache and --text-encoder must match the model's text_dim"
            )
        x = text_emb.float()
        return self.text_proj(x) if self.text_proj is not None else x

    @torch.no_grad()
    def zero_shot_audio(self, lms: torch.Tensor) -> torch.Tensor:
        """Inference audio embedding: :meth:`audio_embedding` of all patch tokens for ``lms [B, F, T]`` → ``[B, D]``."""
        tokens = self.encoder.encode_lms(lms, flat=True)
        return self.audio_embedding(tokens)

    # ------------------------------------------------------------------ method interface
    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One M2D-CLAP step.

        Args:
            batch: ``{"lms": [B, F, T] normalised log-mel, "text_emb": [B, Dt] caption embeddings}``.

        Returns:
            ``loss`` (scalar, ``loss_m2d + clap_weight · loss_clap``), ``loss_m2d``, ``loss_clap``,
            ``logit_scale`` (the log-scale; all detached scalars) and ``ema_tau`` once an EMA update happened.
        """
        if "text_emb" not in batch:
            raise KeyError(
                "M2D-CLAP needs batch['text_emb'] (caption embeddings); train with a caption-aware dataset "
                "(kikimimi.data.caption_pairs.CaptionCropDataset, --captions)"
            )
        out = super().forward(batch)
        loss_m2d = out.pop("loss")
        visible = out.pop("visible_tokens")
        audio = self.audio_embedding(visible)
        text = self.text_embedding(batch["text_emb"])
        loss_clap = clip_infonce(audio, text, self.logit_scale)
        out.update(
            loss=loss_m2d + self.clap_weight * loss_clap,
            loss_m2d=loss_m2d.detach(),
            loss_clap=loss_clap.detach(),
            logit_scale=self.logit_scale.detach().clone(),
        )
        return out

    @torch.no_grad()
    def on_after_step(self, step: int, total_steps: int) -> None:
        """M2D EMA update, then clamp ``logit_scale`` to ``[0, ln 100]``."""
        super().on_after_step(step, total_steps)
        clamp_logit_scale_(self.logit_scale)

    def config_dict(self) -> dict:
        cfg = super().config_dict()
        cfg.update(
            method=self.method_name,
            text_dim=self.text_dim,
            clap_weight=self.clap_weight,
            text_encoder=self.text_encoder_spec,
            method_name=self.method_name,
            sem_mode=self.sem_mode,
        )
        return cfg

    # ------------------------------------------------------------------ official checkpoints
    def export_official_state_dict(self) -> dict[str, torch.Tensor]:
        """Official 2024 full-model dict: the M2D keys + ``logit_scale``, ``audio_proj.{0,2}.*``, ``text_proj.*``."""
        return super().export_official_state_dict()

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
        """Initialise from an official M2D or M2D-CLAP full state dict.

        CLAP tensors (``audio_proj``, ``text_proj``, ``logit_scale``) absent from the file keep their
        fresh initialisation (further pre-training an M2D checkpoint with CLAP); present ones must fit.
        """
        if "model" in state_dict and isinstance(state_dict["model"], Mapping):
            state_dict = state_dict["model"]
        merged = dict(state_dict)
        own = self.state_dict()
        for key, value in own.items():
            if key.startswith(CLAP_KEYS_PREFIXES) and key not in merged:
                merged[key] = value
        return super().load_official_state_dict(merged)
