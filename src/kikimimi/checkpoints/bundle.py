"""`EncoderBundle`: an encoder plus everything needed to use it, and builders from a config dict.

The ``config`` dict is JSON-serialisable and is what ``config.json`` stores:

- ``family``: ``"m2d"`` or ``"byola"``;
- ``vit``: :class:`kikimimi.models.vit.ViTConfig` fields (M2D) — or ``byola``: ``{"version", "n_mels", "d"}``;
- ``head``: ``{"in_dim", "n_classes"}`` or ``None`` (EVAR-style tagging head);
- ``audio_proj``: ``{"kind": "mlp", "dim"[, "out_dim"]}`` (2024) / ``{"kind": "semantic", "dim", "depth", "mlp_ratio"}``
  (2025) or ``None``; ``text_proj``: ``{"kind": "linear", "in_dim", "out_dim", "bias"}`` /
  ``{"kind": "mlp", "in_dim", "hidden", "out_dim"}`` or ``None``;
- informational: ``model_cls``, ``name_extras``, ``source``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kikimimi.checkpoints.errors import CheckpointError
from kikimimi.checkpoints.layouts import missing_unexpected_message
from kikimimi.features.frontend import FrontendConfig
from kikimimi.features.normstats import NormStats
from kikimimi.models.byola import AudioNTT2020, AudioNTT2022
from kikimimi.models.projectors import MLPAudioProjector, SemanticProjector
from kikimimi.models.vit import AudioViT, ViTConfig

__all__ = [
    "EncoderBundle",
    "assemble_bundle",
    "load_into",
    "TaggingHead",
    "build_audio_proj",
    "build_encoder",
    "build_head",
    "build_text_proj",
]


class TaggingHead(nn.Module):
    """EVAR fine-tuning head: ``BatchNorm1d(in_dim, affine=False)`` → ``Linear(in_dim, n_classes)``.

    ``forward(x [B, in_dim]) -> logits [B, n_classes]`` (input = time-mean of the frame features;
    apply a sigmoid for AudioSet-style multi-label probabilities).
    """

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim, affine=False)
        self.linear = nn.Linear(in_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


@dataclass
class EncoderBundle:
    """A loaded encoder with its front end, normalisation and optional extras.

    Attributes:
        family: ``"m2d"`` or ``"byola"``.
        encoder: :class:`~kikimimi.models.vit.AudioViT` or a BYOL-A ``AudioNTT2020``/``AudioNTT2022``.
        frontend: log-mel front-end configuration the encoder expects.
        norm_stats: scalar log-mel mean/std applied before the encoder.
        config: JSON-serialisable description (see module docstring).
        head: optional 527-way (or other) tagging head on time-mean features.
        audio_proj / text_proj: optional CLAP projectors; ``logit_scale`` the CLAP temperature (log).
        text_encoder_state: raw tensors of a bundled text encoder (M2D-CLAP 2025 ``TI``), or ``None``.
    """

    family: str
    encoder: nn.Module
    frontend: FrontendConfig
    norm_stats: NormStats
    config: dict[str, Any]
    head: nn.Module | None = None
    audio_proj: nn.Module | None = None
    text_proj: nn.Module | None = None
    text_encoder_state: dict[str, torch.Tensor] | None = None
    logit_scale: float | None = None

    def eval(self) -> EncoderBundle:
        """Put every module in eval mode; returns ``self``."""
        for module in (self.encoder, self.head, self.audio_proj, self.text_proj):
            if module is not None:
                module.eval()
        return self


def build_encoder(config: dict[str, Any]) -> nn.Module:
    """Instantiate the (randomly initialised) encoder described by ``config``."""
    family = config.get("family")
    if family == "m2d":
        vit = dict(config["vit"])
        vit["input_size"] = tuple(vit["input_size"])
        vit["patch_size"] = tuple(vit["patch_size"])
        return AudioViT(ViTConfig(**vit))
    if family == "byola":
        cfg = config["byola"]
        cls = AudioNTT2022 if int(cfg["version"]) == 2 else AudioNTT2020
        return cls(n_mels=int(cfg["n_mels"]), d=int(cfg["d"]))
    raise ValueError(f"unknown encoder family {family!r}; expected 'm2d' or 'byola'")


def build_head(cfg: dict[str, Any] | None) -> TaggingHead | None:
    """:class:`TaggingHead` from ``{"in_dim", "n_classes"}`` (``None`` → ``None``)."""
    if not cfg:
        return None
    return TaggingHead(int(cfg["in_dim"]), int(cfg["n_classes"]))


def build_audio_proj(cfg: dict[str, Any] | None) -> nn.Module | None:
    """2024 MLP or 2025 semantic projector from its config (``None`` → ``None``)."""
    if not cfg:
        return None
    if cfg["kind"] == "mlp":
        out_dim = cfg.get("out_dim")
        return MLPAudioProjector(dim=int(cfg["dim"]), out_dim=None if out_dim is None else int(out_dim))
    if cfg["kind"] == "semantic":
        return SemanticProjector(
            dim=int(cfg["dim"]), depth=int(cfg["depth"]), mlp_ratio=float(cfg["mlp_ratio"])
        )
    raise ValueError(f"unknown audio_proj kind {cfg['kind']!r}; expected 'mlp' or 'semantic'")


def build_text_proj(cfg: dict[str, Any] | None) -> nn.Module | None:
    """``Linear(in, out)`` or ``Linear → ReLU → Linear`` text projector (``None`` → ``None``)."""
    if not cfg:
        return None
    if cfg["kind"] == "linear":
        return nn.Linear(int(cfg["in_dim"]), int(cfg["out_dim"]), bias=bool(cfg.get("bias", True)))
    if cfg["kind"] == "mlp":
        return nn.Sequential(
            nn.Linear(int(cfg["in_dim"]), int(cfg["hidden"])),
            nn.ReLU(),
            nn.Linear(int(cfg["hidden"]), int(cfg["out_dim"])),
        )
    raise ValueError(f"unknown text_proj kind {cfg['kind']!r}; expected 'linear' or 'mlp'")


def load_into(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """Strict ``load_state_dict`` whose failures become a :class:`CheckpointError` listing the keys."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            path, f"{what} does not match the file; " + missing_unexpected_message(missing, unexpected)
        )
    wrong = [
        f"{k} {list(state[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        shown = "; ".join(wrong[:6])
        raise CheckpointError(
            path, f"{what}: tensor shapes differ from the model built for this file: {shown}"
        )
    module.load_state_dict(state, strict=True)


def assemble_bundle(
    config: dict[str, Any],
    frontend: FrontendConfig,
    stats: NormStats,
    parts: dict[str, dict[str, torch.Tensor]],
    path: str | Path,
    *,
    text_encoder_state: dict[str, torch.Tensor] | None = None,
) -> EncoderBundle:
    """Build every module described by ``config`` and load its tensors strictly (eval mode)."""
    try:
        encoder = build_encoder(config)
        head = build_head(config.get("head"))
        audio_proj = build_audio_proj(config.get("audio_proj"))
        text_proj = build_text_proj(config.get("text_proj"))
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(path, f"cannot build the model from its configuration ({exc})") from exc
    load_into(encoder, parts.get("encoder", {}), path, f"{config['family']} encoder")
    for label, module in (("head", head), ("audio_proj", audio_proj), ("text_proj", text_proj)):
        if module is not None:
            load_into(module, parts.get(label, {}), path, label)
    logit = parts.get("logit_scale", {}).get("")
    bundle = EncoderBundle(
        family=config["family"],
        encoder=encoder,
        frontend=frontend,
        norm_stats=stats,
        config=config,
        head=head,
        audio_proj=audio_proj,
        text_proj=text_proj,
        text_encoder_state=text_encoder_state,
        logit_scale=None if logit is None else float(logit),
    )
    return bundle.eval()
