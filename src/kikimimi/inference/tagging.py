"""Tagging with a classifier head: its class names, its activation and per-window probabilities.

A head written by ``kikimimi finetune`` stores its class names (in output order) and its activation in the
model's ``config.json`` (``head.classes``, ``head.activation``: ``"softmax"`` for a single-label task,
``"sigmoid"`` for a multi-label one). The official AudioSet heads store neither: their 527 outputs are in
**sorted-MID order** (docs/reference.md §5), named by AudioSet's ``class_labels_indices.csv`` sorted by ``mid``,
and read with sigmoids. :func:`read_label_list` also reads a plain list of names.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kikimimi.inference.encoder import AudioEncoder
from kikimimi.inference.windows import window_bounds
from kikimimi.models.heads import HEAD_ACTIVATIONS, head_probabilities

__all__ = ["head_activation", "head_classes", "read_label_list", "read_labels_sorted_by_mid", "tag_waveform"]


def head_classes(config: dict[str, Any]) -> list[str] | None:
    """The class names a model's head stores (``config["head"]["classes"]``, output order), or ``None``."""
    classes = (config.get("head") or {}).get("classes")
    return [str(c) for c in classes] if classes else None


def head_activation(config: dict[str, Any]) -> str:
    """``"softmax"`` or ``"sigmoid"``: the head's stored activation; without one, ``"softmax"`` for a
    single-label kikimimi fine-tune (``finetune.metric`` = accuracy, written before the activation was stored)
    and ``"sigmoid"`` otherwise (the official AudioSet heads are multi-label).

    Raises:
        ValueError: a stored activation other than those of :data:`~kikimimi.models.heads.HEAD_ACTIVATIONS`.
    """
    stored = (config.get("head") or {}).get("activation")
    if stored:
        if stored not in HEAD_ACTIVATIONS:
            raise ValueError(f"the model's head activation {stored!r} is not one of {', '.join(HEAD_ACTIVATIONS)}")
        return str(stored)
    return "softmax" if (config.get("finetune") or {}).get("metric") == "accuracy" else "sigmoid"


def read_labels_sorted_by_mid(path: str | os.PathLike) -> list[str]:
    """Display names of an AudioSet ``index,mid,display_name`` CSV in sorted-MID order (the official heads')."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"mid", "display_name"} <= set(rows[0]):
        raise ValueError(f"'{path}': expected columns index,mid,display_name")
    return [r["display_name"] for r in sorted(rows, key=lambda r: r["mid"])]


def read_label_list(spec: str | os.PathLike) -> list[str]:
    """Class names in head output order from ``--labels``.

    ``spec`` is one of: an AudioSet CSV whose header has ``mid`` and ``display_name`` (sorted by ``mid``); a
    text file of names, one per line (blank lines and ``#`` comments skipped) or all on one line separated by
    commas; or the names themselves separated by commas (``cat,dog,bird``) when no such file exists.

    Raises:
        ValueError: no such file and no comma-separated names, an empty list, or a name given twice.
    """
    path = Path(spec)
    if path.is_file():
        text = path.read_text(encoding="utf-8-sig")
        header = next(csv.reader(io.StringIO(text)), [])
        if {"mid", "display_name"} <= {h.strip() for h in header}:
            return read_labels_sorted_by_mid(path)
        lines = [s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]
        names = [n.strip() for n in lines[0].split(",")] if len(lines) == 1 else lines
        where = f"'{path}'"
    elif "," in str(spec):
        names, where = [n.strip() for n in str(spec).split(",")], "--labels"
    else:
        raise ValueError(f"'{spec}': no such labels file (or pass the names separated by commas)")
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{where}: no class names")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{where}: class names given twice: {', '.join(twice[:5])}")
    return names


def tag_waveform(model: AudioEncoder, wave: np.ndarray, window_s: float, hop_s: float,
                 activation: str = "sigmoid") -> list[tuple[float, float, np.ndarray]]:
    """Per window (:func:`~kikimimi.inference.windows.window_bounds`, ``tail="full"``): ``(start s, end s,
    probabilities [n_classes])`` of the model's head on the window's pooled embedding.

    Args:
        model: an :class:`~kikimimi.inference.encoder.AudioEncoder` whose bundle has a head.
        wave: mono waveform ``[samples]`` at ``model.sample_rate``.
        activation: ``"softmax"`` or ``"sigmoid"`` (:func:`head_activation`).
    """
    head = model.bundle.head.to(model.device).eval()
    sr = int(model.sample_rate)
    spans = window_bounds(len(wave), sr, window_s, hop_s)
    clips = model.embed([wave[s:e] for s, e in spans], sr)
    with torch.inference_mode():
        probs = head_probabilities(head(torch.from_numpy(clips).to(model.device)), activation).cpu().numpy()
    return [(s / sr, e / sr, p) for (s, e), p in zip(spans, probs, strict=True)]
