"""Rendering a probe evaluation (the results of :func:`kikimimi.evaluation.run.run_evaluation`) as a report.

:func:`write_reports` writes, under the results object's ``out_dir``:

- ``report.md``: one table per task metric (rows = model × probe including baselines, then fine-tune rows when
  given, then the chance and majority-class lines; columns = tasks, mean ± std over seeds), the "did
  pre-training help?" verdicts (:mod:`kikimimi.evaluation.verdicts`: every trained model against its random-init
  twin and the strongest baseline), then per task the clip length rule and how many clips it crops or pads, the
  skipped (unreadable) files by name, notes, the probe settings behind each number, links to the confusion
  matrices and a per-class accuracy table; a "Zero-shot" section for CLAP models; with ``captions=``
  (``kikimimi eval … --captions PRED.csv REF.csv [--nn-captions NN.csv]``) a "Captions" section, one row per
  system (the captioner and its nearest-neighbour baseline) from
  :func:`kikimimi.evaluation.caption_metrics.metrics_table`;
- ``report.json``: everything machine-readable (scores per fold and seed, every applicable metric, per-class
  accuracy, settings, model and data fingerprints, verdicts, zero-shot and caption scores, version, time);
- ``scores.csv``: ``model,task,probe,metric,mean,std,n_test`` (zero-shot rows: task ``zs_<task>``).

The figures (``<task>/confusion-<model>-<probe>.png``, :mod:`kikimimi.evaluation.confusion_plot`, and
``<task>/clusters.png``, :mod:`kikimimi.evaluation.cluster_plot`) are drawn while the evaluation runs; the
Markdown links the ones that exist.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kikimimi import __version__
from kikimimi.evaluation.caption_metrics import CaptionScores, metrics_table
from kikimimi.evaluation.metrics import metric_label
from kikimimi.evaluation.probe import ProbeResult
from kikimimi.evaluation.tasks import Task
from kikimimi.evaluation.verdicts import find_verdicts, verdict_lines
from kikimimi.fileio import atomic_write_json, atomic_write_text

__all__ = ["EvalOutcome", "FinetuneRow", "write_reports", "task_fingerprint", "slug", "confusion_name", "chosen_text",
           "caption_report_rows", "caption_report_json", "jsonable"]


@dataclass
class FinetuneRow:
    """A fine-tuning result merged into the evaluation table (read from a ``kikimimi finetune`` report)."""

    model: str
    task: str
    metric: str
    score: float
    std: float
    source: Path
    note: str = ""


@dataclass
class EvalOutcome:
    """The results object of an evaluation: what :func:`write_reports` renders."""

    results: dict[str, dict[str, dict[str, ProbeResult]]] = field(default_factory=dict)  # task -> model -> probe
    skipped: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # task -> [(file, reason)]
    zero_shot: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> model -> ZeroShotResult
    out_dir: Path | None = None
    #: model name (row order) -> {"fingerprint", "family", "lr", "sample_rate"}
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # task -> notes for its section
    seeds: tuple[int, ...] = ()
    hidden: tuple[int, ...] = ()
    probes: tuple[str, ...] = ()


def task_fingerprint(task: Task) -> str:
    """Hash of the task rows (file, label, split/fold) and each file's size."""
    h = hashlib.sha256()
    for item in task.items:
        size = item.path.stat().st_size if item.path.exists() else -1
        h.update(f"{item.key}|{item.labels}|{item.split}|{item.fold}|{size}\n".encode())
    return h.hexdigest()


def slug(name: str) -> str:
    """File-name form of a task or model name: runs of other characters than ``A-Za-z0-9_.-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def confusion_name(model: str, probe: str) -> str:
    """File name of a model × probe confusion figure, e.g. ``confusion-log-mel_stats-linear.png``."""
    return f"confusion-{slug(model)}-{probe}.png"


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types (arrays through ``tolist``, anything else unknown through ``str``)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def chosen_text(result: ProbeResult) -> str:
    """The selected hyper-parameter over folds × seeds, e.g. ``lr 1e-03 ×3`` or ``C 1 ×2, 10 ×1``."""
    key = "C" if result.probe == "logistic" else "lr"
    values = [c[key] for c in result.settings.get("chosen", []) if key in c]
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return f"{key} " + ", ".join(f"{v:g} ×{n}" for v, n in sorted(counts.items()))


def _settings_text(result: ProbeResult) -> str:
    st = result.settings
    if result.probe == "logistic":
        grid = ", ".join(f"{c:g}" for c in st.get("c_grid", ()))
        return (f"scikit-learn LogisticRegression (L2, lbfgs) on standardised embeddings, C from [{grid}] on "
                f"validation; chosen {chosen_text(result)}")
    lr = f"lr {st['lr']:g} (pinned)" if st.get("lr") else "lr from [" + ", ".join(
        f"{v:g}" for v in st.get("lr_grid", ())) + "] on validation"
    epochs = [c["best_epoch"] for c in st.get("chosen", [])]
    capped = sum(1 for c in st.get("chosen", []) if c["best_epoch"] == st.get("epochs"))
    hidden = f", MLP hidden {st['hidden']}" if st.get("hidden") else ""
    text = (f"Adam, {lr}, wd {st['weight_decay']:g}, batch ≤ {st['batch_size']}, ≤ {st['epochs']} epochs, "
            f"patience {st['patience']}{hidden}; chosen {chosen_text(result)}; best epochs "
            f"{min(epochs)}–{max(epochs)}" if epochs else "")
    if capped:
        text += f" ({capped} run(s) still improving at the last epoch)"
    return text


# ------------------------------------------------------------------------------------------ the report files
def write_reports(outcome: EvalOutcome, tasks: Sequence[Task], *, finetune: Sequence[FinetuneRow] = (),
                  captions: Mapping[str, CaptionScores] | None = None, verdicts: bool = True) -> None:
    """Write ``report.md``, ``report.json`` and ``scores.csv`` of ``outcome`` into ``outcome.out_dir``.

    ``verdicts``: add the "Did pre-training help?" section (``False`` where the caller writes its own).
    """
    out = outcome.out_dir
    assert out is not None
    finetune = list(finetune)
    lines = _summary_lines(outcome, tasks, finetune)
    report = _report_json(outcome, finetune)
    if verdicts:
        found = find_verdicts(outcome.results, outcome.models, outcome.probes)
        lines += verdict_lines(found)
        if found:
            report["verdicts"] = found
    csv_rows = ["model,task,probe,metric,mean,std,n_test"]
    for t in tasks:
        lines += _task_lines(outcome, t)
        report["tasks"][t.name] = _task_json(outcome, t)
        csv_rows += _task_csv_rows(outcome, t)
    zs_lines, zs_csv, zs_json = _zero_shot_report(outcome, tasks)
    lines += zs_lines
    csv_rows += zs_csv
    if zs_json:
        report["zero_shot"] = zs_json
    if captions:
        lines += ["", *caption_report_rows(captions)]
        report["captions"] = caption_report_json(captions)
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "scores.csv", "\n".join(csv_rows) + "\n")
    atomic_write_json(out / "report.json", jsonable(report))


def _summary_lines(outcome: EvalOutcome, tasks: Sequence[Task], finetune: Sequence[FinetuneRow]) -> list[str]:
    """The title, the table of every model × probe × task, the fine-tune and reference rows and the models."""
    names, probes = list(outcome.models), outcome.probes
    lines = ["# kikimimi evaluation report", "",
             f"Probes: {', '.join(probes)} (EVAR protocol with a validation-chosen hyper-parameter; see the "
             f"settings per task), seeds {list(outcome.seeds)}"
             + (f", MLP hidden {list(outcome.hidden)}" if outcome.hidden else "") + "."]
    lines += ["", "| model | probe | " + " | ".join(f"{t.name} ({metric_label(t.metric)})" for t in tasks) + " |",
              "|---|---|" + "---|" * len(tasks)]
    for name in names:
        for probe in probes:
            cells = [f"{100 * r.score:.1f} ± {100 * r.std:.1f}"
                     for r in (outcome.results[t.name][name][probe] for t in tasks)]
            lines.append(f"| {name} | {probe} | " + " | ".join(cells) + " |")
    for row_name in sorted({r.model for r in finetune}):
        cells = []
        for t in tasks:
            hit = [r for r in finetune if r.model == row_name and r.task == t.name]
            cells.append("–" if not hit else f"{100 * hit[0].score:.1f}" + (
                f" ± {100 * hit[0].std:.1f}" if hit[0].std else "") + ("*" if hit[0].note else ""))
        lines.append(f"| {row_name} | fine-tune | " + " | ".join(cells) + " |")
    for ref, label in (("chance", "chance (uniform guess)"), ("majority", "majority class (of training)")):
        cells = []
        for t in tasks:
            first = outcome.results[t.name][names[0]][probes[0]] if names else None
            cells.append("–" if first is None else f"{100 * first.reference[ref]:.1f}")
        lines.append(f"| *{label}* | – | " + " | ".join(cells) + " |")
    lines += ["", "Scores in %, each task under its own metric (acc = accuracy, UAR = unweighted average recall, "
              "W.acc = PhysioNet 2022 murmur weighted accuracy, mAP = macro average precision), mean ± std over "
              "the probe seeds (fine-tune rows: over folds). Chance = guessing uniformly at random; majority = "
              "always answering the most frequent training class."]
    lines += [f"- \\* {r.model} on {r.task}: {r.note} (`{r.source}`)" for r in finetune if r.note]
    lines += ["", "Models (sha256 fingerprints; full values in report.json):", ""]
    lines += [f"- {name}: {m['family']}, `{m['fingerprint'][:19]}`" for name, m in outcome.models.items()]
    return lines


def _report_json(outcome: EvalOutcome, finetune: Sequence[FinetuneRow]) -> dict[str, Any]:
    """The top of ``report.json``: version, time, probe settings, models, fine-tune rows (tasks filled later)."""
    return {"kikimimi_version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seeds": list(outcome.seeds), "hidden": list(outcome.hidden), "probes": list(outcome.probes),
            "models": {name: dict(m) for name, m in outcome.models.items()}, "tasks": {},
            "finetune": [{"model": r.model, "task": r.task, "metric": r.metric, "mean": r.score, "std": r.std,
                          "source": str(r.source), "note": r.note} for r in finetune]}


def _first(outcome: EvalOutcome, task: Task) -> ProbeResult | None:
    """The first model's result under the first probe (the source of the task's classes and reference lines)."""
    names = list(outcome.models)
    return outcome.results[task.name][names[0]][outcome.probes[0]] if names else None


def _lengths(outcome: EvalOutcome, task: Task) -> dict[str, int]:
    rates = [m["sample_rate"] for m in outcome.models.values()]
    return task.length_summary(rates[0] if rates else 16000)


def _task_lines(outcome: EvalOutcome, t: Task) -> list[str]:
    """The Markdown section of one task (module docstring)."""
    names, probes, out = list(outcome.models), outcome.probes, outcome.out_dir
    assert out is not None
    results, skipped, folder = outcome.results[t.name], outcome.skipped.get(t.name, []), slug(t.name)
    lengths = _lengths(outcome, t)
    lines = ["", f"## {t.name}", "",
             f"{len(t.items)} clips in the task ({len(t.items) - len(skipped)} embedded, {len(skipped)} "
             f"skipped), {t.n_classes} classes, metric {metric_label(t.metric)}, "
             f"{'folds ' + str(t.fold_ids()) if t.is_cv else 'train/valid/test split'}.",
             f"- clip length {t.unit_s:g} s ({t.unit_rule}): {lengths['cropped']} clip(s) cropped, "
             f"{lengths['padded']} zero-padded, {lengths['exact']} exact"
             + (f", {lengths['unknown']} without a readable header" if lengths["unknown"] else "") + "."]
    if skipped:
        lines.append(f"- **{len(skipped)} file(s) skipped** (unreadable or missing):")
        lines += [f"  - `{k}`: {r}" for k, r in skipped]
    lines += [f"- {n}" for n in outcome.notes.get(t.name, [])]
    lines.append(f"- task fingerprint `{task_fingerprint(t)[:12]}`")
    lines += ["", "Probe settings behind each number:", ""]
    lines += [f"- {name}, {probe}: {_settings_text(results[name][probe])}" for name in names for probe in probes]
    first = _first(outcome, t)
    if first is None or first.metric == "mAP":
        return lines
    pngs = [(n, p) for n in names for p in probes if (out / folder / confusion_name(n, p)).exists()]
    if pngs:
        lines += ["", "Confusion matrices (test counts summed over all seeds and folds, row-normalised): "
                  + ", ".join(f"[{n} / {p}]({folder}/{confusion_name(n, p)})" for n, p in pngs)]
    classes = first.classes
    lines += ["", f"Per-class accuracy (%, {probes[0]} probe):", "",
              "| model | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for name in names:
        pc = results[name][probes[0]].per_class_accuracy
        lines.append(f"| {name} | " + " | ".join(f"{100 * pc[c]:.0f}" for c in classes) + " |")
    if (out / folder / "clusters.png").exists():
        lines += ["", f"![clusters]({folder}/clusters.png)"]
    return lines


def _task_json(outcome: EvalOutcome, t: Task) -> dict[str, Any]:
    """The ``report.json`` entry of one task: fingerprint, notes, lengths, skipped files, every result."""
    entry: dict[str, Any] = {
        "fingerprint": task_fingerprint(t), "notes": outcome.notes.get(t.name, []), "metric": t.metric,
        "unit_s": t.unit_s, "unit_rule": t.unit_rule, "clip_lengths": _lengths(outcome, t),
        "skipped": [{"file": k, "reason": r} for k, r in outcome.skipped.get(t.name, [])], "results": {}}
    first = _first(outcome, t)
    if first is not None:
        entry["reference"] = first.reference
    for name in outcome.models:
        entries = {}
        for probe in outcome.probes:
            r = outcome.results[t.name][name][probe]
            entries[probe] = {
                "probe": probe, "metric": r.metric, "mean": r.score, "std": r.std, "seed_scores": r.seed_scores,
                "fold_scores": {str(k): v for k, v in r.fold_scores.items()}, "scores": r.scores,
                "per_class_accuracy": r.per_class_accuracy, "settings": jsonable(r.settings)}
        entry["results"][name] = {**entries[outcome.probes[0]], "probes": entries}
    return entry


def _task_csv_rows(outcome: EvalOutcome, t: Task) -> list[str]:
    """``scores.csv`` rows of one task; ``n_test`` counts the test clips of one seed (all folds)."""
    rows = []
    for name in outcome.models:
        for probe in outcome.probes:
            r = outcome.results[t.name][name][probe]
            n_test = sum(len(f.y_true) for f in r.folds if f.seed == r.folds[0].seed)
            rows.append(f"{name},{t.name},{probe},{r.metric},{r.score:.6f},{r.std:.6f},{n_test}")
    return rows


def _zero_shot_report(outcome: EvalOutcome, tasks: Sequence[Task]) -> tuple[list[str], list[str], dict]:
    """Markdown lines, ``scores.csv`` rows (task ``zs_<task>``, probe ``zero-shot``, std empty) and JSON for the
    zero-shot scores."""
    if not outcome.zero_shot:
        return [], [], {}
    names: list[str] = []
    for per_model in outcome.zero_shot.values():
        names += [n for n in per_model if n not in names]
    done = [t for t in tasks if t.name in outcome.zero_shot]
    lines = ["", "## Zero-shot (CLAP models)", "",
             "Captions '<class name> can be heard' (EVAR rules), cosine similarity; single-label: softmax → accuracy, "
             "multi-label: sigmoid → macro mAP. All test clips (every fold's test part for CV tasks).", "",
             "| model | " + " | ".join(t.name for t in done) + " |", "|---|" + "---|" * len(done)]
    csv_rows: list[str] = []
    data: dict[str, Any] = {}
    for name in names:
        cells = []
        for t in done:
            r = outcome.zero_shot[t.name].get(name)
            cells.append("–" if r is None else f"{100 * r.score:.1f}")
            if r is not None:
                csv_rows.append(f"{name},zs_{t.name},zero-shot,{r.metric},{r.score:.6f},,{r.n_test}")
                data.setdefault(t.name, {})[name] = {"metric": r.metric, "score": r.score, "n_test": r.n_test,
                                                     "captions": r.captions, "errors": r.errors,
                                                     "per_class_accuracy": r.per_class_accuracy}
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines, csv_rows, data


# ------------------------------------------------------------------------------------------ captions
def caption_report_rows(scores: Mapping[str, CaptionScores]) -> list[str]:
    """The "Captions" section of ``report.md``: a heading, what the numbers are, and one table row per system
    (e.g. ``captioner``, ``nearest neighbour``) from :func:`~kikimimi.evaluation.caption_metrics.metrics_table`
    (the table ``kikimimi eval-captions`` prints), with the metrics that could not run named under it."""
    if not scores:
        return []
    counts = {s.n for s in scores.values()}
    clips = (f"{counts.pop()} clips" if len(counts) == 1
             else "clips: " + ", ".join(f"{name} {s.n}" for name, s in scores.items()))
    tokenizers = ", ".join(sorted({s.tokenizer for s in scores.values()}))
    text = (f"Corpus-level caption metrics (pycocoevalcap, {tokenizers} tokenizer) of each system's captions "
            f"against the reference captions ({clips}).")
    if any("nearest" in name.lower() for name in scores):
        text += (" The nearest-neighbour row is the baseline: the caption of the closest training clip (cosine of "
                 "pooled audio embeddings).")
    return ["## Captions", "", text, "", metrics_table(scores)]


def caption_report_json(scores: Mapping[str, CaptionScores]) -> dict[str, Any]:
    """The ``captions`` entry of ``report.json``: system → ``{"scores", "unavailable", "n", "tokenizer"}``."""
    return {name: s.to_dict() for name, s in scores.items()}
