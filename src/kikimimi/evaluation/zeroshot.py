"""Zero-shot classification with an audio–language model (EVAR ``zeroshot.py`` protocol).

Each class name becomes a caption — ``template.format(phrase)`` with ``phrase`` = the label with ``_`` → space,
or the EVAR task-specific phrase (CREMA-D descriptions, ``"<genre> music"`` for GTZAN, ``"the musical
instrument sound of <family>"`` for NSynth, AudioSet MIDs → display names through ``label_names``) — and
every clip is scored by the cosine similarity of its audio embedding with each caption embedding (the scoring
itself is :func:`kikimimi.inference.zeroshot.zero_shot_scores`, shared with ``kikimimi serve``).
Single-label tasks: softmax over classes → argmax accuracy; multi-label tasks: sigmoid of the cosine →
macro mAP. Test clips are the first ``unit_s`` seconds (zero-padded when shorter); cross-validation tasks
use the test part of every fold, i.e. the whole dataset once.

A model here is anything with ``sample_rate``, ``encode_audio(waves, sample_rate) -> [B, D]`` and
``encode_text(texts) -> [C, D]`` (optionally ``temperature_scale``), e.g. :class:`kikimimi.inference.clap.CLAPModel`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kikimimi.audio.decode import AudioDecodeError, load_audio
from kikimimi.evaluation.metrics import accuracy, macro_map, per_class_accuracy
from kikimimi.evaluation.tasks import Task, crop_or_pad
from kikimimi.inference.clap import cosine_similarity
from kikimimi.inference.zeroshot import DEFAULT_TEMPLATE, softmax
from kikimimi.inference.zeroshot import zero_shot_scores as _score_embeddings
from kikimimi.models.encoder import TextAudioModel

__all__ = [
    "DEFAULT_TEMPLATE",
    "TASK_PHRASES",
    "ZeroShotResult",
    "class_captions",
    "class_phrase",
    "softmax",
    "zero_shot_classify",
    "zero_shot_scores",
    "zero_shot_task",
]

_CREMAD = {
    "ANG": "angry person talking",
    "DIS": "someone talking in disgust",
    "FEA": "someone talking with a sense of fear",
    "HAP": "someone talking happily and joyfully",
    "NEU": "someone talking calmly",
    "SAD": "someone talking sadly",
}

#: EVAR's per-task caption phrases (before the template); other tasks use the label with ``_`` → space.
TASK_PHRASES: dict[str, Any] = {
    "cremad": lambda label: _CREMAD.get(label, label.replace("_", " ")),
    "gtzan": lambda label: f"{label.replace('_', ' ')} music",
    "nsynth": lambda label: f"the musical instrument sound of {label.replace('_', ' ')}",
}


def class_phrase(label: str, task_name: str | None = None, label_names: Mapping[str, str] | None = None) -> str:
    """The phrase for one class: ``label_names[label]`` if given, else the task rule, else ``_`` → space."""
    if label_names and label in label_names:
        return str(label_names[label])
    rule = TASK_PHRASES.get((task_name or "").lower())
    return rule(label) if rule else label.replace("_", " ")


def class_captions(labels: Sequence[str], template: str = DEFAULT_TEMPLATE, task_name: str | None = None,
                   label_names: Mapping[str, str] | None = None) -> list[str]:
    """Captions ``template.format(phrase)`` for every label (see :func:`class_phrase`)."""
    if "{}" not in template:
        raise ValueError(f"template must contain '{{}}' where the class name goes, got {template!r}")
    return [template.format(class_phrase(lab, task_name, label_names)) for lab in labels]


def zero_shot_scores(model: TextAudioModel, audio: Any, captions: Sequence[str], *, sample_rate: int | None = None,
                     batch_size: int = 8) -> np.ndarray:
    """Cosine similarities ``[N, C]`` between the clips and the captions."""
    audio_emb = _encode_audio(model, audio, sample_rate, batch_size)
    text_emb = np.asarray(model.encode_text(list(captions)), dtype=np.float32)
    return cosine_similarity(audio_emb, text_emb)


def _encode_audio(model: TextAudioModel, audio: Any, sample_rate: int | None, batch_size: int) -> np.ndarray:
    if isinstance(audio, (str, os.PathLike)) or (isinstance(audio, np.ndarray) and audio.ndim == 1):
        audio = [audio]
    return np.asarray(model.encode_audio(audio, sample_rate=sample_rate, batch_size=batch_size), dtype=np.float32)


def zero_shot_classify(model: TextAudioModel, audio: Any, labels: Sequence[str], template: str = DEFAULT_TEMPLATE, *,
                       sample_rate: int | None = None, use_logit_scale: bool = True, task_name: str | None = None,
                       label_names: Mapping[str, str] | None = None,
                       batch_size: int = 8) -> tuple[np.ndarray, list[str]]:
    """Classify clips into ``labels`` with no training.

    Args:
        model: a CLAP model (see the module docstring).
        audio: paths or waveforms (``[samples]``, a list, or ``[N, samples]``) at ``sample_rate``.
        labels: class names; each becomes ``template.format(phrase)``.
        use_logit_scale: multiply cosines by the model's ``temperature_scale`` (``exp(logit_scale)``) before
            the softmax (the ranking is the same either way).

    Returns:
        ``(probs [N, C] float32 softmax over classes, predicted label per clip)``.
    """
    labels = list(labels)
    if not labels:
        raise ValueError("zero-shot classification needs at least one label")
    captions = class_captions(labels, template, task_name, label_names)
    audio_emb = _encode_audio(model, audio, sample_rate, batch_size)
    text_emb = np.asarray(model.encode_text(captions), dtype=np.float32)
    scale = float(getattr(model, "temperature_scale", 1.0)) if use_logit_scale else 1.0
    probs = _score_embeddings(audio_emb, text_emb, scale).probs
    return probs, [labels[i] for i in probs.argmax(axis=1)]


@dataclass
class ZeroShotResult:
    """Zero-shot score of one model on one task.

    Attributes:
        metric: ``"accuracy"`` (single-label) or ``"mAP"`` (multi-label).
        score: the metric as a fraction.
        classes: class labels in score-column order; ``captions`` the texts used for them.
        n_test: number of scored clips; ``keys`` their task keys.
        scores: ``[n_test, C]`` softmax probabilities (single-label) or sigmoid of cosine (multi-label).
        per_class_accuracy: ``{class: accuracy}`` for single-label tasks.
        errors: ``(key, reason)`` of clips that could not be read.
    """

    metric: str
    score: float
    classes: list[str]
    captions: list[str]
    n_test: int
    keys: list[str] = field(default_factory=list)
    scores: np.ndarray | None = None
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)


def zero_shot_task(model: TextAudioModel, task: Task, *, template: str = DEFAULT_TEMPLATE,
                   label_names: Mapping[str, str] | None = None, batch_size: int = 8) -> ZeroShotResult:
    """Zero-shot evaluation of ``model`` on every test clip of ``task`` (all folds' test parts for CV tasks)."""
    classes = task.classes
    captions = class_captions(classes, template, task.name, label_names)
    items = [it for fold in task.folds() for it in fold.test]
    sr = int(model.sample_rate)
    n = task.unit_samples(sr)
    waves, kept, errors = [], [], []
    for it in items:
        try:
            wave, _ = load_audio(it.path, sr)
        except AudioDecodeError as exc:
            errors.append((it.key, exc.reason))
            continue
        waves.append(crop_or_pad(wave, n))
        kept.append(it)
    if not kept:
        raise ValueError(f"'{task.source}': no readable test clip for zero-shot evaluation")
    audio_emb = _encode_audio(model, waves, sr, batch_size)
    text_emb = np.asarray(model.encode_text(list(captions)), dtype=np.float32)
    scored = _score_embeddings(audio_emb, text_emb, float(getattr(model, "temperature_scale", 1.0)),
                               multi_label=task.multi_label)
    y = task.targets(kept, classes)
    keys = [it.key for it in kept]
    if task.multi_label:
        return ZeroShotResult("mAP", macro_map(y, scored.probs), classes, captions, len(kept), keys, scored.probs,
                              errors=errors)
    probs = scored.probs
    pred = probs.argmax(axis=1)
    pca = per_class_accuracy(y, pred, len(classes))
    return ZeroShotResult("accuracy", accuracy(y, pred), classes, captions, len(kept), keys, probs,
                          {c: float(v) for c, v in zip(classes, pca, strict=True)}, errors)
