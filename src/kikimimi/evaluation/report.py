"""Linear-probe evaluation of several models on several tasks, with baselines, written as a report.

`run_evaluation` embeds every task with every model (cached), runs the EVAR probe with repeated seeds
and writes, under ``out_dir``:

- ``report.md``: one table (rows = models including baselines, columns = tasks, mean ± std), then per task
  the settings, notes (e.g. no validation split) and a per-class accuracy table;
- ``report.json``: everything machine-readable (scores per fold and seed, per-class accuracy, settings,
  model and data fingerprints, kikimimi version, time);
- ``scores.csv``: ``model,task,metric,mean,std,n_test``;
- ``<task>/confusion-<model>.png`` for every single-label model × task and ``<task>/clusters.png``: a t-SNE
  (or, with ``map_method="umap"``, UMAP) map of the test embeddings of every model side by side, coloured by class.

:func:`write_finetune_report` writes the same kind of report for a fine-tuning run
(:mod:`kikimimi.evaluation.finetune`), stating how the test epoch was selected.

Baselines: the log-mel statistics embedding and, for every checkpoint, the same architecture at random
initialisation, so every score has context.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi import __version__
from kikimimi.evaluation.baselines import LogMelStats
from kikimimi.evaluation.cluster_plot import plot_clusters
from kikimimi.evaluation.encoder_settings import encoder_settings, task_norm_stats
from kikimimi.evaluation.metrics import confusion_matrix
from kikimimi.evaluation.probe import ProbeConfig, ProbeResult, evaluate_task
from kikimimi.evaluation.tasks import Task
from kikimimi.evaluation.zeroshot import zero_shot_task
from kikimimi.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from kikimimi.inference.clap import CLAPModel
from kikimimi.inference.encoder import AudioEncoder, load, random_init_like
from kikimimi.models.vit import AudioViT

LOGMEL = "logmel"


@dataclass
class ModelSpec:
    """A model to evaluate: a display name, an embedding-function factory and its settings."""

    name: str
    make: Callable[[Task], Any]  # task -> embedding function (called once per task: BYOL-A stats per task)
    sample_rate: int
    lr: float
    fingerprint: str
    family: str = "baseline"
    zero_shot: Callable[[Task], Any] | None = None  # task -> ZeroShotResult (CLAP models only)


@dataclass
class EvalOutcome:
    results: dict[str, dict[str, ProbeResult]] = field(default_factory=dict)  # task -> model -> result
    zero_shot: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> model -> ZeroShotResult
    out_dir: Path | None = None


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file, or of every file of a folder (sorted), as hex."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def task_fingerprint(task: Task) -> str:
    """Hash of the task rows (file, label, split/fold) and each file's size."""
    h = hashlib.sha256()
    for item in task.items:
        size = item.path.stat().st_size if item.path.exists() else -1
        h.update(f"{item.key}|{item.labels}|{item.split}|{item.fold}|{size}\n".encode())
    return h.hexdigest()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def model_specs(models: Sequence[str], *, baselines: bool = True, device: str = "cpu",
                lr: float | None = None, norm_stats: Sequence[float] | None = None,
                text_encoder: str | None = None) -> list[ModelSpec]:
    """Model specs from CLI-style names: checkpoint paths, or ``logmel`` for the log-mel baseline.

    M2D-CLAP checkpoints also get a zero-shot evaluation (``ModelSpec.zero_shot``); ``text_encoder`` is the
    spec their text side needs when the file has none inside it (e.g. ``"gte:/path/to/gte-base"``).
    """
    specs: list[ModelSpec] = []
    names = list(models)
    if baselines and LOGMEL not in names:
        names.insert(0, LOGMEL)
    for name in names:
        if name == LOGMEL:
            specs.append(ModelSpec("log-mel stats", lambda task: LogMelStats("m2d-16k"), 16000, lr or 3e-4,
                                   "logmel-m2d-16k"))
            continue
        encoder = load(name, device=device, norm_stats=norm_stats)
        path = Path(name)
        label = path.parent.name if path.is_file() or path.name == "kikimimi" else path.name
        while label in {s.name for s in specs}:
            label += "'"
        settings = encoder_settings(encoder.encoder)
        probe_lr = lr or settings.probe_lr

        def make(task: Task, encoder=encoder, random: bool = False, preset=settings.task_norm_stats_preset):
            enc = encoder
            if preset is not None and norm_stats is None:
                # EVAR: statistics from the first fold's training split
                stats = task_norm_stats(next(task.folds()).train, preset)
                enc = type(encoder)(encoder.bundle, device=encoder.device)
                enc.norm_stats = stats
            return random_init_like(enc) if random else enc

        fp = file_fingerprint(name)
        specs.append(ModelSpec(label, make, encoder.sample_rate, probe_lr, fp, encoder.family,
                               zero_shot=_zero_shot_factory(encoder, name, text_encoder)))
        if baselines:
            specs.append(ModelSpec(f"{label} (random init)", lambda task, m=make: m(task, random=True),
                                   encoder.sample_rate, probe_lr, f"random:{fp}", encoder.family))
    return specs


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    return buf.getvalue()


def plot_confusion(result: ProbeResult, title: str, out_png: Path) -> None:
    """Row-normalised confusion matrix of the first seed's test predictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = result.classes
    folds = [f for f in result.folds if f.seed == result.folds[0].seed]
    y_true = np.concatenate([f.y_true for f in folds])
    y_pred = np.concatenate([f.y_pred for f in folds])
    cm = confusion_matrix(y_true, y_pred, len(classes)).astype(float)
    cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(12.0, 2.5 + 0.35 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if cm[i, j] > 0:
                    ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if cm[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    atomic_write_bytes(out_png, _png(fig))
    plt.close(fig)


def run_evaluation(specs: Sequence[ModelSpec], tasks: Sequence[Task], out_dir: str | Path, *,
                   seeds: Sequence[int] = (42, 43, 44), hidden: Sequence[int] = (), device: str = "cpu",
                   plots: bool = True, progress: bool = False, log: Callable[[str], None] | None = None,
                   map_method: str = "tsne") -> EvalOutcome:
    """Evaluate every model on every task and write the report files (see the module docstring).

    ``map_method``: ``"tsne"`` or ``"umap"`` (optional ``umap-learn``) for the per-task cluster figure.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcome = EvalOutcome(out_dir=out)
    notes: dict[str, list[str]] = {}
    for task in tasks:
        outcome.results[task.name] = {}
        notes[task.name] = []
        if not task.has_valid:
            notes[task.name].append("no validation split: a class-complete 10% hold-out of each training fold "
                                    "selects the probe's early-stopping epoch")
        panels = {}
        for spec in specs:
            config = ProbeConfig(lr=spec.lr, hidden=tuple(hidden), device=device)
            embed_fn = spec.make(task)
            result, embs = evaluate_task(embed_fn, task, sample_rate=spec.sample_rate, config=config, seeds=seeds,
                                         cache_dir=out / "cache", model_id=spec.fingerprint[:16] + _slug(spec.name),
                                         progress=progress)
            outcome.results[task.name][spec.name] = result
            if log:
                log(f"{task.name:<16} {spec.name:<40} {result.metric} {100 * result.score:5.1f} "
                    f"± {100 * result.std:.1f}")
            if plots and result.metric == "accuracy":
                plot_confusion(result, f"{spec.name} — {task.name}\naccuracy {100 * result.score:.1f}%",
                               out / _slug(task.name) / f"confusion-{_slug(spec.name)}.png")
                fold = embs.folds[0]
                if len(fold.test) >= 3:
                    panels[f"{spec.name}\n{100 * result.score:.1f}%"] = (fold.x_test, [it.label for it in fold.test])
        _run_zero_shot(outcome, specs, task, notes[task.name], log)
        if plots and panels:
            map_name = {"tsne": "t-SNE", "umap": "UMAP"}.get(map_method, map_method)
            plot_clusters(panels, out / _slug(task.name) / "clusters.png", method=map_method,
                          title=f"{task.name}: {map_name} of test embeddings (fold {embs.folds[0].index})")
    _write_reports(outcome, specs, tasks, notes, seeds, hidden, __version__)
    return outcome


def _write_reports(outcome: EvalOutcome, specs, tasks, notes, seeds, hidden, version: str) -> None:
    out = outcome.out_dir
    assert out is not None
    names = [s.name for s in specs]
    lines = ["# kikimimi evaluation report", "",
             f"Linear probe, EVAR protocol, seeds {list(seeds)}" + (f", MLP hidden {list(hidden)}" if hidden else ""),
             "", "| model | " + " | ".join(t.name for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for name in names:
        cells = []
        for t in tasks:
            r = outcome.results[t.name][name]
            cells.append(f"{100 * r.score:.1f} ± {100 * r.std:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Scores in % (accuracy, or mAP for multi-label tasks), mean ± std over the probe seeds.", "",
              "Models (sha256 fingerprints; full values in report.json):", ""]
    lines += [f"- {s.name}: {s.family}, probe lr {s.lr:g}, `{s.fingerprint[:19]}`" for s in specs]
    csv_rows = ["model,task,metric,mean,std,n_test"]
    report: dict[str, Any] = {"kikimimi_version": version, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "seeds": list(seeds), "hidden": list(hidden), "models": {}, "tasks": {}}
    for spec in specs:
        report["models"][spec.name] = {"fingerprint": spec.fingerprint, "family": spec.family, "lr": spec.lr,
                                       "sample_rate": spec.sample_rate}
    for t in tasks:
        slug = _slug(t.name)
        lines += ["", f"## {t.name}", "",
                  f"{len(t.items)} clips, {t.n_classes} classes, unit {t.unit_s:g} s, "
                  f"{'folds ' + str(t.fold_ids()) if t.is_cv else 'train/valid/test split'}."]
        lines += [f"- {n}" for n in notes[t.name]]
        lines.append(f"- task fingerprint `{task_fingerprint(t)[:12]}`")
        results = outcome.results[t.name]
        first = next(iter(results.values()))
        if first.metric == "accuracy":
            classes = first.classes
            lines += ["", "Per-class accuracy (%):", "", "| model | " + " | ".join(classes) + " |",
                      "|---|" + "---|" * len(classes)]
            for name in names:
                pc = results[name].per_class_accuracy
                lines.append(f"| {name} | " + " | ".join(f"{100 * pc[c]:.0f}" for c in classes) + " |")
            if (out / slug / "clusters.png").exists():
                lines += ["", f"![clusters]({slug}/clusters.png)"]
        report["tasks"][t.name] = {"fingerprint": task_fingerprint(t), "notes": notes[t.name], "results": {}}
        for name in names:
            r = results[name]
            n_test = sum(len(f.y_true) for f in r.folds if f.seed == r.folds[0].seed)
            csv_rows.append(f"{name},{t.name},{r.metric},{r.score:.6f},{r.std:.6f},{n_test}")
            report["tasks"][t.name]["results"][name] = {
                "metric": r.metric, "mean": r.score, "std": r.std, "seed_scores": r.seed_scores,
                "fold_scores": {str(k): v for k, v in r.fold_scores.items()},
                "per_class_accuracy": r.per_class_accuracy, "settings": _jsonable(r.settings)}
    zs_lines, zs_csv, zs_json = _zero_shot_report(outcome, tasks)
    lines += zs_lines
    csv_rows += zs_csv
    if zs_json:
        report["zero_shot"] = zs_json
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "scores.csv", "\n".join(csv_rows) + "\n")
    atomic_write_json(out / "report.json", _jsonable(report))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# ------------------------------------------------------------------------------------------ fine-tuning
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


def write_finetune_report(result: Any, out_dir: str | Path, *, model_name: str, task: Task,
                          model_fingerprint: str | None = None) -> Path:
    """Write ``report.md``, ``report.json`` and ``predictions.csv`` for one :class:`FinetuneResult`.

    The Markdown states how the test epoch was selected (``valid`` / ``holdout`` / ``last_epoch``), the
    per-class accuracy, the per-epoch history and the settings; the JSON holds everything plus the model
    and task fingerprints.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    report = {"kikimimi_version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": model_name,
              "model_fingerprint": model_fingerprint, "task": task.name, "task_fingerprint": task_fingerprint(task),
              "result": result.to_dict()}
    atomic_write_json(out / "report.json", _jsonable(report))
    rows = ["key,fold,label,prediction"]
    for p in result.predictions:
        pred = p.get("prediction", "")
        rows.append(",".join(_csv_cell(v) for v in (p["key"], p["fold"], p["label"], pred)))
    atomic_write_text(out / "predictions.csv", "\n".join(rows) + "\n")
    return out / "report.md"


def _csv_cell(value: Any) -> str:
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


# ------------------------------------------------------------------------------------------ zero-shot
def _zero_shot_factory(encoder: AudioEncoder, source: str, text_encoder: str | None) -> Callable[[Task], Any] | None:
    """For an M2D-CLAP encoder: ``task -> ZeroShotResult`` (EVAR zero-shot protocol); else ``None``."""
    if not isinstance(encoder.encoder, AudioViT) or encoder.bundle.audio_proj is None:
        return None

    def run(task: Task) -> Any:
        return zero_shot_task(CLAPModel(encoder, text_encoder=text_encoder, source=source), task)

    return run


def _run_zero_shot(outcome: EvalOutcome, specs: Sequence[ModelSpec], task: Task, notes: list[str],
                   log: Callable[[str], None] | None) -> None:
    """Zero-shot scores of the CLAP specs on ``task``; a text side that cannot load becomes a note."""
    for spec in specs:
        if spec.zero_shot is None:
            continue
        try:
            result = spec.zero_shot(task)
        except (ValueError, ImportError, OSError) as exc:  # CLAPError / TextEncoderError are ValueErrors
            notes.append(f"zero-shot skipped for {spec.name}: {exc}")
            continue
        outcome.zero_shot.setdefault(task.name, {})[spec.name] = result
        if log:
            log(f"{task.name:<16} {spec.name + ' (zero-shot)':<40} {result.metric} {100 * result.score:5.1f}")


def _zero_shot_report(outcome: EvalOutcome, tasks: Sequence[Task]) -> tuple[list[str], list[str], dict]:
    """Markdown lines, ``scores.csv`` rows (task ``zs_<task>``, std empty) and JSON for the zero-shot scores."""
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
                csv_rows.append(f"{name},zs_{t.name},{r.metric},{r.score:.6f},,{r.n_test}")
                data.setdefault(t.name, {})[name] = {"metric": r.metric, "score": r.score, "n_test": r.n_test,
                                                     "captions": r.captions, "errors": r.errors,
                                                     "per_class_accuracy": r.per_class_accuracy}
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines, csv_rows, data
