"""A listener: a CLAP model, a label vocabulary and optionally a language model and a captioner, with
``.evidence(audio)``, ``.ask(audio, question)`` and ``.describe(audio)`` (issue 30's Python face).

``audio`` is a path (streamed: any length) or an :class:`~kikimimi.inference.evidence.Evidence` already built
(``.ask`` and ``.describe`` then reuse it, so a conversation builds the evidence once)::

    listener = load_listener(clap="m2d-clap-2025", lm="smollm2")
    ev = listener.evidence("walk.flac")
    listener.ask(ev, "When does the dog bark?").text      # "... 0:30–0:50 ...", with .citations
    listener.describe(ev).paragraph
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from kikimimi.inference.captioner import load_captioner
from kikimimi.inference.clap import load_clap
from kikimimi.inference.evidence import DEFAULT_LABELS_FILE, Evidence, EvidenceSettings, build_evidence, default_labels
from kikimimi.inference.grounded import Answer, Description, choose, describe, lm_answer, rule_answer
from kikimimi.models.causal_lm import load_causal_lm

__all__ = ["DEFAULT_LABELS_FILE", "Listener", "default_labels", "load_listener"]


class Listener:
    """Evidence, grounded answers and descriptions of recordings (module docstring).

    Attributes: clap (the zero-shot model), labels, settings (:class:`EvidenceSettings`), lm and tokenizer (or
    ``None``: answers by rules), lm_spec, captioner (or ``None``).
    """

    def __init__(self, clap: Any, labels: Sequence[str] | None = None, settings: EvidenceSettings | None = None, *,
                 lm: Any = None, tokenizer: Any = None, lm_spec: str = "lm", captioner: Any = None,
                 models: dict[str, Any] | None = None) -> None:
        self.clap = clap
        self.labels = list(labels) if labels is not None else default_labels()
        self.settings = settings or EvidenceSettings()
        self.lm, self.tokenizer, self.lm_spec = lm, tokenizer, lm_spec
        self.captioner = captioner
        self.models = dict(models or {})

    def __repr__(self) -> str:
        return (f"Listener(labels={len(self.labels)}, segment_s={self.settings.segment_s:g}, "
                f"lm={self.lm_spec if self.lm is not None else None!r}, captioner={self.captioner is not None})")

    def evidence(self, audio: str | os.PathLike | Evidence, *, progress: bool = False) -> Evidence:
        """The evidence of an audio file (streamed), or ``audio`` itself when it already is evidence."""
        if isinstance(audio, Evidence):
            return audio
        return build_evidence(audio, self.clap, self.labels, self.settings, captioner=self.captioner,
                              models=self.models, progress=progress)

    def ask(self, audio: str | os.PathLike | Evidence, question: str, *, choices: Sequence[str] | None = None,
            history: Sequence[tuple[str, str]] = (), context: Sequence[str] = (), max_new_tokens: int = 64) -> Answer:
        """The answer to ``question`` (by the language model when there is one, else by rules), citing times;
        ``choices``: pick one of them. ``history``, ``context``: the conversation so far
        (:func:`~kikimimi.inference.grounded.lm_answer`)."""
        ev = self.evidence(audio)
        if choices is not None:
            return choose(ev, question, choices, lm=self.lm, tokenizer=self.tokenizer, spec=self.lm_spec,
                          context=context)
        if self.lm is not None:
            return lm_answer(ev, question, self.lm, self.tokenizer, spec=self.lm_spec, max_new_tokens=max_new_tokens,
                             history=history, context=context)
        return rule_answer(ev, question, context)

    def describe(self, audio: str | os.PathLike | Evidence, max_parts: int = 12) -> Description:
        """A timeline and a paragraph (:func:`~kikimimi.inference.grounded.describe`)."""
        return describe(self.evidence(audio), max_parts)


def load_listener(clap: Any, *, lm: str | None = None, captioner: str | os.PathLike | None = None,
                  labels: Sequence[str] | None = None, settings: EvidenceSettings | None = None,
                  text_encoder: Any = None, device: str | torch.device | None = "cpu", **clap_kwargs: Any) -> Listener:
    """A :class:`Listener`.

    Args:
        clap: an M2D-CLAP checkpoint (official 2024/2025 file, kikimimi folder or registered name; see
            :func:`~kikimimi.inference.clap.load_clap`), or a loaded model (anything with ``encode_audio``).
        lm: ``None`` (answers by rules), ``"smollm2"`` or a local Hugging Face causal-LM folder / ``.gguf``.
        captioner: a captioner folder (``kikimimi train-captioner``) that captions each segment, or ``None``.
        labels: the vocabulary (default: :func:`default_labels`). settings: :class:`EvidenceSettings`.
        text_encoder, device, clap_kwargs: passed to ``load_clap``.

    Raises:
        the loaders' errors (CheckpointError, CLAPError, CaptionerError, TextEncoderError).
    """
    models: dict[str, Any] = {"clap": str(clap) if isinstance(clap, (str, os.PathLike)) else type(clap).__name__}
    if isinstance(clap, (str, os.PathLike)):
        clap = load_clap(clap, text_encoder=text_encoder, device=device, **clap_kwargs)
    model = tokenizer = None
    if lm is not None:
        model, tokenizer = load_causal_lm(str(lm), device=device or "cpu")
    cap = None
    if captioner is not None:
        cap = load_captioner(captioner, device=device)
        models["captioner"] = str(captioner)
    return Listener(clap, labels, settings, lm=model, tokenizer=tokenizer, lm_spec=str(lm) if lm else "lm",
                    captioner=cap, models=models)
