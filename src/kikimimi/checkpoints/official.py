"""`load_encoder`: official NTT files or kikimimi folders → :class:`EncoderBundle`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kikimimi.checkpoints.bundle import EncoderBundle, assemble_bundle
from kikimimi.checkpoints.errors import CheckpointError
from kikimimi.checkpoints.hub import resolve_model_source
from kikimimi.checkpoints.infer import infer_byola_config, infer_extras, infer_vit_config
from kikimimi.checkpoints.layouts import SplitState, split_official
from kikimimi.checkpoints.names import OfficialName, try_parse_official_name
from kikimimi.checkpoints.ours import is_kikimimi_checkpoint, load_kikimimi
from kikimimi.checkpoints.safe_load import safe_torch_load
from kikimimi.features.frontend import frontend_for
from kikimimi.features.normstats import M2D_DEFAULT, NormStats

__all__ = ["BYOLA_FALLBACK_STATS", "as_norm_stats", "load_encoder"]

#: Used for BYOL-A files (which store no statistics) when the caller gives none: the SPCV2 statistics of
#: the BYOL-A v2 README, measured with the nnAudio/Slaney front end that kikimimi reproduces
#: (docs/reference.md §3). BYOL-A statistics are per dataset; compute yours with
#: :func:`kikimimi.features.normstats.compute_norm_stats` and pass ``norm_stats=(mean, std)``.
BYOLA_FALLBACK_STATS = NormStats(-9.660292, 4.7219563)


def as_norm_stats(value: NormStats | Sequence[float] | torch.Tensor | None) -> NormStats | None:
    """Accept ``NormStats``, ``(mean, std)`` or a 2-element tensor."""
    if value is None or isinstance(value, NormStats):
        return value
    return NormStats.from_list(value)


def _model_cls(name: OfficialName | None, args: Any) -> str | None:
    if name is not None:
        return name.model_cls
    model = getattr(args, "model", None)
    return model if isinstance(model, str) else None


def _norm_stats_from_run_args(args: Any) -> NormStats | None:
    """``args["norm_stats"]`` of a kikimimi training checkpoint (the corpus statistics of its run), else ``None``."""
    value = args.get("norm_stats") if isinstance(args, dict) else None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        try:
            return NormStats(float(value[0]), float(value[1]))
        except (TypeError, ValueError):
            return None
    return None


def _norm_stats_m2d(split: SplitState, given: NormStats | None, model_cls: str | None) -> NormStats:
    if given is not None:
        return given
    if model_cls is not None and model_cls.startswith("m2d_s_"):
        warnings.warn(
            f"{model_cls}: M2D-S checkpoints store norm_stats that are NOT the statistics they were trained "
            "with (LibriSpeech statistics were used in training); pass norm_stats=(mean, std) computed on "
            "your data (kikimimi.features.normstats.compute_norm_stats) for faithful features",
            stacklevel=3,
        )
    if split.norm_stats is not None:
        return NormStats.from_list(split.norm_stats)
    return M2D_DEFAULT


def _import_official(
    obj: Any,
    path: Path,
    *,
    size: str | None,
    input_size: tuple[int, int] | None,
    patch_size: tuple[int, int] | None,
    sample_rate: int | None,
    norm_stats: NormStats | None,
) -> EncoderBundle:
    split = split_official(obj, path)
    name = try_parse_official_name(path)
    if split.unknown:
        warnings.warn(
            f"'{path}': ignoring {len(split.unknown)} unrecognised tensors: {', '.join(split.unknown[:8])}",
            stacklevel=3,
        )
    if split.duplicates:
        warnings.warn(
            f"'{path}': several BYOL-A encoders in one file (e.g. online and target); the last one in "
            f"the file is used, as the official loader does ({', '.join(split.duplicates[:3])}…)",
            stacklevel=3,
        )
    model_cls = _model_cls(name, split.args)
    if split.family == "m2d":
        vit = infer_vit_config(
            split,
            name if name is not None and name.family == "m2d" else None,
            path,
            size=size,
            input_size=input_size,
            patch_size=patch_size,
            sample_rate=sample_rate,
        )
        config: dict[str, Any] = {"family": "m2d", "vit": vit}
        stats = _norm_stats_m2d(split, norm_stats, model_cls)
        try:
            frontend = frontend_for("m2d", vit["sample_rate"], vit["input_size"][0])
        except ValueError as exc:
            raise CheckpointError(path, str(exc)) from exc
    else:
        if size is not None or patch_size is not None or input_size is not None:
            raise CheckpointError(
                path,
                "size/input_size/patch_size overrides apply to M2D (ViT) checkpoints; "
                "this is a BYOL-A file — its sizes come from the tensor shapes",
            )
        config = {"family": "byola", "byola": infer_byola_config(split, name, path)}
        try:
            frontend = frontend_for("byola", sample_rate or 16000, config["byola"]["n_mels"])
        except ValueError as exc:
            raise CheckpointError(path, str(exc)) from exc
        run_stats = _norm_stats_from_run_args(split.args)
        if norm_stats is None and split.norm_stats is None and run_stats is not None:
            norm_stats = run_stats  # a kikimimi training checkpoint: the statistics its run normalised with
        if norm_stats is None and split.norm_stats is None:
            warnings.warn(
                f"'{path}': BYOL-A files carry no normalisation statistics and BYOL-A statistics are per "
                f"dataset; using the fallback {BYOLA_FALLBACK_STATS.to_list()}. Pass norm_stats=(mean, std) "
                "computed on your training data (kikimimi.features.normstats.compute_norm_stats)",
                stacklevel=3,
            )
        stats = norm_stats or (
            NormStats.from_list(split.norm_stats) if split.norm_stats is not None else BYOLA_FALLBACK_STATS
        )
    config.update(infer_extras(split, path))
    config["model_cls"] = model_cls
    config["name_extras"] = list(name.extras) if name is not None else []
    config["source"] = str(path)
    return assemble_bundle(
        config,
        frontend,
        stats,
        split_tensors(split),
        path,
        text_encoder_state=split.text_encoder_state or None,
    )


def split_tensors(split: SplitState) -> dict[str, dict[str, torch.Tensor]]:
    """Per-part tensor dicts (``encoder``, ``head``, ``audio_proj``, ``text_proj``, ``logit_scale``)."""
    parts = {
        "encoder": split.encoder,
        "head": split.head,
        "audio_proj": split.audio_proj,
        "text_proj": split.text_proj,
    }
    if split.logit_scale is not None:
        parts["logit_scale"] = {"": split.logit_scale}
    return parts


def load_encoder(
    path: str | Path,
    *,
    size: str | None = None,
    input_size: tuple[int, int] | None = None,
    patch_size: tuple[int, int] | None = None,
    sample_rate: int | None = None,
    norm_stats: NormStats | Sequence[float] | None = None,
    trust_pickle: bool = False,
    accept_licence: bool = False,
) -> EncoderBundle:
    """Load an encoder from an official NTT file or a kikimimi folder, or a registered model by name.

    Args:
        path: official ``.pth`` (full training file, ``*_enconly``, EVAR fine-tuned, M2D-CLAP 2024/2025,
            BYOL-A), a kikimimi folder (``config.json`` + ``model.safetensors``) or its ``.safetensors``; or a
            registered name (``"m2d-vit-base-mr7"``, see :mod:`kikimimi.checkpoints.registry`), downloaded,
            verified and cached by :func:`kikimimi.checkpoints.hub.resolve_model_source`. Existing paths win.
        size: ViT size name (``"base"``…) to check against the tensors (also fixes ``num_heads``).
        input_size: ``(n_mels, frames)`` training input; overrides the folder name.
        patch_size: ``(freq, time)`` patch; overrides the folder name.
        sample_rate: model rate in Hz (16000 / 32000 for M2D); overrides the folder name.
        norm_stats: ``(mean, std)`` replacing the stored/default statistics.
        trust_pickle: allow arbitrary pickled objects (only for trusted files).
        accept_licence: accept the licence of an official file on its first download by name.

    Returns:
        :class:`EncoderBundle` in eval mode on the CPU.

    Raises:
        CheckpointError: unreadable file, unknown layout (message lists missing and unexpected keys), or
            sizes from the name/overrides that contradict the tensors; for names also
            :class:`~kikimimi.checkpoints.hub.FetchError` (licence not accepted, offline, hash mismatch…).
    """
    path = resolve_model_source(path, accept_licence=accept_licence)
    overrides = dict(size=size, input_size=input_size, patch_size=patch_size, sample_rate=sample_rate,
                     norm_stats=as_norm_stats(norm_stats))
    if is_kikimimi_checkpoint(path):
        return load_kikimimi(path, **overrides)
    if path.is_dir() and (path / "captioner.json").is_file():
        raise CheckpointError(path, "is a captioner, not an audio encoder: load it with kikimimi.load_captioner "
                                    "(`kikimimi caption`, `kikimimi ask`)")
    if path.is_dir():
        raise CheckpointError(
            path,
            "is a directory without config.json; pass the weight file inside it "
            "(e.g. .../checkpoint-300.pth) or a kikimimi folder written by save_kikimimi",
        )
    return _import_official(safe_torch_load(path, trust_pickle=trust_pickle), path, **overrides)
