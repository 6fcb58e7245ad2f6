"""M2D2 = M2D-CLAP (2025) training ([M2D2], arXiv:2503.22104; docs/reference.md §7.3).

Stage 1 is :class:`~kikimimi.methods.m2d_clap.M2DCLAP` trained against caption embeddings from an
**LLM-based sentence embedder** (e.g. ``llm:PATH#eos`` / ``smollm2#eos``) instead of GTE-base, with the
semantic-token projector on the unpooled visible tokens (``sem_mode`` 1, as published).
:func:`stage1_method` builds it with the method label ``m2d2_stage1``
and records the text-encoder spec that made the cache.

Stage 2 (:class:`M2D2Stage2`) learns CLAP features with a trainable text encoder, guided by the stage-1
audio encoder (the official ``clap_only``, ``../shared/docs/fact-sheet-m2d2-2026.md`` §4):

- the crop (official: 1001 frames whatever the model input) is cut into the model's chunks
  (:meth:`~kikimimi.models.vit.AudioViT.split_chunks`); in training, each chunk's patches go through the
  training mask (:func:`kikimimi.models.masking.training_mask`: stage 2 ``mask_ratio`` 0.3, structured by
  default; stage 2.1: 0) and the stage-1 audio encoder (frozen unless ``unfreeze_audio=True``) encodes the
  visible patches; the chunks' tokens are concatenated into the unpooled sequence ``[B, N, D]``;
- the semantic-token projector (:class:`~kikimimi.models.projectors.SemanticProjector`) maps it to
  ``[B, D]``;
- a trainable text encoder (``TextEncoder.forward(texts) -> [B, Dt]``, e.g. ``bert:PATH``) plus
  ``text_proj`` (``nn.Linear(Dt, D)``) when ``Dt ≠ D`` embeds the captions;
- loss = symmetric InfoNCE only (:func:`kikimimi.methods.clap.clip_infonce`); the logit scale starts at
  ln 100 = 4.6052 (reset, as the official stage 2) and is clamped to ``[0, ln 100]`` after every step.

Stage 2.1 is stage 2 started from a stage-2 file (:meth:`M2D2Stage2.load_stage1` continues its projector, text
encoder and logit scale) with ``mask_ratio`` 0.

Captions reach the method as ``batch["caption_index"]`` ``[B]`` int64 indices into the caption list set
with :meth:`M2D2Stage2.set_captions` (the trainer moves only tensors to the device).

State-dict keys are the official 2025 (RuntimeM2D-wrapped) layout: ``backbone.`` + encoder keys,
``backbone.norm_stats``, ``backbone.audio_proj.sem_token`` / ``sem_blocks.N.*`` / ``norm.*``,
``backbone.text_proj.*`` when present, ``text_encoder.text_encoder.<Hugging Face keys>`` (a text encoder that
keeps its network as ``.model``; :mod:`kikimimi.checkpoints.text_state`) and ``logit_scale``.
:meth:`M2D2Stage2.state_dict` gives these keys; ``load_state_dict`` also reads kikimimi's earlier
``text_encoder.model.*``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kikimimi.checkpoints import EncoderBundle, load_encoder
from kikimimi.checkpoints.names import vit_size_name
from kikimimi.checkpoints.runs import resolve_run_checkpoint
from kikimimi.checkpoints.text_state import OFFICIAL_TEXT_PREFIX, OLD_TEXT_PREFIX, text_keys_to_wrapper
from kikimimi.methods.clap import LOGIT_SCALE_MAX, clamp_logit_scale_, clip_infonce, new_logit_scale
from kikimimi.methods.m2d_clap import M2DCLAP
from kikimimi.models.masking import gather_tokens, training_mask
from kikimimi.models.projectors import SEMANTIC_MODES, SemanticProjector, linear_text_projection
from kikimimi.models.text_loading import load_text_encoder
from kikimimi.models.vit import AudioViT, ViTConfig
from kikimimi.optim import weight_decay_param_groups

__all__ = ["MASK_STRATEGIES", "M2D2Stage2", "SemanticBackbone", "stage1_method"]

#: stage-2 training masks: ``structured`` = the official code (marked rows/columns stay visible), ``random`` =
#: the official ``--random_mask``, ``structured-masked`` = the structured mask as described (marked patches masked)
MASK_STRATEGIES = ("structured", "random", "structured-masked")


def stage1_method(text_encoder: str | None = None, **kwargs: Any) -> M2DCLAP:
    """M2D2 stage 1: an :class:`M2DCLAP` labelled ``m2d2_stage1``.

    Args:
        text_encoder: spec of the (LLM-based) text encoder that produced the caption-embedding cache,
            recorded in ``config_dict()["text_encoder"]``.
        **kwargs: :class:`M2DCLAP` arguments (``text_dim`` = the cache's embedding width, e.g. 4096; ``sem_mode``
            defaults to 1, the semantic-token projector of the published stage 1).
    """
    kwargs.pop("method_name", None)
    kwargs.setdefault("sem_mode", 1)
    return M2DCLAP(method_name="m2d2_stage1", text_encoder=text_encoder, **kwargs)


class SemanticBackbone(AudioViT):
    """The 2025 ``backbone``: the audio ViT plus ``audio_proj`` (semantic projector), optional
    ``text_proj`` and the ``norm_stats`` buffer, so its state-dict keys are the official ones."""

    def __init__(
        self,
        config: ViTConfig,
        *,
        sem_depth: int = 1,
        sem_mlp_ratio: float = 1.0,
        text_dim: int | None = None,
        norm_stats: Sequence[float] = (-7.1, 4.2),
    ) -> None:
        super().__init__(config)
        dim = config.embed_dim
        self.audio_proj = SemanticProjector(dim, depth=int(sem_depth), mlp_ratio=float(sem_mlp_ratio))
        self.text_proj = (
            linear_text_projection(int(text_dim), dim) if text_dim is not None and int(text_dim) != dim else None
        )
        stats = [float(v) for v in norm_stats]
        if len(stats) != 2:
            raise ValueError(f"norm_stats must be (mean, std), got {norm_stats!r}")
        self.register_buffer("norm_stats", torch.tensor(stats, dtype=torch.float32))

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the audio ViT itself (not the projectors)."""
        skip = ("audio_proj.", "text_proj.")
        return [p for n, p in self.named_parameters() if not n.startswith(skip)]

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the ViT encoder tensors (official encoder key names)."""
        skip = ("audio_proj.", "text_proj.", "norm_stats")
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}


class M2D2Stage2(nn.Module):
    """M2D2 stage 2: CLAP with a trainable text encoder on top of the stage-1 audio encoder.

    Args:
        vit_config: the stage-1 encoder's :class:`ViTConfig` (or its dict).
        text_encoder: a ``TextEncoder`` (``nn.Module`` with ``dim`` and ``forward(list[str]) -> [N, Dt]``)
            or a spec string for :func:`kikimimi.models.text_loading.load_text_encoder`.
        sem_mode: official projector mode 1–4 (depth/MLP ratio 1/1, 2/1, 3/2, 4/2); ``sem_depth`` and
            ``sem_mlp_ratio`` override it.
        unfreeze_audio: also train the audio encoder (default: frozen, as guided by stage 1).
        norm_stats: ``(mean, std)`` of the stage-1 normalisation (stored as ``backbone.norm_stats``).
        text_encoder_spec: spec recorded in :meth:`config_dict` (default: the string given as ``text_encoder``).
        captions: optional caption list for ``batch["caption_index"]`` (see :meth:`set_captions`).
        mask_ratio: training mask of the encoder's input patches, per chunk, in train mode only (official
            stage 2: 0.3; stage 2.1 and the default: 0).
        mask_strategy: one of :data:`MASK_STRATEGIES` (official default ``"structured"``).
        logit_scale_init: initial log-scale (official stage 2 resets it to ln 100 = 4.6052).
    """

    config_only_keys = frozenset(
        {"method", "size", "default_optimizer", "betas", "weight_decay", "lr", "blr", "grad_clip", "text_dim",
         "continued_from_stage2"}
    )
    #: a pre-training run pairs each item with caption texts (the text encoder trains) and starts from the
    #: stage-1 encoder of ``init_from`` (:class:`~kikimimi.methods.m2d.M2D` has the same attributes)
    caption_input = "texts"
    #: the ``mask_strategy`` values of this method (a run's settings are checked against them)
    mask_strategies = MASK_STRATEGIES
    trains_on_stage1 = True
    exports_encoder_state_dict = False

    @staticmethod
    def export_kwargs(settings: Any) -> dict[str, Any]:
        """:func:`kikimimi.checkpoints.load_encoder` keywords for the run's checkpoint: the stage-1 encoder's sizes
        (``settings.vit_config``; the crop length ``input_frames`` may differ, e.g. the official 1001 frames)."""
        if not settings.vit_config:
            return M2DCLAP.export_kwargs(settings)
        vit = ViTConfig.from_dict(dict(settings.vit_config))
        return dict(size=settings.size, input_size=tuple(vit.input_size), patch_size=tuple(vit.patch_size),
                    sample_rate=int(vit.sample_rate))

    def __init__(
        self,
        vit_config: ViTConfig | Mapping[str, Any],
        text_encoder: nn.Module | str,
        *,
        sem_mode: int = 1,
        sem_depth: int | None = None,
        sem_mlp_ratio: float | None = None,
        unfreeze_audio: bool = False,
        norm_stats: Sequence[float] = (-7.1, 4.2),
        text_encoder_spec: str | None = None,
        captions: Sequence[str] | None = None,
        mask_ratio: float = 0.0,
        mask_strategy: str = "structured",
        logit_scale_init: float = LOGIT_SCALE_MAX,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(mask_ratio) < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if mask_strategy not in MASK_STRATEGIES:
            raise ValueError(f"mask_strategy must be one of {', '.join(MASK_STRATEGIES)}, got {mask_strategy!r}")
        if isinstance(vit_config, Mapping):
            vit_config = ViTConfig.from_dict(dict(vit_config))
        if sem_mode not in SEMANTIC_MODES:
            raise ValueError(f"sem_mode must be one of {sorted(SEMANTIC_MODES)}, got {sem_mode}")
        depth, ratio = SEMANTIC_MODES[int(sem_mode)]
        self.sem_mode = int(sem_mode)
        self.sem_depth = int(sem_depth or depth)
        self.sem_mlp_ratio = float(sem_mlp_ratio or ratio)
        if isinstance(text_encoder, str):
            text_encoder_spec = text_encoder_spec or text_encoder
            text_encoder = load_text_encoder(text_encoder)
        text_dim = int(text_encoder.dim)
        self.vit_config = vit_config
        self.text_dim = text_dim
        self.text_encoder_spec = text_encoder_spec or getattr(text_encoder, "name", None)
        self.unfreeze_audio = bool(unfreeze_audio)
        self.backbone = SemanticBackbone(
            vit_config,
            sem_depth=self.sem_depth,
            sem_mlp_ratio=self.sem_mlp_ratio,
            text_dim=text_dim,
            norm_stats=norm_stats,
        )
        self.text_encoder = text_encoder
        self.logit_scale_init = float(logit_scale_init)
        self.logit_scale = new_logit_scale(self.logit_scale_init)
        self.mask_ratio = float(mask_ratio)
        self.mask_strategy = str(mask_strategy)
        self.generator: torch.Generator | None = None
        self.continued_from_stage2 = False
        self.captions: list[str] = list(captions) if captions is not None else []
        for p in self.backbone.encoder_parameters():
            if p is not self.backbone.pos_embed:
                p.requires_grad_(self.unfreeze_audio)
        if isinstance(getattr(text_encoder, "model", None), nn.Module):  # official text-encoder keys
            self.register_state_dict_post_hook(_official_text_keys)
            self.register_load_state_dict_pre_hook(_wrapper_text_keys)

    # ------------------------------------------------------------------ helpers
    @property
    def encoder(self) -> AudioViT:
        """The audio encoder (the backbone ViT, with its projectors attached)."""
        return self.backbone

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Use ``generator`` (CPU) for the training mask; ``None`` returns to the global torch RNG."""
        self.generator = generator

    def set_captions(self, captions: Sequence[str]) -> None:
        """Caption strings that ``batch["caption_index"]`` indexes into."""
        self.captions = [str(c) for c in captions]

    def load_stage1_encoder(self, encoder_state: Mapping[str, torch.Tensor], norm_stats=None) -> None:
        """Copy a stage-1 encoder (official encoder key names) into the backbone (strict for the ViT)."""
        own = self.backbone.encoder_state_dict()
        missing = [k for k in own if k not in encoder_state]
        unexpected = [k for k in encoder_state if k not in own]
        if missing or unexpected:
            raise KeyError(
                f"stage-1 encoder does not fit: missing {missing[:5]} ({len(missing)}), "
                f"unexpected {unexpected[:5]} ({len(unexpected)})"
            )
        bad = [k for k in own if tuple(own[k].shape) != tuple(encoder_state[k].shape)]
        if bad:
            raise ValueError(f"stage-1 encoder shapes differ from the model: {bad[:5]}")
        with torch.no_grad():
            for key, value in own.items():
                value.copy_(encoder_state[key].to(value.dtype))
            if norm_stats is not None:
                self.backbone.norm_stats.copy_(torch.as_tensor(list(norm_stats), dtype=torch.float32))

    def load_stage1(self, bundle: EncoderBundle, norm_stats: Sequence[float] | None = None) -> None:
        """Start from the file a run's ``--init-from`` names: always its encoder (:meth:`load_stage1_encoder`);
        from a stage-2 file (a semantic ``audio_proj`` and text-encoder tensors: stage 2.1) also its projector,
        ``text_proj``, text encoder and logit scale, as the official ``--finetune`` does
        (:attr:`continued_from_stage2` records it).

        Raises:
            ValueError: a stage-2 file whose projector or text encoder does not fit this model (one line).
        """
        self.load_stage1_encoder(bundle.encoder.state_dict(), norm_stats=norm_stats)
        proj = bundle.audio_proj
        if not (bundle.text_encoder_state and proj is not None and hasattr(proj, "sem_blocks")):
            return  # a stage-1 (or 1.1) file: fresh projector, logit scale reset
        source = bundle.config.get("source", "the stage-2 file")
        try:
            self.backbone.audio_proj.load_state_dict(proj.state_dict(), strict=True)
            if bundle.text_proj is not None and self.backbone.text_proj is not None:
                self.backbone.text_proj.load_state_dict(bundle.text_proj.state_dict(), strict=True)
            self.text_encoder.load_state_dict(bundle.text_encoder_state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"'{source}': its stage-2 projector or text encoder does not fit this run "
                             f"(--sem-mode / --text-encoder): {first}") from None
        if bundle.logit_scale is not None:
            with torch.no_grad():
                self.logit_scale.fill_(float(bundle.logit_scale))
        self.continued_from_stage2 = True

    @classmethod
    def from_settings(cls, settings: Any, *, norm_stats: Sequence[float], **_run_facts: Any) -> M2D2Stage2:
        """Stage 2 of a pre-training run: ``vit_config`` (the stage-1 encoder's, set by the run), the
        ``text_encoder`` spec to train, ``sem_mode`` (``None`` = 1), ``unfreeze_audio``, ``mask_ratio``
        (``None`` = 0) and ``mask_strategy`` (``None`` = structured); the stage-1 weights are loaded afterwards
        (:meth:`load_stage1`)."""
        sem_mode = 1 if settings.sem_mode is None else int(settings.sem_mode)
        return cls(settings.vit_config, settings.text_encoder, sem_mode=sem_mode,
                   unfreeze_audio=bool(settings.unfreeze_audio), norm_stats=list(norm_stats),
                   mask_ratio=float(settings.mask_ratio or 0.0),
                   mask_strategy=getattr(settings, "mask_strategy", None) or "structured")

    @classmethod
    def from_stage1(cls, path: str | Path, text_encoder: nn.Module | str, **kwargs: Any) -> M2D2Stage2:
        """Build stage 2 on the encoder of a stage-1 run folder / checkpoint / kikimimi folder.

        The ViT sizes and ``norm_stats`` come from the stage-1 file (via
        :func:`kikimimi.checkpoints.load_encoder`); ``kwargs`` are the other constructor arguments.
        """
        ckpt = resolve_run_checkpoint(path)
        bundle = load_encoder(ckpt)
        if not isinstance(bundle.encoder, AudioViT):
            raise ValueError(
                f"'{ckpt}': stage 2 needs an M2D / M2D-CLAP audio encoder, got {type(bundle.encoder).__name__}"
            )
        vit = dict(bundle.config["vit"])
        stats = bundle.norm_stats.to_list()
        kwargs.setdefault("norm_stats", stats)
        model = cls(vit, text_encoder, **kwargs)
        model.load_stage1_encoder(bundle.encoder.state_dict(), norm_stats=kwargs["norm_stats"])
        return model

    def _check_input(self, lms: torch.Tensor) -> None:
        n_mels, patch_t = self.vit_config.input_size[0], self.vit_config.patch_size[1]
        if lms.dim() != 3 or lms.shape[1] != n_mels or lms.shape[2] < patch_t:
            raise ValueError(
                f"M2D2 stage 2 expects batch['lms'] of shape [B, {n_mels}, T] with T ≥ {patch_t} frames "
                f"(the stage-1 encoder's mel bins; any crop length), got {tuple(lms.shape)}"
            )

    def _texts(self, batch: Mapping[str, torch.Tensor]) -> list[str]:
        if "caption_index" not in batch:
            raise KeyError(
                "M2D2 stage 2 needs batch['caption_index'] (indices into the caption list); train with "
                "kikimimi.data.caption_pairs.CaptionCropDataset in text mode and call method.set_captions()"
            )
        idx = batch["caption_index"].detach().cpu().tolist()
        if not self.captions:
            raise RuntimeError("M2D2 stage 2 has no captions; call set_captions(dataset.caption_texts) first")
        bad = [i for i in idx if not 0 <= int(i) < len(self.captions)]
        if bad:
            raise IndexError(f"caption_index {bad[:3]} outside the {len(self.captions)} captions")
        return [self.captions[int(i)] for i in idx]

    # ------------------------------------------------------------------ embeddings
    def audio_tokens(self, lms: torch.Tensor) -> torch.Tensor:
        """``lms [B, F, T]`` (any length) → the encoder's patch tokens ``[B, N, D]``: the model's chunks one after
        the other, each masked by the training mask in train mode (``N`` = the visible patches of all chunks)."""
        grad = torch.is_grad_enabled() and self.unfreeze_audio
        fg = self.backbone.grid_size[0]
        outputs = []
        with torch.set_grad_enabled(grad):
            for chunk in self.backbone.split_chunks(lms):
                tokens = self.backbone.patchify_tokens(chunk.unsqueeze(1))
                ids = None
                if self.training:
                    ids = training_mask(
                        tokens.shape[0], (fg, tokens.shape[1] // fg), self.mask_ratio,
                        structured=self.mask_strategy != "random",
                        marked="masked" if self.mask_strategy == "structured-masked" else "visible",
                        generator=self.generator, device=tokens.device,
                    )  # fmt: skip
                if ids is not None:
                    tokens = gather_tokens(tokens, ids.visible)
                outputs.append(self.backbone.run_blocks(tokens))
        return torch.cat(outputs, dim=1)

    def audio_embedding(self, lms: torch.Tensor) -> torch.Tensor:
        """``lms [B, F, T]`` → ``audio_proj`` of the (visible) patch tokens ``[B, D]`` (:meth:`audio_tokens`)."""
        return self.backbone.audio_proj(self.audio_tokens(lms))

    def text_embedding(self, texts: Sequence[str]) -> torch.Tensor:
        """Captions → ``[B, D]`` through the trainable text encoder (+ ``text_proj``)."""
        t = self.text_encoder(list(texts)).float()
        return self.backbone.text_proj(t) if self.backbone.text_proj is not None else t

    # ------------------------------------------------------------------ method interface
    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One stage-2 step: ``{"lms": [B, F, T], "caption_index": [B]}`` → ``loss`` (= ``loss_clap``),
        ``loss_clap`` and ``logit_scale`` (detached)."""
        lms = batch["lms"]
        self._check_input(lms)
        audio = self.audio_embedding(lms)
        text = self.text_embedding(self._texts(batch))
        loss = clip_infonce(audio, text, self.logit_scale)
        return {"loss": loss, "loss_clap": loss.detach(), "logit_scale": self.logit_scale.detach().clone()}

    @torch.no_grad()
    def on_after_step(self, step: int, total_steps: int) -> None:
        """Clamp ``logit_scale`` to ``[0, ln 100]``."""
        clamp_logit_scale_(self.logit_scale)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups (no decay on 1-D params/biases; the frozen audio encoder is excluded)."""
        return weight_decay_param_groups(self, weight_decay)

    def config_dict(self) -> dict:
        cfg = self.vit_config
        return {
            "method": "m2d2_stage2",
            "size": vit_size_name(cfg),
            "vit_config": cfg.to_dict(),
            "sem_mode": self.sem_mode,
            "sem_depth": self.sem_depth,
            "sem_mlp_ratio": self.sem_mlp_ratio,
            "unfreeze_audio": self.unfreeze_audio,
            "text_encoder": self.text_encoder_spec,
            "text_dim": self.text_dim,
            "norm_stats": [float(v) for v in self.backbone.norm_stats.tolist()],
            "mask_ratio": self.mask_ratio,
            "mask_strategy": self.mask_strategy,
            "logit_scale_init": self.logit_scale_init,
            "continued_from_stage2": self.continued_from_stage2,
            "default_optimizer": "adamw",
            "betas": [0.9, 0.95],
            "weight_decay": 0.05,
            "blr": 3e-6,
            "grad_clip": 3.0,
        }

    def export_official_state_dict(self) -> dict[str, torch.Tensor]:
        """Official 2025 layout: ``backbone.*`` (encoder, ``norm_stats``, ``audio_proj.*``, ``text_proj.*``),
        ``text_encoder.text_encoder.*`` and ``logit_scale`` (the trainer wraps it in ``{"model": ...}``)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}


def _official_text_keys(module: nn.Module, state: dict, prefix: str, _meta: Any) -> None:
    """``state_dict`` post-hook: the text encoder's network under the official ``text_encoder.text_encoder.``."""
    old = prefix + OLD_TEXT_PREFIX
    if any(k.startswith(old) for k in state):
        items = list(state.items())
        state.clear()
        for key, value in items:
            state[prefix + OFFICIAL_TEXT_PREFIX + key[len(old) :] if key.startswith(old) else key] = value


def _wrapper_text_keys(module: nn.Module, state: dict, prefix: str, *_args: Any) -> None:
    """``load_state_dict`` pre-hook: official ``text_encoder.text_encoder.*`` (and kikimimi's earlier
    ``text_encoder.model.*``) → the wrapper's ``text_encoder.model.*``."""
    if any(k.startswith(prefix + OFFICIAL_TEXT_PREFIX) for k in state):
        renamed = text_keys_to_wrapper(state, prefix)
        state.clear()
        state.update(renamed)
