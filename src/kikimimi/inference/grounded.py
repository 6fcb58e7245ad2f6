"""Answers grounded in the evidence of :mod:`kikimimi.inference.evidence`, citing the segment times they rest on.

Two answerers read the same :class:`~kikimimi.inference.evidence.Evidence`:

- :func:`rule_answer` needs no language model: it finds the labels of the vocabulary a question names (content
  words, crude stemming) and the times it gives (``1:30``, ``90 s``, ``2 minutes``), and answers "when does X
  happen", "is there X", "how many times", "when is X first heard" from where X is heard
  (:meth:`~kikimimi.inference.evidence.Evidence.presence`: the per-label scores, ranked and thresholded relative
  to the file), "what happens at T", "is it silent (at T)", "the loudest / quietest part" and "what sounds are in
  it". A question about a sound the vocabulary has no label for is answered "I cannot tell" — never with a guess.
- :func:`lm_answer` gives a local causal language model (:func:`kikimimi.models.causal_lm.load_causal_lm`) a
  short prompt ordered by relevance: the computed facts about the sounds the question names (:func:`label_facts`:
  how many times, where, first and last), the rule answerer's findings, then a bounded timeline; it answers citing
  times. Its reply is checked against the facts (yes / no, the count, the leading sound of a "which" question, the
  times) and replaced by the findings when it contradicts them; a reply naming no time gets the findings' times.

:func:`describe` turns the evidence into a timeline of at most a dozen parts and a short paragraph.

:func:`choose` answers a multiple-choice question: with a language model, the choice of the highest mean token
log-likelihood after the prompt, calibrated by the same without the evidence (the prompt run once, its key/value
cache reused for every choice); without one,
the choice the findings name (else the best-scoring matched label).
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from kikimimi.inference.evidence import Evidence, Presence, Segment, TagSummary
from kikimimi.models.caption_prompts import clean_decoded, prompt_ids

__all__ = [
    "CANNOT_TELL",
    "Answer",
    "Citation",
    "Description",
    "Part",
    "choice_logprobs",
    "choose",
    "describe",
    "evidence_text",
    "format_span",
    "format_time",
    "label_facts",
    "lm_answer",
    "match_labels",
    "parse_times",
    "rule_answer",
    "stated_count",
    "timeline",
]

#: how an answer that the evidence cannot support begins
CANNOT_TELL = "I cannot tell from the evidence"

_STOP = set(
    "a an the of is are was were be been can could heard hear hearing sound sounds noise some someone something there "
    "it its this that these those in on at to and or does do did when what where which who how many much often time "
    "times first last any anything recording file audio clip you i we me from with by for s please tell about "
    "happen happens happening occur occurs present playing heard".split()
)
_SILENCE = re.compile(r"\b(silen(t|ce)|quiet|nothing)\b", re.I)
_LOUD = re.compile(r"\b(loudest|quietest|softest|loud|loudness|level)\b", re.I)
_WHEN = re.compile(r"\b(when|what time|at what point|where in|start|begin|first|last|end)\b", re.I)
_COUNT = re.compile(r"\b(how many|how often|number of|count)\b", re.I)
_YESNO = re.compile(r"^\s*(is|are|was|were|does|do|did|can|could|has|have)\b|\b(any|contain)\b", re.I)
_OVERVIEW = re.compile(r"\b(what|which|describe|summar\w*|happen\w*|going on|kind|content)\b", re.I)
_REFERS_BACK = re.compile(r"\b(it|its|that|they|them|this|those|these|he|she|one|again)\b", re.I)
#: words of "what is going on" questions that name no sound
_OVERVIEW_WORDS = {"describe", "summary", "summarise", "summarize", "kind", "content", "go", "going", "on", "type",
                   "main", "overall", "give", "list", "whole", "thing", "label", "tag"}
_CLOCK = re.compile(r"\b(\d+):(\d{1,2})(?::(\d{1,2}))?(\.\d+)?\b")
_AMOUNT = re.compile(r"\b(\d+(?:\.\d+)?)\s*(h|hours?|min|mins|minutes?|s|secs?|seconds?)\b", re.I)
#: what a count is not part of: a time, an amount of time, a level or a share
_TIME_LIKE = re.compile(r"\d+:\d+(?::\d+)?(?:\.\d+)?|\d+(?:\.\d+)?\s*(?:h|hours?|min|mins|minutes?|s|secs?|seconds?)\b"
                        r"|\d+\s*dBFS|\d+\s*%", re.I)
_NUMBER_WORDS = {"once": 1, "one": 1, "twice": 2, "two": 2, "three": 3, "thrice": 3, "four": 4, "five": 5,
                 "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "no": 0, "never": 0, "zero": 0}


@dataclass
class Citation:
    """A stretch of the recording an answer rests on (seconds) and what the evidence says there."""

    start_s: float
    end_s: float
    what: str = ""


@dataclass
class Answer:
    """An answer and its grounding.

    Attributes:
        question, text: the question and the answer. known: ``False`` when the evidence cannot answer.
        citations: the stretches the answer rests on. answered_by: ``"rules"`` or ``"lm:SPEC"``.
        labels: the vocabulary labels the question was matched to. grounding: the text the answer was made from
            (the findings; with a language model, the whole prompt's evidence).
        choice, choice_scores: for multiple-choice questions, the chosen option and each option's score.
        model_reply: what the language model said (also when the findings replaced it), else ``None``.
    """

    question: str
    text: str
    known: bool
    citations: list[Citation] = field(default_factory=list)
    answered_by: str = "rules"
    labels: list[str] = field(default_factory=list)
    grounding: str = ""
    choice: str | None = None
    choice_scores: dict[str, float] | None = None
    model_reply: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- times
def format_time(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on), with one decimal when not a whole second: 75.5 → ``1:15.5``."""
    s = max(0.0, float(seconds))
    whole = math.floor(s + 1e-6)
    frac = s - whole
    h, rest = divmod(whole, 3600)
    m, sec = divmod(rest, 60)
    out = f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
    return out + (f".{round(frac * 10) % 10}" if frac >= 0.05 else "")


def format_span(start_s: float, end_s: float) -> str:
    return f"{format_time(start_s)}–{format_time(end_s)}"


def parse_times(text: str) -> list[float]:
    """Times (seconds) named in ``text``: ``m:ss``/``h:mm:ss`` clocks and amounts such as ``90 s``, ``2 minutes``."""
    found: list[tuple[int, float]] = []
    taken: list[tuple[int, int]] = []
    for m in _CLOCK.finditer(text):
        a, b, c = int(m.group(1)), int(m.group(2)), m.group(3)
        value = a * 3600 + b * 60 + int(c) if c is not None else a * 60 + b
        found.append((m.start(), value + (float(m.group(4)) if m.group(4) else 0.0)))
        taken.append(m.span())
    for m in _AMOUNT.finditer(text):
        if any(a <= m.start() < b for a, b in taken):
            continue
        unit = m.group(2).lower()
        factor = 3600.0 if unit.startswith("h") else 60.0 if unit.startswith("m") else 1.0
        found.append((m.start(), float(m.group(1)) * factor))
    return [t for _pos, t in sorted(found)]


def stated_count(text: str, ignore: Sequence[str] = ()) -> int | None:
    """The first count a text states: a number that is not part of a time, a level, a share or one of the
    ``ignore`` phrases (labels such as "a 440 Hz tone"), or a number word ("twice"; "no" / "one" only before "time"
    or "hit"); ``None`` when it states none."""
    masked = text or ""
    for phrase in sorted(ignore, key=len, reverse=True):
        masked = re.sub(re.escape(phrase), lambda m: " " * len(m.group(0)), masked, flags=re.I)
    masked = _TIME_LIKE.sub(lambda m: " " * len(m.group(0)), masked)
    hits = [(m.start(), int(m.group(0))) for m in re.finditer(r"(?<![\w.])\d+(?![\w.])", masked)]
    hits += [(m.start(), _NUMBER_WORDS[m.group(0).lower()])
             for m in re.finditer(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", masked, re.I)
             if m.group(0).lower() not in ("no", "one") or re.search(r"time|hit", masked[m.end():m.end() + 12], re.I)]
    return min(hits)[1] if hits else None


# ---------------------------------------------------------------------- labels in a question
def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _content(text: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP}


def match_labels(question: str, labels: Sequence[str]) -> list[str]:
    """The labels a question names: those sharing the largest fraction (at least half) of their content words
    with it (``"when does the dog bark"`` → ``"a dog barking"``), in vocabulary order."""
    words = _content(question)
    scored = []
    for label in labels:
        own = _content(label)
        if own:
            scored.append((len(own & words) / len(own), label))
    best = max((s for s, _l in scored), default=0.0)
    return [label for s, label in scored if s >= 0.5 and s == best]


# ---------------------------------------------------------------------- evidence as text
def timeline(evidence: Evidence) -> list[tuple[float, float, str, list[Segment]]]:
    """Runs of consecutive segments with the same top tag (or all silent): ``(start_s, end_s, what, segments)``,
    ``what`` = the top label or ``"silence"``."""
    runs: list[tuple[float, float, str, list[Segment]]] = []
    for seg in evidence.segments:
        what = "silence" if seg.silent else (seg.tags[0].label if seg.tags else "?")
        if runs and runs[-1][2] == what and seg.start_s <= runs[-1][1]:
            a, _b, w, segs = runs[-1]
            runs[-1] = (a, max(_b, seg.end_s), w, [*segs, seg])
        else:
            runs.append((seg.start_s, seg.end_s, what, [seg]))
    return runs


def _spans_text(spans: Sequence[Sequence[float]], limit: int = 6) -> str:
    shown = ", ".join(format_span(a, b) for a, b in spans[:limit])
    return shown + (f" and {len(spans) - limit} more" if len(spans) > limit else "")


def _run_line(start_s: float, end_s: float, what: str, segs: list[Segment]) -> str:
    level = max(s.rms_dbfs for s in segs)
    if what == "silence":
        return f"{format_span(start_s, end_s)} silent ({level:.0f} dBFS)"
    others: dict[str, int] = {}
    for s in segs:
        for t in s.tags[1:]:
            others[t.label] = others.get(t.label, 0) + 1
    also = sorted(others, key=lambda k: -others[k])[:2]
    line = f"{format_span(start_s, end_s)} {what}" + (f" (also {', '.join(also)})" if also else "")
    line += f", {level:.0f} dBFS"
    captions = [s.caption for s in segs if s.caption]
    return line + (f'; caption: "{captions[0]}"' if captions else "")


def _header(evidence: Evidence) -> str:
    seg_s = float(evidence.settings.get("segment_s") or 0.0)
    return (f"Recording '{Path(evidence.file).name}', {format_time(evidence.duration_s)} long, "
            f"{len(evidence.segments)} segments of {seg_s:g} s; level {evidence.mean_dbfs:.0f} dBFS; "
            f"silent for {format_time(evidence.silent_s)} in total.")


def _timeline_lines(evidence: Evidence, max_lines: int) -> list[str]:
    runs = timeline(evidence)
    lines = ["Timeline:", *(_run_line(*r) for r in runs[:max_lines])]
    if len(runs) > max_lines:
        lines.append(f"... and {len(runs) - max_lines} more parts until {format_time(evidence.duration_s)}")
    return lines


def evidence_text(evidence: Evidence, *, max_lines: int = 40, max_tags: int = 8) -> str:
    """The evidence as compact text for a language model (or a person): the file, the most frequent sounds with
    their spans, and the timeline (runs of segments with the same top tag; at most ``max_lines``)."""
    lines = [_header(evidence)]
    if evidence.tags:
        lines.append("Sounds detected (label: segments where it is among the top tags; times):")
        for t in evidence.tags[:max_tags]:
            lines.append(f"- {t.label}: {t.segments} segments (top tag in {t.top1}); {_spans_text(t.spans)}")
    lines.extend(_timeline_lines(evidence, max_lines))
    return "\n".join(lines)


def _heard(evidence: Evidence, labels: Sequence[str]) -> list[tuple[str, Presence]]:
    """``(label, presence)`` of the labels that are heard somewhere, the strongest first (top tag most often, then
    most segments, then the highest mean score where heard): "which language…?" leads with the answer."""
    out = []
    for label in labels:
        p = evidence.presence(label)
        if p is None or not p.segments:
            continue
        t = evidence.tag(label)
        where = set(p.segments)
        scores = [s.scores[evidence.labels.index(label)] for s in evidence.segments
                  if s.index in where and s.scores is not None]
        key = (-(t.top1 if t else 0), -len(p.segments), -(sum(scores) / len(scores) if scores else 0.0))
        out.append((key, label, p))
    return [(label, p) for _k, label, p in sorted(out, key=lambda x: x[0])]


def label_facts(evidence: Evidence, labels: Sequence[str]) -> list[str]:
    """One line of computed facts per label, heard ones first (strongest first): ``"snare drum: heard 2 times, at
    0:03–0:06, 0:12–0:15; first at 0:03, last until 0:15"`` or ``"cymbal: not heard"``."""
    heard = _heard(evidence, labels)
    lines = []
    for label, p in heard:
        n = p.count
        lines.append(f"{label}: heard {n} time{'s' if n != 1 else ''}, at {_spans_text(p.spans)}; first at "
                     f"{format_time(p.spans[0][0])}, last until {format_time(p.spans[-1][1])}")
    names = {label for label, _p in heard}
    lines.extend(f"{label}: not heard" for label in labels if label not in names)
    return lines


# ---------------------------------------------------------------------- the rule answerer
def _cite_spans(spans: Sequence[Sequence[float]], what: str) -> list[Citation]:
    return [Citation(float(a), float(b), what) for a, b in spans]


def _cite_segment(seg: Segment) -> Citation:
    what = "silent" if seg.silent else ", ".join(seg.labels())
    return Citation(seg.start_s, seg.end_s, what)


def _describe_segment(seg: Segment) -> str:
    if seg.silent:
        return f"{format_span(seg.start_s, seg.end_s)} is silent ({seg.rms_dbfs:.0f} dBFS)"
    tags = ", ".join(f"{t.label} ({t.probability:.2f})" for t in seg.tags)
    out = f"{format_span(seg.start_s, seg.end_s)}: {tags}; {seg.rms_dbfs:.0f} dBFS"
    return out + (f'; caption: "{seg.caption}"' if seg.caption else "")


def _strong_spans(t: TagSummary) -> tuple[list[list[float]], str]:
    """Spans where the label is the top tag, else where it is among the top tags; and how to say which."""
    if t.top1:
        return t.top_spans, "as the top tag"
    return t.spans, "among the top tags (never the top one)"


def _unknown(question: str, evidence: Evidence, asked_words: set[str] | None = None) -> Answer:
    asked = sorted(asked_words if asked_words is not None else _content(question))
    about = f" about '{' '.join(asked)}'" if asked else ""
    return Answer(question, f"{CANNOT_TELL}{about}: none of its {len(evidence.labels)} labels names it.", False)


def rule_answer(evidence: Evidence, question: str, context: Sequence[str] = ()) -> Answer:
    """Answer ``question`` from ``evidence`` alone (module docstring); ``known=False`` when it cannot.

    ``context``: the labels of the conversation so far (the previous answer's), used when the question names no
    label but refers back to one ("and when does *it* end?").
    """
    q = str(question).strip()
    if not q:
        raise ValueError("the question is empty")
    labels = match_labels(q, evidence.labels)
    if not labels and context and _REFERS_BACK.search(q) and not _SILENCE.search(q):  # "is it silent" asks anew
        labels = [label for label in context if label in evidence.labels]
    sounds = [label for label in labels if not _SILENCE.search(label)]  # "silence" is read from the levels
    times = parse_times(q)
    if times:
        segs = evidence.segments_at(times[0])
        if not segs:
            return Answer(q, f"{CANNOT_TELL}: {format_time(times[0])} is past the end "
                             f"({format_time(evidence.duration_s)}).", False, labels=sounds)
        body = "; ".join(_describe_segment(s) for s in segs)
        cites = [_cite_segment(s) for s in segs]
        at = format_time(times[0])
        if _SILENCE.search(q) and not sounds:
            verdict = "Yes, it is silent" if all(s.silent for s in segs) else "No, it is not silent"
            return Answer(q, f"{verdict} at {at}: {body}.", True, cites)
        if sounds:
            hit = [s for s in segs if not s.silent and set(sounds) & set(s.labels())]
            names = " / ".join(sounds)
            verdict = f"Yes, {names} at {at}" if hit else f"No, not {names} at {at}"
            return Answer(q, f"{verdict}: {body}.", True, cites, labels=sounds)
        return Answer(q, f"At {at}: {body}.", True, cites)
    if _LOUD.search(q) and not sounds:
        loud = not re.search(r"quiet|soft", q, re.I)
        seg = (max if loud else min)(evidence.segments, key=lambda s: s.rms_dbfs)
        return Answer(q, f"The {'loudest' if loud else 'quietest'} part is {_describe_segment(seg)}.", True,
                      [_cite_segment(seg)])
    if _SILENCE.search(q) and not sounds:
        return _silence(evidence, q)
    if sounds:
        return _about_labels(evidence, q, sounds)
    residual = _content(q) - _content(" ".join(evidence.labels)) - _OVERVIEW_WORDS
    if residual or not _OVERVIEW.search(q):
        return _unknown(q, evidence, residual)
    return _overview(evidence, q)


def _silence(evidence: Evidence, q: str) -> Answer:
    silent = [s for s in evidence.segments if s.silent]
    if not silent:
        return Answer(q, f"No segment is silent (below {evidence.settings.get('silence_dbfs')} dBFS).", True)
    merged: list[list[float]] = []
    for s in silent:
        if merged and s.start_s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], s.end_s)
        else:
            merged.append([s.start_s, s.end_s])
    return Answer(q, f"Silent ({format_time(evidence.silent_s)} in total): {_spans_text(merged, 10)}.", True,
                  _cite_spans(merged, "silent"))


def _about_labels(evidence: Evidence, q: str, labels: list[str]) -> Answer:
    present = _heard(evidence, labels)
    if not present:
        names = " / ".join(labels)
        return Answer(q, f"No: {names} is not heard in any non-silent segment.", True, labels=labels)
    parts, cites = [], []
    for label, p in present:
        spans = p.spans
        if _COUNT.search(q):
            parts.append(f"{label}: {p.count} time{'s' if p.count != 1 else ''}: {_spans_text(spans)}")
        elif re.search(r"\bfirst\b", q, re.I):
            parts.append(f"{label} first occurs at {format_span(*spans[0])}")
            spans = spans[:1]
        elif re.search(r"\blast\b", q, re.I):
            parts.append(f"{label} last occurs at {format_span(*spans[-1])}")
            spans = spans[-1:]
        elif _WHEN.search(q):
            parts.append(f"{label}: {_spans_text(spans)}")
        else:
            parts.append(f"Yes, {label}: {_spans_text(spans)}")
        cites.extend(_cite_spans(spans, label))
    names = {label for label, _p in present}
    missing = [label for label in labels if label not in names]
    text = "; ".join(parts) + (f"; not heard: {', '.join(missing)}" if missing else "") + "."
    return Answer(q, text[0].upper() + text[1:], True, cites, labels=labels)


def _overview(evidence: Evidence, q: str) -> Answer:
    if not evidence.tags:
        return Answer(q, "Only silence: no segment is above the silence level.", True,
                      [_cite_segment(s) for s in evidence.segments[:1]])
    top = evidence.tags[:5]
    parts = [f"{t.label} ({_spans_text(_strong_spans(t)[0], 3)})" for t in top]
    cites = [c for t in top for c in _cite_spans(_strong_spans(t)[0][:3], t.label)]
    silent = f"; silent for {format_time(evidence.silent_s)}" if evidence.silent_s else ""
    return Answer(q, f"Sounds heard: {'; '.join(parts)}{silent}.", True, cites, labels=[t.label for t in top])


# ---------------------------------------------------------------------- a language model
_INSTRUCTIONS = ("Answer the question about an audio recording in one short sentence, using only the facts "
                 "below, which audio models produced. Cite the times (m:ss) your answer rests on. "
                 f"If the facts do not answer the question, say: {CANNOT_TELL}.")
#: timeline lines in a language model's prompt (fewer when the prompt would not fit the model's context)
PROMPT_TIMELINE_LINES = 12


def _lm_prompt(evidence: Evidence, question: str, findings: Answer, max_lines: int,
               history: Sequence[tuple[str, str]] = ()) -> str:
    """The prompt, most relevant last (nearest the question, where a small model reads best): the recording's
    header and at most ``max_lines`` timeline lines, the conversation so far, the facts about the sounds the
    question names, the findings, and the question."""
    facts = label_facts(evidence, findings.labels) if findings.labels else []
    verdict = findings.text if findings.known else f"{findings.text} (do not guess)"
    lines = [_INSTRUCTIONS, "", _header(evidence), *_timeline_lines(evidence, max_lines), ""]
    earlier = "".join(f"Q: {q}\nA: {a}\n" for q, a in history[-3:])
    if earlier:
        lines += [f"Earlier in this conversation:\n{earlier}"]
    lines += ["Facts (computed from the evidence; they are right):", *(f"- {f}" for f in facts),
              f"Findings for this question: {verdict}"]
    return "\n".join([*lines, "", f"Question: {question}"])


def _context_limit(lm: Any) -> int:
    cfg = getattr(lm, "config", None)
    return int(getattr(cfg, "max_position_embeddings", 0) or 2048)


def _fitting_prompt(evidence: Evidence, question: str, findings: Answer, tokenizer: Any, budget: int,
                    history: Sequence[tuple[str, str]] = ()) -> tuple[str, list[int]]:
    """The prompt and its ids, with the timeline shortened until it fits ``budget`` tokens (at least the facts)."""
    lines = PROMPT_TIMELINE_LINES
    while True:
        text = _lm_prompt(evidence, question, findings, lines, history)
        ids = prompt_ids(tokenizer, text)
        if len(ids) <= budget or lines == 0:
            return text, ids[-budget:] if len(ids) > budget else ids
        lines //= 2


_SPAN = re.compile(rf"({_CLOCK.pattern})\s*[–-]\s*({_CLOCK.pattern})")


def _cite_times(evidence: Evidence, text: str) -> list[Citation]:
    """The segments at the times a text names; a span ``a–b`` cites the segments overlapping ``[a, b)`` (not the
    one starting at its end)."""
    segs: list[Segment] = []
    for m in _SPAN.finditer(text):
        times = parse_times(m.group(0))
        a, b = times[0], times[-1]
        segs.extend(s for s in evidence.segments if s.start_s < b and a < s.end_s)
    segs.extend(seg for t in parse_times(_SPAN.sub(" ", text)) for seg in evidence.segments_at(t))
    cites: list[Citation] = []
    for seg in sorted(segs, key=lambda s: s.index):
        c = _cite_segment(seg)
        if all((c.start_s, c.end_s) != (d.start_s, d.end_s) for d in cites):
            cites.append(c)
    return cites


def _first_named(text: str, labels: Sequence[str]) -> str | None:
    """The label whose distinctive words (those the other ``labels`` lack) a text names first."""
    best: tuple[int, str] | None = None
    for label in labels:
        others = set().union(*(_content(o) for o in labels if o != label))
        for word in _content(label) - others:
            m = re.search(rf"\b{re.escape(word)}", text, re.I)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), label)
    return best[1] if best else None


def _reply_problem(evidence: Evidence, question: str, reply: str, findings: Answer,
                   cited: list[Citation]) -> str | None:
    """Why a reply cannot stand (it contradicts the computed findings), or ``None``."""
    if not reply:
        return "said nothing"
    if _polarity(reply) not in (None, _polarity(findings.text)):
        return "contradicted the evidence"
    heard = [label for label, _p in _heard(evidence, findings.labels)]  # the strongest first
    if _COUNT.search(question) and heard and stated_count(reply, findings.labels) != evidence.presence(heard[0]).count:
        return "stated another count"
    if len(findings.labels) > 1 and heard and not (_COUNT.search(question) or _YESNO.search(question)):
        named = _first_named(reply, findings.labels)  # a "which …?" question: the leading sound must lead
        if named is None:
            return "named none of the sounds asked about"
        if named != heard[0]:
            return "named first a sound the evidence ranks lower"
    if any(t > evidence.duration_s for t in parse_times(reply)) or (
            cited and findings.citations and not any(_overlap(c, d) for c in cited for d in findings.citations)):
        return "cited times the evidence does not support"
    return None


@torch.inference_mode()
def lm_answer(evidence: Evidence, question: str, lm: Any, tokenizer: Any, *, spec: str = "lm",
              max_new_tokens: int = 64, history: Sequence[tuple[str, str]] = (),
              context: Sequence[str] = ()) -> Answer:
    """A language model's answer from the facts, the rule answerer's findings and the timeline (greedy decoding).

    When the findings cannot tell (the question names a sound the vocabulary lacks, or a time past the end), they
    are the answer: the model is not asked, so it cannot invent one.

    The prompt (:func:`_lm_prompt`) is cut to the model's context (``max_position_embeddings`` less
    ``max_new_tokens``) by shortening the timeline. ``history``: the conversation so far (``(question, answer)``
    pairs; the last three go in the prompt); ``context``: as :func:`rule_answer`. A reply that says nothing, says
    "yes" where the findings say "no" (or the reverse), states another count, names none of the sounds a question
    about several asks for or names first one the findings rank lower, or cites times past the end or only outside
    the findings' citations is replaced by the findings (``answered_by`` then
    says so). Citations: the segments at the times the answer names; an answer naming no time gets the findings'
    citations and their first times appended, so that every answer cites times.
    """
    findings = rule_answer(evidence, question, context)
    if not findings.known:  # nothing in the evidence to rest on: say so, never let the model invent
        return findings
    budget = max(16, _context_limit(lm) - max_new_tokens)
    text, ids = _fitting_prompt(evidence, question, findings, tokenizer, budget, history)
    device = next(lm.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = lm.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                      do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    reply = clean_decoded(tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True))
    by = f"lm:{spec}"
    cited = _cite_times(evidence, reply)
    problem = _reply_problem(evidence, question, reply, findings, cited)  # a small model can contradict or invent
    said = reply
    if problem:
        reply, by, cited = findings.text, f"rules (lm:{spec} {problem})", []
    elif not cited and findings.citations and CANNOT_TELL.lower() not in reply.lower():
        shown = [format_span(c.start_s, c.end_s) for c in findings.citations[:3]]
        more = f" and {len(findings.citations) - 3} more" if len(findings.citations) > 3 else ""
        reply = f"{reply.rstrip()} ({', '.join(shown)}{more})"
    cites = cited or findings.citations
    known = CANNOT_TELL.lower() not in reply.lower()
    return Answer(question, reply, known, cites, by, findings.labels, text, model_reply=said)


def _overlap(a: Citation, b: Citation) -> bool:
    return a.start_s < b.end_s and b.start_s < a.end_s


def _polarity(text: str) -> str | None:
    """``"yes"`` / ``"no"`` when an answer starts with one, else ``None``."""
    m = re.match(r"\W*(yes|no)\b", text, re.I)
    return m.group(1).lower() if m else None


def _choice_ids(tokenizer: Any, choice: str) -> list[int]:
    text = " " + choice.strip() if not getattr(tokenizer, "chat_template", None) else choice.strip()
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@torch.inference_mode()
def choice_logprobs(lm: Any, tokenizer: Any, prompt: list[int], choices: Sequence[str]) -> dict[str, float]:
    """Mean log-probability per token of each choice after the ``prompt`` ids (length-normalised, so a long choice
    is not penalised for its length). The prompt runs once; its key/value cache is copied for each choice, so a
    choice costs its own tokens only. A choice with no tokens scores ``-inf``."""
    device = next(lm.parameters()).device
    out = lm(input_ids=torch.tensor([prompt], dtype=torch.long, device=device), use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    # transformers 5 names the key/value cache ``cache``; earlier versions ``past_key_values``
    cache_arg = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
    cache = getattr(out, "cache", None) if cache_arg == "cache" else out.past_key_values
    scores: dict[str, float] = {}
    for choice in choices:
        ids = _choice_ids(tokenizer, choice)
        if not ids:
            scores[choice] = -math.inf
            continue
        total = float(first[ids[0]])
        if len(ids) > 1:
            past = copy.deepcopy(cache)
            rest = lm(input_ids=torch.tensor([ids[:-1]], dtype=torch.long, device=device), **{cache_arg: past},
                      use_cache=True).logits[0].float()
            logp = torch.log_softmax(rest, dim=-1)
            total += float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:], device=device)].sum())
        scores[choice] = total / len(ids)
    return scores


def choose(evidence: Evidence, question: str, choices: Sequence[str], *, lm: Any = None, tokenizer: Any = None,
           spec: str = "lm", context: Sequence[str] = ()) -> Answer:
    """Pick one of ``choices`` (module docstring). ``choice_scores``: with a language model, each choice's mean token
    log-likelihood after the prompt less the same without the evidence (:func:`choice_logprobs`; contextual
    calibration: what the evidence adds), else rule scores (above 1 for a choice the findings name, the earlier the
    higher — "yes" / "no": the one the findings begin with; a time (``m:ss``): the nearer the start of a cited
    stretch, the higher; a count: the findings' count; else the share of segments of the labels it matches,
    weighted by their mean probability).

    Raises:
        ValueError: fewer than two distinct choices.
    """
    options = list(dict.fromkeys(c.strip() for c in choices if c.strip()))
    if len(options) < 2:
        raise ValueError("a multiple-choice question needs at least two different choices")
    findings = rule_answer(evidence, question, context)
    if lm is not None:
        asked = f"{question}\nAnswer with one of: {', '.join(options)}."
        budget = max(16, _context_limit(lm) - 16)
        text, ids = _fitting_prompt(evidence, asked, findings, tokenizer, budget)
        given = choice_logprobs(lm, tokenizer, ids, options)
        # contextual calibration: less each choice's likelihood without the evidence (a small model prefers "1"
        # and "0:00" whatever the facts say)
        prior = choice_logprobs(lm, tokenizer, prompt_ids(tokenizer, f"{_INSTRUCTIONS}\n\nQuestion: {asked}"),
                                options)
        scores = {c: round(given[c] - prior[c], 4) for c in options}
        by = f"lm:{spec}"
    else:
        text, scores, by = findings.text, {c: _rule_choice_score(evidence, findings, c) for c in options}, "rules"
    best = max(options, key=lambda c: scores[c])
    known = lm is not None or scores[best] > 0
    reply = f"{best}." if known else f"{CANNOT_TELL} which of {', '.join(options)}."
    return Answer(question, reply, known, findings.citations, by, findings.labels, text, best if known else None,
                  scores)


def _rule_choice_score(evidence: Evidence, findings: Answer, choice: str) -> float:
    text = findings.text.lower()
    if findings.known and _COUNT.search(findings.question) and choice.strip().isdigit():  # a count: the findings'
        heard = _heard(evidence, findings.labels)
        stated = heard[0][1].count if heard else 0
        return 2.0 if int(choice) == stated else 0.0
    if findings.known and choice.strip().lower() in ("yes", "no") and _polarity(text):  # "No: … is not among …"
        return 2.0 if _polarity(text) == choice.strip().lower() else 0.0
    if findings.known and findings.citations and _CLOCK.fullmatch(choice.strip()):  # a time: the nearest cited start
        gap = min(abs(parse_times(choice)[0] - c.start_s) for c in findings.citations)
        return round(1.0 + 1.0 / (1.0 + gap), 6)
    named = re.search(rf"(?<![\w:.\-–]){re.escape(choice.lower())}(?![\w\-–]|[:.]\d)", text)
    if findings.known and named:  # named by the findings (not inside a time): the earlier, the better
        return round(2.0 - named.start() / max(1, len(text)), 6)
    total = 0.0
    for label in match_labels(choice, evidence.labels):
        t = evidence.tag(label)
        if t is not None:
            total += t.mean_probability * t.segments / max(1, len(evidence.segments))
    return round(min(total, 0.999), 6)


# ---------------------------------------------------------------------- descriptions
@dataclass
class Part:
    """A stretch of the timeline: its sounds (top tags, longest first; ``["silence"]`` when silent), its loudest
    segment's level and the captions of its segments."""

    start_s: float
    end_s: float
    sounds: list[str]
    rms_dbfs: float
    captions: list[str] = field(default_factory=list)


@dataclass
class Description:
    """A recording in a few parts and a paragraph (:func:`describe`)."""

    file: str
    duration_s: float
    parts: list[Part]
    paragraph: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """The timeline, one part a line, then the paragraph."""
        lines = [f"{format_span(p.start_s, p.end_s)}  {', '.join(p.sounds)}  ({p.rms_dbfs:.0f} dBFS)"
                 + (f'  "{p.captions[0]}"' if p.captions else "") for p in self.parts]
        return "\n".join([*lines, "", self.paragraph])


def _part_sounds(weights: dict[str, float]) -> list[str]:
    """Labels covering at least a quarter of the part's time (at least the longest), longest first."""
    total = sum(weights.values()) or 1.0
    ranked = sorted(weights, key=lambda k: -weights[k])
    return [k for i, k in enumerate(ranked) if i == 0 or weights[k] >= 0.25 * total][:3]


def describe(evidence: Evidence, max_parts: int = 12) -> Description:
    """A timeline of at most ``max_parts`` parts — runs of segments with the same top tag, the shortest merged into
    a neighbour until few enough are left — and a paragraph: what is heard most (share of the time as top tag), how
    it begins and ends, silence and the loudest part."""
    runs = timeline(evidence)
    parts = [{"a": a, "b": b, "w": {what: b - a}, "db": max(s.rms_dbfs for s in segs),
              "caps": [s.caption for s in segs if s.caption]} for a, b, what, segs in runs]
    while len(parts) > max(1, max_parts):
        i = min(range(len(parts)), key=lambda k: parts[k]["b"] - parts[k]["a"])
        if i == 0:
            j = 1
        elif i == len(parts) - 1:
            j = i - 1
        else:
            j = i - 1 if parts[i - 1]["b"] - parts[i - 1]["a"] <= parts[i + 1]["b"] - parts[i + 1]["a"] else i + 1
        lo, hi = sorted((i, j))
        x, y = parts[lo], parts[hi]
        w = dict(x["w"])
        for k, v in y["w"].items():
            w[k] = w.get(k, 0.0) + v
        parts[lo:hi + 1] = [{"a": x["a"], "b": max(x["b"], y["b"]), "w": w, "db": max(x["db"], y["db"]),
                             "caps": x["caps"] + y["caps"]}]
    out = [Part(p["a"], p["b"], _part_sounds(p["w"]), p["db"], p["caps"][:3]) for p in parts]
    return Description(evidence.file, evidence.duration_s, out, _paragraph(evidence, runs, out))


def _paragraph(evidence: Evidence, runs: list[tuple[float, float, str, list[Segment]]], parts: list[Part]) -> str:
    name = Path(evidence.file).name
    if not parts:
        return f"'{name}' has no segments."
    seconds: dict[str, float] = {}
    for a, b, what, _segs in runs:
        if what != "silence":
            seconds[what] = seconds.get(what, 0.0) + (b - a)
    total = max(evidence.duration_s, 1e-9)
    shares = [(k, v / total) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1]) if v / total >= 0.05][:3]
    out = [f"'{name}' lasts {format_time(evidence.duration_s)}."]
    if shares:
        first, *rest = shares
        more = " and ".join(f"{k} ({v:.0%})" for k, v in rest)
        out.append(f"Mostly {first[0]} ({first[1]:.0%} of the time as the top tag)" + (f", also {more}." if more
                                                                                       else "."))
    elif not seconds:
        out.append("It is silent throughout.")
    if len(parts) > 1:
        out.append(f"It begins with {' and '.join(parts[0].sounds)} ({format_span(parts[0].start_s, parts[0].end_s)})"
                   f" and ends with {' and '.join(parts[-1].sounds)} "
                   f"({format_span(parts[-1].start_s, parts[-1].end_s)}).")
    if evidence.silent_s and seconds:
        out.append(f"Silent for {format_time(evidence.silent_s)} in all.")
    loud = max(evidence.segments, key=lambda s: s.rms_dbfs)
    if not loud.silent:
        out.append(f"The loudest part is {format_span(loud.start_s, loud.end_s)} ({loud.rms_dbfs:.0f} dBFS, "
                   f"{', '.join(loud.labels()[:2])}).")
    return " ".join(out)
