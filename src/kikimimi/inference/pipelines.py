"""Hugging Face-style pipelines: ``kikimimi.pipeline(task, model=…)`` for code written for ``transformers.pipeline``.

Two tasks, with the call and the output of their transformers namesakes, so switching is one line::

    classifier = kikimimi.pipeline("zero-shot-audio-classification", model="open-clap-tiny")
    classifier("dog.wav", candidate_labels=["dog barking", "rain"])
    # [{"score": 0.93, "label": "dog barking"}, {"score": 0.07, "label": "rain"}]   best first
    classifier(["dog.wav", "rain.wav"], candidate_labels=[...])                     # one such list per clip

    extractor = kikimimi.pipeline("feature-extraction", model="open-m2d-tiny")
    extractor("dog.wav")                      # nested lists [1, T, D]: the clip's frame features
    extractor("dog.wav", return_tensors=True) # torch.Tensor [1, T, D]

- **zero-shot-audio-classification**: ``score`` is the softmax over the candidate labels of the CLAP logits
  (cosine × the model's temperature, ``exp(logit_scale)``), as transformers' ``logits_per_audio.softmax``; the
  scoring is :func:`kikimimi.inference.zeroshot.zero_shot_scores` and the ranking
  :func:`~kikimimi.inference.zeroshot.top_labels` (the one scoring path of kikimimi). The captions are
  ``hypothesis_template.format(label)``; the default template is kikimimi's (``"{} can be heard"``, the EVAR
  protocol the M2D-CLAP figures use), not transformers' ``"This is a sound of {}."`` — pass it to match.
- **feature-extraction**: frame features ``[1, T, D]`` per clip (``pool=True``: the pooled clip embedding
  ``[1, D]``), float values as nested lists unless ``return_tensors=True``.

Inputs, as the transformers audio pipelines take them: a file path, a 1-D waveform at the model rate (numpy or
torch), a dict ``{"array" | "raw": waveform, "sampling_rate": Hz}`` (resampled), or a list of these (a batch:
the output is then a list, one entry per input, in order). ``model``: a registered name, a file or folder,
``hf://owner/name[@revision]``, or a loaded model; ``None`` takes kikimimi's packaged open model
(:func:`kikimimi.checkpoints.registry.default_packaged_model`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from kikimimi.audio.decode import resample
from kikimimi.checkpoints.registry import default_packaged_model
from kikimimi.inference.clap import CLAPModel, load_clap
from kikimimi.inference.encoder import AudioEncoder, load
from kikimimi.inference.zeroshot import DEFAULT_TEMPLATE, top_labels, zero_shot_scores

__all__ = ["TASKS", "FeatureExtractionPipeline", "ZeroShotAudioClassificationPipeline", "pipeline"]

#: the tasks :func:`pipeline` builds, and the packaged model kind each one defaults to
TASKS: dict[str, str] = {"zero-shot-audio-classification": "clap", "feature-extraction": "encoder"}


def _is_one_clip(audio: Any) -> bool:
    """One input (path, 1-D waveform, dict) rather than a list of them."""
    if isinstance(audio, str | os.PathLike | Mapping):
        return True
    return isinstance(audio, np.ndarray | torch.Tensor) and audio.ndim == 1


def _clip(item: Any, sample_rate: int, index: int) -> str | os.PathLike | np.ndarray:
    """One input as a path (decoded by the model) or a float32 waveform ``[samples]`` at ``sample_rate`` Hz."""
    if isinstance(item, str | os.PathLike):
        return item
    if isinstance(item, Mapping):
        wave = item.get("array", item.get("raw"))
        rate = item.get("sampling_rate")
        if wave is None or rate is None:
            raise ValueError(f"audio input {index}: a dict needs 'array' (or 'raw') and 'sampling_rate', "
                             f"got keys {sorted(item)}")
        wave = np.asarray(wave.detach().cpu() if isinstance(wave, torch.Tensor) else wave, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"audio input {index}: expected a single-channel (1-D) waveform, got shape {wave.shape}")
        return wave if int(rate) == sample_rate else resample(wave, int(rate), sample_rate)
    if isinstance(item, np.ndarray | torch.Tensor):
        wave = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
        if wave.ndim != 1:
            raise ValueError(f"audio input {index}: expected a single-channel (1-D) waveform, got shape {wave.shape}")
        return wave
    raise TypeError(f"audio input {index}: expected a file path, a 1-D waveform or a dict with 'array' and "
                    f"'sampling_rate', got {type(item).__name__}")


def _clips(audio: Any, sample_rate: int) -> tuple[list[Any], bool]:
    """``(clips, single)``: every input as :func:`_clip`, and whether one clip was given (not a list)."""
    single = _is_one_clip(audio)
    items = [audio] if single else list(audio)
    if not items:
        raise ValueError("no audio given (an empty list)")
    return [_clip(item, sample_rate, i) for i, item in enumerate(items)], single


class ZeroShotAudioClassificationPipeline:
    """``pipe(audio, candidate_labels=[…], hypothesis_template=…)`` → ``[{"score", "label"}]`` best first.

    Attributes:
        model: the CLAP model (a :class:`~kikimimi.models.encoder.TextAudioModel`: ``encode_audio``,
            ``encode_text``, ``sample_rate``; ``temperature_scale`` when it has one, else 1).
        hypothesis_template: the default caption template (``{}`` is the label).
    """

    task = "zero-shot-audio-classification"

    def __init__(self, model: Any, hypothesis_template: str = DEFAULT_TEMPLATE) -> None:
        self.model = model
        self.hypothesis_template = hypothesis_template

    def __repr__(self) -> str:
        return f"ZeroShotAudioClassificationPipeline(model={self.model!r})"

    def __call__(self, audios: Any, candidate_labels: Sequence[str] | str | None = None, *,
                 hypothesis_template: str | None = None, batch_size: int = 8) -> list[Any]:
        """Scores of ``candidate_labels`` for each clip.

        Returns:
            one clip: ``[{"score": float, "label": str}, …]`` sorted by score (the softmax over the labels of
            cosine × temperature, summing to 1), ties in label order; a list of clips: one such list per clip.

        Raises:
            ValueError: no candidate labels, a template without ``{}``, no audio, a waveform that is not 1-D.
            TypeError: an input that is not a path, waveform or dict.
        """
        labels = [candidate_labels] if isinstance(candidate_labels, str) else list(candidate_labels or [])
        if not labels:
            raise ValueError("zero-shot-audio-classification needs candidate_labels=[...] (at least one label)")
        template = self.hypothesis_template if hypothesis_template is None else hypothesis_template
        if "{}" not in template:
            raise ValueError(f"hypothesis_template must contain '{{}}' (the label's place), got {template!r}")
        clips, single = _clips(audios, int(self.model.sample_rate))
        audio_emb = np.atleast_2d(np.asarray(self.model.encode_audio(clips, self.model.sample_rate, batch_size)))
        text_emb = np.asarray(self.model.encode_text([template.format(label) for label in labels]))
        scores = zero_shot_scores(audio_emb, text_emb, float(getattr(self.model, "temperature_scale", 1.0)))
        results = [[{"score": t["probability"], "label": t["label"]} for t in top_labels(scores, labels, row,
                                                                                          digits=None)]
                   for row in range(len(clips))]
        return results[0] if single else results


class FeatureExtractionPipeline:
    """``pipe(audio)`` → the frame features ``[1, T, D]`` of each clip (transformers' feature-extraction shape).

    Attributes:
        model: the :class:`~kikimimi.inference.encoder.AudioEncoder` (a CLAP model's audio encoder for a CLAP).
    """

    task = "feature-extraction"

    def __init__(self, model: AudioEncoder) -> None:
        self.model = model

    def __repr__(self) -> str:
        return f"FeatureExtractionPipeline(model={self.model!r})"

    def __call__(self, audios: Any, *, return_tensors: bool = False, pool: bool = False,
                 batch_size: int = 8) -> Any:
        """Features of each clip: ``[1, T, D]`` frame features (``pool=True``: ``[1, D]``, the encoder's clip
        embedding), nested lists of floats, or ``torch.Tensor`` float32 with ``return_tensors=True``; a list of
        clips gives a list of these, in order.

        Raises:
            ValueError: no audio, a waveform that is not 1-D. TypeError: an input of another kind.
        """
        clips, single = _clips(audios, int(self.model.sample_rate))
        if pool:
            feats = list(np.atleast_2d(self.model.embed(clips, self.model.sample_rate, batch_size)))
        else:
            feats, _ = self.model.embed_frames(clips, self.model.sample_rate, batch_size, stack=False)
        out = [torch.as_tensor(np.asarray(f, dtype=np.float32)).unsqueeze(0) for f in feats]
        results = out if return_tensors else [t.tolist() for t in out]
        return results[0] if single else results


def _default_model(task: str) -> str:
    kind = TASKS[task]
    name = default_packaged_model(kind)
    if name is None:
        raise ValueError(f"pipeline({task!r}): no model given and kikimimi's packaged {kind} model is not "
                         "installed; pass model= (a registered name, a file or folder, or hf://owner/name)")
    return name


def pipeline(task: str, model: Any = None, *, device: str | torch.device | None = None,
             hypothesis_template: str = DEFAULT_TEMPLATE, **load_kwargs: Any) -> Any:
    """A pipeline for ``task`` (see :data:`TASKS`) with ``model``.

    Args:
        task: ``"zero-shot-audio-classification"`` (a CLAP model) or ``"feature-extraction"`` (any encoder; a
            CLAP model's audio encoder).
        model: a registered name, a weight file or kikimimi folder, ``hf://owner/name[@revision]``, or a loaded
            model (:class:`~kikimimi.inference.clap.CLAPModel` or another text–audio model for zero-shot;
            :class:`~kikimimi.inference.encoder.AudioEncoder` or ``CLAPModel`` for features); ``None``: the
            packaged open model.
        device: as :func:`kikimimi.load` (for a model given by name or path).
        hypothesis_template: the zero-shot caption template (``{}`` is the label).
        **load_kwargs: passed to :func:`~kikimimi.inference.clap.load_clap` / :func:`~kikimimi.inference.encoder.load`
            (``accept_licence=``, ``text_encoder=``, ``precision=`` …).

    Raises:
        ValueError: an unknown task, or no model given and none packaged.
        TypeError: a loaded object that cannot do the task.
        kikimimi.checkpoints.CheckpointError (and the loaders' errors): a model that cannot be loaded.
    """
    if task not in TASKS:
        raise ValueError(f"unknown pipeline task {task!r}; kikimimi has {', '.join(TASKS)}")
    if model is None:
        model = _default_model(task)
    loadable = isinstance(model, str | os.PathLike)
    if task == "zero-shot-audio-classification":
        if loadable:
            model = load_clap(model, device=device, **load_kwargs)
        elif not all(hasattr(model, a) for a in ("encode_audio", "encode_text", "sample_rate")):
            raise TypeError(f"zero-shot-audio-classification needs a CLAP model (encode_audio, encode_text), got "
                            f"{type(model).__name__}")
        return ZeroShotAudioClassificationPipeline(model, hypothesis_template)
    if loadable:
        model = load(model, device, **load_kwargs)
    elif isinstance(model, CLAPModel):
        model = model.audio
    if not isinstance(model, AudioEncoder):
        raise TypeError(f"feature-extraction needs an AudioEncoder or CLAPModel, got {type(model).__name__}")
    return FeatureExtractionPipeline(model)
