"""Closed-form audio questions generated from the open suite's metadata (issue 30, item 5).

Questions are asked about the suite's held-out (``split == "test"``) clips and about *composed* files: held-out
clips laid into fixed slots of ``slot_s`` seconds (each clip cut to its slot, padded with digital silence), so the
time of every sound is known exactly. With evidence segments of the same length as a slot, "correct within one
segment" is a clean rule.

Question types (every question has its choices; chance = 1 / number of choices):

==============  ==================================================================  =========================
type            question                                                            choices
==============  ==================================================================  =========================
``language``    which language is spoken (a language_id clip)                       5 languages
``instrument``  which instrument family is playing (an instrument_family clip)       14 families
``drum``        which drum piece is hit (a drum_type clip)                          6 drum pieces
``speech``      is there speech (a language_id clip, or a drum / instrument clip)   yes, no
``count``       how many times is the DRUM hit (a composed file, hits apart)        1 … 5
``first_time``  when is the DRUM first heard (a composed file)                      4 slot start times (m:ss)
==============  ==================================================================  =========================

The free-form question names its choices (as closed-form audio QA benchmarks do; not the times of
``first_time``), so an answer can be read back into a choice (:func:`read_answer`). The label vocabulary the
evidence scores (:func:`vocabulary`) is the suite's own class words, so the questions' words and the labels' words
meet.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from captions import DRUM_WORD, FAMILY_WORD, LANGUAGE_WORD

from kikimimi.audio.decode import load_audio
from kikimimi.inference.grounded import format_time, parse_times, stated_count

__all__ = ["QTYPES", "Question", "Vocabulary", "compose", "make_questions", "read_answer", "test_rows",
           "vocabulary"]

QTYPES = ("language", "instrument", "drum", "speech", "count", "first_time")
#: the task CSV each clip question draws from
TASK_OF = {"language": "language_id", "instrument": "instrument_family", "drum": "drum_type"}


@dataclass(frozen=True)
class Vocabulary:
    """The evidence labels and what each means: ``task[label]`` (``language`` / ``drum`` / ``instrument``) and
    ``choice[label]`` (the answer word it stands for)."""

    labels: list[str]
    task: dict[str, str]
    choice: dict[str, str]

    def labels_of(self, qtype: str) -> list[str]:
        return [label for label in self.labels if self.task[label] == qtype]


def vocabulary() -> Vocabulary:
    """The suite's classes as evidence labels: ``"<Language> speech"``, the drum words, the family words."""
    labels, task, choice = [], {}, {}
    for qtype, words, fmt in (("language", LANGUAGE_WORD, "{} speech"), ("drum", DRUM_WORD, "{}"),
                              ("instrument", FAMILY_WORD, "{}")):
        for word in words.values():
            label = fmt.format(word)
            labels.append(label)
            task[label], choice[label] = qtype, word
    return Vocabulary(labels, task, choice)


@dataclass
class Question:
    """One closed-form question.

    Attributes:
        qtype: one of :data:`QTYPES`. audio: the WAV asked about. question: the free-form text (names its choices).
        choices: the options; ``answer``: the right one. target: the drum word a count / time question is about.
        truth_s: the true first time (seconds; ``first_time`` only). duration_s: the audio's length.
        clips: the held-out clips it is made of (suite-relative names).
    """

    qtype: str
    audio: str
    question: str
    choices: list[str]
    answer: str
    target: str | None = None
    truth_s: float | None = None
    duration_s: float = 0.0
    clips: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def test_rows(suite: Path) -> dict[str, list[dict[str, str]]]:
    """The held-out rows (``split == "test"``) of each task CSV the questions use, by question type."""
    out = {}
    for qtype, task in TASK_OF.items():
        path = Path(suite) / f"{task}.csv"
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("split") == "test"]
        except OSError as exc:
            raise SystemExit(f"'{path}': cannot read the task CSV ({exc}); build the suite first") from None
        if not rows:
            raise SystemExit(f"'{path}': no held-out (split=test) rows")
        out[qtype] = rows
    return out


def _listing(words: Sequence[str]) -> str:
    return ", ".join(words[:-1]) + f" or {words[-1]}"


def _clip_question(qtype: str, row: dict[str, str], suite: Path) -> Question:
    if qtype == "language":
        choices = list(LANGUAGE_WORD.values())
        text = f"Which language is spoken: {_listing(choices)}?"
        answer = LANGUAGE_WORD[row["label"]]
    elif qtype == "instrument":
        choices = list(FAMILY_WORD.values())
        text = f"Which instrument family is playing: {_listing(choices)}?"
        answer = FAMILY_WORD[row["label"]]
    else:
        choices = list(DRUM_WORD.values())
        text = f"Which drum piece is hit: {_listing(choices)}?"
        answer = DRUM_WORD[row["label"]]
    path = Path(suite) / row["file_name"]
    return Question(qtype, str(path), text, choices, answer, duration_s=float(sf.info(str(path)).duration),
                    clips=[row["file_name"]])


def compose(out: Path, clips: Sequence[str | None], suite: Path, slot_s: float, sample_rate: int = 16000) -> float:
    """Write ``out`` (16-bit WAV): one slot of ``slot_s`` seconds per entry of ``clips`` (a suite-relative clip, cut
    to the slot and padded with silence, or ``None`` = a silent slot); returns the duration in seconds."""
    n = int(round(slot_s * sample_rate))
    with sf.SoundFile(str(out), "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as fh:
        for clip in clips:
            slot = np.zeros(n, dtype=np.float32)
            if clip is not None:
                wave = load_audio(Path(suite) / clip, sample_rate)[0][:n]
                slot[:wave.size] = wave
            fh.write(slot)
    return len(clips) * n / sample_rate


def _filler(rows: dict[str, list[dict[str, str]]], rng: np.random.Generator) -> str | None:
    """A slot that is not a drum: an instrument note, speech or silence."""
    kind = rng.choice(["instrument", "language", "silence"], p=[0.45, 0.35, 0.2])
    if kind == "silence":
        return None
    pool = rows[str(kind)]
    return pool[int(rng.integers(len(pool)))]["file_name"]


def _drum_clip(rows: dict[str, list[dict[str, str]]], label: str, rng: np.random.Generator) -> str:
    pool = [r for r in rows["drum"] if r["label"] == label]
    return pool[int(rng.integers(len(pool)))]["file_name"]


def _count_question(rows: dict[str, list[dict[str, str]]], suite: Path, out: Path, slot_s: float, n_slots: int,
                    rng: np.random.Generator) -> Question:
    label = str(rng.choice(sorted({r["label"] for r in rows["drum"]})))
    k = int(rng.integers(1, 6))
    # k hits in k of the even slots (a filler between any two), fillers elsewhere
    places = sorted(rng.choice(np.arange(0, n_slots, 2), size=k, replace=False).tolist())
    clips = [_drum_clip(rows, label, rng) if i in places else _filler(rows, rng) for i in range(n_slots)]
    word = DRUM_WORD[label]
    duration = compose(out, clips, suite, slot_s)
    return Question("count", str(out), f"How many times is the {word} hit?", [str(i) for i in range(1, 6)], str(k),
                    target=word, duration_s=duration, clips=[c for c in clips if c])


def _first_question(rows: dict[str, list[dict[str, str]]], suite: Path, out: Path, slot_s: float, n_slots: int,
                    rng: np.random.Generator) -> Question:
    label = str(rng.choice(sorted({r["label"] for r in rows["drum"]})))
    first = int(rng.integers(1, n_slots))
    later = [i for i in range(first + 2, n_slots)]
    again = set(rng.choice(later, size=min(len(later), int(rng.integers(0, 3))), replace=False).tolist())
    clips = [_drum_clip(rows, label, rng) if i == first or i in again else _filler(rows, rng)
             for i in range(n_slots)]
    others = rng.choice([i for i in range(n_slots) if i != first], size=3, replace=False).tolist()
    choices = [format_time(i * slot_s) for i in sorted([first, *others])]
    word = DRUM_WORD[label]
    duration = compose(out, clips, suite, slot_s)
    # the times are not in the free question (a time in it would be read as "what happens at that time?");
    # --choices hands them to the answerer
    return Question("first_time", str(out), f"When is the {word} first heard?", choices,
                    format_time(first * slot_s), target=word, truth_s=first * slot_s, duration_s=duration,
                    clips=[c for c in clips if c])


def make_questions(suite: Path, work: Path, n_per_type: int, *, slot_s: float = 3.0, n_slots: int = 12,
                   seed: int = 0, types: Sequence[str] = QTYPES) -> list[Question]:
    """``n_per_type`` questions of each type in ``types`` (seeded), composed files written under ``work``."""
    rng = np.random.default_rng(seed)
    rows = test_rows(suite)
    work.mkdir(parents=True, exist_ok=True)
    out: list[Question] = []
    for qtype in types:
        for i in range(n_per_type):
            if qtype in TASK_OF:
                pool = rows[qtype]
                out.append(_clip_question(qtype, pool[int(rng.integers(len(pool)))], suite))
            elif qtype == "speech":
                yes = i % 2 == 0
                pool = rows["language"] if yes else rows[str(rng.choice(["drum", "instrument"]))]
                row = pool[int(rng.integers(len(pool)))]
                path = Path(suite) / row["file_name"]
                out.append(Question("speech", str(path), "Is there speech in this recording?", ["yes", "no"],
                                    "yes" if yes else "no", duration_s=float(sf.info(str(path)).duration),
                                    clips=[row["file_name"]]))
            elif qtype == "count":
                out.append(_count_question(rows, suite, work / f"count-{i:03d}.wav", slot_s, n_slots, rng))
            elif qtype == "first_time":
                out.append(_first_question(rows, suite, work / f"first-{i:03d}.wav", slot_s, n_slots, rng))
            else:
                raise SystemExit(f"unknown question type {qtype!r} (known: {', '.join(QTYPES)})")
    return out


# ---------------------------------------------------------------------- reading free answers back
def read_answer(question: Question, text: str, segment_s: float) -> tuple[str | None, bool]:
    """``(the choice a free answer gives, whether it is right)``.

    Named choices: the one named first (the longer one where two start at the same place). Yes / no: the
    answer's first word, else "no" when it says "not", else "yes". Counts: the first count stated
    (:func:`~kikimimi.inference.grounded.stated_count`). Times: the first time named, right when it is within
    ``segment_s`` of the true first time (then read as the nearest choice).
    An answer that gives none of these is wrong.
    """
    text = text or ""
    if question.qtype == "speech":
        m = re.match(r"\W*(yes|no)\b", text, re.I)
        said = m.group(1).lower() if m else ("no" if re.search(r"\bnot?\b|cannot", text, re.I) else "yes")
        return said, said == question.answer
    if question.qtype == "count":
        n = stated_count(text)
        said = None if n is None else str(n)
        return said, said == question.answer
    if question.qtype == "first_time":
        times = parse_times(text)
        if not times or question.truth_s is None:
            return None, False
        t = times[0]
        said = min(question.choices, key=lambda c: abs(parse_times(c)[0] - t))
        return said, abs(t - question.truth_s) <= segment_s
    found = []
    for c in question.choices:
        m = re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", text, re.I)
        if m:
            found.append((m.start(), -len(c), c))
    said = min(found)[2] if found else None
    return said, said == question.answer
