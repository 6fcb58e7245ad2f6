"""Probe evaluation of several models on several tasks, with baselines, written as a report.

`run_evaluation` refuses tasks whose valid/test labels are missing from training (before any embedding),
embeds every task with every model once (cached), runs each probe (linear and/or logistic,
:mod:`kikimimi.evaluation.probe`) with repeated seeds and writes, under ``out_dir``:

- ``report.md``: one table per task metric (rows = model × probe including baselines, then fine-tune rows when
  given, then the chance and majority-class lines; columns = tasks, mean ± std over seeds), then per task the clip
  length rule and how many clips it crops or pads, the skipped (unreadable) files by name, notes, the probe
  settings behind each number, links to the confusion matrices and a per-class accuracy table;
- ``report.json``: everything machine-readable (scores per fold and seed, every applicable metric, per-class
  accuracy, settings, model and data fingerprints, kikimimi version, time);
- ``scores.csv``: ``model,task,probe,metric,mean,std,n_test``;
- ``<task>/confusion-<model>-<probe>.png``: counts summed over every seed and fold, for every single-label
  model × probe × task, and ``<task>/clusters.png``: a t-SNE (or, with ``map_method="umap"``, UMAP) map of the
  test embeddings of every model side by side, coloured by class;
- with ``captions=`` (``kikimimi eval … --captions PRED.csv REF.csv [--nn-captions NN.csv]``): a "Captions"
  section in ``report.md`` — one row per system (the captioner and, as its baseline, the nearest-neighbour
  captions) × BLEU-1..4 / METEOR / ROUGE-L / CIDEr-D (SPICE / SPIDEr when they can run, else named
  unavailable), the table of :func:`kikimimi.evaluation.caption_metrics.metrics_table` — and ``captions`` in
  ``report.json`` (:func:`caption_report_rows`, :func:`caption_report_json`).

:func:`write_finetune_report` writes the same kind of report for a fine-tuning run
(:mod:`kikimimi.evaluation.finetune`), stating how the test epoch was selected; :func:`load_finetune_rows`
reads such reports back so ``kikimimi eval --finetune DIR`` merges them into the table.

Baselines: the log-mel statistics embedding and, for every checkpoint, the same architecture at random
initialisation, so every score has context.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi import __version__
from kikimimi.evaluation.baselines import LogMelStats
from kikimimi.evaluation.caption_metrics import CaptionScores, metrics_table
from kikimimi.evaluation.cluster_plot import plot_clusters
from kikimimi.evaluation.embeddings import embed_task
from kikimimi.evaluation.encoder_settings import encoder_settings, task_norm_stats
from kikimimi.evaluation.metrics import confusion_matrix, metric_label, metric_score
from kikimimi.evaluation.probe import PROBES, ProbeConfig, ProbeResult, probe_embeddings
from kikimimi.evaluation.tasks import Task, TaskError
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
    lr: float | None  # None: the linear probe searches its lr grid on validation
    fingerprint: str
    family: str = "baseline"
    zero_shot: Callable[[Task], Any] | None = None  # task -> ZeroShotResult (CLAP models only)


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
    results: dict[str, dict[str, dict[str, ProbeResult]]] = field(default_factory=dict)  # task -> model -> probe
    skipped: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # task -> [(file, reason)]
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


def model_label(name: str) -> str:
    """Row name of a model argument: the file stem of a weight file, the run folder of a ``<run>/kikimimi``
    checkpoint, else the folder (or registry) name."""
    path = Path(name)
    if path.name == "kikimimi" and path.is_dir():
        return path.resolve().parent.name
    if path.is_file() or path.suffix in {".pth", ".pt", ".ckpt", ".safetensors", ".bin"}:
        return path.stem
    return path.name or name


def model_specs(models: Sequence[str], *, baselines: bool = True, device: str = "cpu",
                lr: float | None = None, norm_stats: Sequence[float] | None = None,
                text_encoder: str | None = None, trust_pickle: bool = False) -> list[ModelSpec]:
    """Model specs from CLI-style names: checkpoint paths, or ``logmel`` for the log-mel baseline.

    ``lr``: pin the linear probe's learning rate for every model (default ``None``: the same validation
    search for every model, :data:`kikimimi.evaluation.probe.DEFAULT_LR_GRID`).

    M2D-CLAP checkpoints also get a zero-shot evaluation (``ModelSpec.zero_shot``); ``text_encoder`` is the
    spec their text side needs when the file has none inside it (e.g. ``"gte:/path/to/gte-base"``).
    ``trust_pickle``: allow arbitrary pickled objects in the checkpoints (only for files you trust).
    """
    specs: list[ModelSpec] = []
    names = list(models)
    if baselines and LOGMEL not in names:
        names.insert(0, LOGMEL)
    for name in names:
        if name == LOGMEL:
            specs.append(ModelSpec("log-mel stats", lambda task: LogMelStats("m2d-16k"), 16000, lr,
                                   "logmel-m2d-16k"))
            continue
        encoder = load(name, device=device, norm_stats=norm_stats, trust_pickle=trust_pickle)
        label = model_label(name)
        while label in {s.name for s in specs}:
            label += "'"
        settings = encoder_settings(encoder.encoder)
        probe_lr = lr

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
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")  # long titles and labels stay whole
    return buf.getvalue()


def summed_confusion(result: ProbeResult) -> np.ndarray:
    """Confusion counts ``[C, C]`` (row = true class) summed over every seed and fold of ``result``."""
    n = len(result.classes)
    cm = np.zeros((n, n), np.int64)
    for f in result.folds:
        cm += confusion_matrix(f.y_true, f.y_pred, n)
    return cm


def plot_confusion(result: ProbeResult, title: str, out_png: Path) -> None:
    """Row-normalised confusion matrix of the test predictions summed over all seeds and folds (the title
    should say so; :func:`run_evaluation` writes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = result.classes
    cm = summed_confusion(result).astype(float)
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


def confusion_title(spec_name: str, task: Task, result: ProbeResult) -> str:
    """Title stating what the cells are (summed over seeds and folds) and the mean score they go with."""
    seeds = result.settings.get("seeds", [])
    n_folds = result.settings.get("n_folds", 1)
    return (f"{spec_name} — {task.name} ({result.probe} probe)\n"
            f"test counts summed over seeds {seeds}" + (f" × {n_folds} folds" if n_folds > 1 else "")
            + f", row-normalised\n{metric_label(result.metric)} mean over seeds {100 * result.score:.1f}%")


def load_finetune_rows(dirs: Sequence[str | Path], tasks: Sequence[Task]) -> list[FinetuneRow]:
    """Rows for the evaluation table from ``kikimimi finetune`` output folders (their ``report.json``).

    A single-label result is re-scored under its task's metric from the saved test predictions; a task that
    is not among ``tasks`` is refused.

    Raises:
        TaskError: a folder without a readable fine-tuning ``report.json``, or one for another task.
    """
    by_name = {t.name: t for t in tasks}
    rows: list[FinetuneRow] = []
    for d in dirs:
        path = Path(d)
        path = path / "report.json" if path.is_dir() else path
        try:
            data = json.loads(path.read_text())
            res = data["result"]
            task_name, model = data["task"], data["model"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TaskError(f"'{path}': not a kikimimi fine-tuning report.json ({exc})") from None
        task = by_name.get(task_name)
        if task is None:
            raise TaskError(f"'{path}': fine-tuning report for task '{task_name}', which is not among the "
                            f"evaluated tasks {sorted(by_name)}")
        score, std, note = float(res["score"]), float(res.get("std", 0.0)), ""
        preds = res.get("predictions") or []
        if task.metric != res.get("metric") and task.metric != "mAP" and preds and "prediction" in preds[0]:
            classes = task.classes
            index = {c: i for i, c in enumerate(classes)}
            per_fold: dict[Any, tuple[list[int], list[int]]] = {}
            for p in preds:
                t, q = per_fold.setdefault(p["fold"], ([], []))
                t.append(index[p["label"]])
                q.append(index[p["prediction"]])
            fold_scores = []
            for t, q in per_fold.values():
                logits = np.eye(len(classes), dtype=np.float32)[q]
                fold_scores.append(metric_score(task.metric, np.asarray(t), logits, classes))
            score, std = float(np.mean(fold_scores)), float(np.std(fold_scores))
            note = f"re-scored as {metric_label(task.metric)} from the saved predictions"
        elif task.metric != res.get("metric"):
            note = f"scored as {res.get('metric')}, not {metric_label(task.metric)}"
        rows.append(FinetuneRow(model, task_name, task.metric, score, std, path, note))
    return rows


def run_evaluation(specs: Sequence[ModelSpec], tasks: Sequence[Task], out_dir: str | Path, *,
                   seeds: Sequence[int] = (42, 43, 44), hidden: Sequence[int] = (), device: str = "cpu",
                   plots: bool = True, progress: bool = False, log: Callable[[str], None] | None = None,
                   map_method: str = "tsne", probes: Sequence[str] = PROBES,
                   finetune: Sequence[FinetuneRow] = (),
                   captions: Mapping[str, CaptionScores] | None = None) -> EvalOutcome:
    """Evaluate every model on every task with every probe and write the report files (module docstring).

    Args:
        probes: ``"linear"`` and/or ``"logistic"`` (the first is the one ``report.json``'s ``results`` lists
            at the top level; every probe is under ``probes``).
        finetune: fine-tuning rows to merge (:func:`load_finetune_rows`).
        map_method: ``"tsne"`` or ``"umap"`` (optional ``umap-learn``) for the per-task cluster figure.
        captions: system name → caption scores (:func:`kikimimi.evaluation.caption_metrics.caption_scores`),
            e.g. ``{"captioner": …, "nearest neighbour": …}``, added as the report's "Captions" section.

    Raises:
        TaskError: a task's valid/test labels are missing from its training data (checked before embedding).
    """
    probes = tuple(probes)
    unknown = [p for p in probes if p not in PROBES]
    if unknown or not probes:
        raise ValueError(f"unknown probe(s) {unknown}; choose from {', '.join(PROBES)}")
    for task in tasks:
        task.check_labels()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcome = EvalOutcome(out_dir=out)
    notes: dict[str, list[str]] = {}
    for task in tasks:
        outcome.results[task.name] = {}
        notes[task.name] = []
        if not task.has_valid:
            notes[task.name].append("no validation split: a class-complete 10% hold-out of each training fold "
                                    "selects the probes' hyper-parameters (and the linear probe's epoch)")
        panels = {}
        skipped: dict[str, str] = {}
        for spec in specs:
            embed_fn = spec.make(task)
            embs = embed_task(embed_fn, task, sample_rate=spec.sample_rate, seed=42, cache_dir=out / "cache",
                              model_id=spec.fingerprint[:16] + _slug(spec.name), progress=progress)
            new = [(k, r) for k, r in embs.errors if k not in skipped]
            if new and log:
                log(f"{task.name}: skipped {len(new)} unreadable file(s): "
                    + "; ".join(f"{k} ({r})" for k, r in new))
            skipped.update(embs.errors)
            per_probe: dict[str, ProbeResult] = {}
            for probe in probes:
                config = ProbeConfig(lr=spec.lr, hidden=tuple(hidden), device=device, probe=probe)
                result = probe_embeddings(embs.folds, task, config=config, seeds=seeds, progress=progress)
                result.settings.update(embs.settings)
                result.settings["errors"] = [f"{k}: {r}" for k, r in embs.errors]
                per_probe[probe] = result
                if log:
                    log(f"{task.name:<16} {spec.name:<40} {probe:<8} {metric_label(result.metric)} "
                        f"{100 * result.score:5.1f} ± {100 * result.std:.1f}  ({_chosen_text(result)})")
                if plots and result.metric != "mAP":
                    plot_confusion(result, confusion_title(spec.name, task, result),
                                   out / _slug(task.name) / _confusion_name(spec.name, probe))
            outcome.results[task.name][spec.name] = per_probe
            first = per_probe[probes[0]]
            fold = embs.folds[0]
            if plots and first.metric != "mAP" and len(fold.test) >= 3:
                panels[f"{spec.name}\n{metric_label(first.metric)} {100 * first.score:.1f}%"] = (
                    fold.x_test, [it.label for it in fold.test])
        outcome.skipped[task.name] = sorted(skipped.items())
        _run_zero_shot(outcome, specs, task, notes[task.name], log)
        if plots and panels:
            map_name = {"tsne": "t-SNE", "umap": "UMAP"}.get(map_method, map_method)
            plot_clusters(panels, out / _slug(task.name) / "clusters.png", method=map_method,
                          title=f"{task.name}: {map_name} of test embeddings (fold {embs.folds[0].index})")
    _write_reports(outcome, specs, tasks, notes, seeds, hidden, probes, list(finetune), __version__,
                   dict(captions or {}))
    return outcome


def _confusion_name(model: str, probe: str) -> str:
    return f"confusion-{_slug(model)}-{probe}.png"


def _chosen_text(result: ProbeResult) -> str:
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
                f"validation; chosen {_chosen_text(result)}")
    lr = f"lr {st['lr']:g} (pinned)" if st.get("lr") else "lr from [" + ", ".join(
        f"{v:g}" for v in st.get("lr_grid", ())) + "] on validation"
    epochs = [c["best_epoch"] for c in st.get("chosen", [])]
    capped = sum(1 for c in st.get("chosen", []) if c["best_epoch"] == st.get("epochs"))
    hidden = f", MLP hidden {st['hidden']}" if st.get("hidden") else ""
    text = (f"Adam, {lr}, wd {st['weight_decay']:g}, batch ≤ {st['batch_size']}, ≤ {st['epochs']} epochs, "
            f"patience {st['patience']}{hidden}; chosen {_chosen_text(result)}; best epochs "
            f"{min(epochs)}–{max(epochs)}" if epochs else "")
    if capped:
        text += f" ({capped} run(s) still improving at the last epoch)"
    return text


def _write_reports(outcome: EvalOutcome, specs, tasks, notes, seeds, hidden, probes, finetune, version: str,
                   captions: Mapping[str, CaptionScores] | None = None) -> None:
    out = outcome.out_dir
    assert out is not None
    names = [s.name for s in specs]
    lines = ["# kikimimi evaluation report", "",
             f"Probes: {', '.join(probes)} (EVAR protocol with a validation-chosen hyper-parameter; see the "
             f"settings per task), seeds {list(seeds)}" + (f", MLP hidden {list(hidden)}" if hidden else "") + "."]
    lines += ["", "| model | probe | " + " | ".join(f"{t.name} ({metric_label(t.metric)})" for t in tasks) + " |",
              "|---|---|" + "---|" * len(tasks)]
    for name in names:
        for probe in probes:
            cells = []
            for t in tasks:
                r = outcome.results[t.name][name][probe]
                cells.append(f"{100 * r.score:.1f} ± {100 * r.std:.1f}")
            lines.append(f"| {name} | {probe} | " + " | ".join(cells) + " |")
    for row_name in sorted({(r.model) for r in finetune}):
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
    noted = [r for r in finetune if r.note]
    lines += [f"- \\* {r.model} on {r.task}: {r.note} (`{r.source}`)" for r in noted]
    lines += ["", "Models (sha256 fingerprints; full values in report.json):", ""]
    lines += [f"- {s.name}: {s.family}, `{s.fingerprint[:19]}`" for s in specs]
    csv_rows = ["model,task,probe,metric,mean,std,n_test"]
    report: dict[str, Any] = {"kikimimi_version": version, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "seeds": list(seeds), "hidden": list(hidden), "probes": list(probes), "models": {},
                              "tasks": {}, "finetune": [
                                  {"model": r.model, "task": r.task, "metric": r.metric, "mean": r.score,
                                   "std": r.std, "source": str(r.source), "note": r.note} for r in finetune]}
    for spec in specs:
        report["models"][spec.name] = {"fingerprint": spec.fingerprint, "family": spec.family, "lr": spec.lr,
                                       "sample_rate": spec.sample_rate}
    for t in tasks:
        slug = _slug(t.name)
        results = outcome.results[t.name]
        skipped = outcome.skipped.get(t.name, [])
        lengths = t.length_summary(specs[0].sample_rate if specs else 16000)
        lines += ["", f"## {t.name}", "",
                  f"{len(t.items)} clips in the task ({len(t.items) - len(skipped)} embedded, {len(skipped)} "
                  f"skipped), {t.n_classes} classes, metric {metric_label(t.metric)}, "
                  f"{'folds ' + str(t.fold_ids()) if t.is_cv else 'train/valid/test split'}.",
                  f"- clip length {t.unit_s:g} s ({t.unit_rule}): {lengths['cropped']} clip(s) cropped, "
                  f"{lengths['padded']} zero-padded, {lengths['exact']} exact"
                  + (f", {lengths['unknown']} without a readable header" if lengths["unknown"] else "") + "."]
        if skipped:
            lines.append(f"- **{len(skipped)} file(s) skipped** (unreadable or missing):")
            lines += [f"  - `{k}`: {r}" for k, r in skipped]
        lines += [f"- {n}" for n in notes[t.name]]
        lines.append(f"- task fingerprint `{task_fingerprint(t)[:12]}`")
        lines += ["", "Probe settings behind each number:", ""]
        for name in names:
            for probe in probes:
                lines.append(f"- {name}, {probe}: {_settings_text(results[name][probe])}")
        first = results[names[0]][probes[0]] if names else None
        if first is not None and first.metric != "mAP":
            pngs = [(name, probe) for name in names for probe in probes
                    if (out / slug / _confusion_name(name, probe)).exists()]
            if pngs:
                lines += ["", "Confusion matrices (test counts summed over all seeds and folds, row-normalised): "
                          + ", ".join(f"[{n} / {p}]({slug}/{_confusion_name(n, p)})" for n, p in pngs)]
            classes = first.classes
            lines += ["", f"Per-class accuracy (%, {probes[0]} probe):", "",
                      "| model | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
            for name in names:
                pc = results[name][probes[0]].per_class_accuracy
                lines.append(f"| {name} | " + " | ".join(f"{100 * pc[c]:.0f}" for c in classes) + " |")
            if (out / slug / "clusters.png").exists():
                lines += ["", f"![clusters]({slug}/clusters.png)"]
        report["tasks"][t.name] = {"fingerprint": task_fingerprint(t), "notes": notes[t.name], "metric": t.metric,
                                   "unit_s": t.unit_s, "unit_rule": t.unit_rule, "clip_lengths": lengths,
                                   "skipped": [{"file": k, "reason": r} for k, r in skipped], "results": {}}
        if first is not None:
            report["tasks"][t.name]["reference"] = first.reference
        for name in names:
            entries = {}
            for probe in probes:
                r = results[name][probe]
                n_test = sum(len(f.y_true) for f in r.folds if f.seed == r.folds[0].seed)
                csv_rows.append(f"{name},{t.name},{probe},{r.metric},{r.score:.6f},{r.std:.6f},{n_test}")
                entries[probe] = {
                    "probe": probe, "metric": r.metric, "mean": r.score, "std": r.std, "seed_scores": r.seed_scores,
                    "fold_scores": {str(k): v for k, v in r.fold_scores.items()}, "scores": r.scores,
                    "per_class_accuracy": r.per_class_accuracy, "settings": _jsonable(r.settings)}
            report["tasks"][t.name]["results"][name] = {**entries[probes[0]], "probes": entries}
    zs_lines, zs_csv, zs_json = _zero_shot_report(outcome, tasks)
    lines += zs_lines
    csv_rows += [_zs_csv_with_probe(row) for row in zs_csv]
    if zs_json:
        report["zero_shot"] = zs_json
    if captions:
        lines += ["", *caption_report_rows(captions)]
        report["captions"] = caption_report_json(captions)
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "scores.csv", "\n".join(csv_rows) + "\n")
    atomic_write_json(out / "report.json", _jsonable(report))


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


def _zs_csv_with_probe(row: str) -> str:
    """Insert the probe column (``zero-shot``) into a zero-shot ``scores.csv`` row."""
    model, task, rest = row.split(",", 2)
    return f"{model},{task},zero-shot,{rest}"


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
