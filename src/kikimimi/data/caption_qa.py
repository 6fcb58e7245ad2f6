"""What a captioner trains on: (clip, question, answer) examples and their token batches.

- A caption is the answer to :data:`~kikimimi.models.caption_prompts.CAPTION_QUESTION` ("Describe this sound.").
- Question–answer pairs come from a QA CSV (``file_name,question,answer``; several rows per file) or are made
  from class labels with :func:`label_qa_pairs` ("What sound is this?" → "A harmonic note.").
- :class:`PrefixCaptionDataset` turns examples plus per-clip frame features into fixed-size tensors for the
  trainer (its keys are ``(epoch, index)`` pairs like :class:`~kikimimi.data.corpus.CropDataset`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from kikimimi.data.captions import CaptionError
from kikimimi.fileio import relative_key
from kikimimi.models.caption_prompts import CAPTION_QUESTION, IGNORE_INDEX, answer_ids, prompt_ids

__all__ = [
    "LABEL_QUESTIONS",
    "Example",
    "PrefixCaptionDataset",
    "caption_examples",
    "label_answer",
    "label_qa_pairs",
    "read_qa_csv",
]

#: questions asked about a clip's class label (all answered by :func:`label_answer`)
LABEL_QUESTIONS = ("What sound is this?", "What can you hear?")


@dataclass(frozen=True)
class Example:
    """One training example: the clip ``key``, a question and its answer (a caption answers CAPTION_QUESTION)."""

    key: str
    question: str
    answer: str


def label_answer(label: str) -> str:
    """``"harmonic_note"`` → ``"A harmonic note."`` (underscores as spaces, indefinite article)."""
    words = str(label).replace("_", " ").strip()
    article = "An" if words[:1].lower() in "aeiou" and words else "A"
    return f"{article} {words}."


def label_qa_pairs(label: str, questions: Sequence[str] = LABEL_QUESTIONS) -> list[tuple[str, str]]:
    """Question–answer pairs about a class label, one per question."""
    return [(q, label_answer(label)) for q in questions]


def read_qa_csv(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> dict[str, list[tuple[str, str]]]:
    """``file_name,question,answer`` rows → key → [(question, answer), …] (keys as in
    :class:`~kikimimi.data.captions.CaptionTable`: relative to ``root``, default the CSV's folder).

    Raises:
        CaptionError: missing file, missing columns, or a row with an empty cell (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise CaptionError(f"'{path}': question-answer list not found")
    base = path.resolve().parent
    key_root = Path(root) if root is not None else base
    out: dict[str, list[tuple[str, str]]] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        if not {"file_name", "question", "answer"} <= set(cols):
            raise CaptionError(f"'{path}': columns {reader.fieldnames} lack file_name, question and answer")
        for line, row in enumerate(reader, start=2):
            name, q, a = (str(row.get(cols[c]) or "").strip() for c in ("file_name", "question", "answer"))
            if not (name and q and a):
                raise CaptionError(f"'{path}' line {line}: empty file_name, question or answer")
            audio = Path(name) if os.path.isabs(name) else base / name
            out.setdefault(relative_key(audio, key_root), []).append((q, a))
    return out


def caption_examples(captions: Mapping[str, Sequence[str]],
                     qa: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> list[Example]:
    """Every caption as an answer to CAPTION_QUESTION, then every QA pair, in key order."""
    out = [Example(k, CAPTION_QUESTION, c) for k in sorted(captions) for c in captions[k]]
    for k in sorted(qa or {}):
        out.extend(Example(k, q, a) for q, a in (qa or {})[k])
    return out


class PrefixCaptionDataset(Dataset):
    """Examples with their clip's frame features, padded to fixed sizes for batching.

    Args:
        examples: the (key, question, answer) examples. features: key → frame features ``[T, D]`` (float32);
            examples whose key has none are dropped (count in :attr:`dropped`). tokenizer: the language
            model's tokenizer. max_frames: frames kept per clip (the first ones). max_tokens: prompt + answer
            tokens kept (the answer is cut, its eos kept).

    Item ``(epoch, index)`` (or ``index``) → ``frames [T, D]``, ``frame_mask [T]`` (bool), ``input_ids [L]``,
    ``attention_mask [L]``, ``labels [L]`` with T, L the longest in the dataset (within the limits).
    """

    def __init__(self, examples: Sequence[Example], features: Mapping[str, torch.Tensor], tokenizer: Any, *,
                 max_frames: int = 512, max_tokens: int = 128) -> None:
        self.examples = [e for e in examples if e.key in features]
        self.dropped = len(examples) - len(self.examples)
        if not self.examples:
            raise ValueError("no training example has audio features (check the caption keys against the audio)")
        keys = sorted({e.key for e in self.examples})
        self.features = {k: torch.as_tensor(features[k], dtype=torch.float32)[:max_frames] for k in keys}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad)
        prompts: dict[str, list[int]] = {}
        self.tokens: list[tuple[list[int], int]] = []  # (ids, number of prompt tokens)
        for e in self.examples:
            p = prompts.setdefault(e.question, prompt_ids(tokenizer, e.question))
            a = answer_ids(tokenizer, e.answer)
            room = max(1, max_tokens - len(p))
            a = a if len(a) <= room else a[: room - 1] + a[-1:]
            self.tokens.append((p + a, len(p)))
        self.n_frames = max(f.shape[0] for f in self.features.values())
        self.n_tokens = max(len(ids) for ids, _ in self.tokens)
        self.dim = int(next(iter(self.features.values())).shape[1])

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index = key[1] if isinstance(key, tuple) else int(key)
        e = self.examples[index]
        f = self.features[e.key]
        frames = torch.zeros(self.n_frames, self.dim)
        frames[: f.shape[0]] = f
        frame_mask = torch.zeros(self.n_frames, dtype=torch.bool)
        frame_mask[: f.shape[0]] = True
        ids, n_prompt = self.tokens[index]
        input_ids = torch.full((self.n_tokens,), self.pad_id, dtype=torch.long)
        input_ids[: len(ids)] = torch.tensor(ids)
        attention = torch.zeros(self.n_tokens, dtype=torch.long)
        attention[: len(ids)] = 1
        labels = torch.full((self.n_tokens,), IGNORE_INDEX, dtype=torch.long)
        labels[n_prompt: len(ids)] = torch.tensor(ids[n_prompt:])
        return {"frames": frames, "frame_mask": frame_mask, "input_ids": input_ids, "attention_mask": attention,
                "labels": labels}
