"""Evidence about a recording of any length: what the audio models say about each segment, in one structure.

:func:`build_evidence` streams a file window by window (:func:`stream_windows`, the one rule of
:func:`kikimimi.inference.windows.window_bounds`; memory ~ two windows and one batch, whatever the duration) and
records per segment:

- its times (``start_s``, ``end_s``; seconds from the start of the file);
- its loudness: RMS and peak level in dBFS (0 dBFS = a full-scale square wave; a full-scale sine is −3 dBFS;
  digital silence is floored at :data:`FLOOR_DBFS`) and a ``silent`` flag (RMS below ``silence_dbfs`` and peak
  below ``silence_dbfs`` + :data:`SILENT_PEAK_MARGIN_DB`: a short hit in a quiet segment is not silence);
- the ``top_k`` zero-shot tags of a CLAP model over a label vocabulary (``template.format(label)`` captions,
  :func:`kikimimi.inference.zeroshot.zero_shot_scores` with the model's temperature: a softmax over the labels),
  and (``keep_scores``) the cosine score of every label, so that a question about any label can be answered;
- the captioner's caption of the segment, when a captioner is given.

File-level summaries (:class:`TagSummary`, most frequent first) count, for each label, the non-silent segments
that have it among their top tags, the segments where it is the top tag, when it first starts and last ends,
and its spans (runs of consecutive segments). Where a label is heard — to count it, find when it first occurs
— is :meth:`Evidence.presence` (:class:`Presence`), the one rule that both answerers use: a non-silent segment has
the label when the label ranks among the segment's top :data:`PRESENCE_RANK` labels (and above its median one)
*and* its score is within
:data:`PRESENCE_MARGIN` of the label's best score in the file (a threshold relative to the file, so that a model
whose scores for a label run high or low everywhere still separates the segments that have it from those that do
not); evidence without per-label scores falls back to the segments with the label among their top tags.
:class:`Evidence` is saved as JSON (:meth:`Evidence.save`, an
atomic write) and read back with :meth:`Evidence.load`; the question answering of
:mod:`kikimimi.inference.grounded` reads only this structure.

The CLAP model is anything with ``sample_rate``, ``temperature_scale``, ``encode_audio(waves, sample_rate=)``
→ ``[B, D]`` and ``encode_text(texts)`` → ``[C, D]`` (:class:`kikimimi.inference.clap.CLAPModel`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from kikimimi.audio.decode import resample, stream_audio
from kikimimi.fileio import atomic_write_json
from kikimimi.inference.windows import seconds_to_samples, window_bounds
from kikimimi.inference.zeroshot import DEFAULT_TEMPLATE, top_labels, zero_shot_scores
from kikimimi.models.caption_prompts import CAPTION_QUESTION

__all__ = [
    "DEFAULT_LABELS_FILE",
    "EVIDENCE_FORMAT",
    "FLOOR_DBFS",
    "Evidence",
    "EvidenceError",
    "EvidenceSettings",
    "PRESENCE_MARGIN",
    "PRESENCE_RANK",
    "Presence",
    "SILENT_PEAK_MARGIN_DB",
    "Segment",
    "TagScore",
    "TagSummary",
    "build_evidence",
    "default_labels",
    "level_dbfs",
    "stream_windows",
    "summarise_tags",
]

EVIDENCE_FORMAT = "kikimimi-evidence"
EVIDENCE_VERSION = 2  # 2: per-label scores of each segment (version 1 files still load, without them)
#: the level given to digital silence (an RMS or peak of 0)
FLOOR_DBFS = -120.0
#: a segment with an RMS below the silence level is still not silent when its peak is this many dB above that level
SILENT_PEAK_MARGIN_DB = 20.0
#: :meth:`Evidence.presence`: a label is heard in a segment only when it ranks among this many labels of the segment
PRESENCE_RANK = 5
#: :meth:`Evidence.presence`: … and when its cosine score is at most this far below its best score in the file
#: (chosen on held-out open-suite files composed as benchmarks/bench_questions.py does; 0.1–0.15 did equally well)
PRESENCE_MARGIN = 0.12
#: the packaged label vocabulary, the one home of the default labels of evidence, `ask`, `describe` and `kikimimi
#: serve` (one label a line; ``#`` comments and blank lines skipped)
DEFAULT_LABELS_FILE = Path(__file__).with_name("labels.txt")


def default_labels() -> list[str]:
    """The packaged label vocabulary (:data:`DEFAULT_LABELS_FILE`), in file order."""
    lines = DEFAULT_LABELS_FILE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class EvidenceError(ValueError):
    """Evidence that cannot be built or read; the message names the file and the problem."""


class ZeroShotModel(Protocol):
    """What :func:`build_evidence` needs of a CLAP model."""

    sample_rate: int
    temperature_scale: float

    def encode_audio(self, audio: Any, sample_rate: int | None = None, batch_size: int = 8) -> np.ndarray: ...

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class EvidenceSettings:
    """How evidence is gathered.

    Attributes:
        segment_s: segment (window) length in seconds.
        hop_s: seconds between segment starts; ``None`` = ``segment_s`` (non-overlapping segments; the last
            remainder follows the ``"merge"`` tail of :func:`~kikimimi.inference.windows.window_bounds`).
            Overlapping segments follow its ``"full"`` tail.
        top_k: zero-shot tags kept per segment.
        template: caption template of the labels (``{}`` = the label).
        silence_dbfs: a segment whose RMS level is below this (dBFS) is ``silent``.
        batch_size: segments embedded together.
        caption_question: the question put to the captioner (``None``: its own caption question).
        keep_scores: keep every label's cosine score per segment (``Segment.scores``; 4 decimals), which
            :meth:`Evidence.presence` needs; off: only the top tags (a smaller JSON for huge vocabularies).
    """

    segment_s: float = 10.0
    hop_s: float | None = None
    top_k: int = 3
    template: str = DEFAULT_TEMPLATE
    silence_dbfs: float = -60.0
    batch_size: int = 8
    caption_question: str | None = None
    keep_scores: bool = True

    def __post_init__(self) -> None:
        if not self.segment_s > 0:
            raise EvidenceError(f"segment length {self.segment_s} s: must be positive")
        if self.hop_s is not None and not self.hop_s > 0:
            raise EvidenceError(f"hop {self.hop_s} s: must be positive")
        if self.top_k < 1 or self.batch_size < 1:
            raise EvidenceError(f"top_k {self.top_k} and batch_size {self.batch_size}: must be at least 1")
        if "{}" not in self.template:
            raise EvidenceError(f"template {self.template!r}: needs {{}} where the label goes")

    @property
    def tail(self) -> str:
        """``"merge"`` for non-overlapping segments, ``"full"`` for overlapping ones."""
        return "merge" if self.hop_s is None or self.hop_s == self.segment_s else "full"


@dataclass
class TagScore:
    """One zero-shot tag of a segment: ``probability`` (softmax over the vocabulary) and ``score`` (cosine)."""

    label: str
    probability: float
    score: float


@dataclass
class Segment:
    """What the models say about one segment ``[start_s, end_s)`` (seconds). Levels in dBFS. ``scores``: the
    cosine score of every label of :attr:`Evidence.labels`, in that order (``None`` when not kept)."""

    index: int
    start_s: float
    end_s: float
    rms_dbfs: float
    peak_dbfs: float
    silent: bool
    tags: list[TagScore] = field(default_factory=list)
    caption: str | None = None
    scores: list[float] | None = None

    def labels(self) -> list[str]:
        return [t.label for t in self.tags]


@dataclass
class TagSummary:
    """One label over the whole file (non-silent segments only).

    Attributes:
        segments: segments with the label among their top tags; ``top1``: those where it is the first.
        first_s: start of the first such segment; ``last_s``: end of the last one.
        spans: ``[[start_s, end_s], …]`` runs of consecutive such segments, in time order; ``top_spans``: the
            same for the segments where it is the top tag.
        mean_probability: its mean probability over those segments.
    """

    label: str
    segments: int
    top1: int
    first_s: float
    last_s: float
    spans: list[list[float]]
    top_spans: list[list[float]]
    mean_probability: float


@dataclass
class Presence:
    """Where one label is heard (:meth:`Evidence.presence`).

    Attributes:
        label: the label. segments: indices of the segments that have it, in time order. spans: ``[[start_s, end_s],
        …]`` runs of consecutive such segments (each run counts as one occurrence). by_score: ``True`` when decided
        from the per-label scores (rank and file-relative threshold), ``False`` from the top tags alone.
        threshold: the cosine score a segment needed (``None`` without scores).
    """

    label: str
    segments: list[int]
    spans: list[list[float]]
    by_score: bool
    threshold: float | None = None

    @property
    def count(self) -> int:
        """How many separate times the label is heard (its runs)."""
        return len(self.spans)

    @property
    def first_s(self) -> float | None:
        return self.spans[0][0] if self.spans else None

    def how(self) -> str:
        """How the segments were chosen, in words."""
        if self.by_score:
            return f"among the top {PRESENCE_RANK} labels, score at least {self.threshold:.2f}"
        return "among the top tags"


@dataclass
class Evidence:
    """Evidence about one file: its segments in time order and the file-level summaries.

    Attributes:
        file: the audio file. duration_s: its length (seconds, at the model rate). sample_rate: the model rate.
        labels: the vocabulary scored. settings: :class:`EvidenceSettings` as a dict. models: what made it
            (``{"clap": …, "text_encoder": …, "captioner": …}``).
        segments: :class:`Segment` list. tags: :class:`TagSummary` list, most frequent first (:func:`summarise_tags`).
        silent_s: seconds covered by silent segments (overlaps counted once). mean_dbfs: the file's RMS level.
    """

    file: str
    duration_s: float
    sample_rate: int
    labels: list[str]
    settings: dict[str, Any]
    models: dict[str, Any]
    segments: list[Segment]
    tags: list[TagSummary]
    silent_s: float
    mean_dbfs: float

    # ------------------------------------------------------------------ look-ups
    def tag(self, label: str) -> TagSummary | None:
        """The summary of ``label`` (``None``: never among the top tags of a non-silent segment)."""
        return next((t for t in self.tags if t.label == label), None)

    def presence(self, label: str, *, rank: int = PRESENCE_RANK, margin: float = PRESENCE_MARGIN) -> Presence | None:
        """Where ``label`` is heard (module docstring): the non-silent segments where it ranks among the top
        ``rank`` labels, scores above the segment's median label (so that ties and tiny vocabularies do not count)
        and its cosine score is at least its best score over the file's non-silent segments less ``margin``;
        without per-label scores, those with it among their top tags. ``None``: not a label of the vocabulary.
        Time: O(segments × labels)."""
        if label not in self.labels:
            return None
        live = [s for s in self.segments if not s.silent]
        col = self.labels.index(label)
        by_score = bool(live) and all(s.scores is not None and len(s.scores) == len(self.labels) for s in live)
        threshold = None
        if by_score:
            threshold = round(max(s.scores[col] for s in live) - margin, 4)
            hits = [s for s in live if s.scores[col] >= threshold and sum(v > s.scores[col] for v in s.scores) < rank
                    and s.scores[col] > float(np.median(s.scores))]
        else:
            hits = [s for s in live if label in s.labels()]
        spans: list[list[float]] = []
        previous = -2
        for s in hits:
            _add_to_spans(spans, s, previous)
            previous = s.index
        return Presence(label, [s.index for s in hits], spans, by_score, threshold)

    def segments_at(self, time_s: float) -> list[Segment]:
        """The segments that contain ``time_s`` (the last segment also contains the file's end)."""
        hits = [s for s in self.segments if s.start_s <= time_s < s.end_s]
        if not hits and self.segments and time_s == self.segments[-1].end_s:
            hits = [self.segments[-1]]
        return hits

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {"format": EVIDENCE_FORMAT, "format_version": EVIDENCE_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "evidence") -> Evidence:
        """Read :meth:`to_dict`'s layout back.

        Raises:
            EvidenceError: another format or a missing field.
        """
        found = data.get("format") if isinstance(data, dict) else None
        if found != EVIDENCE_FORMAT:
            raise EvidenceError(f"'{where}': not kikimimi evidence (format {found!r}, expected {EVIDENCE_FORMAT!r}; "
                                "make it with kikimimi evidence)")
        try:
            segments = [Segment(**{**s, "tags": [TagScore(**t) for t in s["tags"]]}) for s in data["segments"]]
            width = len(data["labels"])
            if any(s.scores is not None and len(s.scores) != width for s in segments):
                raise ValueError(f"a segment's scores do not match the {width} labels")
            tags = [TagSummary(**t) for t in data["tags"]]
            names = {f.name for f in fields(cls)} - {"segments", "tags"}
            return cls(segments=segments, tags=tags, **{k: data[k] for k in names})
        except (KeyError, TypeError) as exc:
            raise EvidenceError(f"'{where}': incomplete evidence ({type(exc).__name__}: {exc})") from exc
        except ValueError as exc:
            raise EvidenceError(f"'{where}': bad evidence ({exc})") from exc

    def save(self, path: str | os.PathLike) -> Path:
        """Write the evidence as JSON (atomically); returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, self.to_dict())
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> Evidence:
        """Read a file written by :meth:`save`.

        Raises:
            EvidenceError: unreadable, not JSON, or not evidence.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EvidenceError(f"'{path}': cannot read evidence ({type(exc).__name__}: {exc})") from exc
        return cls.from_dict(data, str(path))


# ---------------------------------------------------------------------- streaming windows
def stream_windows(path: str | os.PathLike, sample_rate: int, window_s: float, hop_s: float | None = None, *,
                   tail: str = "merge") -> Iterator[tuple[int, int, np.ndarray]]:
    """``(start, end, wave [end - start])`` of each window of ``path`` (mono, resampled to ``sample_rate``), in
    time order, exactly the windows of :func:`~kikimimi.inference.windows.window_bounds` of the whole decoded file
    — without decoding it whole.

    A window is handed out as soon as no later sample can change it (``"full"``: once its last sample has been read;
    ``"merge"``: once a second window's worth follows it, so it is neither the last nor merged with a short
    remainder); the rest come from ``window_bounds`` of the final length. Memory: about two windows and one hop.

    Raises:
        ValueError: ``window_s <= 0``, an unknown ``tail`` or ``"merge"`` with overlapping windows.
        kikimimi.audio.decode.AudioDecodeError: an unreadable file (possibly after some windows).
    """
    if not window_s > 0:
        raise ValueError(f"'{path}': streamed windows need a positive window length, got {window_s}")
    window_bounds(0, sample_rate, window_s, hop_s, tail=tail)  # validates tail and hop
    win = seconds_to_samples(window_s, sample_rate)
    hop = win if hop_s is None else max(1, seconds_to_samples(hop_s, sample_rate))
    settled = win if tail == "full" else 2 * win  # samples after a window's start that make its bounds final
    buf = np.zeros(0, dtype=np.float32)
    buf_start = total = emitted = 0  # buf[0] is sample buf_start of the file
    next_start = 0
    for block in stream_audio(path, max(1, min(hop, win)), sample_rate=sample_rate):
        buf = np.concatenate([buf, block])
        total += block.size
        while total >= next_start + settled:
            a = next_start - buf_start
            yield next_start, next_start + win, buf[a:a + win].copy()
            emitted += 1
            buf, buf_start = buf[a:], next_start  # keep from the last window's start: the "full" tail may start there
            next_start += hop
    bounds = window_bounds(total, sample_rate, window_s, hop_s, tail=tail)
    if emitted and bounds[emitted - 1] != (next_start - hop, next_start - hop + win):  # never: the rule above
        raise RuntimeError(f"'{path}': streamed windows disagree with window_bounds at window {emitted - 1}")
    for start, end in bounds[emitted:]:
        yield start, end, buf[start - buf_start:end - buf_start].copy()


def level_dbfs(wave: np.ndarray) -> tuple[float, float]:
    """``(rms dBFS, peak dBFS)`` of a waveform ``[samples]`` in [-1, 1] (0 dBFS: full-scale square wave; floored
    at :data:`FLOOR_DBFS`)."""
    x = np.asarray(wave, dtype=np.float64)
    if x.size == 0:
        return FLOOR_DBFS, FLOOR_DBFS
    rms, peak = math.sqrt(float(np.mean(x * x))), float(np.max(np.abs(x)))

    def db(v: float) -> float:
        return round(max(FLOOR_DBFS, 20.0 * math.log10(v)) if v > 0 else FLOOR_DBFS, 2)

    return db(rms), db(peak)


# ---------------------------------------------------------------------- summaries
def _add_to_spans(spans: list[list[float]], seg: Segment, previous_index: int) -> None:
    """Extend the last span when ``seg`` follows the segment ``previous_index`` and touches the span, else
    open a new span."""
    if spans and previous_index == seg.index - 1 and seg.start_s <= spans[-1][1]:
        spans[-1][1] = max(spans[-1][1], seg.end_s)
    else:
        spans.append([seg.start_s, seg.end_s])


def summarise_tags(segments: Sequence[Segment]) -> list[TagSummary]:
    """Per label, over the non-silent ``segments`` (time order): counts, first / last time and spans; most frequent
    first (segments where it is the top tag, then segments where it is among the top tags; then first occurrence)."""
    acc: dict[str, dict[str, Any]] = {}
    for seg in segments:
        if seg.silent:
            continue
        for rank, tag in enumerate(seg.tags):
            a = acc.setdefault(tag.label, {"n": 0, "top1": 0, "p": 0.0, "spans": [], "top_spans": [],
                                           "last": -2, "last_top": -2})
            a["n"] += 1
            a["p"] += tag.probability
            _add_to_spans(a["spans"], seg, a["last"])
            a["last"] = seg.index
            if rank == 0:
                a["top1"] += 1
                _add_to_spans(a["top_spans"], seg, a["last_top"])
                a["last_top"] = seg.index
    out = [TagSummary(label, a["n"], a["top1"], a["spans"][0][0], a["spans"][-1][1], a["spans"], a["top_spans"],
                      round(a["p"] / a["n"], 6)) for label, a in acc.items()]
    return sorted(out, key=lambda t: (-t.top1, -t.segments, t.first_s, t.label))


def _covered_s(spans: Sequence[tuple[float, float]]) -> float:
    """Seconds covered by time-ordered spans (overlaps counted once)."""
    total, reach = 0.0, -math.inf
    for a, b in spans:
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


# ---------------------------------------------------------------------- building
def build_evidence(path: str | os.PathLike, clap: ZeroShotModel, labels: Sequence[str],
                   settings: EvidenceSettings | None = None, *, captioner: Any = None,
                   models: dict[str, Any] | None = None, progress: bool = False) -> Evidence:
    """Evidence about one audio file (module docstring), streamed: memory does not grow with its duration.

    Args:
        path: an audio file of any length.
        clap: the zero-shot model (:class:`ZeroShotModel`; a :class:`~kikimimi.inference.clap.CLAPModel`).
        labels: the label vocabulary (at least one; no repeats).
        captioner: a :class:`~kikimimi.inference.captioner.Captioner` to caption each segment, or ``None``.
        models: what to record as the models that made the evidence (names or paths); the CLAP model's text
            encoder is recorded as ``text_encoder`` unless given.
        progress: a progress bar (segments) on stderr.

    Raises:
        EvidenceError: an empty or repeated label list.
        kikimimi.audio.decode.AudioDecodeError: an unreadable file.
    """
    settings = settings or EvidenceSettings()
    labels = [str(label).strip() for label in labels]
    if not labels or any(not label for label in labels):
        raise EvidenceError(f"'{path}': the label vocabulary is empty or has an empty label")
    if len(set(labels)) != len(labels):
        raise EvidenceError(f"'{path}': the label vocabulary names a label twice")
    sr = int(clap.sample_rate)
    text = np.asarray(clap.encode_text([settings.template.format(label) for label in labels]), dtype=np.float32)
    scale = float(getattr(clap, "temperature_scale", 1.0))
    describe_text = getattr(clap, "text_encoder_description", None)  # known once encode_text has resolved it
    models = {**({"text_encoder": describe_text()} if callable(describe_text) else {}), **(models or {})}
    question = settings.caption_question
    if captioner is not None and question is None:
        question = str(captioner.config.get("caption_question") or CAPTION_QUESTION)
    segments: list[Segment] = []
    sum_sq, n_samples = 0.0, 0
    bar = None
    if progress:
        bar = tqdm(desc=Path(path).name, unit="segment", dynamic_ncols=True)

    def flush(batch: list[tuple[int, int, np.ndarray]]) -> None:
        emb = np.asarray(clap.encode_audio([w for _a, _b, w in batch], sample_rate=sr,
                                           batch_size=settings.batch_size), dtype=np.float32).reshape(len(batch), -1)
        scores = zero_shot_scores(emb, text, scale)
        for row, (a, b, wave) in enumerate(batch):
            rms, peak = level_dbfs(wave)
            tags = [TagScore(t["label"], t["probability"], t["score"])
                    for t in top_labels(scores, labels, row, settings.top_k)]
            silent = rms < settings.silence_dbfs and peak < settings.silence_dbfs + SILENT_PEAK_MARGIN_DB
            segments.append(Segment(len(segments), round(a / sr, 3), round(b / sr, 3), rms, peak, silent, tags,
                                     _caption(captioner, wave, sr, question) if captioner is not None else None,
                                     [round(float(v), 4) for v in scores.cosine[row]]
                                     if settings.keep_scores else None))
        if bar is not None:
            bar.update(len(batch))

    batch: list[tuple[int, int, np.ndarray]] = []
    end = 0
    try:
        for a, b, wave in stream_windows(path, sr, settings.segment_s, settings.hop_s, tail=settings.tail):
            if b > end:  # new samples for the file level (overlapping windows counted once)
                new = wave[max(0, end - a):].astype(np.float64)
                sum_sq += float(np.sum(new * new))
                n_samples += new.size
                end = b
            batch.append((a, b, wave))
            if len(batch) == settings.batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        if bar is not None:
            bar.close()
    mean_dbfs = level_dbfs(np.array([math.sqrt(sum_sq / n_samples)]) if n_samples else np.zeros(0))[0]
    return Evidence(
        file=str(path), duration_s=round(end / sr, 3), sample_rate=sr, labels=labels, settings=asdict(settings),
        models=dict(models or {}), segments=segments, tags=summarise_tags(segments),
        silent_s=round(_covered_s([(s.start_s, s.end_s) for s in segments if s.silent]), 3), mean_dbfs=mean_dbfs,
    )  # fmt: skip


def _caption(captioner: Any, wave: np.ndarray, sample_rate: int, question: str | None) -> str:
    """The captioner's answer to ``question`` for one segment ``wave`` at ``sample_rate`` Hz."""
    rate = int(captioner.encoder.sample_rate)
    if rate != sample_rate:
        wave = resample(wave, sample_rate, rate)
    frames = captioner.frames([wave], rate)[0]
    return captioner.answer_frames(frames, question)[0]
