"""Model configurations checked before any module is built: bounded values, and agreement with the tensors.

A ``config.json`` is two kilobytes anyone can edit; ``"depth": 200000`` would otherwise build 200,000
transformer blocks (hundreds of GB) before the weights are compared. :func:`check_config` bounds every size
field to a sane range; :func:`check_against_shapes` compares the configuration with the tensor shapes the
weight file declares (its safetensors header, or the tensors of an official file): embedding width, number of
blocks, patch kernel, positional grid, MLP width, tagging head. Both raise a one-line
:class:`~kikimimi.checkpoints.CheckpointError` naming the file and the field. The full comparison against a
weightless (``meta`` device) copy of the model lives in :func:`kikimimi.checkpoints.bundle.check_before_build`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kikimimi.checkpoints.errors import CheckpointError

__all__ = ["LIMITS", "check_against_shapes", "check_config", "check_frontend", "count_blocks"]

#: field → (lowest, highest) accepted value. Generous: ViT-Huge is 1280-d, 32 blocks, 16 heads; the largest
#: released M2D input is 80 × 1001 frames; BYOL-A v2 is 3072-d; AudioSet has 527 classes.
LIMITS: dict[str, tuple[float, float]] = {
    "vit.embed_dim": (4, 8192),
    "vit.depth": (1, 128),
    "vit.num_heads": (1, 256),
    "vit.mlp_ratio": (0.0625, 16.0),
    "vit.input_size[0]": (1, 1024),
    "vit.input_size[1]": (1, 100_000),
    "vit.patch_size[0]": (1, 1024),
    "vit.patch_size[1]": (1, 4096),
    "vit.sample_rate": (1000, 384_000),
    "vit.patches": (1, 100_000),
    "byola.version": (1, 2),
    "byola.n_mels": (8, 1024),
    "byola.d": (1, 65_536),
    "head.in_dim": (1, 1 << 20),
    "head.n_classes": (1, 1 << 17),
    "audio_proj.dim": (1, 8192),
    "audio_proj.out_dim": (1, 65_536),
    "audio_proj.depth": (0, 64),
    "audio_proj.mlp_ratio": (0.0625, 16.0),
    "text_proj.in_dim": (1, 65_536),
    "text_proj.hidden": (1, 65_536),
    "text_proj.out_dim": (1, 65_536),
    "frontend.sample_rate": (1000, 384_000),
    "frontend.n_fft": (2, 65_536),
    "frontend.win_length": (1, 65_536),
    "frontend.hop_length": (1, 65_536),
    "frontend.n_mels": (1, 1024),
}


def _bad(source: str | Path, field: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(source, f"field {field} = {value!r} {why}; the file is damaged or was edited by hand "
                                   "(refused before building the model)")


def _number(source: str | Path, field: str, value: Any, *, integer: bool = True) -> float:
    lo, hi = LIMITS[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise _bad(source, field, value, f"is not {'an integer' if integer else 'a number'}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _bad(source, field, value, f"is out of range ({lo:g}..{hi:g})")
    return float(value)


def _pair(source: str | Path, block: Mapping[str, Any], key: str, prefix: str) -> tuple[int, int]:
    value = block.get(key)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _bad(source, f"{prefix}.{key}", value, "is not a pair [frequency, time]")
    return (int(_number(source, f"{prefix}.{key}[0]", value[0])), int(_number(source, f"{prefix}.{key}[1]", value[1])))


def _section(source: str | Path, config: Mapping[str, Any], key: str, required: bool) -> Mapping[str, Any] | None:
    value = config.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, Mapping):
        raise _bad(source, key, value, "is not an object")
    return value


def check_config(config: Any, source: str | Path) -> None:
    """Refuse a model ``config`` (the bundle configuration of ``config.json``) with a missing, mistyped or
    out-of-range size field (:data:`LIMITS`). Nothing is built or allocated.

    Raises:
        CheckpointError: ``'<source>': field vit.depth = 200000 is out of range (1..128); …``.
    """
    if not isinstance(config, Mapping):
        raise CheckpointError(source, f"the model configuration is a {type(config).__name__}, not an object")
    family = config.get("family")
    if family == "m2d":
        vit = _section(source, config, "vit", True)
        for key in ("embed_dim", "depth", "num_heads", "sample_rate"):
            _number(source, f"vit.{key}", vit.get(key))
        _number(source, "vit.mlp_ratio", vit.get("mlp_ratio", 4.0), integer=False)
        (f, t), (pf, pt) = _pair(source, vit, "input_size", "vit"), _pair(source, vit, "patch_size", "vit")
        if pf > f or pt > t or f % pf:
            raise _bad(source, "vit.patch_size", [pf, pt], f"does not tile the input {f}x{t}")
        _number(source, "vit.patches", (f // pf) * (t // pt))
        if int(vit["embed_dim"]) % int(vit["num_heads"]) or int(vit["embed_dim"]) % 4:
            raise _bad(source, "vit.embed_dim", vit["embed_dim"], f"is not a multiple of 4 and of num_heads "
                                                                  f"{vit['num_heads']}")
    elif family == "byola":
        byola = _section(source, config, "byola", True)
        for key in ("version", "n_mels", "d"):
            _number(source, f"byola.{key}", byola.get(key))
    else:
        raise _bad(source, "family", family, "is not 'm2d' or 'byola'")
    head = _section(source, config, "head", False)
    if head:
        for key in ("in_dim", "n_classes"):
            _number(source, f"head.{key}", head.get(key))
    proj = _section(source, config, "audio_proj", False)
    if proj:
        _number(source, "audio_proj.dim", proj.get("dim"))
        if proj.get("out_dim") is not None:
            _number(source, "audio_proj.out_dim", proj.get("out_dim"))
        if proj.get("kind") == "semantic":
            _number(source, "audio_proj.depth", proj.get("depth"))
            _number(source, "audio_proj.mlp_ratio", proj.get("mlp_ratio"), integer=False)
    text = _section(source, config, "text_proj", False)
    if text:
        for key in ("in_dim", "out_dim") + (("hidden",) if text.get("kind") == "mlp" else ()):
            _number(source, f"text_proj.{key}", text.get(key))


def check_frontend(frontend: Any, source: str | Path) -> None:
    """Refuse a ``frontend`` section whose sizes are missing or out of range (an ``n_fft`` of 10^9 would
    allocate its window and filterbank on the first call)."""
    if not isinstance(frontend, Mapping):
        raise _bad(source, "frontend", frontend, "is not an object")
    for key in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
        _number(source, f"frontend.{key}", frontend.get(key))


def count_blocks(names: list[str], prefix: str) -> tuple[int, int]:
    """(number of distinct ``<prefix>N.`` indices, 1 + the largest N) among ``names`` (0, 0 when none)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    ids = {int(m.group(1)) for name in names if (m := pattern.match(name))}
    return len(ids), (max(ids) + 1 if ids else 0)


def check_against_shapes(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], source: str | Path,
                         weights: str | Path) -> None:
    """Compare a (bounded) ``config`` with the tensor ``shapes`` of the weight file, field by field.

    ``shapes`` maps part-prefixed tensor names (``encoder.cls_token``, ``head.linear.weight``…) to shapes, as
    read from a safetensors header without loading any data.

    Raises:
        CheckpointError: ``'<source>': field vit.depth = 100 does not match <weights>: it holds 1 block …``.
    """
    weights_name = Path(weights).name

    def mismatch(field: str, value: Any, what: str) -> CheckpointError:
        return CheckpointError(source, f"field {field} = {value!r} does not match {weights_name}, which {what}; "
                                       "the configuration is damaged or was edited (refused before building the "
                                       "model)")

    if config.get("family") == "m2d":
        vit = config["vit"]
        cls = shapes.get("encoder.cls_token")
        if cls is not None and (len(cls) != 3 or cls[-1] != vit["embed_dim"]):
            raise mismatch("vit.embed_dim", vit["embed_dim"], f"has encoder.cls_token {list(cls)}")
        n, top = count_blocks(list(shapes), "encoder.blocks.")
        if n != vit["depth"] or top != vit["depth"]:
            raise mismatch("vit.depth", vit["depth"], f"holds {n} block(s) (encoder.blocks.N, largest N {top - 1})")
        kernel = shapes.get("encoder.patch_embed.proj.weight")
        if kernel is not None and list(kernel[-2:]) != [int(v) for v in vit["patch_size"]]:
            raise mismatch("vit.patch_size", list(vit["patch_size"]), f"has a {list(kernel[-2:])} patch kernel")
        pos = shapes.get("encoder.pos_embed")
        grid = (int(vit["input_size"][0]) // int(vit["patch_size"][0])) * (
            int(vit["input_size"][1]) // int(vit["patch_size"][1]))
        if pos is not None and (len(pos) != 3 or pos[1] != grid + 1):
            raise mismatch("vit.input_size", list(vit["input_size"]),
                           f"has encoder.pos_embed {list(pos)} ({pos[1] - 1 if len(pos) == 3 else '?'} patch "
                           f"positions, the config gives {grid})")
        fc1 = shapes.get("encoder.blocks.0.mlp.fc1.weight")
        if fc1 is not None and fc1[0] != int(vit["embed_dim"] * float(vit.get("mlp_ratio", 4.0))):
            raise mismatch("vit.mlp_ratio", vit.get("mlp_ratio", 4.0), f"has blocks.0.mlp.fc1.weight {list(fc1)}")
    elif config.get("family") == "byola":
        fc0 = shapes.get("encoder.fc.0.weight")
        d = int(config["byola"]["d"])
        if fc0 is not None and int(config["byola"]["version"]) == 1 and fc0[0] != d:
            raise mismatch("byola.d", d, f"has encoder.fc.0.weight {list(fc0)}")
    head = config.get("head")
    w = shapes.get("head.linear.weight")
    if head and w is not None and list(w) != [int(head["n_classes"]), int(head["in_dim"])]:
        raise mismatch("head", dict(head), f"has head.linear.weight {list(w)}")
    if config.get("audio_proj") and config["audio_proj"].get("kind") == "semantic":
        depth = int(config["audio_proj"]["depth"])
        n, top = count_blocks(list(shapes), "audio_proj.sem_blocks.")
        if n != depth or top != depth:
            raise mismatch("audio_proj.depth", depth, f"holds {n} semantic block(s)")
