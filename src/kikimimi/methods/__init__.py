"""Self-supervised pre-training objectives (methods) and their building blocks.

A method is an ``nn.Module`` with ``forward(batch) -> {"loss", ...}``, ``on_after_step(step, total_steps)``,
``param_groups(weight_decay)``, ``export_official_state_dict()``, ``config_dict()`` and an ``encoder``
attribute (see ``docs/architecture.md``). Use :func:`build_method` to construct one by name.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["METHOD_NAMES", "build_method"]

METHOD_NAMES = ("m2d", "byola", "byola2", "m2d_clap", "m2d2_stage1", "m2d2_stage2")


def build_method(name: str, **cfg: Any) -> nn.Module:
    """Construct a method by name.

    Args:
        name: ``"m2d"`` (:class:`~kikimimi.methods.m2d.M2D`), ``"byola"`` (BYOL-A v1) or ``"byola2"``
            (BYOL-A v2, :class:`~kikimimi.methods.byola.BYOLA`), ``"m2d_clap"``
            (:class:`~kikimimi.methods.m2d_clap.M2DCLAP`), ``"m2d2_stage1"`` (an M2DCLAP labelled for
            LLM-embedding captions) or ``"m2d2_stage2"`` (:class:`~kikimimi.methods.m2d2.M2D2Stage2`; needs
            ``vit_config`` and ``text_encoder`` = a TextEncoder module or a spec string).
        **cfg: constructor keyword arguments of that class (e.g. ``size``, ``input_size``, ``mask_ratio``
            for M2D; ``d``, ``n_mels``, ``proj_hidden`` for BYOL-A). The informational keys that
            ``config_dict()`` adds (``method``, ``default_optimizer``, ``lr`` hints, derived sizes…) are
            ignored, so ``build_method(name, **method.config_dict())`` rebuilds the same architecture.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key in ("m2dclap", "m2d2stage1"):
        from kikimimi.methods.m2d_clap import M2DCLAP

        cfg = {k: v for k, v in cfg.items() if k not in M2DCLAP.config_only_keys}
        cfg["method_name"] = "m2d_clap" if key == "m2dclap" else "m2d2_stage1"
        return M2DCLAP(**cfg)
    if key == "m2d2stage2":
        from kikimimi.methods.m2d2 import build_stage2

        return build_stage2(**cfg)
    if key == "m2d":
        from kikimimi.methods.m2d import M2D

        return M2D(**{k: v for k, v in cfg.items() if k not in M2D.config_only_keys})
    if key in ("byola", "byola1", "byola2"):
        from kikimimi.methods.byola import BYOLA

        cfg = {k: v for k, v in cfg.items() if k not in BYOLA.config_only_keys}
        return BYOLA(version=2 if key == "byola2" else 1, **cfg)
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}")
