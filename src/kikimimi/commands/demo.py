"""`kikimimi demo`: the whole pipeline, as far as it exists, on generated audio (no downloads).

Stages (each skipped when its output already exists, so an interrupted demo resumes):

1. generate a labelled set of synthetic sounds (`kikimimi.audio.synthetic`);
2. convert it to an M2D 16 kHz log-mel cache (`kikimimi prep`) and summarise the log-mels;
3. pre-train a tiny M2D and a tiny BYOL-A on an unlabelled pool of generated sounds drawn from
   only some of the classes (`kikimimi.training.pretrain.run_pretraining`), so the evaluation also sees classes that
   pre-training never heard;
4. embed the labelled set with both pre-trained encoders (`kikimimi.load`) and evaluate them with the
   EVAR linear probe against a log-mel statistics baseline and the same networks at random
   initialisation; write `report.md`, `scores.csv` and a t-SNE cluster plot;
5. audio–language: caption the training clips from their labels, pre-train a tiny M2D-CLAP on them
   (`kikimimi pretrain --method m2d_clap --text-encoder minilm`), zero-shot classify the held-out test
   clips and search them with text queries (`clap/zeroshot.md`, `clap/zeroshot.json`, `clap/search.json`,
   a section appended to `report/report.md`). `--skip-clap` leaves it out.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

NAME = "demo"
HELP = "Run the end-to-end demo pipeline on generated audio (no downloads)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--clips-per-class", type=int, default=40, help="generated clips per sound class")
    parser.add_argument("--duration-s", type=float, default=3.0, help="clip duration in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes for prep")
    parser.add_argument("--m2d-steps", type=int, default=150, help="tiny M2D pre-training steps")
    parser.add_argument("--byola-steps", type=int, default=100, help="tiny BYOL-A pre-training steps")
    parser.add_argument("--clap-steps", type=int, default=100, help="tiny M2D-CLAP pre-training steps (stage 5)")
    parser.add_argument("--clap-weight", type=float, default=DEMO_CLAP_WEIGHT,
                        help=f"CLAP loss weight of the tiny M2D-CLAP (default {DEMO_CLAP_WEIGHT:g} for this short run; "
                        "the official recipe and `kikimimi pretrain` default is 0.01)")
    parser.add_argument("--skip-clap", action="store_true", help="leave out stage 5 (audio–language)")


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(t0: float) -> None:
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)


def generate_audio(out: Path, clips_per_class: int, duration_s: float, seed: int) -> Path:
    """Stage 1: write the synthetic labelled set; returns its `labels.csv`."""
    from kikimimi.audio.synthetic import make_dataset

    csv_path = out / "audio" / "labels.csv"
    if not csv_path.exists():
        make_dataset(out / "audio", n_per_class=clips_per_class, duration_s=duration_s, seed=seed)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    classes = Counter(r["label"] for r in rows)
    splits = Counter(r["split"] for r in rows)
    print(f"   {len(rows)} clips of {duration_s:g} s in {len(classes)} classes: "
          + ", ".join(f"{c} ({n})" for c, n in sorted(classes.items())))
    print("   splits: " + ", ".join(f"{s} {n}" for s, n in sorted(splits.items())))
    return csv_path


def log_mel_cache(out: Path, labels_csv: Path, workers: int) -> Path:
    """Stage 2: M2D 16 kHz log-mel cache of every clip; prints a per-class summary."""
    from kikimimi.features.prep_cache import prep_cache, read_manifest

    cache = out / "logmel-m2d-16k"
    result = prep_cache([labels_csv], cache, preset="m2d-16k", workers=workers)
    print(f"   cache {cache}: {result.converted} converted, {result.skipped} already there, "
          f"{len(result.failed)} failed")
    rows = read_manifest(cache)
    with open(labels_csv, newline="") as f:
        label_of = {Path(r["file_name"]).stem: r["label"] for r in csv.DictReader(f)}
    per_class: dict[str, list[np.ndarray]] = {}
    for row in rows:
        mel = np.load(cache / row["file_name"], mmap_mode="r")
        per_class.setdefault(label_of.get(Path(row["source"]).stem, "?"), []).append(np.asarray(mel))
    print(f"   {'class':<14} {'clips':>5} {'frames':>7} {'mean':>8} {'std':>7}")
    for label, mels in sorted(per_class.items()):
        stacked = np.stack(mels)
        frames = stacked.shape[-1]
        print(f"   {label:<14} {len(mels):>5} {frames:>7} {stacked.mean():>8.3f} {stacked.std():>7.3f}")
    return cache


#: Classes in the unlabelled pre-training pool; the others are only ever seen at evaluation time.
PRETRAIN_CLASSES = ("tone", "chirp", "noise_burst", "harmonic_note", "silence")


def pretrain_pool(out: Path, duration_s: float, seed: int, clips_per_class: int = 40) -> Path:
    """Unlabelled pre-training audio (different seed from the labelled set, subset of classes)."""
    from kikimimi.audio.synthetic import make_dataset

    csv_path = out / "pretrain-audio" / "labels.csv"
    if not csv_path.exists():
        make_dataset(out / "pretrain-audio", n_per_class=clips_per_class, duration_s=duration_s,
                     seed=seed + 1000, classes=PRETRAIN_CLASSES)
    print(f"   pre-training pool: {clips_per_class * len(PRETRAIN_CLASSES)} clips of {duration_s:g} s "
          f"from {', '.join(PRETRAIN_CLASSES)}")
    return csv_path


def pool_cache(out: Path, pool_csv: Path, preset: str, workers: int) -> Path:
    """Log-mel cache of the pre-training pool for one front-end preset (training reads crops from it)."""
    from kikimimi.features.prep_cache import prep_cache

    cache = out / f"pretrain-logmel-{preset}"
    prep_cache([pool_csv], cache, preset=preset, workers=workers)
    return cache


def pretrain(out: Path, pool_csv: Path, method: str, run_name: str, steps: int, extra: dict[str, Any]) -> Path:
    """Run (or resume, or reuse) one pre-training run (what `kikimimi pretrain` runs); returns its run folder.

    ``extra``: further settings (the long option names of `kikimimi pretrain` with ``_``).
    """
    from kikimimi.training.pretrain import run_pretraining
    from kikimimi.training.settings import resolve_settings, resume_settings

    parent = out / "pretrain"
    run_dir = parent / run_name
    if (run_dir / "kikimimi" / "config.json").exists():
        print(f"   {run_dir} already trained")
        return run_dir
    given = {"method": method, "data": [str(pool_csv)], "out": str(parent), "run_name": run_name, "steps": steps,
             "save_every": max(steps // 3, 1), "min_epoch_size": 1000, "norm_samples": 500, "progress": False, **extra}
    if any(run_dir.glob("checkpoint-*.pth")):
        settings = resume_settings({**given, "resume": str(run_dir)})
    else:
        settings = resolve_settings(given)
    run_pretraining(settings, log=print)
    return run_dir


def evaluate(out: Path, labels_csv: Path, m2d_run: Path, byola_run: Path) -> None:
    """Stage 4: probe both pre-trained encoders and the baselines; report, confusion matrices, t-SNE maps."""
    from kikimimi.evaluation.report import model_specs, run_evaluation
    from kikimimi.evaluation.tasks import Task

    task = Task.from_csv(labels_csv, name="synthetic8", unit_s=2.0)
    unseen = sorted(set(task.classes) - set(PRETRAIN_CLASSES))
    print(f"   task: {task.n_classes} classes ({', '.join(unseen)} never heard in pre-training), "
          f"{len(task.split_items('train'))} train / {len(task.split_items('valid'))} valid / "
          f"{len(task.split_items('test'))} test clips")
    # BYOL-A statistics come from the task's training split; M2D keeps the statistics in its file.
    # The same probe rule as `kikimimi eval` for every model: lr (and logistic C) chosen on validation.
    specs = model_specs([str(m2d_run / "kikimimi"), str(byola_run / "kikimimi")])
    run_evaluation(specs, [task], out / "report", seeds=(42, 43, 44),
                   log=lambda line: print("   " + line, flush=True))
    print(f"   wrote {out / 'report' / 'report.md'} (+ report.json, scores.csv, synthetic8/*.png)")


# ---------------------------------------------------------------------------------------------- stage 5
#: Caption templates for the training clips (``{labels}`` = the class name with ``_`` → space).
CLAP_TEMPLATES = ("The sound of {labels}.", "a recording of {labels}", "{labels} can be heard")
#: Zero-shot prompt (``{}`` = class name), the EVAR default.
CLAP_PROMPT = "{} can be heard"
#: Text queries of the search demo: ``(query, class it asks for)``.
CLAP_QUERIES: tuple[tuple[str, str], ...] = (
    ("a chirp sweeping up", "chirp"),
    ("a noise burst", "noise_burst"),
    ("clicks", "clicks"),
)
CLAP_RUN_NAME = "m2d_clap_vit_tiny-80x64p16x16-demo"
CLAP_TEXT_ENCODER = "minilm"
#: Short-run CLAP weight (tests/test_m2d_clap.py recipe): with ~100 steps the CLAP term must dominate. The
#: official M2D-CLAP recipe (docs/reference.md §7.3) and the `kikimimi pretrain` default is 0.01.
DEMO_CLAP_WEIGHT = 1.0
#: The rest of that recipe: 80x64 crops, batch 16, absolute lr 1e-3, 5 warm-up steps, EMA 0.99 → 0.999.
CLAP_PRETRAIN_SETTINGS: dict[str, Any] = {"size": "tiny", "input_frames": 64, "batch_size": 16, "lr": 1e-3,
                                          "warmup_steps": 5, "ema_taus": [0.99, 0.999]}
_REPORT_BEGIN = "<!-- kikimimi-demo: audio-language -->"
_REPORT_END = "<!-- /kikimimi-demo: audio-language -->"


class ClapStageError(RuntimeError):
    """Stage 5 failed; the message names the step that failed and the underlying error."""


@contextmanager
def _clap_step(name: str) -> Iterator[None]:
    """Re-raise any failure inside the block as :class:`ClapStageError` naming step ``name``."""
    try:
        yield
    except ClapStageError:
        raise
    except Exception as exc:
        raise ClapStageError(f"audio-language stage, step '{name}' failed: {type(exc).__name__}: {exc}") from exc


def write_clap_captions(labels_csv: Path, templates: Sequence[str] = CLAP_TEMPLATES) -> tuple[Path, int, int]:
    """Caption CSV (``file_name,caption``, one row per template) for the *training* split of ``labels_csv``.

    Written beside ``labels_csv`` (``captions.csv``) so that its keys (paths relative to that folder, e.g.
    ``tone/tone_0.wav``) match the prep-cache names (``tone/tone_0.npy``). Returns ``(path, files, captions)``.
    """
    from kikimimi.data.captions import captions_from_labels
    from kikimimi.fileio import atomic_write_text

    table = captions_from_labels(labels_csv, templates, splits=("train",))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file_name", "caption"])
    for key, captions in table.items():
        for caption in captions:
            writer.writerow([key, caption])
    path = labels_csv.parent / "captions.csv"
    atomic_write_text(path, buf.getvalue())
    return path, len(table), table.n_captions


def read_split(labels_csv: Path, split: str) -> dict[str, str]:
    """``{file_name: label}`` of the rows of one split of a demo ``labels.csv``."""
    with open(labels_csv, newline="") as f:
        return {r["file_name"]: r["label"] for r in csv.DictReader(f) if r["split"] == split}


def link_clips(labels_csv: Path, keys: Sequence[str], dest: Path) -> None:
    """Mirror the clips ``keys`` (paths relative to ``labels_csv``'s folder) under ``dest`` (hard links, else
    copies); other audio files under ``dest`` are removed, so ``dest`` holds exactly these clips."""
    from kikimimi.fileio import AUDIO_EXTENSIONS

    wanted = {Path(k).as_posix() for k in keys}
    if dest.is_dir():
        for p in dest.rglob("*"):
            if p.suffix.lower() in AUDIO_EXTENSIONS and p.relative_to(dest).as_posix() not in wanted:
                p.unlink()
    for key in sorted(wanted):
        src, dst = labels_csv.parent / key, dest / key
        if not src.is_file():
            raise FileNotFoundError(f"'{labels_csv}': listed clip '{key}' not found at {src}")
        if dst.exists():
            if os.path.samefile(src, dst) or (dst.stat().st_size, dst.stat().st_mtime_ns) == (
                    src.stat().st_size, src.stat().st_mtime_ns):
                continue
            dst.unlink()
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def _pretrain_clap(out: Path, cache: Path, captions_csv: Path, steps: int, clap_weight: float) -> Path:
    """`kikimimi pretrain --method m2d_clap` on the captioned clips of ``cache`` (the others are skipped)."""
    run_dir = out / "pretrain" / CLAP_RUN_NAME
    if (run_dir.is_dir() and not (run_dir / "kikimimi" / "config.json").exists()
            and not any(run_dir.glob("checkpoint-*.pth"))):
        shutil.rmtree(run_dir)  # an attempt that died before its first checkpoint: start afresh, same name
    extra = {**CLAP_PRETRAIN_SETTINGS, "captions": str(captions_csv), "text_encoder": CLAP_TEXT_ENCODER,
             "clap_weight": float(clap_weight), "missing_captions": "skip"}
    with warnings.catch_warnings():  # the skipped valid/test clips are announced by the caller
        warnings.filterwarnings("ignore", message=r".*skipping \d+ of \d+ training files without a caption",
                                category=UserWarning)
        return pretrain(out, cache, "m2d_clap", CLAP_RUN_NAME, steps, extra)


def _zero_shot(clap: Any, labels_csv: Path, duration_s: float, out_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Zero-shot classification of the test split; writes ``zeroshot.json`` / ``zeroshot.md``."""
    from kikimimi.evaluation.tasks import Task
    from kikimimi.evaluation.zeroshot import zero_shot_task
    from kikimimi.fileio import atomic_write_json, atomic_write_text

    task = Task.from_csv(labels_csv, name="synthetic8", unit_s=duration_s)
    res = zero_shot_task(clap, task, template=CLAP_PROMPT)
    if res.errors:
        raise ValueError(f"'{labels_csv}': unreadable test clips {res.errors[:3]}")
    truth = {it.key: it.label for it in task.split_items("test")}
    if res.scores is None:
        raise ValueError("zero-shot evaluation returned no scores")
    pred = [res.classes[i] for i in res.scores.argmax(axis=1)]
    summary = {
        **meta, "prompt": CLAP_PROMPT, "metric": res.metric, "accuracy": res.score, "chance": 1.0 / len(res.classes),
        "n_test": res.n_test, "classes": res.classes, "captions": res.captions,
        "per_class_accuracy": res.per_class_accuracy,
        "predictions": [{"file": k, "label": truth[k], "predicted": p, "probability": float(row.max())}
                        for k, p, row in zip(res.keys, pred, res.scores, strict=True)],
    }
    atomic_write_json(out_dir / "zeroshot.json", summary)
    atomic_write_text(out_dir / "zeroshot.md", "\n".join(_zero_shot_lines(summary)) + "\n")
    return summary


def _zero_shot_lines(zs: dict[str, Any]) -> list[str]:
    lines = [f"Zero-shot classification of the {zs['n_test']} held-out test clips, prompt "
             f"\"{zs['prompt'].format('<label>')}\": accuracy **{100 * zs['accuracy']:.1f} %** "
             f"(chance {100 * zs['chance']:.1f} %).", "", "| class | caption | accuracy |", "|---|---|---:|"]
    for cls, cap in zip(zs["classes"], zs["captions"], strict=True):
        lines.append(f"| {cls} | {cap} | {100 * zs['per_class_accuracy'][cls]:.0f} % |")
    return lines


def _search(clap: Any, heldout: Path, index_dir: Path, model_id: str, labels: dict[str, str],
            queries: Sequence[tuple[str, str]], top: int = 3) -> list[dict[str, Any]]:
    """Index the clips under ``heldout`` and run the text ``queries``; ``labels`` = ``{key: label}``."""
    from kikimimi.inference.search import search, update_index

    update = update_index(clap, heldout, index_dir, model_id=model_id, rebuild=True)
    if update.errors:
        raise ValueError(f"'{heldout}': {len(update.errors)} clips could not be indexed, e.g. {update.errors[0]}")
    results = []
    for query, wanted in queries:
        hits = search(index_dir, query, clap, top=top)
        results.append({"query": query, "class": wanted, "hits": [
            {"file": h.key, "score": h.score, "label": labels.get(h.key, "?"), "match": labels.get(h.key) == wanted}
            for h in hits]})
    return results


def _search_lines(results: Sequence[dict[str, Any]], n_clips: int) -> list[str]:
    lines = [f"Text-to-audio search over an index of the {n_clips} held-out clips (top 3, cosine):", "",
             "| query | rank | file | score | queried class? |", "|---|---:|---|---:|---|"]
    for r in results:
        for rank, h in enumerate(r["hits"], start=1):
            lines.append(f"| {r['query']} ({r['class']}) | {rank} | {h['file']} | {h['score']:.3f} | "
                         f"{'yes' if h['match'] else 'no (' + h['label'] + ')'} |")
    return lines


def append_report_section(report_md: Path, section: str) -> None:
    """Put ``section`` at the end of ``report_md`` (created if missing), replacing an earlier demo section."""
    from kikimimi.fileio import atomic_write_text

    text = report_md.read_text(encoding="utf-8") if report_md.is_file() else ""
    start = text.find(_REPORT_BEGIN)
    if start >= 0:
        end = text.find(_REPORT_END, start)
        text = text[:start] + (text[end + len(_REPORT_END):] if end >= 0 else "")
    text = text.rstrip("\n")
    block = f"{_REPORT_BEGIN}\n{section.strip()}\n{_REPORT_END}\n"
    atomic_write_text(report_md, (text + "\n\n" if text else "") + block)


def audio_language(out: Path, labels_csv: Path, cache: Path, *, steps: int = 100,
                   clap_weight: float = DEMO_CLAP_WEIGHT, duration_s: float = 3.0,
                   queries: Sequence[tuple[str, str]] = CLAP_QUERIES, report_md: Path | None = None) -> dict[str, Any]:
    """Stage 5: tiny M2D-CLAP on the labelled training clips, then zero-shot and text search on the test clips.

    Args:
        out: demo folder; results go to ``out/clap/`` (``zeroshot.json``, ``zeroshot.md``, ``search.json``,
            ``heldout/`` = links to the test clips, ``index/`` = their search index), the run to
            ``out/pretrain/m2d_clap_vit_tiny-80x64p16x16-demo``.
        labels_csv: the demo's ``labels.csv`` (``file_name,label,split``); captions are written beside it.
        cache: the M2D 16 kHz prep cache of every clip of ``labels_csv``.
        steps: pre-training steps; clap_weight: CLAP loss weight; duration_s: clip length in s (zero-shot unit).
        queries: ``(text, class)`` pairs for the search.
        report_md: report to append a section to (created when missing); ``None`` = none.

    Returns:
        ``{"zeroshot": summary dict, "search": [query results], "seconds": stage time}``.

    Raises:
        ClapStageError: naming the step that failed.
    """
    t0 = time.perf_counter()
    clap_dir = out / "clap"
    with _clap_step("write the caption CSV"):
        clap_dir.mkdir(parents=True, exist_ok=True)
        captions_csv, n_files, n_caps = write_clap_captions(labels_csv)
        test_labels = read_split(labels_csv, "test")
        if not test_labels:
            raise ValueError(f"'{labels_csv}': no test clips")
    print(f"   {captions_csv}: {n_caps} captions for {n_files} training clips ({len(CLAP_TEMPLATES)} templates, "
          f"e.g. \"{CLAP_TEMPLATES[0].format(labels='noise burst')}\"); valid/test clips get none and are skipped")
    with _clap_step(f"pre-train the tiny M2D-CLAP (kikimimi pretrain --method m2d_clap --text-encoder "
                    f"{CLAP_TEXT_ENCODER})"):
        run_dir = _pretrain_clap(out, cache, captions_csv, steps, clap_weight)
    model_dir = run_dir / "kikimimi"
    with _clap_step(f"load the trained model ({model_dir}) and the {CLAP_TEXT_ENCODER} text encoder"):
        from kikimimi.inference.clap import load_clap
        from kikimimi.models.text_loading import load_text_encoder

        clap = load_clap(model_dir, text_encoder=load_text_encoder(CLAP_TEXT_ENCODER), device="cpu")
    meta = {"model": str(model_dir), "steps": steps, "clap_weight": clap_weight, "text_encoder": CLAP_TEXT_ENCODER,
            "caption_templates": list(CLAP_TEMPLATES), "train_clips": n_files}
    with _clap_step("zero-shot classification of the held-out test clips"):
        zs = _zero_shot(clap, labels_csv, duration_s, clap_dir, meta)
    print(f"   zero-shot accuracy on {zs['n_test']} held-out test clips: {100 * zs['accuracy']:.1f} % "
          f"(chance {100 * zs['chance']:.1f} %), prompt \"{CLAP_PROMPT.format('<label>')}\"")
    print("   per class: " + ", ".join(f"{c} {100 * a:.0f} %" for c, a in zs["per_class_accuracy"].items()))
    with _clap_step("build the search index of the held-out clips and run the text queries"):
        heldout = clap_dir / "heldout"
        link_clips(labels_csv, list(test_labels), heldout)
        results = _search(clap, heldout, clap_dir / "index", str(model_dir), test_labels, queries)
        from kikimimi.fileio import atomic_write_json

        atomic_write_json(clap_dir / "search.json", {"model": str(model_dir), "index": str(clap_dir / "index"),
                                                     "results": results})
    for r in results:
        n_ok = sum(h["match"] for h in r["hits"])
        print(f"   query \"{r['query']}\" (class {r['class']}): {n_ok}/{len(r['hits'])} of the top {len(r['hits'])}")
        for rank, h in enumerate(r["hits"], start=1):
            print(f"      {rank}. {h['file']:<34} {h['score']:.3f}  {'yes' if h['match'] else 'no: ' + h['label']}")
    seconds = time.perf_counter() - t0
    if report_md is not None:
        with _clap_step(f"append the audio-language section to {report_md}"):
            append_report_section(report_md, _report_section(zs, results, len(test_labels), seconds))
        print(f"   wrote {clap_dir / 'zeroshot.md'}, zeroshot.json, search.json; section added to {report_md}")
    return {"zeroshot": zs, "search": results, "seconds": seconds}


def _report_section(zs: dict[str, Any], results: Sequence[dict[str, Any]], n_heldout: int, seconds: float) -> str:
    head = [
        "## Audio–language: tiny M2D-CLAP", "",
        f"A tiny M2D-CLAP (ViT-tiny, 80x64 crops, {zs['steps']} steps of batch 16, lr 1e-3, CLAP weight "
        f"{zs['clap_weight']:g} — a short-run setting; the official recipe and the `kikimimi pretrain` default is "
        f"0.01) pre-trained on the {zs['train_clips']} training clips, each with {len(zs['caption_templates'])} "
        f"captions made from its label ({', '.join(repr(t) for t in zs['caption_templates'])}) and embedded with "
        f"the frozen `{zs['text_encoder']}` text encoder. The test clips were never trained on; their classes "
        "were named in training captions, and the zero-shot prompt is one of the caption templates. "
        f"Stage time {seconds:.0f} s.", "",
    ]
    return "\n".join(head + _zero_shot_lines(zs) + [""] + _search_lines(results, n_heldout)) + "\n"


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    t0 = _stage("1. Generate a labelled set of synthetic sounds")
    labels_csv = generate_audio(out, args.clips_per_class, args.duration_s, args.seed)
    _done(t0)

    t0 = _stage("2. Convert to log-mel (M2D 16 kHz front end)")
    labelled_cache = log_mel_cache(out, labels_csv, args.workers)
    _done(t0)

    t0 = _stage("3. Pre-train a tiny M2D and a tiny BYOL-A on unlabelled generated audio")
    pool_csv = pretrain_pool(out, args.duration_s, args.seed)
    m2d_cache = pool_cache(out, pool_csv, "m2d-16k", args.workers)
    m2d_run = pretrain(out, m2d_cache, "m2d", "m2d_vit_tiny-80x208p16x16-demo", args.m2d_steps,
                       {"size": "tiny", "input_frames": 208, "batch_size": 32, "blr": 1e-2, "warmup_steps": 10})
    byola_cache = pool_cache(out, pool_csv, "byola", args.workers)
    byola_run = pretrain(out, byola_cache, "byola", "AudioNTT2020-BYOLA-64x96d512-demo", args.byola_steps,
                         {"batch_size": 32, "byola_dim": 512})
    _done(t0)

    t0 = _stage("4. Embed and evaluate (linear probe, held-out clips, 3 classes unseen in pre-training)")
    evaluate(out, labels_csv, m2d_run, byola_run)
    _done(t0)

    if not args.skip_clap:
        t0 = _stage("5. Audio-language: tiny M2D-CLAP (label captions; zero-shot and text search on held-out clips)")
        try:
            audio_language(out, labels_csv, labelled_cache, steps=args.clap_steps, clap_weight=args.clap_weight,
                           duration_s=args.duration_s, report_md=out / "report" / "report.md")
        except ClapStageError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
        _done(t0)

    print(f"\nDemo finished in {time.perf_counter() - start:.1f} s; outputs in {out}")
    return 0
