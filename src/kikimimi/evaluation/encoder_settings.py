"""The evaluation settings that depend on the type of encoder (EVAR practice), in one typed table.

- M2D ViT: the checkpoint's normalisation statistics; clip pooling "time-mean".
- BYOL-A CNN: normalisation statistics measured on each task's training split with the BYOL-A front end
  (BYOL-A normalises with the statistics of the data at hand; its files store none); pooling "max+mean".

The probe's learning rate is deliberately *not* here: EVAR fixes one per family (3e-5 M2D, 3e-4 BYOL-A), which
makes a comparison between families depend on a hidden default; kikimimi chooses it on validation for every
model alike (:mod:`kikimimi.evaluation.probe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kikimimi.evaluation.tasks import TaskItem
from kikimimi.features.normstats import NormStats
from kikimimi.inference.encoder import norm_stats_from_files
from kikimimi.models.byola import AudioNTT2020Frames, AudioNTT2022Frames
from kikimimi.models.encoder import FrameEncoder
from kikimimi.models.vit import AudioViT

__all__ = ["BYOLA_SETTINGS", "VIT_SETTINGS", "EncoderSettings", "encoder_settings", "task_norm_stats"]


@dataclass(frozen=True)
class EncoderSettings:
    """Evaluation settings of one encoder type.

    Attributes:
        task_norm_stats_preset: front-end preset whose log-mel statistics are measured on each task's
            training split (:func:`task_norm_stats`); ``None``: the checkpoint's statistics are used.
        pooling: name of the encoder's clip pooling, recorded with fine-tuned heads.
    """

    task_norm_stats_preset: str | None
    pooling: str


VIT_SETTINGS = EncoderSettings(task_norm_stats_preset=None, pooling="time-mean")
BYOLA_SETTINGS = EncoderSettings(task_norm_stats_preset="byola", pooling="max+mean")


def encoder_settings(encoder: FrameEncoder) -> EncoderSettings:
    """The settings of ``encoder``'s type (an M2D :class:`AudioViT` or a BYOL-A CNN)."""
    if isinstance(encoder, AudioViT):
        return VIT_SETTINGS
    if isinstance(encoder, (AudioNTT2020Frames, AudioNTT2022Frames)):
        return BYOLA_SETTINGS
    raise TypeError(f"no evaluation settings for a {type(encoder).__name__} encoder; expected AudioViT or a BYOL-A CNN")


def task_norm_stats(train: Sequence[TaskItem], preset: str) -> NormStats:
    """Log-mel statistics of a task's training items (EVAR: the first fold's): 20 random crops per file,
    at most 10000 in all, with the front end ``preset``."""
    return norm_stats_from_files([it.path for it in train], preset, n_samples=min(10000, 20 * len(train)))
