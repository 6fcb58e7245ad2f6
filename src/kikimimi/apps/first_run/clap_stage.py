"""The audio–language stage of the first run: a tiny M2D-CLAP on label captions, zero-shot and text search, and
the same with kikimimi's packaged CLAP ``open-clap-tiny`` as shipped.

Captions are made from each *training* clip's label with a few templates; the held-out test clips are
classified zero-shot with a prompt and searched with text queries. Results go to ``<out>/clap/``
(``zeroshot.json``, ``zeroshot.md``, ``search.json``, ``heldout/`` = links to the test clips, ``index/``) and a
section appended to the report. :func:`shipped_clap` runs the same zero-shot prompt and queries on the same
held-out clips with the packaged model (no training; ``<out>/clap/shipped/``), in a section of its own.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kikimimi.apps.first_run.pretraining import pretrain
from kikimimi.data.captions import captions_from_labels
from kikimimi.evaluation.tasks import Task
from kikimimi.evaluation.zeroshot import zero_shot_task
from kikimimi.fileio import AUDIO_EXTENSIONS, atomic_write_json, atomic_write_text
from kikimimi.inference.clap import load_clap
from kikimimi.inference.search import search, update_index
from kikimimi.models.text_loading import load_text_encoder
from kikimimi.training.settings import recipe_values

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
#: kikimimi's packaged CLAP (issue 27), run as shipped beside the from-scratch one
SHIPPED_CLAP = "open-clap-tiny"
#: where :func:`shipped_clap` writes, under ``<out>/clap/``
SHIPPED_DIR = "shipped"
#: The pre-training recipe, by name (kikimimi.methods.recipes, which says where its values come from; `kikimimi
#: pretrain --recipe first-run-clap --data CACHE --captions CSV --steps N` reproduces the run): a tiny M2D-CLAP on
#: 80x64 crops, batch 16, lr 1e-3, EMA 0.99 → 0.999, captions embedded with the frozen minilm.
CLAP_RECIPE = "first-run-clap"
CLAP_TEXT_ENCODER: str = recipe_values(CLAP_RECIPE)["text_encoder"]
#: Short-run CLAP weight (the recipe's): with ~100 steps the CLAP term must dominate. The official M2D-CLAP
#: recipe (docs/reference.md §7.3) and the `kikimimi pretrain` default is 0.01.
DEMO_CLAP_WEIGHT: float = recipe_values(CLAP_RECIPE)["clap_weight"]
_SECTION_BEGIN = "<!-- kikimimi-demo: {} -->"
_SECTION_END = "<!-- /kikimimi-demo: {} -->"
_REPORT_BEGIN = _SECTION_BEGIN.format("audio-language")
_REPORT_END = _SECTION_END.format("audio-language")


class ClapStageError(RuntimeError):
    """The audio–language stage failed; the message names the step that failed and the underlying error."""


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


def _pretrain_clap(out: Path, cache: Path, captions_csv: Path, steps: int, clap_weight: float,
                   more: dict[str, Any], log: Callable[[str], None]) -> Path:
    """`kikimimi pretrain --recipe first-run-clap` on the captioned clips of ``cache`` (the others are skipped)."""
    extra = {**more, "captions": str(captions_csv), "clap_weight": float(clap_weight)}
    with warnings.catch_warnings():  # the skipped valid/test clips are announced by the caller
        warnings.filterwarnings("ignore", message=r".*skipping \d+ of \d+ training files without a caption",
                                category=UserWarning)
        return pretrain(out, cache, CLAP_RECIPE, CLAP_RUN_NAME, steps, extra, log=log)


def _zero_shot(clap: Any, labels_csv: Path, duration_s: float, out_dir: Path, meta: dict[str, Any],
               prompt: str = CLAP_PROMPT, task_name: str = "clap_labels") -> dict[str, Any]:
    """Zero-shot classification of the test split; writes ``zeroshot.json`` / ``zeroshot.md``."""
    task = Task.from_csv(labels_csv, name=task_name, unit_s=duration_s)
    res = zero_shot_task(clap, task, template=prompt)
    if res.errors:
        raise ValueError(f"'{labels_csv}': unreadable test clips {res.errors[:3]}")
    truth = {it.key: it.label for it in task.split_items("test")}
    if res.scores is None:
        raise ValueError("zero-shot evaluation returned no scores")
    pred = [res.classes[i] for i in res.scores.argmax(axis=1)]
    summary = {
        **meta, "prompt": prompt, "metric": res.metric, "accuracy": res.score, "chance": 1.0 / len(res.classes),
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


def append_report_section(report_md: Path, section: str, key: str = "audio-language") -> None:
    """Put ``section`` at the end of ``report_md`` (created if missing) between markers named ``key``,
    replacing an earlier section with that key (a rerun does not add a second copy)."""
    begin, end = _SECTION_BEGIN.format(key), _SECTION_END.format(key)
    text = report_md.read_text(encoding="utf-8") if report_md.is_file() else ""
    start = text.find(begin)
    if start >= 0:
        stop = text.find(end, start)
        text = text[:start] + (text[stop + len(end):] if stop >= 0 else "")
    text = text.rstrip("\n")
    atomic_write_text(report_md, (text + "\n\n" if text else "") + f"{begin}\n{section.strip()}\n{end}\n")


def audio_language(out: Path, labels_csv: Path, cache: Path, *, steps: int = 100,
                   clap_weight: float = DEMO_CLAP_WEIGHT, duration_s: float = 3.0,
                   queries: Sequence[tuple[str, str]] = CLAP_QUERIES, report_md: Path | None = None,
                   templates: Sequence[str] = CLAP_TEMPLATES, prompt: str = CLAP_PROMPT,
                   task_name: str = "clap_labels", pretrain_extra: dict[str, Any] | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
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
        templates: caption templates (``{labels}`` = the label, ``_`` → space); prompt: zero-shot prompt
            (``{}`` = the label); task_name: name of the zero-shot task; pretrain_extra: further pre-training
            settings (e.g. checkpointing); log: line printer.

    Returns:
        ``{"zeroshot": summary dict, "search": [query results], "seconds": stage time}``.

    Raises:
        ClapStageError: naming the step that failed.
    """
    t0 = time.perf_counter()
    clap_dir = out / "clap"
    with _clap_step("write the caption CSV"):
        clap_dir.mkdir(parents=True, exist_ok=True)
        captions_csv, n_files, n_caps = write_clap_captions(labels_csv, templates)
        test_labels = read_split(labels_csv, "test")
        if not test_labels:
            raise ValueError(f"'{labels_csv}': no test clips")
    example = next(iter(test_labels.values())).replace("_", " ")
    log(f"   {captions_csv}: {n_caps} captions for {n_files} training clips ({len(templates)} templates, "
        f"e.g. \"{templates[0].format(labels=example)}\"); valid/test clips get none and are skipped")
    with _clap_step(f"pre-train the tiny M2D-CLAP (kikimimi pretrain --method m2d_clap --text-encoder "
                    f"{CLAP_TEXT_ENCODER})"):
        run_dir = _pretrain_clap(out, cache, captions_csv, steps, clap_weight, dict(pretrain_extra or {}), log)
    model_dir = run_dir / "kikimimi"
    with _clap_step(f"load the trained model ({model_dir}) and the {CLAP_TEXT_ENCODER} text encoder"):
        clap = load_clap(model_dir, text_encoder=load_text_encoder(CLAP_TEXT_ENCODER), device="cpu")
    meta = {"model": str(model_dir), "steps": steps, "clap_weight": clap_weight, "text_encoder": CLAP_TEXT_ENCODER,
            "caption_templates": list(templates), "train_clips": n_files}
    with _clap_step("zero-shot classification of the held-out test clips"):
        zs = _zero_shot(clap, labels_csv, duration_s, clap_dir, meta, prompt, task_name)
    log(f"   zero-shot accuracy on {zs['n_test']} held-out test clips: {100 * zs['accuracy']:.1f} % "
        f"(chance {100 * zs['chance']:.1f} %), prompt \"{prompt.format('<label>')}\"")
    log("   per class: " + ", ".join(f"{c} {100 * a:.0f} %" for c, a in zs["per_class_accuracy"].items()))
    with _clap_step("build the search index of the held-out clips and run the text queries"):
        heldout = clap_dir / "heldout"
        link_clips(labels_csv, list(test_labels), heldout)
        results = _search(clap, heldout, clap_dir / "index", str(model_dir), test_labels, queries)
        atomic_write_json(clap_dir / "search.json", {"model": str(model_dir), "index": str(clap_dir / "index"),
                                                     "results": results})
    for r in results:
        n_ok = sum(h["match"] for h in r["hits"])
        log(f"   query \"{r['query']}\" (class {r['class']}): {n_ok}/{len(r['hits'])} of the top {len(r['hits'])}")
        for rank, h in enumerate(r["hits"], start=1):
            log(f"      {rank}. {h['file']:<34} {h['score']:.3f}  {'yes' if h['match'] else 'no: ' + h['label']}")
    seconds = time.perf_counter() - t0
    if report_md is not None:
        with _clap_step(f"append the audio-language section to {report_md}"):
            append_report_section(report_md, _report_section(zs, results, len(test_labels), seconds))
        log(f"   wrote {clap_dir / 'zeroshot.md'}, zeroshot.json, search.json; section added to {report_md}")
    return {"zeroshot": zs, "search": results, "seconds": seconds}


def search_precision(results: Sequence[dict[str, Any]]) -> float | None:
    """Share of the shown hits (top 3 of each query) that are of the queried class, P@3 over the queries, in [0, 1];
    ``None`` without hits."""
    hits = [h["match"] for r in results for h in r.get("hits", [])]
    return sum(hits) / len(hits) if hits else None


def shipped_clap(out: Path, labels_csv: Path, *, duration_s: float = 3.0,
                 queries: Sequence[tuple[str, str]] = CLAP_QUERIES, prompt: str = CLAP_PROMPT,
                 task_name: str = "clap_labels", report_md: Path | None = None, model: str | Path = SHIPPED_CLAP,
                 text_encoder: Any = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Zero-shot classification and text search of the held-out test clips of ``labels_csv`` with a CLAP as it is
    (default: the packaged ``open-clap-tiny``, verified against its SHA-256, no network): the prompt, queries and
    clips of :func:`audio_language`, so the two rows compare.

    Args:
        out: demo folder; results go to ``out/clap/shipped/`` (``zeroshot.json``, ``zeroshot.md``, ``search.json``,
            ``index/``); the held-out clips are linked under ``out/clap/heldout/``.
        labels_csv: the demo's ``labels.csv`` (``file_name,label,split``). duration_s: clip length in s.
        queries: ``(text, class)`` pairs; prompt: zero-shot prompt (``{}`` = the label); task_name: zero-shot task.
        report_md: report to append a section to (``None`` = none). model: the CLAP (a name or a folder).
        text_encoder: ``None`` = the model's own (recorded in its ``config.json``), or an encoder / spec string.
        log: line printer.

    Returns:
        ``{"zeroshot": summary dict, "search": [query results], "search_precision": P@3, "seconds": stage time}``.

    Raises:
        ClapStageError: naming the step that failed.
    """
    t0 = time.perf_counter()
    clap_dir, own = out / "clap", out / "clap" / SHIPPED_DIR
    with _clap_step(f"load the packaged CLAP {model}"):
        own.mkdir(parents=True, exist_ok=True)
        test_labels = read_split(labels_csv, "test")
        if not test_labels:
            raise ValueError(f"'{labels_csv}': no test clips")
        clap = load_clap(model, text_encoder=text_encoder, device="cpu")
    meta = {"model": str(model), "shipped": True}
    with _clap_step(f"zero-shot classification of the held-out test clips with {model}"):
        zs = _zero_shot(clap, labels_csv, duration_s, own, meta, prompt, task_name)
    log(f"   {model} as shipped: zero-shot accuracy on {zs['n_test']} held-out test clips {100 * zs['accuracy']:.1f} % "
        f"(chance {100 * zs['chance']:.1f} %)")
    with _clap_step(f"search the held-out clips with {model}"):
        heldout = clap_dir / "heldout"
        link_clips(labels_csv, list(test_labels), heldout)
        results = _search(clap, heldout, own / "index", str(model), test_labels, queries)
        atomic_write_json(own / "search.json", {"model": str(model), "index": str(own / "index"), "results": results})
    for r in results:
        log(f"   query \"{r['query']}\" (class {r['class']}): {sum(h['match'] for h in r['hits'])}/{len(r['hits'])} "
            f"of the top {len(r['hits'])} with {model}")
    seconds = time.perf_counter() - t0
    if report_md is not None:
        with _clap_step(f"append the {model} section to {report_md}"):
            append_report_section(report_md, _shipped_section(zs, results, len(test_labels), str(model), seconds),
                                  key="audio-language-shipped")
    return {"zeroshot": zs, "search": results, "search_precision": search_precision(results), "seconds": seconds}


def _shipped_section(zs: dict[str, Any], results: Sequence[dict[str, Any]], n_heldout: int, model: str,
                     seconds: float) -> str:
    head = [
        f"## Audio–language: {model} as shipped", "",
        f"kikimimi's packaged CLAP `{model}` (`kikimimi models info {model}`: a tiny M2D-CLAP trained for about an "
        "hour of CPU time on openly licensed audio and metadata captions), used as it is — no training here — on the "
        "same held-out clips, prompt and queries as the minutes-long model trained from scratch above. "
        f"Stage time {seconds:.0f} s.", "",
    ]
    return "\n".join(head + _zero_shot_lines(zs) + [""] + _search_lines(results, n_heldout)) + "\n"


def _report_section(zs: dict[str, Any], results: Sequence[dict[str, Any]], n_heldout: int, seconds: float) -> str:
    head = [
        "## Audio–language: tiny M2D-CLAP trained from scratch (minutes-long)", "",
        f"A tiny M2D-CLAP (ViT-tiny, 80x64 crops, {zs['steps']} steps of batch 16, lr 1e-3, CLAP weight "
        f"{zs['clap_weight']:g} — a short-run setting; the official recipe and the `kikimimi pretrain` default is "
        f"0.01) pre-trained on the {zs['train_clips']} training clips, each with {len(zs['caption_templates'])} "
        f"captions made from its label ({', '.join(repr(t) for t in zs['caption_templates'])}) and embedded with "
        f"the frozen `{zs['text_encoder']}` text encoder. The test clips were never trained on; their classes "
        "were named in training captions, and the zero-shot prompt is one of the caption templates. "
        f"Stage time {seconds:.0f} s.", "",
    ]
    return "\n".join(head + _zero_shot_lines(zs) + [""] + _search_lines(results, n_heldout)) + "\n"
