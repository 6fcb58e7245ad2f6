"""Recognise official checkpoint layouts and split them into encoder / extras / dropped tensors.

Layouts handled (docs/reference.md §5):

- M2D full training file: ``{"model", "optimizer", "epoch", "scaler", "args"}``;
- M2D encoder-only state dict (``*_enconly``), with or without ``norm_stats`` / CLAP projector keys;
- EVAR fine-tuned: ``module.ar.runtime.backbone.`` encoder, ``module.ar.runtime.to_spec.*`` front-end
  buffers (dropped), optional ``module.head.norm.*`` + ``module.head.mlp.mlp.0.*`` tagging head;
- M2D-CLAP 2025 / M2D2 stage-2 ``backbone.``-prefixed encoder + projector, with the text encoder kept aside
  (official ``text_encoder.text_encoder.*``, old kikimimi ``text_encoder.model.*``; both become the wrapper keys
  ``model.*`` of :mod:`kikimimi.checkpoints.text_state`);
- BYOL-A plain or prefixed state dicts, optionally wrapped in ``state_dict`` / ``model``.

The prefix in front of ``patch_embed.proj.weight`` (M2D) or ``features.0.weight`` (BYOL-A) is found from
the keys, so other wrappers (``module.``, ``model.``…) work too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kikimimi.checkpoints.errors import CheckpointError
from kikimimi.checkpoints.text_state import TEXT_ENCODER_PREFIX, wrapper_keys_from_file

__all__ = ["SplitState", "split_official", "unwrap_checkpoint", "missing_unexpected_message"]

Tensor = torch.Tensor

_ENCODER_PREFIXES = ("patch_embed.", "blocks.", "norm.")
_ENCODER_NAMES = ("cls_token", "pos_embed")
#: non-encoder parts of official training files (predictor, target network, M2D-X heads).
_DROPPED_PREFIXES = ("decoder_", "target_", "offline_predictor.")
_DROPPED_NAMES = ("mask_token",)
_HEAD_NORM = "module.head.norm."
_HEAD_LINEAR = "module.head.mlp.mlp.0."
_BYOLA_KEY_RE = re.compile(r"(?:^|\.)((?:features|fc)\..*)$")
_EXAMPLE_M2D = [
    "cls_token",
    "pos_embed",
    "patch_embed.proj.weight",
    "blocks.0.attn.qkv.weight",
    "norm.weight",
]
_EXAMPLE_BYOLA = ["features.0.weight", "features.1.running_mean", "fc.0.weight", "fc.3.weight"]


@dataclass
class SplitState:
    """An official checkpoint taken apart.

    Attributes:
        family: ``"m2d"`` or ``"byola"``.
        encoder: encoder tensors under the official names (prefixes stripped).
        norm_stats: ``[mean, std]`` tensor if the file has one.
        head: EVAR tagging head tensors renamed to ``norm.*`` / ``linear.*``.
        audio_proj / text_proj: CLAP projector tensors with their prefix stripped.
        logit_scale: CLAP temperature (log scale) if stored.
        text_encoder_state: 2025 text-encoder tensors under kikimimi's wrapper keys (``model.<HF keys>``, see
            :mod:`kikimimi.checkpoints.text_state`; other names with ``text_encoder.`` stripped).
        args: the training ``args`` object of full training files (``argparse.Namespace``) or ``None``.
        dropped: keys intentionally ignored (predictor, target network, front-end buffers…).
        unknown: keys that match no known layout part.
        duplicates: BYOL-A names found under several prefixes (e.g. online and target encoder).
        prefix: the wrapper prefix that was stripped (``""`` for plain state dicts).
    """

    family: str
    encoder: dict[str, Tensor]
    norm_stats: Tensor | None = None
    head: dict[str, Tensor] = field(default_factory=dict)
    audio_proj: dict[str, Tensor] = field(default_factory=dict)
    text_proj: dict[str, Tensor] = field(default_factory=dict)
    logit_scale: Tensor | None = None
    text_encoder_state: dict[str, Tensor] = field(default_factory=dict)
    args: Any = None
    dropped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    prefix: str = ""


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and any(isinstance(v, Tensor) for v in obj.values())


def unwrap_checkpoint(obj: Any, path: str | Path) -> tuple[dict[str, Tensor], Any]:
    """Return ``(state_dict, args)`` from a loaded checkpoint object.

    Accepts a plain state dict or a dict with ``model`` / ``state_dict`` holding it (``args`` kept).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"expected a state dict or a dict with 'model', got {type(obj).__name__}")
    args = obj.get("args")
    for key in ("model", "state_dict"):
        inner = obj.get(key)
        if _is_state_dict(inner):
            return {k: v for k, v in inner.items() if isinstance(v, Tensor)}, args
    if _is_state_dict(obj):
        return {k: v for k, v in obj.items() if isinstance(v, Tensor)}, None
    keys = ", ".join(map(str, list(obj)[:10]))
    raise CheckpointError(
        path, f"holds no tensors under 'model', 'state_dict' or at the top level (keys: {keys})"
    )


def missing_unexpected_message(missing: list[str], unexpected: list[str], limit: int = 12) -> str:
    """``missing keys: a, b, … (N); unexpected keys: …`` capped at ``limit`` names each."""

    def fmt(keys: list[str]) -> str:
        if not keys:
            return "none"
        shown = ", ".join(keys[:limit])
        return f"{shown}{', …' if len(keys) > limit else ''} ({len(keys)})"

    return f"missing keys: {fmt(missing)}; unexpected keys: {fmt(unexpected)}"


def _find_prefix(keys: list[str], suffix: str) -> str | None:
    hits = [k[: -len(suffix)] for k in keys if k == suffix or k.endswith("." + suffix)]
    if not hits:
        return None
    return min(hits, key=len)  # the shortest wrapper (e.g. '' over 'target_encoder.')


def _split_m2d(state: dict[str, Tensor], prefix: str) -> SplitState:
    out = SplitState("m2d", {}, prefix=prefix)
    # 2025 files: text_encoder.* beside backbone.*, under the same wrapper (e.g. module.ar.runtime.) if any
    wrapper = prefix[: -len("backbone.")] if prefix.endswith("backbone.") else ""
    text_prefix = wrapper + TEXT_ENCODER_PREFIX
    for key, value in state.items():
        if key.startswith(text_prefix):
            out.text_encoder_state[key[len(text_prefix) :]] = value
            continue
        if key.startswith(_HEAD_NORM):
            out.head["norm." + key[len(_HEAD_NORM) :]] = value
            continue
        if key.startswith(_HEAD_LINEAR):
            out.head["linear." + key[len(_HEAD_LINEAR) :]] = value
            continue
        if key in ("logit_scale", wrapper + "logit_scale") and prefix and out.logit_scale is None:
            out.logit_scale = value  # 2025 wrapper: the CLAP temperature sits beside backbone./text_encoder.
            continue
        if not key.startswith(prefix):
            out.dropped.append(key)  # front-end buffers and other wrapper parts
            continue
        name = key[len(prefix) :]
        if name in _ENCODER_NAMES or name.startswith(_ENCODER_PREFIXES):
            out.encoder[name] = value
        elif name == "norm_stats":
            out.norm_stats = value
        elif name.startswith("audio_proj."):
            out.audio_proj[name[len("audio_proj.") :]] = value
        elif name.startswith("text_proj."):
            out.text_proj[name[len("text_proj.") :]] = value
        elif name == "logit_scale":
            out.logit_scale = value
        elif name in _DROPPED_NAMES or name.startswith(_DROPPED_PREFIXES):
            out.dropped.append(key)
        else:
            out.unknown.append(key)
    return out


def _split_byola(state: dict[str, Tensor]) -> SplitState:
    out = SplitState("byola", {})
    for key, value in state.items():
        if key == "norm_stats":  # not in official BYOL-A files; written by to_official_state_dict
            out.norm_stats = value
            continue
        match = _BYOLA_KEY_RE.search(key)
        if match is None:
            out.dropped.append(key)
            continue
        name = match.group(1)
        if name in out.encoder:
            out.duplicates.append(name)
        out.encoder[name] = value  # official v1 loader: the last encoder in dict order wins
    return out


def split_official(obj: Any, path: str | Path) -> SplitState:
    """Detect the layout of a loaded official checkpoint and split it (see module docstring).

    Raises:
        CheckpointError: no M2D or BYOL-A encoder found; the message lists the expected and found keys.
    """
    state, args = unwrap_checkpoint(obj, path)
    keys = list(state)
    prefix = _find_prefix(keys, "patch_embed.proj.weight")
    if prefix is not None:
        if any(k.startswith("backbone.") for k in keys) and prefix.startswith("backbone."):
            prefix = "backbone."
        split = _split_m2d(state, prefix)
    elif _find_prefix(keys, "features.0.weight") is not None:
        split = _split_byola(state)
    else:
        raise CheckpointError(
            path,
            "unknown checkpoint layout: no M2D encoder (patch_embed.proj.weight) and no BYOL-A encoder "
            "(features.0.weight) found; "
            + missing_unexpected_message(_EXAMPLE_M2D + ["…"] + _EXAMPLE_BYOLA, sorted(keys)),
        )
    split.args = args
    split.text_encoder_state = wrapper_keys_from_file(split.text_encoder_state)
    return split
