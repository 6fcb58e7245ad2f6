"""The audio question benchmark of issue 30 (item 5): closed-form questions from the open suite's metadata,
answered from the evidence of :mod:`kikimimi.inference.evidence`, scored by accuracy with chance lines.

Questions (:mod:`open_suite.questions`): which language is spoken, which instrument family, which drum piece, is
there speech (held-out clips); how many times is a drum piece hit, when is it first heard (files composed of
held-out clips in slots of ``--slot-s`` seconds, so every time is known; a time is right within one segment).

Rows, each answering every question from the same evidence (CLAP tags over the suite's class words, segments
of ``--slot-s`` seconds):

- ``grounded LM, free answer``: :func:`~kikimimi.inference.grounded.lm_answer` (``kikimimi ask FILE Q --lm``), its
  text read back into a choice (:func:`open_suite.questions.read_answer`); the share of its replies replaced by
  the findings (they contradicted them) is reported per question type;
- ``grounded LM, --choices``: :func:`~kikimimi.inference.grounded.choose` with the language model (each choice's
  likelihood);
- ``grounded rules, free answer`` / ``grounded rules, --choices``: the same without a language model;
- ``captioner ask``: the end-to-end captioner's :meth:`~kikimimi.inference.captioner.Captioner.ask` on the whole
  clip, when a captioner is given (``--captioner``) or packaged (``open-captioner-tiny``); else the row says why
  it is missing;
- ``rule baseline (top tag)``: the file's most frequent top tag among the choices' labels (language, family,
  drum, speech = a language label is some segment's top tag), the number of runs where the drum is the top tag,
  the start of its first such run;
- ``chance``: the mean of 1 / number of choices.

Then the time per question on this machine's threads: a 10-s clip and a ``--long-minutes`` file composed of
held-out clips (evidence streamed, a description, three questions), with the peak RSS (``ru_maxrss``) before and
after the long file. Prints the CPU model and its vector extensions, a table, and writes a JSON report (atomic).

Usage: nice -n 10 python benchmarks/bench_questions.py [--suite DIR] [--n-per-type 4] [--long-minutes 60]
           [--clap open-clap-tiny] [--lm smollm2 | --lm none] [--captioner DIR] [--threads 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "open_suite"))

import questions as qs  # noqa: E402
from _common import cpu_model  # noqa: E402

from kikimimi.fileio import atomic_write_json  # noqa: E402
from kikimimi.inference.evidence import Evidence, EvidenceSettings, build_evidence  # noqa: E402
from kikimimi.inference.grounded import choose, describe, format_time, lm_answer, rule_answer  # noqa: E402
from kikimimi.inference.precision import cpu_flags  # noqa: E402

DEFAULT_SUITE = Path.home() / ".cache" / "kikimimi" / "open-train" / "suite" / "full"
#: the packaged captioner's name, once one ships (issue 30 compares it as a baseline)
PACKAGED_CAPTIONER = "open-captioner-tiny"
ROWS = ("grounded LM, free answer", "grounded LM, --choices", "grounded rules, free answer",
        "grounded rules, --choices", "captioner ask", "rule baseline (top tag)")


@dataclass
class Row:
    """One answerer's results: ``available`` (else ``note`` says why), and per question ``(said, right)``."""

    name: str
    available: bool = True
    note: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def accuracy(self, qtypes: list[str]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for t in qtypes:
            got = [r["right"] for r in self.results if r["qtype"] == t]
            out[t] = round(sum(got) / len(got), 4) if got else None
        return out


def vector_flags() -> str:
    """The CPU's vector extensions (the AVX / AMX / FMA family of its flags)."""
    flags = [f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "f16c", "sse4"))]
    return " ".join(flags) or "none reported"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------- the rule baseline
def top_tag_answer(q: qs.Question, ev: Evidence, vocab: qs.Vocabulary, segment_s: float) -> tuple[str | None, bool]:
    """The rule baseline's answer (module docstring) and whether it is right."""
    if q.qtype in qs.TASK_OF:
        label = next((t.label for t in ev.tags if vocab.task[t.label] == q.qtype and t.top1), None)
        said = vocab.choice[label] if label else None
        return said, said == q.answer
    if q.qtype == "speech":
        said = "yes" if any(vocab.task[t.label] == "language" and t.top1 for t in ev.tags) else "no"
        return said, said == q.answer
    label = next(lab for lab in vocab.labels if vocab.choice[lab] == q.target and vocab.task[lab] == "drum")
    summary = ev.tag(label)
    spans = summary.top_spans if summary else []
    if q.qtype == "count":
        said = str(len(spans))
        return said, said == q.answer
    if not spans:
        return None, False
    return format_time(spans[0][0]), abs(spans[0][0] - float(q.truth_s or 0.0)) <= segment_s


# ---------------------------------------------------------------------- models
def load_models(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, str]:
    """``(clap, lm, tokenizer, captioner, captioner note)`` as the arguments ask."""
    from kikimimi.inference.clap import load_clap

    clap = load_clap(args.clap, device="cpu")
    lm = tokenizer = None
    if args.lm.lower() != "none":
        from kikimimi.models.causal_lm import load_causal_lm

        lm, tokenizer = load_causal_lm(args.lm, device="cpu")
    captioner, note = find_captioner(args.captioner)
    return clap, lm, tokenizer, captioner, note


def find_captioner(path: str | None) -> tuple[Any, str]:
    """The captioner to compare: ``path``, else the packaged one when it ships; else ``(None, why)``."""
    from kikimimi.checkpoints.registry import PACKAGED_DIR
    from kikimimi.inference.captioner import is_captioner_folder, load_captioner

    folder = Path(path) if path else PACKAGED_DIR / PACKAGED_CAPTIONER
    if not is_captioner_folder(folder):
        why = (f"'{folder}' is not a captioner folder" if path else
               f"no captioner: '{PACKAGED_CAPTIONER}' is not packaged yet and no --captioner was given")
        return None, why
    return load_captioner(folder, device="cpu"), f"captioner {folder.name}"


# ---------------------------------------------------------------------- the run
def answer_all(questions: list[qs.Question], evidence: dict[str, Evidence], vocab: qs.Vocabulary, segment_s: float, *,
               lm: Any, tokenizer: Any, lm_spec: str, captioner: Any, captioner_note: str,
               max_new_tokens: int, progress: bool = False) -> list[Row]:
    """Every row's answer to every question (module docstring)."""
    rows = {name: Row(name) for name in ROWS}
    if lm is None:
        for name in ROWS[:2]:
            rows[name].available, rows[name].note = False, "no language model (--lm none)"
    if captioner is None:
        rows["captioner ask"].available, rows["captioner ask"].note = False, captioner_note

    def record(name: str, q: qs.Question, said: str | None, right: bool, reply: str, started: float,
               **extra: Any) -> None:
        rows[name].seconds += time.perf_counter() - started
        rows[name].results.append({"qtype": q.qtype, "said": said, "right": bool(right), "reply": reply, **extra})

    for q in tqdm(questions, desc="questions", unit="question", disable=not progress, file=sys.stderr):
        ev = evidence[q.audio]
        if lm is not None:
            t = time.perf_counter()
            a = lm_answer(ev, q.question, lm, tokenizer, spec=lm_spec, max_new_tokens=max_new_tokens)
            record("grounded LM, free answer", q, *qs.read_answer(q, a.text, segment_s), a.text, t,
                   answered_by=a.answered_by)
            t = time.perf_counter()
            a = choose(ev, q.question, q.choices, lm=lm, tokenizer=tokenizer, spec=lm_spec)
            record("grounded LM, --choices", q, a.choice, a.choice == q.answer, a.text, t)
        t = time.perf_counter()
        a = rule_answer(ev, q.question)
        record("grounded rules, free answer", q, *qs.read_answer(q, a.text, segment_s), a.text, t)
        t = time.perf_counter()
        a = choose(ev, q.question, q.choices)
        record("grounded rules, --choices", q, a.choice, a.choice is not None and a.choice == q.answer, a.text, t)
        if captioner is not None:
            t = time.perf_counter()
            reply = str(captioner.ask(q.audio, q.question))
            record("captioner ask", q, *qs.read_answer(q, reply, segment_s), reply, t)
        t = time.perf_counter()
        said, right = top_tag_answer(q, ev, vocab, segment_s)
        record("rule baseline (top tag)", q, said, right, said or "", t)
    return list(rows.values())


def timing(clap: Any, vocab: qs.Vocabulary, settings: EvidenceSettings, suite: Path, work: Path, long_minutes: float,
           *, lm: Any, tokenizer: Any, lm_spec: str, max_new_tokens: int) -> dict[str, Any]:
    """Seconds per question for a 10-s clip and a ``long_minutes`` composed file; peak RSS around the long file."""
    rows = qs.test_rows(suite)
    pool = [r["file_name"] for t in ("language", "drum", "instrument") for r in rows[t]]
    target = next(lab for lab in vocab.labels_of("drum") if vocab.choice[lab] == "cymbal")
    asks = ("What sounds are in it?", f"When is the {vocab.choice[target]} first heard?",
            f"How many times is the {vocab.choice[target]} hit?")
    out: dict[str, Any] = {}
    for name, seconds, slot in (("clip_10s", 10.0, 2.0), ("long", long_minutes * 60.0, settings.segment_s)):
        n_slots = max(1, int(round(seconds / slot)))
        clips = [pool[(7 * i) % len(pool)] if i % 5 else None for i in range(n_slots)]  # every fifth slot silent
        wav = work / f"timing-{name}.wav"
        duration = qs.compose(wav, clips, suite, slot)
        rss_before = peak_rss_mb()
        t = time.perf_counter()
        ev = build_evidence(wav, clap, vocab.labels, settings)
        evidence_s = time.perf_counter() - t
        t = time.perf_counter()
        parts = describe(ev).parts
        describe_s = time.perf_counter() - t
        per_q, replies = [], []
        for question in asks:
            t = time.perf_counter()
            a = (lm_answer(ev, question, lm, tokenizer, spec=lm_spec, max_new_tokens=max_new_tokens) if lm is not None
                 else rule_answer(ev, question))
            per_q.append(time.perf_counter() - t)
            replies.append({"question": question, "answer": a.text,
                            "citations": [[c.start_s, c.end_s] for c in a.citations[:5]]})
        out[name] = {"duration_s": round(duration, 1), "segments": len(ev.segments), "parts": len(parts),
                     "evidence_s": round(evidence_s, 2), "evidence_s_per_audio_minute": round(60 * evidence_s
                                                                                              / duration, 2),
                     "describe_s": round(describe_s, 4), "seconds_per_question": round(sum(per_q) / len(per_q), 3),
                     "answered_by": "lm" if lm is not None else "rules", "peak_rss_mb_before": round(rss_before),
                     "peak_rss_mb_after": round(peak_rss_mb()), "answers": replies}
        wav.unlink()
    return out


def run(args: argparse.Namespace, *, clap: Any = None, lm: Any = None, tokenizer: Any = None, captioner: Any = None,
        captioner_note: str = "") -> dict[str, Any]:
    """The whole benchmark; models given here replace those the arguments name (tests pass small ones)."""
    torch.set_num_threads(args.threads)
    clap_name = args.clap if clap is None else type(clap).__name__
    if clap is None:
        clap, lm, tokenizer, captioner, captioner_note = load_models(args)
    vocab = qs.vocabulary()
    settings = EvidenceSettings(segment_s=args.slot_s, top_k=3)
    types = list(args.types)
    with tempfile.TemporaryDirectory(prefix="kikimimi-questions-", dir=args.tmp) as tmp_name:
        work = Path(tmp_name)
        questions = qs.make_questions(args.suite, work, args.n_per_type, slot_s=args.slot_s, n_slots=args.n_slots,
                                      seed=args.seed, types=types)
        t = time.perf_counter()
        evidence = {}
        for q in tqdm(questions, desc="evidence", unit="question", disable=not args.progress, file=sys.stderr):
            if q.audio not in evidence:
                evidence[q.audio] = build_evidence(q.audio, clap, vocab.labels, settings)
        evidence_s = time.perf_counter() - t
        rows = answer_all(questions, evidence, vocab, args.slot_s, lm=lm, tokenizer=tokenizer, lm_spec=args.lm,
                          captioner=captioner, captioner_note=captioner_note, max_new_tokens=args.max_new_tokens,
                          progress=args.progress)
        times = (timing(clap, vocab, settings, args.suite, work, args.long_minutes, lm=lm, tokenizer=tokenizer,
                        lm_spec=args.lm, max_new_tokens=args.max_new_tokens) if args.long_minutes > 0 else {})
    n = {t: sum(q.qtype == t for q in questions) for t in types}
    chance = {t: round(sum(1 / len(q.choices) for q in questions if q.qtype == t) / max(1, n[t]), 4) for t in types}
    return {
        "benchmark": "bench_questions", "suite": str(args.suite), "cpu": cpu_model(), "vector_flags": vector_flags(),
        "machine": platform.machine(), "threads": args.threads, "load_average": list(os.getloadavg()),
        "command": "python benchmarks/bench_questions.py " + " ".join(args.argv),
        "models": {"clap": clap_name,
                   "lm": args.lm if lm is not None else None, "captioner": captioner_note or None},
        "settings": {"segment_s": args.slot_s, "n_slots": args.n_slots, "top_k": settings.top_k,
                     "template": settings.template, "labels": len(vocab.labels), "seed": args.seed},
        "n_questions": n, "chance": chance, "evidence_seconds": round(evidence_s, 2),
        "rows": [{"name": r.name, "available": r.available, "note": r.note, "accuracy": r.accuracy(types),
                  "seconds_per_question": round(r.seconds / max(1, len(r.results)), 4),
                  **({"replaced": replaced_share(r, types)} if r.name == ROWS[0] and r.results else {})}
                 for r in rows],
        "questions": [{**q.to_dict(), "audio": Path(q.audio).name,
                       "answers": {r.name: r.results[i] for r in rows if r.results}} for i, q in enumerate(questions)],
        "timing": times,
    }


def replaced_share(row: Row, qtypes: list[str]) -> dict[str, float]:
    """Per question type, the share of the language model's free replies replaced by the findings because they
    contradicted them (:func:`~kikimimi.inference.grounded.lm_answer`)."""
    out = {}
    for t in qtypes:
        got = [r for r in row.results if r["qtype"] == t]
        if got:
            out[t] = round(sum(str(r.get("answered_by", "")).startswith("rules") for r in got) / len(got), 4)
    return out


def table(report: dict[str, Any]) -> str:
    """The accuracy table (percent), chance first; a missing row says why."""
    types = list(report["n_questions"])
    lines = ["| row | " + " | ".join(f"{t} (n={report['n_questions'][t]})" for t in types) + " | s/question |",
             "|---" * (len(types) + 2) + "|",
             "| chance | " + " | ".join(f"{100 * report['chance'][t]:.1f}" for t in types) + " | |"]
    for r in report["rows"]:
        if not r["available"]:
            lines.append(f"| {r['name']} | " + " | ".join("—" for _ in types) + f" | not run: {r['note']} |")
            continue
        accs = [r["accuracy"][t] for t in types]
        lines.append(f"| {r['name']} | " + " | ".join("—" if a is None else f"{100 * a:.1f}" for a in accs)
                     + f" | {r['seconds_per_question']:.3f} |")
    for r in report["rows"]:
        if r.get("replaced"):
            lines.append(f"({r['name']}: replies replaced by the findings, %: "
                         + ", ".join(f"{t} {100 * v:.0f}" for t, v in r["replaced"].items()) + ")")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="a built open suite (default: %(default)s)")
    p.add_argument("--n-per-type", type=int, default=4, help="questions of each type (default: %(default)s)")
    p.add_argument("--types", nargs="+", default=list(qs.QTYPES), choices=qs.QTYPES)
    p.add_argument("--long-minutes", type=float, default=60.0,
                   help="minutes of the long file timed (0: no timing; default: %(default)s)")
    p.add_argument("--slot-s", type=float, default=3.0, help="slot and evidence segment length (default: 3 s)")
    p.add_argument("--n-slots", type=int, default=12, help="slots of a composed file (at least 10)")
    p.add_argument("--clap", default="open-clap-tiny", help="CLAP model name or folder (default: %(default)s)")
    p.add_argument("--lm", default="smollm2", help="language model ('smollm2', a folder, or 'none')")
    p.add_argument("--captioner", default=None, help=f"captioner folder (default: the packaged {PACKAGED_CAPTIONER}"
                                                     " when it ships)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=min(2, torch.get_num_threads()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default=None, help="folder for the composed files (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="report (default: SUITE/questions_bench.json)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars on stderr")
    args = p.parse_args(argv)
    if args.n_per_type < 1 or args.n_slots < 10 or not args.slot_s > 0 or args.long_minutes < 0:
        p.error("--n-per-type must be >= 1, --n-slots >= 10, --slot-s > 0 and --long-minutes >= 0")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None, **models: Any) -> int:
    """Run, print and write the report; ``models``: as :func:`run` (tests)."""
    args = parse_args(argv)
    print(f"# CPU: {cpu_model()}; {os.cpu_count()} cores, {args.threads} thread(s); vector extensions: "
          f"{vector_flags()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    report = run(args, **models)
    out = args.json or args.suite / "questions_bench.json"
    atomic_write_json(out, report)
    print(table(report))
    for name, t in report["timing"].items():
        print(f"time, {name}: {t['duration_s']:g} s of audio, {t['segments']} segments: evidence {t['evidence_s']} s "
              f"({t['evidence_s_per_audio_minute']} s per audio minute), describe {t['describe_s']} s, "
              f"{t['seconds_per_question']} s per question ({t['answered_by']}); peak RSS {t['peak_rss_mb_before']} "
              f"→ {t['peak_rss_mb_after']} MB")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
