"""kikimimi's own checkpoint format and export back to the official encoder-only layout.

A kikimimi checkpoint is a folder with

- ``model.safetensors``: every tensor, named ``encoder.*``, ``head.*``, ``audio_proj.*``, ``text_proj.*``,
  ``text_encoder.*`` and ``logit_scale`` (no pickle, so loading cannot run code);
- ``config.json``: ``format``/``format_version``, the bundle ``config`` (family, ViT or BYOL-A sizes,
  extras), the ``frontend`` config, ``norm_stats`` ``[mean, std]``, which ``extras`` exist, the source
  file, a licence note, and ``weights_sha256`` / ``weights_size`` of ``model.safetensors``.

Loading checks, in order and before any model memory is allocated: the JSON, the safetensors header against the
file size, every configuration value against its bounds and against the header's tensor shapes
(:func:`kikimimi.checkpoints.bundle.check_before_build`), then the weights' SHA-256 against ``weights_sha256``
(hashed once per process per file version; folders written before the checksum was recorded load unverified,
with a debug log line).
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from kikimimi.checkpoints.bundle import EncoderBundle, assemble_bundle, check_before_build
from kikimimi.checkpoints.digest import sha256_file_cached
from kikimimi.checkpoints.errors import CheckpointError
from kikimimi.checkpoints.names import format_byola_name, format_m2d_name
from kikimimi.checkpoints.text_state import file_keys_from_wrapper, wrapper_keys_from_file
from kikimimi.checkpoints.validate import check_frontend
from kikimimi.features.frontend import FrontendConfig
from kikimimi.features.normstats import NormStats
from kikimimi.fileio import atomic_write_bytes, atomic_write_json
from kikimimi.models.vit import VIT_SIZES, AudioViT

__all__ = [
    "CONFIG_NAME",
    "FORMAT_NAME",
    "LICENCE_NOTE",
    "WEIGHTS_NAME",
    "is_kikimimi_checkpoint",
    "load_kikimimi",
    "official_folder_name",
    "save_kikimimi",
    "to_official_state_dict",
]

FORMAT_NAME = "kikimimi"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LICENCE_NOTE = (
    "Weights converted from official NTT releases keep their original licence (the authors' terms, "
    "typically evaluation/research use only); converting the file format does not change it. The kikimimi "
    "code is Apache-2.0; that licence does not extend to third-party weights."
)
_PARTS = ("encoder", "head", "audio_proj", "text_proj")
_log = logging.getLogger(__name__)


def _config_path(path: Path) -> Path:
    return path / CONFIG_NAME if path.is_dir() else path.with_name(CONFIG_NAME)


def is_kikimimi_checkpoint(path: str | Path) -> bool:
    """True for a folder holding ``config.json`` or a ``.safetensors`` file with ``config.json`` beside it."""
    path = Path(path)
    if path.is_dir():
        return (path / CONFIG_NAME).is_file()
    return path.suffix == ".safetensors"


def _tensors(bundle: EncoderBundle) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for part in _PARTS:
        module = getattr(bundle, part)
        if module is not None:
            for key, value in module.state_dict().items():
                out[f"{part}.{key}"] = value
    for key, value in (bundle.text_encoder_state or {}).items():
        out[f"text_encoder.{key}"] = value
    if bundle.logit_scale is not None:
        out["logit_scale"] = torch.tensor(float(bundle.logit_scale), dtype=torch.float32)
    # safetensors needs contiguous, non-aliased CPU tensors
    return {k: v.detach().cpu().contiguous().clone() for k, v in out.items()}


def save_kikimimi(bundle: EncoderBundle, out_dir: str | Path, *, licence_note: str = LICENCE_NOTE) -> Path:
    """Write ``bundle`` as ``out_dir/model.safetensors`` + ``out_dir/config.json``; returns ``out_dir``.

    Both files are written atomically (temporary file + rename). ``licence_note``: the ``config.json`` field
    (default: the note for converted official weights; kikimimi's own released models state their licence).
    """
    if not isinstance(bundle, EncoderBundle):
        raise TypeError(f"save_kikimimi expects an EncoderBundle, got {type(bundle).__name__}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(out_dir, "exists and is not a folder; kikimimi checkpoints are folders")
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = _tensors(bundle)
    data = st_save(tensors, metadata={"format": "pt"})
    atomic_write_bytes(out_dir / WEIGHTS_NAME, data)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "family": bundle.family,
        "config": bundle.config,
        "frontend": bundle.frontend.to_dict(),
        "norm_stats": bundle.norm_stats.to_list(),
        "extras": {
            "head": bundle.head is not None,
            "audio_proj": bundle.audio_proj is not None,
            "text_proj": bundle.text_proj is not None,
            "text_encoder": bool(bundle.text_encoder_state),
            "logit_scale": bundle.logit_scale is not None,
        },
        "source": bundle.config.get("source"),
        "licence_note": licence_note,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "weights_size": len(data),
    }
    atomic_write_json(out_dir / CONFIG_NAME, meta)
    return out_dir


def _check_override(path: Path, label: str, given: Any, stored: Any) -> None:
    if given is not None and list(given) != list(stored):
        raise CheckpointError(
            path,
            f"{label} override {tuple(given)} differs from the stored {tuple(stored)}; "
            "a kikimimi checkpoint's sizes are fixed by its tensors",
        )


def load_kikimimi(
    path: str | Path,
    *,
    size: str | None = None,
    input_size: tuple[int, int] | None = None,
    patch_size: tuple[int, int] | None = None,
    sample_rate: int | None = None,
    norm_stats: NormStats | None = None,
) -> EncoderBundle:
    """Load a folder written by :func:`save_kikimimi` (or its ``model.safetensors``)."""
    path = Path(path)
    config_path = _config_path(path)
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    if not config_path.is_file():
        raise CheckpointError(
            config_path, f"missing: {weights.name} needs the {CONFIG_NAME} written beside it"
        )
    if not weights.is_file():
        raise CheckpointError(weights, "file not found (a kikimimi folder holds model.safetensors)")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(config_path, f"unreadable JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(config_path, 'not a kikimimi config (expected "format": "kikimimi")')
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(config_path, f"field format_version = {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            config_path,
            f"format_version {meta['format_version']} is newer than this "
            f"kikimimi supports ({FORMAT_VERSION}); upgrade kikimimi",
        )
    header = check_safetensors_sizes(weights)
    config = meta.get("config")
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in header.items():
        head, _, rest = key.partition(".")
        shapes.setdefault(head, {})[rest] = shape
    check_frontend(meta.get("frontend"), config_path)
    check_before_build(config, shapes, weights, config_path)
    verify_weights_checksum(weights, meta, config_path)
    try:
        tensors = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(weights, f"unreadable safetensors file ({exc})") from exc
    if config.get("family") == "m2d":
        vit = config["vit"]
        _check_override(path, "input_size", input_size, vit["input_size"])
        _check_override(path, "patch_size", patch_size, vit["patch_size"])
        if sample_rate is not None and int(sample_rate) != int(vit["sample_rate"]):
            raise CheckpointError(
                path, f"sample_rate {sample_rate} differs from the stored {vit['sample_rate']}"
            )
        if size is not None:
            if tuple(VIT_SIZES.get(size, ())) != (vit["embed_dim"], vit["depth"], vit["num_heads"]):
                raise CheckpointError(
                    path,
                    f"size={size!r} does not match the stored ViT "
                    f"({vit['embed_dim']}-d, depth {vit['depth']}, {vit['num_heads']} heads)",
                )
    elif any(v is not None for v in (size, input_size, patch_size)):
        raise CheckpointError(path, "size/input_size/patch_size overrides apply to M2D checkpoints only")
    parts: dict[str, dict[str, torch.Tensor]] = {p: {} for p in _PARTS}
    text_encoder: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in tensors.items():
        head, _, rest = key.partition(".")
        if head in parts:
            parts[head][rest] = value
        elif head == "text_encoder":
            text_encoder[rest] = value
        elif key == "logit_scale":
            parts["logit_scale"] = {"": value}
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(weights, f"unexpected tensors {unknown[:8]} (not written by save_kikimimi)")
    try:
        stats = norm_stats or NormStats.from_list(meta["norm_stats"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(config_path, f"field norm_stats is missing or not [mean, std] ({exc})") from None
    try:
        frontend = FrontendConfig.from_dict(meta["frontend"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(config_path, f"field frontend is invalid ({exc})") from None
    text_encoder = wrapper_keys_from_file(text_encoder)  # folders written from an official file before 2026-12
    return assemble_bundle(config, frontend, stats, parts, weights, text_encoder_state=text_encoder or None)


def verify_weights_checksum(weights: Path, meta: dict[str, Any], config_path: Path) -> None:
    """Compare ``weights`` with the ``weights_size`` / ``weights_sha256`` recorded in ``config.json``.

    The SHA-256 is computed once per process per (path, size, modification time). Folders written before the
    checksum was recorded are accepted with a debug log line.

    Raises:
        CheckpointError: ``'<weights>': checksum mismatch …`` (a flipped byte, a cut or replaced file).
    """
    want = meta.get("weights_sha256")
    if want is None:
        _log.debug("%s: no weights_sha256 in %s (written by an older kikimimi); checksum not verified",
                   weights, config_path.name)
        return
    hint = ("the file is damaged: download it again (`kikimimi models remove NAME`, then fetch) or convert / save "
            "the model again")
    size = weights.stat().st_size
    if meta.get("weights_size") is not None and size != meta["weights_size"]:
        raise CheckpointError(weights, f"checksum mismatch: {size} bytes, {config_path.name} records "
                                       f"{meta['weights_size']}; {hint}")
    seen = sha256_file_cached(weights)
    if seen != want:
        raise CheckpointError(weights, f"checksum mismatch: SHA-256 {seen}, {config_path.name} records {want}; "
                                       f"{hint}")


#: bytes per element of the safetensors dtypes
_ST_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
#: the safetensors format's own limit on the JSON header (100 MB)
_ST_MAX_HEADER = 100_000_000


def check_safetensors_sizes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Refuse a ``.safetensors`` file whose header claims more data than the file holds, before loading it;
    returns the shape of every tensor (name → shape) as the header declares it.

    Reads only the 8-byte length and the JSON header: each tensor's ``shape`` × element size must equal its
    ``data_offsets`` span and lie inside the file. A damaged or crafted header (e.g. a [10^6, 10^6] tensor in a
    1-KB file) is refused with a :class:`CheckpointError` naming the tensor, without allocating its memory.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if n < 0 or n > min(_ST_MAX_HEADER, size - 8):
                raise CheckpointError(path, f"not a safetensors file: the header claims {max(n, 0)} bytes but the "
                                            f"file holds {size} bytes")
            header = json.loads(fh.read(n))
    except OSError as exc:
        raise CheckpointError(path, f"cannot read ({exc.strerror or exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(path, f"not a safetensors file: unreadable header ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(path, "not a safetensors file: the header is not a JSON object")
    data_bytes = size - 8 - n
    shapes: dict[str, tuple[int, ...]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(v) for v in info["data_offsets"])
            itemsize = _ST_ITEMSIZE[str(info["dtype"])]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(path, f"tensor '{name}': malformed header entry {info!r}") from exc
        claimed = itemsize
        for d in shape:
            claimed *= d
        if min(shape, default=1) < 0 or claimed != end - begin or not 0 <= begin <= end <= data_bytes:
            raise CheckpointError(path, f"tensor '{name}' claims shape {shape} ({claimed:,} bytes at offsets "
                                        f"{begin}..{end}) but the file holds {data_bytes:,} bytes of tensor data; "
                                        "the file is corrupt or crafted and was refused without loading it")
        shapes[name] = tuple(shape)
    return shapes


def to_official_state_dict(
    bundle: EncoderBundle, *, include_head: bool = True
) -> OrderedDict[str, torch.Tensor]:
    """Encoder-only state dict in the official layout, with ``norm_stats`` [2].

    M2D: portable-ViT keys + ``audio_proj.*``/``text_proj.*``/``logit_scale`` when present (the
    ``*_enconly`` layout); with a bundled text encoder, every key is prefixed ``backbone.`` and the text
    encoder is stored under ``text_encoder.text_encoder.`` (the M2D-CLAP 2025 layout, :mod:`~kikimimi.checkpoints.
    text_state`). BYOL-A: ``features.*``/``fc.*``
    plus ``norm_stats`` (ignored by the official BYOL-A loaders). A tagging head is written with the EVAR
    names ``module.head.norm.*`` / ``module.head.mlp.mlp.0.*`` (dropped by official encoder loaders).
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    out["norm_stats"] = bundle.norm_stats.to_tensor()
    for key, value in bundle.encoder.state_dict().items():
        out[key] = value.detach().clone()
    for part in ("audio_proj", "text_proj"):
        module = getattr(bundle, part)
        if module is not None:
            for key, value in module.state_dict().items():
                out[f"{part}.{key}"] = value.detach().clone()
    if bundle.logit_scale is not None:
        out["logit_scale"] = torch.tensor(float(bundle.logit_scale))
    if bundle.text_encoder_state:
        out = OrderedDict((f"backbone.{k}", v) for k, v in out.items())
        for key, value in file_keys_from_wrapper(bundle.text_encoder_state).items():
            out[key] = value.detach().clone()
    if include_head and bundle.head is not None:
        for key, value in bundle.head.state_dict().items():
            part, _, rest = key.partition(".")
            name = "module.head.norm." + rest if part == "norm" else "module.head.mlp.mlp.0." + rest
            out[name] = value.detach().clone()
    return out


def official_folder_name(bundle: EncoderBundle, suffix: str = "kikimimi") -> str:
    """A folder name in the official grammar, so name-parsing loaders find the sizes.

    e.g. ``m2d_vit_base-80x608p16x16-kikimimi``, ``m2d_clap_vit_base-80x1001p16x16p16kpBpTI-kikimimi``,
    ``AudioNTT2020-BYOLA-64x96d512`` (BYOL-A names carry no suffix).
    """
    config = bundle.config
    if not isinstance(bundle.encoder, AudioViT):
        cfg = config["byola"]
        version = int(cfg["version"])
        d = int(cfg["d"]) if version == 1 else int(bundle.encoder.state_dict()["fc.0.weight"].shape[0])
        return format_byola_name(version, (cfg["n_mels"], 96), d)
    vit = config["vit"]
    return format_m2d_name(
        config.get("model_cls") or "m2d_vit_base",
        vit["input_size"],
        vit["patch_size"],
        int(vit["sample_rate"]),
        tuple(config.get("name_extras") or ()),
        suffix,
    )
