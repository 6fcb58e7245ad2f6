"""The report of one fine-tuning run (:mod:`kikimimi.evaluation.finetune`): ``report.md``, ``report.json`` and
``predictions.csv``, stating how the test epoch was selected. ``kikimimi eval --finetune DIR`` reads such
reports back (:func:`kikimimi.evaluation.run.load_finetune_rows`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kikimimi import __version__
from kikimimi.evaluation.report import jsonable, task_fingerprint
from kikimimi.evaluation.tasks import Task
from kikimimi.fileio import atomic_write_json, atomic_write_text

__all__ = ["SELECTION_NOTES", "finetune_rows", "write_finetune_report"]

SELECTION_NOTES = {
    "valid": "the test score is taken at the epoch with the best validation score",
    "holdout": "the task has no validation split: the epoch was selected on a class-complete hold-out of the "
               "training data (never on test)",
    "last_epoch": "the task has no validation split: the test score is that of the last epoch (no selection)",
}


def finetune_rows(rows: Sequence[tuple[str, str, Any]]) -> list[str]:
    """Markdown table lines for fine-tuning results: ``rows`` = ``(model, task, FinetuneResult)``."""
    lines = ["| model | task | metric | score (%) | folds | selection | selected epoch(s) |",
             "|---|---|---|---|---|---|---|"]
    for model, task, r in rows:
        spread = f" ± {100 * r.std:.1f}" if len(r.fold_scores) > 1 else ""
        epochs = ", ".join(str(e) for e in r.best_epochs.values())
        lines.append(f"| {model} | {task} | {r.metric} | {100 * r.score:.1f}{spread} | {len(r.fold_scores)} | "
                     f"{r.selection} | {epochs} |")
    return lines


def _markdown(result: Any, out: Path, model_name: str, task: Task) -> list[str]:
    """The lines of a fine-tuning ``report.md``."""
    s = result.settings
    lines = ["# kikimimi fine-tuning report", "",
             f"{s['optimizer']} lr {s['lr']:g}, {s['epochs']} epochs (warm-up {s['warmup_epochs']:g}), batch "
             f"{s['batch_size']}, mixup {s['mixup']:g}, masks {s['freq_mask']}/{s['time_mask']}, "
             f"RRC {'on' if s['rrc'] else 'off'}, layer decay {s['lr_decay']:g}"
             + (f", dur_frames {s['dur_frames']}" if s.get("dur_frames") else "")
             + (", patch embedding frozen" if s.get("freeze_embed") else "") + f", seed {s['seed']}.", "",
             *finetune_rows([(model_name, task.name, result)]), "",
             f"- selection `{result.selection}`: {SELECTION_NOTES[result.selection]}.",
             f"- {len(task.items)} clips, {task.n_classes} classes, unit {s['unit_s']:g} s, "
             f"{'folds ' + str(list(result.fold_scores)) if task.is_cv else 'train/valid/test split'}."]
    if len(result.fold_scores) > 1:
        lines.append("- per fold: " + ", ".join(f"{k}: {100 * v:.1f}" for k, v in result.fold_scores.items()))
    if result.errors:
        lines.append(f"- {len(result.errors)} unreadable file(s) skipped (listed in report.json).")
    if result.per_class_accuracy:
        classes = result.classes
        lines += ["", "Per-class accuracy (%):", "", "| " + " | ".join(classes) + " |", "|" + "---|" * len(classes),
                  "| " + " | ".join(f"{100 * result.per_class_accuracy[c]:.0f}" for c in classes) + " |"]
    lines += ["", "History (selection score on the "
              + {"valid": "validation split", "holdout": "hold-out", "last_epoch": "—"}[result.selection] + "):", "",
              "| fold | epoch | lr | train loss | selection score (%) |", "|---|---|---|---|---|"]
    for h in result.history:
        sel = "" if h["select_score"] is None else f"{100 * h['select_score']:.1f}"
        lines.append(f"| {h['fold']} | {h['epoch']} | {h['lr']:.3g} | {h['loss']:.4f} | {sel} |")
    if result.model_dirs:
        lines += ["", "Fine-tuned weights (kikimimi format): "
                  + ", ".join(f"`{Path(p).relative_to(out) if Path(p).is_relative_to(out) else p}`"
                              for p in result.model_dirs.values())]
    return lines


def write_finetune_report(result: Any, out_dir: str | Path, *, model_name: str, task: Task,
                          model_fingerprint: str | None = None) -> Path:
    """Write ``report.md``, ``report.json`` and ``predictions.csv`` for one :class:`FinetuneResult`.

    The Markdown states how the test epoch was selected (``valid`` / ``holdout`` / ``last_epoch``), the
    per-class accuracy, the per-epoch history and the settings; the JSON holds everything plus the model
    and task fingerprints.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", "\n".join(_markdown(result, out, model_name, task)) + "\n")
    report = {"kikimimi_version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": model_name,
              "model_fingerprint": model_fingerprint, "task": task.name, "task_fingerprint": task_fingerprint(task),
              "result": result.to_dict()}
    atomic_write_json(out / "report.json", jsonable(report))
    rows = ["key,fold,label,prediction"]
    for p in result.predictions:
        pred = p.get("prediction", "")
        rows.append(",".join(_csv_cell(v) for v in (p["key"], p["fold"], p["label"], pred)))
    atomic_write_text(out / "predictions.csv", "\n".join(rows) + "\n")
    return out / "report.md"


def _csv_cell(value: Any) -> str:
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
