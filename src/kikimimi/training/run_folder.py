"""The folder of a new pre-training run: named in the official grammar, created once, shared by every rank.

Names (:mod:`kikimimi.checkpoints.names` formats them; the name parsers recover the sizes from them):

- M2D: ``m2d_vit_<size>-<F>x<T>p<f>x<t>[p32k]-<yymmdd>[-<tags>]``; M2D-CLAP (2024):
  ``m2d_clap_vit_<size>-<F>x<T>p<f>x<t>[p32k]-<yymmdd>[-<tags>]``;
- M2D2 stage 1 (``clap.train_clap``'s grammar): ``m2d_clap_vit_<size>-<F>x<T>p<f>x<t>p<sr>kp<code>-<yymmdd>-<tags>
  -e<epochs>`` (``-e…`` for runs measured in epochs);
- M2D2 stage 2 / 2.1: ``m2d_clap_vit_<size>-<F>x<T>p<f>x<t>p16kp<code>pTI-<tags>-<yymmdd>`` (``code`` = the text
  encoder's, :func:`~kikimimi.checkpoints.names.text_encoder_code`);

Tags (:func:`official_run_tags`, written by :func:`~kikimimi.checkpoints.names.format_run_tags`) name the flags
that differ from the official scripts' defaults, with the official codes (fact-sheet-m2d2-2026.md §2, §4, §5):
masking ``Wm`` (dwm) ``Vm`` (var) ``Bm`` (ibm) ``Om`` (sgim), ``k<hint k>`` (≠ 2), ``i<hint start epoch>`` (≠ 50),
``a<constant hint ratio>``; stage 1 also ``M<data>`` ``C<captions>`` (path initials) and ``s<seed>`` (≠ 0);
stage 2 ``M<data>``, ``mr<mask ratio>`` (≠ 0.3), ``s<seed>`` (≠ 0), ``blr<base lr>`` (≠ 3e-6),
``Dur<frames>`` (≠ 1001), ``R`` (random training mask), ``trnA`` (``--unfreeze-audio``), ``S<sem mode>`` (≠ 1),
``FT`` (stage 2.1: continued from a stage-2 file). kikimimi has no default data list, so ``M`` is always there.
- BYOL-A: ``AudioNTT2020-BYOLA-<F>x<T>d<d>-<yymmdd>`` (v2: ``AudioNTT2022-…``), which is also, without the
  date, the stem of the exported encoder file (:func:`byola_encoder_stem`).

``-2``, ``-3``… is appended when the folder exists already.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from kikimimi.checkpoints.names import (
    MASK_STRATEGY_TAGS,
    format_byola_name,
    format_m2d_name,
    format_run_tags,
    text_encoder_code,
    try_parse_official_name,
    vit_size_name,
)
from kikimimi.data.official_lists import caption_source_kind
from kikimimi.features.frontend import get_preset
from kikimimi.methods.byola import DEFAULT_D
from kikimimi.methods.m2d import HINT_DEFAULTS
from kikimimi.methods.recipes import frontend_preset
from kikimimi.models.vit import ViTConfig
from kikimimi.training.distributed import DistInfo, broadcast_object

__all__ = ["byola_encoder_stem", "claim_run_dir", "official_run_tags", "run_folder_name", "stage2_folder_name"]


def _today() -> str:
    return _dt.date.today().strftime("%y%m%d")


def stage2_folder_name(vit: ViTConfig, text_encoder: str | None, date: str, tags: str = "") -> str:
    """``m2d_clap_vit_<size>-<F>x<T>p<f>x<t>p<sr>kp<code>pTI[-<tags>]-<date>``, the M2D2 (2025) release grammar."""
    extras = (text_encoder_code(text_encoder), "TI")
    cls = f"m2d_clap_vit_{vit_size_name(vit)}"
    suffix = f"{tags}-{date}" if tags else date
    return format_m2d_name(cls, vit.input_size, vit.patch_size, int(vit.sample_rate), extras, suffix)


def _masking_tags(settings: Any) -> list[tuple[str, object]]:
    tags: list[tuple[str, object]] = []
    code = MASK_STRATEGY_TAGS.get(str(settings.mask_strategy or "random"))
    if code:
        tags.append((code, True))
    if settings.hint_k is not None and float(settings.hint_k) != float(HINT_DEFAULTS["hint_k"]):
        tags.append(("k", float(settings.hint_k)))
    if settings.hint_start_epoch is not None and int(settings.hint_start_epoch) != HINT_DEFAULTS["hint_start_epoch"]:
        tags.append(("i", int(settings.hint_start_epoch)))
    if settings.hint_ratio is not None:
        tags.append(("a", float(settings.hint_ratio)))
    return tags


def _as_given(paths: list[str] | str) -> str:
    """The path(s) a tag abbreviates: relative to the current folder when below it (as the official commands pass
    ``data/files_….csv``), else the last two parts (``/abs/data/files_A.csv`` → ``data/files_A.csv``)."""
    out = []
    for item in [paths] if isinstance(paths, str) else paths:
        p = Path(item)
        try:
            p = p.resolve().relative_to(Path.cwd().resolve()) if p.is_absolute() else p
        except ValueError:
            p = Path(*p.parts[-2:])
        out.append(p.as_posix())
    return "/".join(out)


def _continues_stage2(settings: Any) -> bool:
    if settings.recipe == "m2d2-stage2.1":
        return True
    parsed = try_parse_official_name(settings.init_from) if settings.init_from else None
    return parsed is not None and "TI" in parsed.extras


def official_run_tags(settings: Any) -> str:
    """The tags of a run's folder name: the flags that differ from the official scripts' defaults (module
    docstring), in the official order; ``""`` when there are none."""
    method, data = settings.method, bool(settings.data)
    tags: list[tuple[str, object]] = []
    if method == "m2d2_stage2":
        if data:
            tags.append(("M", _as_given(settings.data)))
        if settings.mask_ratio is not None and float(settings.mask_ratio) != 0.3:
            tags.append(("mr", float(settings.mask_ratio)))
        if settings.seed:
            tags.append(("s", int(settings.seed)))
        if settings.blr is not None and float(settings.blr) != 3e-6:
            tags.append(("blr", float(settings.blr)))
        if settings.input_frames is not None and int(settings.input_frames) != 1001:
            tags.append(("Dur", int(settings.input_frames)))
        if settings.mask_strategy == "random":
            tags.append(("R", True))
        if settings.unfreeze_audio:
            tags.append(("trnA", True))
        if settings.sem_mode is not None and int(settings.sem_mode) != 1:
            tags.append(("S", int(settings.sem_mode)))
        if _continues_stage2(settings):
            tags.append(("FT", True))
        return format_run_tags(tags)
    if method == "m2d2_stage1":
        if data:
            tags.append(("M", _as_given(settings.data)))
        if settings.captions:
            tags.append(("C", _as_given(str(settings.captions))))
        if settings.seed:
            tags.append(("s", int(settings.seed)))
    return format_run_tags(tags + _masking_tags(settings))


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
    if method in ("byola", "byola2"):
        return f"{byola_encoder_stem(settings)}-{date}"
    tags = official_run_tags(settings)
    if method == "m2d2_stage2":
        return stage2_folder_name(ViTConfig.from_dict(settings.vit_config), settings.text_encoder, date, tags)
    cls = f"m2d_clap_vit_{settings.size}" if method in ("m2d_clap", "m2d2_stage1") else f"m2d_vit_{settings.size}"
    n_mels = get_preset(frontend_preset(method, settings.sample_rate)).n_mels
    input_size = (n_mels, int(settings.input_frames))
    if method == "m2d2_stage1":  # train_clap: the text encoder's letter, the tags, then the epochs
        official_cache = settings.captions and caption_source_kind(str(settings.captions)) == "capembs"
        extras = ("N" if official_cache and not settings.text_encoder else text_encoder_code(settings.text_encoder),)
        suffix = "-".join(p for p in (date, tags, f"e{settings.epochs:g}" if settings.epochs else "") if p)
        return format_m2d_name(cls, input_size, settings.patch_size, int(settings.sample_rate), extras, suffix)
    suffix = f"{date}-{tags}" if tags else date
    return format_m2d_name(cls, input_size, settings.patch_size, int(settings.sample_rate), (), suffix)


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
