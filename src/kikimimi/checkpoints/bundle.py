"""`EncoderBundle`: an encoder plus everything needed to use it, and builders from a config dict.

The ``config`` dict is JSON-serialisable and is what ``config.json`` stores:

- ``family``: ``"m2d"`` or ``"byola"``;
- ``vit``: :class:`kikimimi.models.vit.ViTConfig` fields (M2D) — or ``byola``: ``{"version", "n_mels", "d"}``;
- ``head``: ``{"in_dim", "n_classes"[, "classes", "activation"]}`` or ``None`` (EVAR-style tagging head,
  :class:`kikimimi.models.heads.TaggingHead`);
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
from kikimimi.checkpoints.validate import check_against_shapes, check_config
from kikimimi.features.frontend import FrontendConfig
from kikimimi.features.normstats import NormStats
from kikimimi.models.byola import AudioNTT2020, AudioNTT2022
from kikimimi.models.heads import TaggingHead
from kikimimi.models.projectors import MLPAudioProjector, SemanticProjector
from kikimimi.models.vit import AudioViT, ViTConfig

__all__ = [
    "EncoderBundle",
    "assemble_bundle",
    "check_before_build",
    "load_into",
    "TaggingHead",
    "build_audio_proj",
    "build_encoder",
    "build_head",
    "build_text_proj",
]


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


def _compare_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], path: str | Path,
                    what: str) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            path, f"{what} does not match the file; " + missing_unexpected_message(missing, unexpected)
        )
    wrong = [f"{k} {list(found[k])} vs model {list(v)}" for k, v in expected.items() if tuple(found[k]) != tuple(v)]
    if wrong:
        shown = "; ".join(wrong[:6])
        raise CheckpointError(
            path, f"{what}: tensor shapes differ from the model built for this file: {shown}"
        )


def load_into(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """Strict ``load_state_dict`` whose failures become a :class:`CheckpointError` listing the keys."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    _compare_shapes(expected, {k: tuple(v.shape) for k, v in state.items()}, path, what)
    module.load_state_dict(state, strict=True)


def _build_modules(config: dict[str, Any], path: str | Path) -> dict[str, nn.Module | None]:
    try:
        return {
            "encoder": build_encoder(config),
            "head": build_head(config.get("head")),
            "audio_proj": build_audio_proj(config.get("audio_proj")),
            "text_proj": build_text_proj(config.get("text_proj")),
        }
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(path, f"cannot build the model from its configuration ({exc})") from exc


def check_before_build(config: dict[str, Any], shapes: dict[str, dict[str, tuple[int, ...]]], weights: str | Path,
                       source: str | Path | None = None) -> None:
    """Check ``config`` against the tensor shapes of its weight file without allocating the model.

    ``shapes``: part (``encoder``, ``head``, ``audio_proj``, ``text_proj``) → tensor name → shape, e.g. read
    from a safetensors header. Every size field is bounded first (:func:`~kikimimi.checkpoints.validate.
    check_config`), compared field by field (:func:`~kikimimi.checkpoints.validate.check_against_shapes`), then
    the whole state dict of a weightless ``meta``-device copy is compared with ``shapes``.

    Raises:
        CheckpointError: naming ``source`` (the ``config.json``, default ``weights``) and the field.
    """
    source = weights if source is None else source
    check_config(config, source)
    flat = {f"{part}.{name}": tuple(shape) for part, named in shapes.items() for name, shape in named.items()}
    check_against_shapes(config, flat, source, weights)
    with torch.device("meta"):
        modules = _build_modules(config, source)
    labels = {"encoder": f"{config['family']} encoder"}
    for part, module in modules.items():
        if module is not None:
            expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
            _compare_shapes(expected, shapes.get(part, {}), weights, labels.get(part, part))


def assemble_bundle(
    config: dict[str, Any],
    frontend: FrontendConfig,
    stats: NormStats,
    parts: dict[str, dict[str, torch.Tensor]],
    path: str | Path,
    *,
    text_encoder_state: dict[str, torch.Tensor] | None = None,
) -> EncoderBundle:
    """Build every module described by ``config`` and load its tensors strictly (eval mode).

    The configuration is checked against the tensors' shapes first (:func:`check_before_build`), so a damaged
    or crafted configuration is refused before any memory is allocated for the model.
    """
    shapes = {part: {k: tuple(v.shape) for k, v in named.items()} for part, named in parts.items()
              if part != "logit_scale"}
    check_before_build(config, shapes, path)
    modules = _build_modules(config, path)
    encoder, head, audio_proj, text_proj = (modules[k] for k in ("encoder", "head", "audio_proj", "text_proj"))
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
