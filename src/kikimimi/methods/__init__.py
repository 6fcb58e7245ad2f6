"""Self-supervised pre-training objectives (methods) and their building blocks.

A method is an ``nn.Module`` with ``forward(batch) -> {"loss", ...}``, ``on_after_step(step, total_steps)``,
``param_groups(weight_decay)``, ``export_official_state_dict()``, ``config_dict()`` and an ``encoder``
attribute (see ``docs/architecture.md``), and it builds itself for a pre-training run:
``METHODS[name].from_settings(settings, norm_stats=…, text_dim=…, epoch_samples=…)`` (the run's settings, read by
attribute, and what the run measured). :data:`METHODS` maps each name to its class; :func:`build_method`
constructs one by name from constructor arguments. Each method's training recipe (defaults, named recipes,
run-length rules) is in :mod:`kikimimi.methods.recipes`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from kikimimi.methods.byola import BYOLA
from kikimimi.methods.m2d import M2D
from kikimimi.methods.m2d2 import M2D2Stage2
from kikimimi.methods.m2d_clap import M2DCLAP

__all__ = ["METHODS", "METHOD_NAMES", "build_method"]

#: method name → class; each has ``from_settings(settings, *, norm_stats, text_dim=None, epoch_samples=None)``
METHODS: dict[str, type[nn.Module]] = {
    "m2d": M2D,
    "byola": BYOLA,
    "byola2": BYOLA,
    "m2d_clap": M2DCLAP,
    "m2d2_stage1": M2DCLAP,  # M2D-CLAP against LLM caption embeddings
    "m2d2_stage2": M2D2Stage2,
}
METHOD_NAMES = tuple(METHODS)
#: constructor arguments fixed by a name that shares its class with another (:func:`build_method`)
_FIXED: dict[str, dict[str, Any]] = {
    "byola": {"version": 1},
    "byola2": {"version": 2},
    "m2d_clap": {"method_name": "m2d_clap"},
    "m2d2_stage1": {"method_name": "m2d2_stage1"},
}
#: spellings accepted by :func:`build_method`: case, ``-`` and ``_`` are ignored; ``byola1`` = ``byola``
_ALIASES = {name.replace("_", ""): name for name in METHODS} | {"byola1": "byola"}


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
    key = _ALIASES.get(name.lower().replace("-", "").replace("_", ""))
    if key is None:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}")
    cls, fixed = METHODS[key], _FIXED.get(key, {})
    kwargs = {k: v for k, v in cfg.items() if k not in cls.config_only_keys}
    return cls(**{**kwargs, **fixed})
