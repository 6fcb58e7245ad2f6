"""Hugging Face-style ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for every kikimimi model.

A model folder is what kikimimi already writes, unchanged, so the Hub repository and the local folder are the same
thing:

- **encoder** or **CLAP model**: ``config.json`` + ``model.safetensors`` (:func:`kikimimi.checkpoints.ours.
  save_kikimimi`; a CLAP folder has ``audio_proj.*`` tensors and ``extras.audio_proj`` true);
- **captioner**: the folder of ``kikimimi train-captioner`` (``captioner.json``, ``model.safetensors``, ``lm/`` or
  ``lora.safetensors``, ``nn_bank.*``) plus ``audio_model/``, the kikimimi folder of the encoder it reads, which
  ``captioner.json`` then names as ``"audio_model"`` (relative). The language model is in the folder only when it
  was trained (``lm/``); LoRA adapters (``lora.safetensors``) and an untrained model name their base by
  ``lm.spec``, which must be available where the folder is loaded.

``from_pretrained(source)`` takes a folder, ``hf://owner/name[@revision]`` or a bare ``owner/name`` (a Hub
repository when no such local path exists); Hub sources go through
:func:`kikimimi.checkpoints.hf_hub.download_hf` (the standard Hub cache; offline when cached).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from kikimimi.checkpoints import resolve_model_source
from kikimimi.checkpoints.bundle import EncoderBundle
from kikimimi.checkpoints.errors import CheckpointError
from kikimimi.checkpoints.hf_hub import PushPlan, download_hf, is_hf_uri, parse_hf_uri, push_folder
from kikimimi.checkpoints.ours import CONFIG_NAME, save_kikimimi
from kikimimi.checkpoints.registry import find_entry
from kikimimi.fileio import atomic_write_json
from kikimimi.inference.captioner import CONFIG_NAME as CAPTIONER_CONFIG
from kikimimi.inference.captioner import Captioner, load_audio_model, load_captioner
from kikimimi.inference.clap import CLAPModel, load_clap
from kikimimi.inference.encoder import AudioEncoder, load

__all__ = ["AUDIO_MODEL_FOLDER", "MODEL_KINDS", "folder_kind", "from_pretrained", "push_to_hub", "save_pretrained"]

#: The captioner's encoder inside a saved captioner folder.
AUDIO_MODEL_FOLDER = "audio_model"
MODEL_KINDS = ("auto", "encoder", "clap", "captioner")
PretrainedModel = AudioEncoder | CLAPModel | Captioner


def folder_kind(folder: str | os.PathLike) -> str:
    """``"captioner"`` (``captioner.json``), ``"clap"`` (a kikimimi folder with an audio projector) or
    ``"encoder"``.

    Raises:
        CheckpointError: neither ``config.json`` nor ``captioner.json`` (or an unreadable ``config.json``).
    """
    folder = Path(folder)
    if (folder / CAPTIONER_CONFIG).is_file():
        return "captioner"
    try:
        meta = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(folder, f"not a kikimimi model folder (no {CONFIG_NAME} or {CAPTIONER_CONFIG})") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(folder / CONFIG_NAME, f"unreadable ({exc})") from exc
    return "clap" if (meta.get("extras") or {}).get("audio_proj") else "encoder"


def _bundle_of(model: Any) -> EncoderBundle | None:
    if isinstance(model, EncoderBundle):
        return model
    if isinstance(model, AudioEncoder):
        return model.bundle
    if isinstance(model, CLAPModel):
        return model.audio.bundle
    return None


def _save_captioner_folder(source: Path, out: Path) -> Path:
    """Copy a captioner folder into ``out`` with its encoder as ``out/audio_model`` (a kikimimi folder)."""
    config = json.loads((source / CAPTIONER_CONFIG).read_text(encoding="utf-8"))
    encoder_source = source / AUDIO_MODEL_FOLDER if (source / AUDIO_MODEL_FOLDER).is_dir() else Path(
        config["audio_model"])
    if not encoder_source.exists():
        raise CheckpointError(source, f"its audio model '{encoder_source}' is not there; a saved captioner folder "
                                      "carries its encoder")
    encoder = load_audio_model(encoder_source, device="cpu")
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.name.startswith(".") or path.name in (CAPTIONER_CONFIG, AUDIO_MODEL_FOLDER):
            continue
        if path.is_dir():
            shutil.copytree(path, out / path.name, dirs_exist_ok=True)
        elif path.is_file():
            shutil.copy2(path, out / path.name)
    save_kikimimi(encoder.bundle, out / AUDIO_MODEL_FOLDER)
    atomic_write_json(out / CAPTIONER_CONFIG, {**config, "audio_model": AUDIO_MODEL_FOLDER})
    return out


def save_pretrained(model: PretrainedModel | EncoderBundle | str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Write ``model`` as a kikimimi model folder (safetensors + JSON configuration); returns ``folder``.

    Args:
        model: an :class:`AudioEncoder`, a :class:`CLAPModel` (its encoder, projectors, text projection and bundled
            text-encoder tensors), an :class:`EncoderBundle`, or the path of a captioner folder (a loaded
            :class:`Captioner` does not keep everything its folder holds: save the folder).
        folder: the output folder (created; files written atomically).

    Raises:
        TypeError: another kind of object (or a loaded Captioner).
        CheckpointError: a captioner folder whose encoder is missing.
    """
    out = Path(folder)
    bundle = _bundle_of(model)
    if bundle is not None:
        return save_kikimimi(bundle, out)
    if isinstance(model, str | os.PathLike) and Path(model).is_dir() and folder_kind(model) == "captioner":
        if Path(model).resolve() == out.resolve():
            raise CheckpointError(out, "save_pretrained of a captioner folder needs another output folder")
        return _save_captioner_folder(Path(model), out)
    if isinstance(model, Captioner):
        raise TypeError("save_pretrained(captioner): pass the captioner folder (kikimimi train-captioner's output)")
    raise TypeError(f"save_pretrained expects an AudioEncoder, CLAPModel, EncoderBundle or captioner folder, got "
                    f"{type(model).__name__}")


def _local_folder(source: str | os.PathLike, *, accept_licence: bool = False) -> tuple[Path, str]:
    """``(local path, kind hint)`` for ``source``: an existing path; ``hf://`` (or a bare ``owner/name`` that is no
    local path) downloaded into the Hub cache; a registered name (``open-captioner-tiny``, ``m2d-clap-2025``)
    fetched by :func:`~kikimimi.checkpoints.resolve_model_source`, hinted by its entry (``"auto"`` otherwise)."""
    text = os.fspath(source)
    if is_hf_uri(text):
        return download_hf(parse_hf_uri(text)), "auto"
    if Path(source).exists():
        return Path(source), "auto"
    entry = find_entry(text)
    if entry is not None:
        hint = entry.head if entry.head in ("clap", "captioner") else "encoder"
        return resolve_model_source(text, accept_licence=accept_licence), hint
    if text.count("/") != 1:
        raise CheckpointError(text, "no such file or folder, nor a registered name (a Hub repository is "
                                    "hf://owner/name[@revision])")
    return download_hf(parse_hf_uri(text)), "auto"


def from_pretrained(source: str | os.PathLike, *, kind: str = "auto", device: str | torch.device | None = None,
                    **kwargs: Any) -> PretrainedModel:
    """Load a model folder, ``hf://owner/name[@revision]``, ``owner/name`` (a Hub repository) or a registered name
    (``kikimimi models list``; fetched into kikimimi's cache, or packaged).

    Args:
        kind: ``"auto"`` (from the folder: :func:`folder_kind`), ``"encoder"`` (any folder as an
            :class:`AudioEncoder`), ``"clap"`` or ``"captioner"``.
        device: as :func:`kikimimi.load`.
        **kwargs: passed to :func:`~kikimimi.inference.encoder.load`, :func:`~kikimimi.inference.clap.load_clap`
            (``text_encoder=``…) or :func:`~kikimimi.inference.captioner.load_captioner` (``audio_model=``).

    Raises:
        ValueError: an unknown ``kind``.
        CheckpointError: no such folder or repository, offline with nothing cached, not a kikimimi folder.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")
    folder, hint = _local_folder(source, accept_licence=bool(kwargs.get("accept_licence", False)))
    if kind == "auto":
        kind = folder_kind(folder) if folder.is_dir() else hint if hint != "auto" else "encoder"
    if kind == "captioner":
        kwargs.pop("accept_licence", None)  # load_captioner takes none: its encoder is in the folder or named there
        if "audio_model" not in kwargs and (folder / AUDIO_MODEL_FOLDER).is_dir():
            kwargs["audio_model"] = folder / AUDIO_MODEL_FOLDER
        return load_captioner(folder, device="cpu" if device is None else device, **kwargs)
    if kind == "clap":
        return load_clap(folder, device=device, **kwargs)
    return load(folder, device, **kwargs)


def push_to_hub(model: PretrainedModel | EncoderBundle | str | os.PathLike, repo_id: str, *,
                revision: str | None = None, commit_message: str | None = None, private: bool | None = None,
                token: str | None = None, dry_run: bool = False) -> PushPlan:
    """Upload ``model`` to the Hub repository ``repo_id`` (``owner/name``) as one commit.

    A kikimimi model folder (with its ``README.md`` card, if written: ``kikimimi card``) is pushed as it is; a
    model object or a captioner folder without its encoder is first written by :func:`save_pretrained` into a
    temporary folder. ``dry_run=True`` returns the plan (files, sizes, SHA-256) without contacting the Hub.
    """
    source = Path(model) if isinstance(model, str | os.PathLike) else None
    if source is not None and source.is_dir():
        kind = folder_kind(source)
        if kind != "captioner" or (source / AUDIO_MODEL_FOLDER).is_dir():
            return push_folder(source, repo_id, revision=revision, commit_message=commit_message, private=private,
                               token=token, dry_run=dry_run)
    with tempfile.TemporaryDirectory(prefix="kikimimi-push-") as tmp:
        folder = save_pretrained(model, Path(tmp) / "model")
        plan = push_folder(folder, repo_id, revision=revision, commit_message=commit_message, private=private,
                           token=token, dry_run=dry_run)
    return plan
