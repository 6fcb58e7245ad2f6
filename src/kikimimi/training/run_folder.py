"""The folder of a new pre-training run: named in the official grammar, created once, shared by every rank.

Names (:mod:`kikimimi.checkpoints.names` formats them; the name parsers recover the sizes from them):

- M2D: ``m2d_vit_<size>-<F>x<T>p<f>x<t>[p32k]-<yymmdd>``; M2D-CLAP and M2D2 stage 1:
  ``m2d_clap_vit_<size>-<F>x<T>p<f>x<t>[p32k]-<yymmdd>``;
- M2D2 stage 2: ``m2d_clap_vit_<size>-<F>x<T>p<f>x<t>p16kp<code>pTI-<yymmdd>`` (``code`` = the text encoder's,
  :func:`~kikimimi.checkpoints.names.text_encoder_code`);
- BYOL-A: ``AudioNTT2020-BYOLA-<F>x<T>d<d>-<yymmdd>`` (v2: ``AudioNTT2022-…``), which is also, without the
  date, the stem of the exported encoder file (:func:`byola_encoder_stem`).

``-2``, ``-3``… is appended when the folder exists already.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from kikimimi.checkpoints.names import format_byola_name, format_m2d_name, text_encoder_code, vit_size_name
from kikimimi.features.frontend import get_preset
from kikimimi.methods.byola import DEFAULT_D
from kikimimi.methods.recipes import frontend_preset
from kikimimi.models.vit import ViTConfig
from kikimimi.training.distributed import DistInfo, broadcast_object

__all__ = ["byola_encoder_stem", "claim_run_dir", "run_folder_name", "stage2_folder_name"]


def _today() -> str:
    return _dt.date.today().strftime("%y%m%d")


def stage2_folder_name(vit: ViTConfig, text_encoder: str | None, date: str) -> str:
    """``m2d_clap_vit_<size>-<F>x<T>p<f>x<t>p<sr>kp<code>pTI-<date>``, the M2D2 (2025) release grammar."""
    extras = (text_encoder_code(text_encoder), "TI")
    cls = f"m2d_clap_vit_{vit_size_name(vit)}"
    return format_m2d_name(cls, vit.input_size, vit.patch_size, int(vit.sample_rate), extras, date)


def byola_encoder_stem(settings: Any) -> str:
    """``AudioNTT2020-BYOLA-<F>x<T>d<d>`` (v2 ``AudioNTT2022-…``) of a BYOL-A run's settings
    (a :class:`~kikimimi.training.settings.PretrainSettings`)."""
    version = 1 if settings.method == "byola" else 2
    n_mels = get_preset(frontend_preset(settings.method, settings.sample_rate)).n_mels
    d = int(settings.byola_dim or DEFAULT_D[version])
    return format_byola_name(version, (n_mels, int(settings.input_frames)), d)


def run_folder_name(settings: Any) -> str:
    """The official-style name of a new run's folder (see the module docstring), dated today."""
    method, date = settings.method, _today()
    if method == "m2d2_stage2":
        return stage2_folder_name(ViTConfig.from_dict(settings.vit_config), settings.text_encoder, date)
    if method in ("byola", "byola2"):
        return f"{byola_encoder_stem(settings)}-{date}"
    cls = f"m2d_clap_vit_{settings.size}" if method in ("m2d_clap", "m2d2_stage1") else f"m2d_vit_{settings.size}"
    n_mels = get_preset(frontend_preset(method, settings.sample_rate)).n_mels
    input_size = (n_mels, int(settings.input_frames))
    return format_m2d_name(cls, input_size, settings.patch_size, int(settings.sample_rate), (), date)


def _unique_dir(parent: Path, name: str) -> Path:
    candidate, n = parent / name, 2
    while candidate.exists():
        candidate, n = parent / f"{name}-{n}", n + 1
    return candidate


def claim_run_dir(settings: Any, dist: DistInfo) -> Path:
    """Create the folder of a new run on rank 0 (``<out>/<run_name or run_folder_name>[-<n>]``); every rank
    gets its path."""
    run_dir = None
    if dist.is_main:
        parent = Path(settings.out or "runs")
        run_dir = _unique_dir(parent, settings.run_name or run_folder_name(settings))
        run_dir.mkdir(parents=True)
    return Path(broadcast_object(str(run_dir) if run_dir else None))
