"""Work out model sizes from tensor shapes, the official name and explicit overrides.

Priority: explicit override > official name > tensor shapes. Whatever is chosen must agree with the
tensors in the file; a disagreement is a :class:`CheckpointError` that says where each value came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kikimimi.checkpoints.errors import CheckpointError
from kikimimi.checkpoints.layouts import SplitState, missing_unexpected_message
from kikimimi.checkpoints.names import OfficialName
from kikimimi.models.vit import VIT_SIZES

__all__ = ["infer_byola_config", "infer_extras", "infer_vit_config", "DEFAULT_M2D_N_MELS"]

Tensor = torch.Tensor
#: Mel bins of every released M2D model (docs/reference.md §2), used when no name gives the input height.
DEFAULT_M2D_N_MELS = 80
_REQUIRED_VIT = ("cls_token", "pos_embed", "patch_embed.proj.weight")


def _max_index(keys: list[str], prefix: str) -> int:
    """1 + the largest ``N`` in keys ``<prefix>N.…`` (0 when there is none)."""
    ids = [int(n) for k in keys if k.startswith(prefix) and (n := k[len(prefix) :].split(".")[0]).isdigit()]
    return max(ids) + 1 if ids else 0


def _fmt(pair: tuple[int, int] | list[int]) -> str:
    return f"{pair[0]}x{pair[1]}"


def _num_heads(embed_dim: int) -> int:
    for dim, _depth, heads in VIT_SIZES.values():
        if dim == embed_dim:
            return heads
    return max(1, embed_dim // 64)


def infer_vit_config(
    split: SplitState,
    name: OfficialName | None,
    path: str | Path,
    *,
    size: str | None = None,
    input_size: tuple[int, int] | None = None,
    patch_size: tuple[int, int] | None = None,
    sample_rate: int | None = None,
) -> dict[str, Any]:
    """``ViTConfig`` fields for the M2D encoder in ``split`` (see module docstring for the priority).

    Shapes used: embed dim from ``cls_token`` [1, 1, D]; depth from the largest ``blocks.N``; patch from
    ``patch_embed.proj.weight`` [D, 1, f, t]; MLP ratio from ``blocks.0.mlp.fc1.weight``; grid from
    ``pos_embed`` [1, 1 + Fg·Tg, D] and the input height (name/override, else 80 mel bins).
    """
    enc = split.encoder
    missing = [k for k in _REQUIRED_VIT if k not in enc]
    if missing:
        raise CheckpointError(
            path, "incomplete M2D encoder; " + missing_unexpected_message(missing, split.unknown)
        )
    embed_dim = int(enc["cls_token"].shape[-1])
    depth = _max_index(list(enc), "blocks.")
    shape_patch = tuple(int(v) for v in enc["patch_embed.proj.weight"].shape[-2:])
    fc1 = enc.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = float(fc1.shape[0]) / embed_dim if fc1 is not None else 4.0
    n_tokens = int(enc["pos_embed"].shape[1]) - 1
    name_src = f"the name '{name.name}'" if name is not None else ""

    if size is not None:
        if size not in VIT_SIZES:
            raise CheckpointError(path, f"unknown size {size!r}; choose one of {sorted(VIT_SIZES)}")
        want_dim, want_depth, num_heads = VIT_SIZES[size]
        if (want_dim, want_depth) != (embed_dim, depth):
            raise CheckpointError(
                path,
                f"size={size!r} means embed_dim {want_dim} and depth {want_depth}, but the file's "
                f"tensors have embed_dim {embed_dim} (cls_token) and depth {depth} (blocks.N); "
                "drop the size override",
            )
    else:
        num_heads = _num_heads(embed_dim)

    if patch_size is not None:
        chosen_patch, patch_src = tuple(int(v) for v in patch_size), "patch_size override"
    elif name is not None and name.patch_size is not None:
        chosen_patch, patch_src = name.patch_size, name_src
    else:
        chosen_patch, patch_src = shape_patch, "tensor shapes"
    if chosen_patch != shape_patch:
        raise CheckpointError(
            path,
            f"{patch_src} says patch {_fmt(chosen_patch)} but patch_embed.proj.weight has a "
            f"{_fmt(shape_patch)} kernel {list(enc['patch_embed.proj.weight'].shape)}",
        )
    ph, pw = shape_patch

    if input_size is not None:
        chosen_input, input_src = (int(input_size[0]), int(input_size[1])), "input_size override"
    elif name is not None and name.input_size is not None:
        chosen_input, input_src = name.input_size, name_src
    else:
        chosen_input, input_src = None, "tensor shapes"
    if chosen_input is not None:
        grid = (chosen_input[0] // ph, chosen_input[1] // pw)
        if grid[0] * grid[1] != n_tokens:
            raise CheckpointError(
                path,
                f"{input_src} says input {_fmt(chosen_input)} with patch {_fmt(shape_patch)} (grid "
                f"{_fmt(grid)} = {grid[0] * grid[1]} patches) but pos_embed has {n_tokens} patch positions; "
                "pass input_size=(n_mels, frames) matching the file",
            )
    else:
        f_grid = DEFAULT_M2D_N_MELS // ph
        if f_grid == 0 or n_tokens % f_grid:
            raise CheckpointError(
                path,
                f"cannot infer the input size: pos_embed has {n_tokens} patch positions, which is not a "
                f"multiple of the {f_grid} frequency patches of an {DEFAULT_M2D_N_MELS}-bin input; "
                "pass input_size=(n_mels, frames)",
            )
        chosen_input = (DEFAULT_M2D_N_MELS, (n_tokens // f_grid) * pw)

    if sample_rate is not None:
        rate = int(sample_rate)
    elif name is not None:
        rate = int(name.sample_rate)
    else:
        rate = 16000
    return {
        "input_size": list(chosen_input),
        "patch_size": list(shape_patch),
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads,
        "mlp_ratio": mlp_ratio,
        "sample_rate": rate,
    }


def infer_byola_config(split: SplitState, name: OfficialName | None, path: str | Path) -> dict[str, Any]:
    """``{"version", "n_mels", "d"}`` for a BYOL-A encoder from its ``features``/``fc`` shapes.

    v1 (3 conv blocks, ``features.8``): d = rows of ``fc.0.weight`` [d, 64·n_mels/8].
    v2 (2 conv blocks): conv_d = columns of ``fc.0.weight`` [mlp_d, conv_d], n_mels = conv_d/16,
    d = conv_d + rows of ``fc.3.weight``. The name (``d512`` / ``AudioNTT2022``) must agree.
    """
    enc = split.encoder
    required = ["features.0.weight", "fc.0.weight", "fc.3.weight"]
    missing = [k for k in required if k not in enc]
    if missing:
        raise CheckpointError(path, "incomplete BYOL-A encoder; " + missing_unexpected_message(missing, []))
    fc0 = enc["fc.0.weight"]
    version = 1 if "features.8.weight" in enc else 2
    if version == 1:
        d = int(fc0.shape[0])
        n_mels = int(fc0.shape[1]) // 64 * 8
    else:
        conv_d = int(fc0.shape[1])
        n_mels = conv_d // 64 * 4
        d = conv_d + int(enc["fc.3.weight"].shape[0])
    if name is not None and name.family == "byola":
        if name.byola_version != version:
            raise CheckpointError(
                path,
                f"the name '{name.name}' says BYOL-A v{name.byola_version} ({name.model_cls}) but the "
                f"tensors have {'3' if version == 1 else '2'} conv blocks (v{version})",
            )
        if version == 1 and name.feature_d != d:
            raise CheckpointError(
                path,
                f"the name '{name.name}' says d={name.feature_d} but fc.0.weight is "
                f"{list(fc0.shape)} (d={d})",
            )
        if name.input_size is not None and name.input_size[0] != n_mels:
            raise CheckpointError(
                path,
                f"the name '{name.name}' says {name.input_size[0]} mel bins but the "
                f"fc.0 input size implies {n_mels}",
            )
    return {"version": version, "n_mels": n_mels, "d": d}


def infer_extras(split: SplitState, path: str | Path) -> dict[str, Any]:
    """Configs for the optional ``head``, ``audio_proj`` and ``text_proj`` present in ``split``."""
    out: dict[str, Any] = {"head": None, "audio_proj": None, "text_proj": None}
    if split.head:
        if "linear.weight" not in split.head or "norm.running_mean" not in split.head:
            raise CheckpointError(
                path,
                "incomplete EVAR head: expected module.head.norm.running_mean and "
                f"module.head.mlp.mlp.0.weight, found {sorted(split.head)}",
            )
        w = split.head["linear.weight"]
        out["head"] = {"in_dim": int(w.shape[1]), "n_classes": int(w.shape[0])}
    ap = split.audio_proj
    if ap:
        if "sem_token" in ap:
            dim = int(ap["sem_token"].shape[-1])
            fc1 = ap.get("sem_blocks.0.mlp.fc1.weight")
            ratio = float(fc1.shape[0]) / dim if fc1 is not None else 1.0
            out["audio_proj"] = {
                "kind": "semantic",
                "dim": dim,
                "depth": _max_index(list(ap), "sem_blocks."),
                "mlp_ratio": ratio,
            }
        elif "0.weight" in ap:
            out["audio_proj"] = {"kind": "mlp", "dim": int(ap["0.weight"].shape[1])}
            if "2.weight" in ap and int(ap["2.weight"].shape[0]) != out["audio_proj"]["dim"]:
                out["audio_proj"]["out_dim"] = int(ap["2.weight"].shape[0])
        else:
            raise CheckpointError(path, f"unknown audio_proj layout: {sorted(ap)[:8]}")
    tp = split.text_proj
    if tp:
        if "weight" in tp:
            w = tp["weight"]
            out["text_proj"] = {
                "kind": "linear",
                "in_dim": int(w.shape[1]),
                "out_dim": int(w.shape[0]),
                "bias": "bias" in tp,
            }
        elif "2.weight" in tp and "0.weight" in tp:
            out["text_proj"] = {
                "kind": "mlp",
                "in_dim": int(tp["0.weight"].shape[1]),
                "hidden": int(tp["0.weight"].shape[0]),
                "out_dim": int(tp["2.weight"].shape[0]),
            }
        else:
            raise CheckpointError(path, f"unknown text_proj layout: {sorted(tp)[:8]}")
    return out
