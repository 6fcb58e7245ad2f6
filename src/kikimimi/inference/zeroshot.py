"""Zero-shot scoring, written once: clip embeddings against caption embeddings → per-class scores.

Evaluation (:mod:`kikimimi.evaluation.zeroshot`) and the server (:mod:`kikimimi.apps.serve`) both call
:func:`zero_shot_scores`; :func:`top_labels` turns one row into a ranked list. The caption texts themselves
(``template.format(phrase)``) are made by the caller.

Shapes: audio embeddings ``[N, D]``, caption (text) embeddings ``[C, D]``; neither needs to be unit length
(both are normalised here, in float64). ``logit_scale`` is the model's temperature (``exp`` of CLAP's learnt
logit scale, ``model.temperature_scale``); it changes the probabilities, never the ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kikimimi.inference.clap import cosine_similarity

__all__ = ["DEFAULT_TEMPLATE", "ZeroShotScores", "sigmoid", "softmax", "top_labels", "zero_shot_scores"]

#: the caption template of the EVAR zero-shot protocol; ``{}`` is the class phrase
DEFAULT_TEMPLATE = "{} can be heard"


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (float64 inside, float32 out)."""
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function (float64 inside, float32 out)."""
    return (1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))).astype(np.float32)


@dataclass(frozen=True)
class ZeroShotScores:
    """``cosine`` ``[N, C]`` float32 similarities and ``probs`` ``[N, C]`` float32: a softmax over the classes
    of ``cosine × logit_scale`` (single-label), or the sigmoid of ``cosine`` per class (multi-label)."""

    cosine: np.ndarray
    probs: np.ndarray


def zero_shot_scores(audio_embeddings: Any, text_embeddings: Any, logit_scale: float = 1.0, *,
                     multi_label: bool = False) -> ZeroShotScores:
    """Score ``N`` clips against ``C`` class captions.

    Args:
        audio_embeddings: ``[N, D]`` (or ``[D]`` for one clip).
        text_embeddings: ``[C, D]``, one row per class caption.
        logit_scale: multiplies the cosines before the softmax (single-label only).
        multi_label: sigmoid of the cosine per class instead of a softmax over classes.

    Raises:
        ValueError: the embedding sizes differ, or there is no class.
    """
    text = np.atleast_2d(np.asarray(text_embeddings))
    if text.shape[0] == 0:
        raise ValueError("zero-shot scoring needs at least one class caption")
    cos = cosine_similarity(audio_embeddings, text)
    probs = sigmoid(cos) if multi_label else softmax(cos * float(logit_scale), axis=1)
    return ZeroShotScores(cos, probs)


def top_labels(scores: ZeroShotScores, labels: Sequence[str], row: int = 0, k: int | None = None,
               digits: int | None = 6) -> list[dict[str, Any]]:
    """Clip ``row``'s classes best first (ties keep the label order): ``[{"label", "score" (cosine),
    "probability"}]``, the ``k`` best (all when None), rounded to ``digits`` (None: not rounded)."""
    cos, probs = scores.cosine[row], scores.probs[row]
    if len(labels) != cos.shape[0]:
        raise ValueError(f"{len(labels)} labels for {cos.shape[0]} scored classes")
    order = np.argsort(-cos, kind="stable")[:k]

    def r(x: float) -> float:
        return float(x) if digits is None else round(float(x), digits)

    return [{"label": labels[i], "score": r(cos[i]), "probability": r(probs[i])} for i in order]
