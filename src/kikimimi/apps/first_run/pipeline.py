"""The first run (``kikimimi demo``): every stage of kikimimi on real recordings, in about ten CPU minutes.

The run first prints the machine (CPU, cores, AVX2/AVX-512/AMX, load; :mod:`kikimimi.apps.first_run.figures`).
Stages (each prints what it did, its time and the time left as a range from the pace it measured,
:class:`Progress`; each reuses what an earlier run left, so an interrupted demo resumes); ``summary.json`` ends
with ``figures``, every figure the README states, measured by this run:

1. **data**: a small real-audio set from Debian packages (:mod:`kikimimi.apps.first_run.real_data`, cached in
   ``$KIKIMIMI_HOME/datasets``), or generated sounds with ``offline`` / when the packages cannot be fetched
   (a line says so);
2. **log-mel**: prep caches of the pre-training pool (M2D and BYOL-A front ends) and of the labelled clips;
3. **pre-training**: a short CPU run of a tiny M2D and of BYOL-A on the unlabelled pool (from scratch);
3b. **further pre-training** (when this installation has kikimimi's packaged encoder ``open-m2d-tiny``): the
   shipped encoder continued with its own M2D recipe on the same pool for a minute
   (:mod:`kikimimi.apps.first_run.further_stage`);
4. **evaluation**: linear and logistic probes of every encoder (the from-scratch runs, ``open-m2d-tiny`` as
   shipped and further pre-trained) against log-mel statistics, the same networks at random initialisation and
   chance; the report says, per task, whether pre-training beat random init and log-mel statistics and,
   where it did not, why (run length);
5. **audio–language**: a tiny M2D-CLAP trained from scratch on label captions (minutes-long), and kikimimi's
   packaged CLAP ``open-clap-tiny`` as shipped: zero-shot classification and text search of the same held-out
   clips with both (:mod:`kikimimi.apps.first_run.clap_stage`);
6. **captions**: a captioner on the CLAP encoder and one question answered
   (:mod:`kikimimi.apps.first_run.caption_stage`; a failure is reported and the run goes on);
7. **report**: ``report/report.md`` and a self-contained ``report/report.html``
   (:mod:`kikimimi.apps.first_run.report_html`); intermediate checkpoints are removed unless
   ``keep_intermediate``.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kikimimi.apps.first_run import caption_stage, clap_stage
from kikimimi.apps.first_run.figures import describe_machine, load_factor, machine_line, run_figures
from kikimimi.apps.first_run.further_stage import (
    FURTHER_BATCH,
    FURTHER_FRAMES,
    FURTHER_RECIPE,
    SHIPPED_ENCODER,
    further_pretrain,
    shipped_encoder_folder,
)
from kikimimi.apps.first_run.pretraining import intermediate_settings, pretrain
from kikimimi.apps.first_run.real_data import RealSet, TaskFile, build_real_set
from kikimimi.apps.first_run.report_html import write_report_html
from kikimimi.audio.synthetic import make_dataset
from kikimimi.checkpoints.registry import default_packaged_model
from kikimimi.data.debian_sources import SourceError
from kikimimi.evaluation.run import ModelSpec, model_specs, run_evaluation
from kikimimi.evaluation.tasks import Task
from kikimimi.evaluation.verdicts import compare, verdict_text
from kikimimi.features.prep_cache import prep_cache
from kikimimi.fileio import atomic_write_json, atomic_write_text
from kikimimi.training.settings import recipe_values

__all__ = ["FirstRunOptions", "DemoData", "Progress", "run_first_run", "verdicts", "M2D_RECIPE", "BYOLA_RECIPE"]

Log = Callable[[str], None]

#: The first run's pre-training recipes, by name (kikimimi.methods.recipes, which says where their values come from;
#: `kikimimi pretrain --recipe NAME --data POOL --steps N` reproduces each run): a tiny M2D on 1.6-s crops and
#: BYOL-A v1 512-d, both batch 32.
M2D_RECIPE = "first-run-m2d"
BYOLA_RECIPE = "first-run-byola"
_M2D, _BYOLA = recipe_values(M2D_RECIPE), recipe_values(BYOLA_RECIPE)
#: Official run lengths, for the "why" of a short run: samples seen = epochs × clips.
OFFICIAL_SAMPLES = {"M2D": 300 * 2_000_000, "BYOL-A": 100 * 2_000_000}

#: Real set: CLAP label phrases (``_`` reads as a space) for the caption templates and the zero-shot prompt.
DRUM_PHRASES = {"kick": "kick_drum", "snare": "snare_drum", "hihat": "hi-hat", "tom": "tom_drum",
                "cymbal": "cymbal", "other": "hand_percussion"}
LANGUAGE_PHRASES = {"english": "English_speech", "spanish": "Spanish_speech", "french": "French_speech",
                    "italian": "Italian_speech", "russian": "Russian_speech"}
REAL_QUERIES: tuple[tuple[str, str], ...] = (
    ("a snare drum", "snare_drum"),
    ("someone speaking French", "French_speech"),
    ("a cymbal", "cymbal"),
)
#: Generated set: classes of the unlabelled pool (the others are only seen at evaluation time).
PRETRAIN_CLASSES = ("tone", "chirp", "noise_burst", "harmonic_note", "silence")

#: Planned stage times (s), for the first ETA: a fresh-clone run on the quiet 2-core machine (2026-12-02, the
#: Debian packages downloaded in the data stage); later ETAs scale them by how fast the finished stages went.
PLANNED_S = {"data": 40.0, "log-mel": 20.0, "pre-training": 245.0, "further pre-training": 60.0,
             "evaluation": 110.0, "audio-language": 50.0, "captions": 35.0, "report": 5.0}
#: Further pre-training steps of the packaged encoder (batch 64 of 2.08-s crops, its own recipe): sized like the
#: from-scratch runs, about a minute at 2 threads on a quiet machine — an estimate, not yet measured quiet: a step
#: costs about 2.6 times a step of the from-scratch M2D (twice the batch, 1.3 times the patches; about 0.36 s
#: there in the README's quiet runs). Measured on the team's 2-core Xeon at load 9–13: 50 steps in 12 min 50 s.
FURTHER_STEPS = 50


@dataclass
class FirstRunOptions:
    """Settings of :func:`run_first_run` (the flags of ``kikimimi demo``)."""

    out: Path
    offline: bool = False
    data_cache: Path | None = None
    deb_dir: Path | None = None
    seed: int = 0
    workers: int = 2
    m2d_steps: int = 200
    byola_steps: int = 100
    further_steps: int = FURTHER_STEPS
    clap_steps: int = 100
    clap_weight: float = clap_stage.DEMO_CLAP_WEIGHT
    caption_steps: int = 300
    skip_clap: bool = False
    skip_captions: bool = False
    keep_intermediate: bool = False
    clips_per_class: int = 40
    duration_s: float = 3.0
    probe_seeds: tuple[int, ...] = (42, 43, 44)


@dataclass
class DemoData:
    """The data a run uses: the labelled tasks, the unlabelled pool, the CLAP set and where caches go."""

    kind: str  # "real" or "generated"
    summary: str
    tasks: list[TaskFile]
    pool_csv: Path
    work: Path  # prep caches
    clap_csv: Path
    clap_unit_s: float
    queries: tuple[tuple[str, str], ...]
    packages: list[str] = field(default_factory=list)
    licences: list[str] = field(default_factory=list)
    fallback_reason: str = ""


#: Stages whose time says nothing about the CPU's pace (network and disk); the others predict each other.
NOT_PACED = ("data",)
#: A stage far faster than planned reused its caches: its pace says nothing about the CPU either.
MIN_PACE = 0.25


class Progress:
    """Stage timer: prints a heading, then the stage time and the time left as a range.

    The range is the plan (:data:`PLANNED_S`, measured on a quiet 2-core machine) times the pace this machine
    showed: each finished CPU-bound stage's measured time over its planned time. Before any such stage has
    finished, the pace is between 1 (a quiet machine like the reference) and ``load_factor`` (how loaded this
    machine was at the start, :func:`kikimimi.apps.first_run.figures.load_factor`). The upper end is widened by
    50 % while fewer than two paces are measured, 25 % after.
    """

    def __init__(self, stages: Sequence[str], log: Log, planned: dict[str, float] = PLANNED_S,
                 load_factor: float = 1.0) -> None:
        self.stages, self.log, self.planned, self.load_factor = list(stages), log, planned, load_factor
        self.times: dict[str, float] = {}
        self.start = time.perf_counter()
        self._t0 = self.start
        self._current = ""

    def begin(self, stage: str, title: str) -> None:
        self._current, self._t0 = stage, time.perf_counter()
        n = self.stages.index(stage) + 1
        self.log(f"\n== {n}/{len(self.stages)} {title}")

    def end(self, what: str = "") -> float:
        seconds = time.perf_counter() - self._t0
        self.times[self._current] = seconds
        self.log(f"   {what + '; ' if what else ''}stage time {_fmt_s(seconds)}; {self.eta_text()}")
        return seconds

    def paces(self) -> list[float]:
        """Measured time over planned time of the finished CPU-bound stages (reused ones left out)."""
        paces = [self.times[s] / self.planned[s] for s in self.stages
                 if s in self.times and s not in NOT_PACED and self.planned.get(s)]
        return [p for p in paces if p >= MIN_PACE]

    def eta_range_s(self) -> tuple[float, float]:
        """(low, high) seconds left: the rest of the plan at the slowest and fastest pace seen (class docstring)."""
        rest = sum(self.planned.get(s, 30.0) for s in self.stages if s not in self.times)
        paces = self.paces()
        low, high = (min(paces), max(paces)) if paces else (1.0, max(1.0, self.load_factor))
        return 0.9 * low * rest, high * rest * (1.5 if len(paces) < 2 else 1.25)

    def eta_text(self) -> str:
        rest = [s for s in self.stages if s not in self.times]
        if not rest:
            return f"all done in {_fmt_s(time.perf_counter() - self.start)}"
        low, high = self.eta_range_s()
        return f"about {_fmt_range(low, high)} left ({', '.join(rest)})"


def _fmt_range(low: float, high: float) -> str:
    """``20–40 s`` under 90 s, else whole minutes: ``4–9 min``."""
    if high < 90:
        return f"{low:.0f}–{max(high, low):.0f} s"
    lo, hi = int(low // 60), int(-(-high // 60))
    return f"{lo}–{max(hi, lo + 1)} min"


def _fmt_s(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(round(seconds % 60)):02d} s"


# ------------------------------------------------------------------------------------------------ 1. data


def real_data(opts: FirstRunOptions, log: Log) -> DemoData:
    """The real set (:func:`build_real_set`) plus its CLAP label CSV."""
    real: RealSet = build_real_set(opts.data_cache, allow_network=not opts.offline, deb_dir=opts.deb_dir,
                                   seed=opts.seed, log=log)
    clap_csv = real.root / "clap_labels.csv"
    if not clap_csv.exists():
        rows = []
        for tf in real.tasks:
            phrases = DRUM_PHRASES if tf.name == "drum_type" else LANGUAGE_PHRASES
            with open(tf.csv, newline="", encoding="utf-8") as f:
                for r in csv.DictReader(f):
                    rows.append({"file_name": r["file_name"], "label": phrases[r["label"]], "split": r["split"]})
        _write_csv(clap_csv, rows, ["file_name", "label", "split"])
    summary = (f"real recordings from Debian packages ({', '.join(real.packages)}), cached in {real.root}"
               + (" (reused)" if real.reused else f" (built in {_fmt_s(real.seconds)})"))
    return DemoData("real", summary, real.tasks, real.pool_csv, real.root, clap_csv, 3.0, REAL_QUERIES,
                    real.packages, [str(p) for p in real.licences])


def generated_data(opts: FirstRunOptions, reason: str = "") -> DemoData:
    """The generated fallback: 8 classes of synthetic sounds, a pool of 5 of them (kikimimi.audio.synthetic)."""
    out = Path(opts.out)
    labels_csv = out / "audio" / "labels.csv"
    if not labels_csv.exists():
        make_dataset(out / "audio", n_per_class=opts.clips_per_class, duration_s=opts.duration_s, seed=opts.seed)
    pool_csv = out / "pretrain-audio" / "labels.csv"
    if not pool_csv.exists():
        make_dataset(out / "pretrain-audio", n_per_class=opts.clips_per_class, duration_s=opts.duration_s,
                     seed=opts.seed + 1000, classes=PRETRAIN_CLASSES)
    task = TaskFile("synthetic8", labels_csv, 2.0,
                    f"8 classes of generated sounds; {', '.join(PRETRAIN_CLASSES)} in the pre-training pool")
    queries = (("a chirp sweeping up", "chirp"), ("a noise burst", "noise_burst"), ("clicks", "clicks"))
    return DemoData("generated", "generated sounds (kikimimi.audio.synthetic; no downloads)"
                    + (f" — {reason}" if reason else ""), [task], pool_csv, out / "work", labels_csv,
                    opts.duration_s, queries, fallback_reason=reason)


def prepare_data(opts: FirstRunOptions, log: Log) -> DemoData:
    """Real recordings unless ``offline``; generated sounds, with a line saying why, when they cannot be had."""
    if opts.offline:
        log("   --offline: using generated sounds instead of real recordings")
        return generated_data(opts, "chosen with --offline")
    try:
        return real_data(opts, log)
    except (SourceError, OSError, ValueError) as exc:
        reason = f"real recordings unavailable ({type(exc).__name__}: {str(exc)[:300]})"
        log(f"   NOTE: {reason}; falling back to generated sounds (run with --offline to skip the download)")
        return generated_data(opts, reason)


def _write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _describe_tasks(data: DemoData, log: Log) -> list[Task]:
    tasks = []
    for tf in data.tasks:
        task = Task.from_csv(tf.csv, name=tf.name, unit_s=tf.unit_s)
        counts = {s: len(task.split_items(s)) for s in ("train", "valid", "test")}
        log(f"   task {tf.name}: {task.n_classes} classes ({', '.join(task.classes)}), "
            f"{counts['train']} train / {counts['valid']} valid / {counts['test']} test clips — {tf.description}")
        tasks.append(task)
    with open(data.pool_csv, newline="", encoding="utf-8") as f:
        n_pool = sum(1 for _ in csv.DictReader(f))
    log(f"   unlabelled pre-training pool: {n_pool} clips ({data.pool_csv})")
    return tasks


# ------------------------------------------------------------------------------------------------ 2–3.


def _cache(data: DemoData, csv_path: Path, name: str, preset: str, workers: int) -> Path:
    cache = data.work / f"prep-{name}-{preset}"
    prep_cache([csv_path], cache, preset=preset, workers=workers)
    return cache


def _steps_text(steps: int, batch: int, pool: int) -> str:
    return f"{steps} steps of batch {batch} ({steps * batch:,} crops ≈ {steps * batch / max(pool, 1):.1f} passes " \
           f"over the {pool:,}-clip pool)"


@dataclass
class EncoderRun:
    """A pre-trained encoder of the first run and how it was trained."""

    family: str  # "M2D" / "BYOL-A"
    name: str  # human-readable row name
    run_dir: Path
    steps: int
    batch_size: int
    pool_clips: int
    seconds: float
    twin: str = ""  # the name of its random-init row (default: "<family> (random init)")
    init: str = ""  # what the run started from ("" = a random initialisation)
    why: str = ""  # why it may lose, when not the run length of :func:`why_short`

    @property
    def samples(self) -> int:
        return self.steps * self.batch_size


# ------------------------------------------------------------------------------------------------ 4.


def verdicts(results: dict[str, dict[str, dict[str, Any]]], runs: Sequence[EncoderRun],
             probes: Sequence[str], baseline: str = "log-mel statistics") -> list[dict[str, Any]]:
    """Per task × encoder × probe: did pre-training beat the random-init twin *and* the ``baseline`` (log-mel
    statistics), by how much, and why not (:func:`kikimimi.evaluation.verdicts.compare`).

    ``results``: ``{task: {model name: {probe: ProbeResult}}}`` (:class:`~kikimimi.evaluation.report.EvalOutcome`).
    """
    out = []
    for task, models in results.items():
        for run in runs:
            twin = run.twin or f"{run.family} (random init)"
            if run.name not in models or twin not in models:
                continue
            for probe in probes:
                base = models.get(baseline, {}).get(probe)
                entry = compare(task, run.name, probe, models[run.name][probe], models[twin][probe],
                                baseline if base is not None else None, base)
                entry["family"] = run.family
                entry["text"] = verdict_text(entry, run.why or why_short(run), BASELINE_WINS_SHORT_RUN)
                out.append(entry)
    return out


#: What a baseline win means in the first run (its runs are minutes long).
BASELINE_WINS_SHORT_RUN = "the run was too short to learn more than hand-made statistics"


def why_short(run: EncoderRun) -> str:
    """Why a short run may not beat random init, in numbers: samples seen vs the official recipe."""
    fraction = OFFICIAL_SAMPLES[run.family] / max(run.samples, 1)
    return (f"{run.samples:,} crops seen in {_fmt_s(run.seconds)}, about 1/{fraction:,.0f} of the official "
            "recipe's samples")


WHY_TEXT = ("Why pre-training can lose to random init and to log-mel statistics here: these runs are minutes long "
            "on a CPU, a tiny fraction of the official recipes (M2D: 300 epochs of AudioSet, batch 2048; BYOL-A: 100 "
            "epochs), and a randomly initialised network under a trained probe, like hand-made log-mel statistics, "
            "is a strong baseline at that length; the gap opens with longer runs (docs/usage.md, \"Short runs on a "
            "CPU\"). Differences within the seed spread (±) are noise.")


# ------------------------------------------------------------------------------------------------ the run


#: Row names of the packaged encoder, as shipped and further pre-trained, and of their random-init twin
SHIPPED_ROW = f"{SHIPPED_ENCODER} (shipped, Apache-2.0)"
SHIPPED_TWIN = f"{SHIPPED_ENCODER} network (random init)"
#: why the packaged encoder may lose: its training, in numbers (the recipe ``open-m2d-tiny``)
SHIPPED_WHY = "7,500 steps of batch 64 on 11 h of openly licensed audio, a few CPU-hours"


def further_row(steps: int) -> str:
    """The probe-table name of the further pre-trained packaged encoder."""
    return f"{SHIPPED_ENCODER} + further pre-training, {steps} steps on the pool"


def shipped_encoder_specs(log: Log = print) -> list[ModelSpec]:
    """The packaged encoder as one more row of the probe table (``open-m2d-tiny (shipped, Apache-2.0)``; its
    random-init twin is the further pre-trained run's, the same network), or ``[]`` with a line saying why when the
    installation has no packaged folder. Loading it verifies its SHA-256 and needs no network."""
    if shipped_encoder_folder() is None:
        log(f"   the packaged encoder {SHIPPED_ENCODER} is not in this installation: its row is left out")
        return []
    specs = model_specs([SHIPPED_ENCODER], baselines=False)
    for spec in specs:
        spec.name = SHIPPED_ROW
    return specs


def run_first_run(opts: FirstRunOptions, log: Log = print) -> dict[str, Any]:
    """Run every stage (module docstring); returns the summary written to ``<out>/summary.json``."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    caption_mod = None if opts.skip_captions or opts.skip_clap else caption_stage
    further = opts.further_steps > 0 and shipped_encoder_folder() is not None
    stages = ["data", "log-mel", "pre-training"] + (["further pre-training"] if further else []) + ["evaluation"]
    stages += [] if opts.skip_clap else ["audio-language"]
    stages += ["captions"] if caption_mod is not None else []
    stages += ["report"]
    machine = describe_machine()
    log(machine_line(machine))
    progress = Progress(stages, log, load_factor=load_factor(machine))
    summary: dict[str, Any] = {"out": str(out), "options": _jsonable(asdict(opts)), "stages": {}, "machine": machine}

    progress.begin("data", "Data: real recordings (Debian packages), generated sounds as the fallback")
    data = prepare_data(opts, log)
    log(f"   using {data.summary}")
    tasks = _describe_tasks(data, log)
    summary["data"] = {"kind": data.kind, "summary": data.summary, "packages": data.packages,
                       "licences": data.licences, "fallback_reason": data.fallback_reason,
                       "tasks": [{"name": t.name, "csv": str(t.csv), "unit_s": t.unit_s, "description": t.description}
                                 for t in data.tasks], "pool_csv": str(data.pool_csv)}
    summary["clap_csv_dir"] = str(data.clap_csv.parent)
    progress.end(f"{data.kind} data")

    progress.begin("log-mel", "Log-mel caches (M2D 16 kHz and BYOL-A front ends)")
    m2d_pool = _cache(data, data.pool_csv, "pool", "m2d-16k", opts.workers)
    byola_pool = _cache(data, data.pool_csv, "pool", "byola", opts.workers)
    labelled = _cache(data, data.clap_csv, "labelled", "m2d-16k", opts.workers) if not opts.skip_clap else None
    n_pool = sum(1 for _ in m2d_pool.rglob("*.npy"))
    progress.end(f"{n_pool} pool clips in {m2d_pool} and {byola_pool}"
                 + (f"; labelled clips in {labelled}" if labelled else ""))

    progress.begin("pre-training", "Pre-train a tiny M2D and BYOL-A on the unlabelled pool (short CPU recipes)")
    keep = intermediate_settings
    runs = []
    m2d_name = f"m2d_vit_tiny-80x{_M2D['input_frames']}p16x16-firstrun"
    t0 = time.perf_counter()
    log(f"   M2D ViT-tiny: {_steps_text(opts.m2d_steps, _M2D['batch_size'], n_pool)}")
    m2d_dir = pretrain(out, m2d_pool, M2D_RECIPE, m2d_name, opts.m2d_steps,
                       keep(opts.m2d_steps, opts.keep_intermediate), log=log)
    runs.append(EncoderRun("M2D", f"M2D ViT-tiny, {opts.m2d_steps} steps", m2d_dir, opts.m2d_steps,
                           _M2D["batch_size"], n_pool, time.perf_counter() - t0))
    t0 = time.perf_counter()
    log(f"   BYOL-A (AudioNTT2020, 512-d): {_steps_text(opts.byola_steps, _BYOLA['batch_size'], n_pool)}")
    byola_dir = pretrain(out, byola_pool, BYOLA_RECIPE, "AudioNTT2020-BYOLA-64x96d512-firstrun", opts.byola_steps,
                         keep(opts.byola_steps, opts.keep_intermediate), log=log)
    runs.append(EncoderRun("BYOL-A", f"BYOL-A d512, {opts.byola_steps} steps", byola_dir, opts.byola_steps,
                           _BYOLA["batch_size"], n_pool, time.perf_counter() - t0))
    summary["pretraining"] = [{**_jsonable(asdict(r)), "samples": r.samples} for r in runs]
    progress.end(f"M2D {_fmt_s(runs[0].seconds)}, BYOL-A {_fmt_s(runs[1].seconds)}")

    if further:
        progress.begin("further pre-training", f"Further pre-training: kikimimi's packaged {SHIPPED_ENCODER} "
                       "continued with its own M2D recipe on the pool")
        t0 = time.perf_counter()
        log(f"   {SHIPPED_ENCODER} (recipe {FURTHER_RECIPE}, {FURTHER_FRAMES / 100:.2f}-s crops): "
            f"{_steps_text(opts.further_steps, FURTHER_BATCH, n_pool)}")
        further_dir = further_pretrain(out, m2d_pool, opts.further_steps,
                                       extra=keep(opts.further_steps, opts.keep_intermediate), seed=opts.seed,
                                       log=log)
        runs.append(EncoderRun("M2D", further_row(opts.further_steps), further_dir, opts.further_steps,
                               FURTHER_BATCH, n_pool, time.perf_counter() - t0, twin=SHIPPED_TWIN,
                               init=f"{SHIPPED_ENCODER} as shipped",
                               why=f"{SHIPPED_WHY}, then {opts.further_steps * FURTHER_BATCH:,} crops of the pool"))
        summary["pretraining"].append({**_jsonable(asdict(runs[-1])), "samples": runs[-1].samples})
        progress.end(f"{opts.further_steps} steps in {_fmt_s(runs[-1].seconds)}")

    progress.begin("evaluation", "Evaluate: linear + logistic probes vs log-mel, random init and chance")
    specs = model_specs([str(r.run_dir / "kikimimi") for r in runs]) + shipped_encoder_specs(log)
    names = {"log-mel stats": "log-mel statistics"}
    for r in runs:
        label = r.run_dir.name
        names[label] = r.name
        names[f"{label} (random init)"] = r.twin or f"{r.family} (random init)"
    for spec in specs:
        spec.name = names.get(spec.name, spec.name)
    report_dir = out / "report"
    probes = ("linear", "logistic")
    outcome = run_evaluation(specs, tasks, report_dir, seeds=opts.probe_seeds, probes=probes,
                             log=lambda line: log("   " + line), verdicts=False)  # its own, with the run length
    judged = list(runs)
    if any(s.name == SHIPPED_ROW for s in specs):  # the shipped encoder against the same twin, when it is there
        shipped_dir = shipped_encoder_folder() or Path(SHIPPED_ENCODER)
        judged.append(EncoderRun("M2D", SHIPPED_ROW, shipped_dir, 7_500, 64, 0, 0.0, twin=SHIPPED_TWIN,
                                 init="", why=SHIPPED_WHY))
    found = verdicts(outcome.results, judged, probes)
    for v in found:
        log("   " + v["text"].replace("**", ""))
    if any(v["verdict"] != "helped" for v in found):
        log("   " + WHY_TEXT)
    summary["verdicts"] = [dict(e) for e in found]
    summary["why"] = WHY_TEXT
    summary["models"] = {s.name: {"family": s.family, "fingerprint": s.fingerprint} for s in specs}
    _append_verdicts(report_dir / "report.md", data, runs, found, [s.name for s in specs if s.name == SHIPPED_ROW])
    progress.end(f"{len(specs)} models × {len(tasks)} task(s) × {len(probes)} probes")

    clap_run = None
    if not opts.skip_clap:
        progress.begin("audio-language", "Audio–language: a tiny M2D-CLAP from scratch (minutes-long) and the packaged "
                       f"{clap_stage.SHIPPED_CLAP} as shipped (zero-shot and text search, held-out clips)")
        assert labelled is not None
        done = []
        try:
            res = clap_stage.audio_language(
                out, data.clap_csv, labelled, steps=opts.clap_steps, clap_weight=opts.clap_weight,
                duration_s=data.clap_unit_s, queries=data.queries, report_md=report_dir / "report.md",
                task_name="clap_" + data.kind, pretrain_extra=keep(opts.clap_steps, opts.keep_intermediate),
                log=log)
        except clap_stage.ClapStageError as exc:  # report, skip the stages that need it, finish
            log(f"error: {exc}")
            summary["clap"] = {"error": str(exc)}
            summary.setdefault("failed", []).append("audio-language")
        else:
            clap_run = out / "pretrain" / clap_stage.CLAP_RUN_NAME
            zs = res["zeroshot"]
            summary["clap"] = {"zeroshot_accuracy": zs["accuracy"], "chance": zs["chance"], "n_test": zs["n_test"],
                               "search_precision": clap_stage.search_precision(res["search"]), "run": str(clap_run)}
            done.append(f"from scratch: zero-shot {100 * zs['accuracy']:.1f} % (chance {100 * zs['chance']:.1f} %)")
        summary["shipped_clap"] = _shipped_clap(out, data, report_dir / "report.md", log)
        shipped_zs = summary["shipped_clap"].get("zeroshot_accuracy")
        if shipped_zs is not None:
            done.append(f"{clap_stage.SHIPPED_CLAP}: zero-shot {100 * shipped_zs:.1f} %")
        progress.end("; ".join(done) or "failed")
    elif not opts.skip_captions:
        log("\n   (captions need the audio–language model: skipped with --skip-clap)")

    if caption_mod is not None and clap_run is None and "captions" in stages:
        progress.times["captions"] = 0.0  # nothing to caption with: the audio-language stage failed
    if caption_mod is not None and clap_run is not None:
        progress.begin("captions", "Captions and one question (kikimimi.apps.first_run.caption_stage)")
        try:
            cap = caption_mod.run_caption_stage(out / "caption", clap_run / "kikimimi", data.clap_csv,
                                                steps=opts.caption_steps, seed=opts.seed,
                                                shipped_captioner=default_packaged_model("captioner"),
                                                log=lambda line: log("   " + line))
            clap_stage.append_report_section(report_dir / "report.md", cap.get("markdown", ""), key="captions")
            summary["captions"] = {k: cap.get(k) for k in ("class_word_accuracy", "nn_class_word_accuracy", "chance",
                                                           "question", "answer", "model_dir", "n_test",
                                                           "shipped_captioner", "shipped_class_word_accuracy")}
            progress.end(f"class word in {100 * float(cap.get('class_word_accuracy') or 0):.0f} % of held-out captions")
        except Exception as exc:  # an optional stage: report, skip, finish
            log(f"   NOTE: caption stage failed ({type(exc).__name__}: {exc}); the report leaves it out")
            summary["captions"] = {"error": f"{type(exc).__name__}: {exc}"}
            progress.end("failed")

    progress.begin("report", "Report: report.md and a self-contained report.html")
    removed = 0 if opts.keep_intermediate else _remove_intermediate(out, data)
    summary["stages"] = dict(progress.times)
    summary["seconds"] = time.perf_counter() - progress.start
    html = write_report_html(report_dir / "report.html", out, summary)
    atomic_write_json(out / "summary.json", _jsonable(summary))
    progress.end(f"wrote {report_dir / 'report.md'} and {html}"
                 + (f"; removed {removed / 1e6:.0f} MB of training checkpoints and caches (the exported models "
                    "stay; --keep-intermediate keeps everything)"
                    if removed else ""))
    summary["stages"] = dict(progress.times)
    summary["seconds"] = time.perf_counter() - progress.start
    summary["figures"] = run_figures(out, summary, dataset_cache=data.work.parent if data.kind == "real" else None)
    atomic_write_json(out / "summary.json", _jsonable(summary))
    failed = summary.get("failed", [])
    log(f"\nDemo finished in {_fmt_s(summary['seconds'])} on {data.kind} data"
        + (f" with failed stage(s) {', '.join(failed)}" if failed else "") + f"; open {html}")
    return summary


def _shipped_clap(out: Path, data: DemoData, report_md: Path, log: Log) -> dict[str, Any]:
    """The packaged CLAP on the held-out clips (:func:`clap_stage.shipped_clap`) as a summary entry: its zero-shot
    accuracy, chance and text-search P@3, or ``{"skipped": why}`` / ``{"error": …}`` (the run goes on)."""
    if default_packaged_model("clap") is None:
        log(f"   the packaged CLAP {clap_stage.SHIPPED_CLAP} is not in this installation: its rows are left out")
        return {"skipped": f"{clap_stage.SHIPPED_CLAP} is not in this installation"}
    try:
        res = clap_stage.shipped_clap(out, data.clap_csv, duration_s=data.clap_unit_s, queries=data.queries,
                                      task_name="clap_" + data.kind, report_md=report_md, log=log)
    except clap_stage.ClapStageError as exc:
        log(f"   NOTE: {exc}; the report leaves the packaged CLAP out")
        return {"error": str(exc)}
    zs = res["zeroshot"]
    return {"model": clap_stage.SHIPPED_CLAP, "zeroshot_accuracy": zs["accuracy"], "chance": zs["chance"],
            "n_test": zs["n_test"], "search_precision": res["search_precision"], "seconds": res["seconds"]}


def _remove_intermediate(out: Path, data: DemoData) -> int:
    """Remove what a user does not need once the run is done: the training checkpoints (optimiser state for
    resuming; the exported encoders in ``<run>/kikimimi`` stay) and the generated set's prep caches (the real
    set's stay in the dataset cache). Returns the bytes freed."""
    freed = 0
    targets: list[Path] = []
    if data.kind == "generated" and data.work.is_dir():
        targets.append(data.work)
    for run in sorted((out / "pretrain").glob("*")):
        if (run / "kikimimi" / "config.json").is_file():
            targets += sorted(run.glob("checkpoint-*.pth")) + [p for p in [run / "last.pth"] if p.is_symlink()
                                                               or p.exists()]
    for t in targets:
        if t.is_symlink():
            t.unlink()
        elif t.is_dir():
            freed += sum(p.stat().st_size for p in t.rglob("*") if p.is_file())
            shutil.rmtree(t)
        elif t.exists():
            freed += t.stat().st_size
            t.unlink()
    return freed


def _append_verdicts(report_md: Path, data: DemoData, runs: Sequence[EncoderRun], found: Sequence[dict],
                     shipped: Sequence[str] = ()) -> None:
    lines = ["## First run: data, models and what pre-training bought", "",
             f"Data: {data.summary}.", ""]
    lines += [f"- {t.name}: {t.description}" for t in data.tasks]
    lines += ["", "Models: " + "; ".join(
        f"**{r.name}** (`{r.run_dir.name}`, {r.steps} steps of batch {r.batch_size} on {r.pool_clips} unlabelled "
        f"clips{', starting from ' + r.init if r.init else ' from scratch'}, {_fmt_s(r.seconds)})" for r in runs)
        + "; their random-init twins; log-mel statistics"
        + "".join(f"; **{n}**: kikimimi's packaged encoder, trained for hours on openly licensed audio "
                  "(`kikimimi models info open-m2d-tiny`), used as shipped" for n in shipped) + ".", ""]
    lines += [f"- {v['text']}" for v in found]
    if any(v["verdict"] != "helped" for v in found):
        lines += ["", WHY_TEXT]
    clap_stage.append_report_section(report_md, "\n".join(lines), key="first-run")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


def read_summary(out: Path) -> dict[str, Any]:
    """``<out>/summary.json`` of a finished run."""
    return json.loads((Path(out) / "summary.json").read_text(encoding="utf-8"))
