"""Running a probe evaluation: several models on several tasks, with baselines (the computing half of ``eval``).

:func:`run_evaluation` refuses tasks whose valid/test labels are missing from training (before any embedding),
embeds every task with every model once (cached under ``<out>/cache``), runs each probe (linear and/or
logistic, :mod:`kikimimi.evaluation.probe`) with repeated seeds, scores the CLAP models zero-shot, and hands
the results object (:class:`~kikimimi.evaluation.report.EvalOutcome`) to
:func:`kikimimi.evaluation.report.write_reports`, which writes ``report.md``, ``report.json`` and
``scores.csv`` (the confusion matrices and cluster maps are drawn as the results come in).

:func:`model_specs` turns CLI-style model names into :class:`ModelSpec` rows; :func:`load_finetune_rows` reads
``kikimimi finetune`` reports back so ``kikimimi eval --finetune DIR`` merges them into the table.

Baselines: the log-mel statistics embedding and, for every checkpoint, the same architecture at random
initialisation, so every score has context.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kikimimi.evaluation.baselines import LogMelStats
from kikimimi.evaluation.caption_metrics import CaptionScores
from kikimimi.evaluation.cluster_plot import plot_clusters
from kikimimi.evaluation.confusion_plot import confusion_title, plot_confusion
from kikimimi.evaluation.embeddings import embed_task
from kikimimi.evaluation.encoder_settings import encoder_settings, task_norm_stats
from kikimimi.evaluation.metrics import metric_label, metric_score
from kikimimi.evaluation.probe import PROBES, ProbeConfig, ProbeResult, probe_embeddings
from kikimimi.evaluation.report import (
    EvalOutcome,
    FinetuneRow,
    chosen_text,
    confusion_name,
    slug,
    write_reports,
)
from kikimimi.evaluation.tasks import Task, TaskError
from kikimimi.evaluation.zeroshot import zero_shot_task
from kikimimi.fileio import settings_fingerprint
from kikimimi.inference.clap import CLAPModel
from kikimimi.inference.encoder import AudioEncoder, load, random_init_like
from kikimimi.inference.jobs import job_record
from kikimimi.models.vit import AudioViT

__all__ = ["LOGMEL", "ModelSpec", "EvalOutcome", "FinetuneRow", "model_specs", "model_label",
           "load_finetune_rows", "run_evaluation"]

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
        encoder = load(name, device=device, norm_stats=norm_stats, trust_pickle=trust_pickle,
                       precision="fp32")  # scores compare encoders: exact features, not the fastest path
        label = model_label(name)
        while label in {s.name for s in specs}:
            label += "'"
        settings = encoder_settings(encoder.encoder)

        def make(task: Task, encoder=encoder, random: bool = False, preset=settings.task_norm_stats_preset):
            enc = encoder
            if preset is not None and norm_stats is None:
                # EVAR: statistics from the first fold's training split
                stats = task_norm_stats(next(task.folds()).train, preset)
                enc = type(encoder)(encoder.bundle, device=encoder.device)
                enc.norm_stats = stats
            return random_init_like(enc) if random else enc

        # what the model's embeddings depend on: weights content, config, front end, statistics (the identity
        # that `kikimimi embed` records), so a cache never serves another model's or other statistics' vectors
        fp = settings_fingerprint(job_record(encoder, "clip", name))
        specs.append(ModelSpec(label, make, encoder.sample_rate, lr, fp, encoder.family,
                               zero_shot=_zero_shot_factory(encoder, name, text_encoder)))
        if baselines:
            specs.append(ModelSpec(f"{label} (random init)", lambda task, m=make: m(task, random=True),
                                   encoder.sample_rate, lr, f"random:{fp}", encoder.family))
    return specs


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
            score, std = _rescore(task, preds)
            note = f"re-scored as {metric_label(task.metric)} from the saved predictions"
        elif task.metric != res.get("metric"):
            note = f"scored as {res.get('metric')}, not {metric_label(task.metric)}"
        rows.append(FinetuneRow(model, task_name, task.metric, score, std, path, note))
    return rows


def _rescore(task: Task, preds: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """Mean and std over folds of ``task.metric`` from saved single-label predictions (label, prediction)."""
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
    return float(np.mean(fold_scores)), float(np.std(fold_scores))


def run_evaluation(specs: Sequence[ModelSpec], tasks: Sequence[Task], out_dir: str | Path, *,
                   seeds: Sequence[int] = (42, 43, 44), hidden: Sequence[int] = (), device: str = "cpu",
                   plots: bool = True, progress: bool = False, log: Callable[[str], None] | None = None,
                   map_method: str = "tsne", probes: Sequence[str] = PROBES,
                   finetune: Sequence[FinetuneRow] = (),
                   captions: Mapping[str, CaptionScores] | None = None, verdicts: bool = True) -> EvalOutcome:
    """Evaluate every model on every task with every probe and write the report files (module docstring).

    Args:
        probes: ``"linear"`` and/or ``"logistic"`` (the first is the one ``report.json``'s ``results`` lists
            at the top level; every probe is under ``probes``).
        finetune: fine-tuning rows to merge (:func:`load_finetune_rows`).
        map_method: ``"tsne"`` or ``"umap"`` (optional ``umap-learn``) for the per-task cluster figure.
        captions: system name → caption scores (:func:`kikimimi.evaluation.caption_metrics.caption_scores`),
            e.g. ``{"captioner": …, "nearest neighbour": …}``, added as the report's "Captions" section.
        verdicts: add the "Did pre-training help?" section (:mod:`kikimimi.evaluation.verdicts`); the first
            run passes ``False`` and writes its own, with the run length.

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
    outcome = EvalOutcome(out_dir=out, seeds=tuple(seeds), hidden=tuple(hidden), probes=probes)
    for spec in specs:
        outcome.models[spec.name] = {"fingerprint": spec.fingerprint, "family": spec.family, "lr": spec.lr,
                                     "sample_rate": spec.sample_rate}
    for task in tasks:
        _run_task(outcome, specs, task, device=device, plots=plots, progress=progress, log=log,
                  map_method=map_method)
    write_reports(outcome, tasks, finetune=list(finetune), captions=dict(captions or {}), verdicts=verdicts)
    return outcome


def _run_task(outcome: EvalOutcome, specs: Sequence[ModelSpec], task: Task, *, device: str, plots: bool,
              progress: bool, log: Callable[[str], None] | None, map_method: str) -> None:
    """Embed ``task`` with every spec, probe it, draw its figures and record everything in ``outcome``."""
    out = outcome.out_dir
    assert out is not None
    outcome.results[task.name] = {}
    notes = outcome.notes[task.name] = []
    if not task.has_valid:
        notes.append("no validation split: a class-complete 10% hold-out of each training fold "
                     "selects the probes' hyper-parameters (and the linear probe's epoch)")
    panels = {}
    skipped: dict[str, str] = {}
    embs = None
    for spec in specs:
        embs = embed_task(spec.make(task), task, sample_rate=spec.sample_rate, seed=42, cache_dir=out / "cache",
                          model_id=spec.fingerprint[:16] + slug(spec.name), progress=progress)
        new = [(k, r) for k, r in embs.errors if k not in skipped]
        if new and log:
            log(f"{task.name}: skipped {len(new)} unreadable file(s): " + "; ".join(f"{k} ({r})" for k, r in new))
        skipped.update(embs.errors)
        per_probe = _probe_spec(outcome, spec, task, embs, device=device, plots=plots, progress=progress, log=log)
        outcome.results[task.name][spec.name] = per_probe
        first = per_probe[outcome.probes[0]]
        fold = embs.folds[0]
        if plots and first.metric != "mAP" and len(fold.test) >= 3:
            panels[f"{spec.name}\n{metric_label(first.metric)} {100 * first.score:.1f}%"] = (
                fold.x_test, [it.label for it in fold.test])
    outcome.skipped[task.name] = sorted(skipped.items())
    _run_zero_shot(outcome, specs, task, notes, log)
    if plots and panels and embs is not None:
        map_name = {"tsne": "t-SNE", "umap": "UMAP"}.get(map_method, map_method)
        plot_clusters(panels, out / slug(task.name) / "clusters.png", method=map_method,
                      title=f"{task.name}: {map_name} of test embeddings (fold {embs.folds[0].index})")


def _probe_spec(outcome: EvalOutcome, spec: ModelSpec, task: Task, embs: Any, *, device: str, plots: bool,
                progress: bool, log: Callable[[str], None] | None) -> dict[str, ProbeResult]:
    """Every probe of ``outcome.probes`` on one model's embeddings of ``task`` (and its confusion figures)."""
    assert outcome.out_dir is not None
    per_probe: dict[str, ProbeResult] = {}
    for probe in outcome.probes:
        config = ProbeConfig(lr=spec.lr, hidden=outcome.hidden, device=device, probe=probe)
        result = probe_embeddings(embs.folds, task, config=config, seeds=outcome.seeds, progress=progress)
        result.settings.update(embs.settings)
        result.settings["errors"] = [f"{k}: {r}" for k, r in embs.errors]
        per_probe[probe] = result
        if log:
            log(f"{task.name:<16} {spec.name:<40} {probe:<8} {metric_label(result.metric)} "
                f"{100 * result.score:5.1f} ± {100 * result.std:.1f}  ({chosen_text(result)})")
        if plots and result.metric != "mAP":
            plot_confusion(result, confusion_title(spec.name, task, result),
                           outcome.out_dir / slug(task.name) / confusion_name(spec.name, probe))
    return per_probe


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
