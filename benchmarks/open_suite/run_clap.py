"""Audio–language benchmark on the open suite: M2D-CLAP, M2D2 (stage 1 + 2) and plain M2D on the caption pairs.

    python benchmarks/open_suite/run_clap.py [--small | --smoke] [--cache DIR] [--recipes FILE] [--no-plots]

Everything trains on the **train side** of ``captions.csv`` (task train + valid clips, train templates) and is
evaluated on the **test side** (unseen prompts / kits / programs, the TimGM6mb source, test templates):

1. ``build_data.build`` (skips what exists) → ``clap_train_captions.csv`` (``file_name,caption_1..K``, one row
   per train file; it is also the audio list) → ``kikimimi prep`` cache ``clap/prep-m2d-16k``;
2. caption-embedding caches ``clap/captions-<spec>.safetensors`` (resumable ``CaptionEmbeddingCache.build``)
   for the frozen text sides: ``minilm`` (M2D-CLAP) and ``smollm2#eos`` (M2D2 stage 1, LLM-based embeddings);
3. ``python -m kikimimi pretrain`` (flags from the ``"clap"`` section of ``recipes.json``): (a) ``m2d_clap``,
   (b) ``m2d2_stage1`` then ``m2d2_stage2`` on the frozen stage-1 encoder with a trainable ``minilm``, (c) ``m2d``
   with the same recipe, steps, seed and audio (the no-CLAP control). Finished runs are reused, killed runs
   continue with ``--resume``;
4. zero-shot accuracy per task (prompt ensemble of ``zeroshot_labels.json`` minus prompts that are training
   captions) and text→audio / audio→text R@1/5/10 + mAP@10 on the test captions, per CLAP model
   (``clap/eval/<run>.json``, reused while the model and the data are unchanged);
5. linear probe (``kikimimi.evaluation.run.run_evaluation``) of every encoder on the four tasks
   (``clap/probe/report.md``), log-mel statistics as a baseline;
6. ``clap_results.md`` + ``clap_results.json`` in ``<cache>/<scale>/``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build_data  # noqa: E402
import clap_report as cr  # noqa: E402
from run_suite import TASKS, kikimimi_cli, load_tasks, log, pretrain_run  # noqa: E402

from kikimimi.fileio import atomic_write_json, atomic_write_text  # noqa: E402

M2D_RUNS = ("m2d_clap", "m2d2_stage1", "m2d")  # share the "m2d_common" recipe
CLAP_RUNS = ("m2d_clap", "m2d2_stage1", "m2d2_stage2")
ALL_RUNS = ("m2d_clap", "m2d2_stage1", "m2d2_stage2", "m2d")
#: frozen text sides embedded once into caption-embedding caches
CACHED_TEXT = ("m2d_clap", "m2d2_stage1")
TRAIN_CSV = "clap_train_captions.csv"
EVAL_VERSION = 1  # bump when the CLAP evaluation changes, to invalidate clap/eval/*.json


def add_arguments(p: argparse.ArgumentParser) -> None:
    build_data.add_arguments(p)
    p.add_argument("--recipes", type=Path, default=HERE / "recipes.json", help="the 'clap' section is used")
    p.add_argument("--workers", type=int, default=2, help="processes for kikimimi prep")
    p.add_argument("--no-plots", action="store_true", help="skip the probe's confusion matrices and t-SNE maps")


# ---------------------------------------------------------------------------------------------- stage times
class StageTimes:
    """Seconds per stage, kept in ``clap/timings.json``: a stage that only reused cached outputs keeps the time
    of the run that did the work (``mark()`` is called by every step that computes something)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.times: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
        self._worked = False

    def mark(self) -> None:
        self._worked = True

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        outer, self._worked = self._worked, False
        start = time.perf_counter()
        yield
        if self._worked or name not in self.times:
            self.times[name] = time.perf_counter() - start
            atomic_write_json(self.path, self.times)
        self._worked = outer or self._worked


TIMES = StageTimes(Path("/dev/null/unset"))  # replaced in main()


# ---------------------------------------------------------------------------------------------- recipe
def load_clap_recipe(path: Path, scale: str) -> dict[str, Any]:
    """``recipes["clap"][scale]`` with every run section present (``m2d_common``, the four runs, ``eval``)."""
    try:
        recipes = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"'{path}': cannot read the recipes JSON: {err}") from None
    recipe = (recipes.get("clap") or {}).get(scale)
    need = ("m2d_common", *ALL_RUNS)
    if not isinstance(recipe, dict) or any(k not in recipe for k in need):
        raise SystemExit(f"'{path}': needs clap.{scale} with sections {list(need)} (and optionally 'eval')")
    for run in ALL_RUNS:
        if "run_name" not in recipe[run]:
            raise SystemExit(f"'{path}': clap.{scale}.{run} needs a 'run_name'")
    for run in CLAP_RUNS:
        if not recipe[run].get("text_encoder"):
            raise SystemExit(f"'{path}': clap.{scale}.{run} needs a 'text_encoder' spec")
    return recipe


def run_settings(recipe: dict[str, Any], run: str) -> dict[str, Any]:
    """Pre-training flags of one run (``m2d_common`` merged under the run's keys for the M2D-objective runs)."""
    base = dict(recipe["m2d_common"]) if run in M2D_RUNS else {}
    return {**base, **recipe[run]}


# ---------------------------------------------------------------------------------------------- data
def write_train_captions(data: Path, rows: list[dict[str, str]]) -> Path:
    """``<data>/clap_train_captions.csv``: one row per train file (``file_name,caption_1..K``), written only
    when its content changes (paths relative to ``<data>``, so caption keys equal the prep-cache keys)."""
    table = cr.training_table_rows(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    out = data / TRAIN_CSV
    if not out.exists() or out.read_text(encoding="utf-8") != buf.getvalue():
        atomic_write_text(out, buf.getvalue())
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def prep_train_audio(data: Path, table: Path, workers: int) -> Path:
    """Log-mel cache (m2d-16k) of the train-side audio; redone when the caption list changes."""
    cache = data / "clap" / "prep-m2d-16k"
    done = cache / ".done"
    if done.exists() and done.read_text().strip() == digest(table):
        return cache
    TIMES.mark()
    if cache.exists():
        shutil.rmtree(cache)  # the list changed: a stale cache would hold files without captions
    kikimimi_cli(["prep", str(table), "-o", str(cache), "--preset", "m2d-16k", "--workers", str(workers),
                  "--quiet"], "prep of the caption audio")
    done.write_text(digest(table) + "\n")
    return cache


def caption_cache(data: Path, table: Path, spec: str) -> Path:
    """Caption-embedding cache of the train captions for the frozen text encoder ``spec`` (built resumably)."""
    from kikimimi.data.caption_cache import CaptionEmbeddingCache, read_cache_info, write_cache_info
    from kikimimi.data.captions import CaptionTable

    slug = "".join(c if c.isalnum() else "_" for c in spec).strip("_")
    out = data / "clap" / f"captions-{slug}.safetensors"
    want = {"text_encoder": spec, "captions_digest": digest(table)}
    info = read_cache_info(out) if out.exists() else None
    if info and all(info.get(k) == v for k, v in want.items()):
        return out
    from kikimimi.models.text_loading import load_text_encoder

    TIMES.mark()
    t = time.perf_counter()
    encoder = load_text_encoder(spec)
    cache = CaptionEmbeddingCache.build(CaptionTable.from_csv(table), encoder, out)
    write_cache_info(out, text_encoder=spec, dim=int(cache.dim), captions=str(table),
                     captions_digest=want["captions_digest"])
    log(f"   embedded the captions of {len(cache.keys())} files with {spec} ({cache.dim}-d) in "
        f"{time.perf_counter() - t:.0f} s")
    del encoder
    return out


# ---------------------------------------------------------------------------------------------- pre-training
def pretrain(runs: Path, method: str, settings: dict[str, Any], corpus: Path) -> Path:
    """Train, resume or reuse one run (:func:`run_suite.pretrain_run`), timing only real training."""
    if not (runs / settings["run_name"] / "kikimimi" / "config.json").exists():
        TIMES.mark()
    return pretrain_run(runs, method, settings, corpus)


def train_all(data: Path, recipe: dict[str, Any], table: Path, corpus: Path) -> dict[str, Path]:
    """Caption caches and the four runs in order (stage 2 starts from the stage-1 run); ``{run: folder}``."""
    runs_dir = data / "clap" / "runs"
    runs: dict[str, Path] = {}
    for run in ALL_RUNS:
        s = run_settings(recipe, run)
        if run in CACHED_TEXT:
            with TIMES.stage(f"captions_{run}"):
                s["captions"] = str(caption_cache(data, table, s["text_encoder"]))
        elif run == "m2d2_stage2":
            s["captions"] = str(table)
            s["init_from"] = str(runs["m2d2_stage1"])
        log(f"-- {run}")
        with TIMES.stage(f"pretrain_{run}"):
            runs[run] = pretrain(runs_dir, run, s, corpus)
    return runs


# ---------------------------------------------------------------------------------------------- CLAP evaluation
def load_clap_model(run: str, run_dir: Path, spec: str):
    """The run's ``kikimimi/`` folder as a ``CLAPModel``; stage 2 gets its fine-tuned text encoder back."""
    from kikimimi.inference.clap import CLAPModel, load_clap
    from kikimimi.models.text_loading import load_text_encoder

    path = run_dir / "kikimimi"
    if run != "m2d2_stage2":
        return load_clap(path, text_encoder=spec)
    model = load_clap(path, text_encoder=None)
    state = model.audio.bundle.text_encoder_state
    if not state:
        raise SystemExit(f"'{path}': the stage-2 model holds no text_encoder tensors")
    encoder = load_text_encoder(spec)
    encoder.load_state_dict(state, strict=True)
    return CLAPModel(model.audio, text_encoder=encoder, source=str(path))


def _test_waves(task, sr: int):
    from kikimimi.audio.decode import load_audio
    from kikimimi.evaluation.tasks import crop_or_pad

    items = [it for fold in task.folds() for it in fold.test]
    n = task.unit_samples(sr)
    return items, [crop_or_pad(load_audio(it.path, sr)[0], n) for it in items]


def zero_shot(model, tasks, labels: dict, train_captions: list[str], batch_size: int) -> dict[str, dict]:
    """Prompt-ensemble zero-shot accuracy per task (test clips cut to the task unit, as the probe)."""
    import numpy as np

    out = {}
    for task in tasks:
        base = "instrument_family" if task.name.startswith("instrument_family") else task.name
        kept, excluded, fallback = cr.held_out_prompts(labels[base], train_captions)
        classes = task.classes
        prompts, owner = cr.prompt_matrix(kept, classes)
        items, waves = _test_waves(task, int(model.sample_rate))
        audio = np.asarray(model.encode_audio(waves, sample_rate=int(model.sample_rate), batch_size=batch_size))
        text = np.asarray(model.encode_text(prompts))
        y = task.targets(items, classes)
        _, pred = cr.zero_shot_predict(audio, text, owner, len(classes))
        out[task.name] = {
            "accuracy": float(np.mean(pred == y)),
            "per_prompt_accuracy": cr.per_prompt_accuracy(audio, text, owner, y, len(classes)),
            "per_class_accuracy": {c: float(np.mean(pred[y == i] == i)) if np.any(y == i) else None
                                   for i, c in enumerate(classes)},
            "chance": cr.chance_zero_shot(len(classes)),
            "n_test": len(items),
            "prompts": kept,
            "excluded_prompts": {k: v for k, v in excluded.items() if v},
            "fallback_classes": fallback,
        }
    return out


def test_caption_rows(data: Path, rows: list[dict[str, str]]) -> list[tuple[Path, str]]:
    return [(data / r["file_name"], r["caption"]) for r in rows if r["split"] == "test"]


def retrieval(model, pairs: list[tuple[Path, str]], batch_size: int) -> dict[str, Any]:
    """Whole-clip retrieval metrics on the test caption pairs (per-query ranks dropped)."""
    from kikimimi.evaluation.retrieval import evaluate_retrieval

    m = evaluate_retrieval(model, pairs, batch_size=batch_size, ks=cr.KS)
    for d in ("text_to_audio", "audio_to_text"):
        m[d].pop("ranks", None)
    m.pop("files", None)
    return m


def evaluate_clap(data: Path, runs: dict[str, Path], recipe: dict, rows: list[dict[str, str]], tasks,
                  labels: dict, batch_size: int) -> dict[str, dict]:
    """Zero-shot + retrieval per CLAP run, cached in ``clap/eval/<run>.json`` by model and data fingerprints."""
    from kikimimi.evaluation.report import task_fingerprint
    from kikimimi.evaluation.run import file_fingerprint

    out_dir = data / "clap" / "eval"
    train_captions = [r["caption"] for r in rows if r["split"] == "train"]
    pairs = test_caption_rows(data, rows)
    data_fp = hashlib.sha256(json.dumps([labels, [(str(p), c) for p, c in pairs],
                                         [task_fingerprint(t) for t in tasks], sorted(set(train_captions)),
                                         EVAL_VERSION]).encode()).hexdigest()
    results = {}
    for run in CLAP_RUNS:
        run_dir = runs[run]
        spec = recipe[run]["text_encoder"]
        fp = {"model": file_fingerprint(run_dir / "kikimimi"), "data": data_fp, "text_encoder": spec}
        path = out_dir / f"{run_dir.name}.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("fingerprint") == fp:
                log(f"   {run}: {path.name} is up to date, kept")
                results[run] = old
                continue
        TIMES.mark()
        t = time.perf_counter()
        model = load_clap_model(run, run_dir, spec)
        res = {"fingerprint": fp, "run": run_dir.name, "text_encoder": spec, "kind": model.kind,
               "zero_shot": zero_shot(model, tasks, labels, train_captions, batch_size),
               "retrieval": retrieval(model, pairs, batch_size)}
        res["seconds"] = time.perf_counter() - t
        atomic_write_json(path, res)
        zs = ", ".join(f"{k} {100 * v['accuracy']:.1f}" for k, v in res["zero_shot"].items())
        r = res["retrieval"]
        log(f"   {run}: zero-shot {zs}; T→A R@1 {100 * r['text_to_audio']['R@1']:.1f}, "
            f"A→T R@1 {100 * r['audio_to_text']['R@1']:.1f} ({res['seconds']:.0f} s)")
        results[run] = res
        del model
    return results


def chance_row(data: Path, rows: list[dict[str, str]], tasks) -> dict[str, Any]:
    from kikimimi.evaluation.caption_adapters import group_captions

    files, _, owner = group_captions(test_caption_rows(data, rows))
    return {"zero_shot": {t.name: cr.chance_zero_shot(len(t.classes)) for t in tasks},
            "retrieval": cr.chance_retrieval(owner, len(files), seed=0)}


# ---------------------------------------------------------------------------------------------- linear probe
def same_encoder(a: Path, b: Path) -> bool:
    """Whether two kikimimi folders hold identical audio-encoder weights."""
    import torch

    import kikimimi

    sa = kikimimi.load(a).bundle.encoder.state_dict()
    sb = kikimimi.load(b).bundle.encoder.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def probe(data: Path, runs: dict[str, Path], recipe: dict, tasks, plots: bool) -> tuple[dict, bool]:
    """Linear probe of every encoder (+ log-mel stats); returns (report dict, stage 2 shares stage 1's encoder)."""
    from kikimimi.evaluation.run import model_specs, run_evaluation

    shared = same_encoder(runs["m2d2_stage1"] / "kikimimi", runs["m2d2_stage2"] / "kikimimi")
    probed = [r for r in ALL_RUNS if not (r == "m2d2_stage2" and shared)]
    ev = recipe.get("eval", {})
    specs = model_specs(["logmel"] + [str(runs[r] / "kikimimi") for r in probed], baselines=False, lr=ev.get("lr"))
    for s in specs:
        s.zero_shot = None  # zero-shot is run here with the suite's prompts, not the report's template
    out = data / "clap" / "probe"
    report_json = out / "report.json"
    if report_json.exists():
        old = json.loads(report_json.read_text())
        if set(old.get("tasks", {})) == set(TASKS) and set(old.get("models", {})) == {s.name for s in specs} and all(
                old["models"][s.name]["fingerprint"] == s.fingerprint for s in specs):
            log("   clap/probe/report.json is up to date, kept")
            return old, shared
    TIMES.mark()
    run_evaluation(specs, tasks, out, seeds=tuple(ev.get("seeds", (42, 43, 44))), plots=plots,
                   log=lambda line: log("   " + line))
    return json.loads(report_json.read_text()), shared


# ---------------------------------------------------------------------------------------------- results
def model_label(run: str, recipe: dict) -> str:
    spec = recipe[run].get("text_encoder")
    return {"m2d_clap": f"M2D-CLAP (text: {spec}, frozen)",
            "m2d2_stage1": f"M2D2 stage 1 (text: {spec}, frozen)",
            "m2d2_stage2": f"M2D2 stage 2 (text: {spec}, trained; stage-1 audio encoder)",
            "m2d": "M2D, no CLAP (same recipe)"}[run]


def probe_scores(report: dict, name: str) -> dict[str, float]:
    return {t: report["tasks"][t]["results"][name]["mean"] for t in TASKS}


def write_results(data: Path, scale: str, recipe: dict, runs: dict[str, Path], clap: dict, chance: dict,
                  report: dict, shared: bool, timings: dict[str, float], n_train: int) -> None:
    rows: list[dict[str, Any]] = []
    for run in ALL_RUNS:
        name = runs[run].name
        probe_name = runs["m2d2_stage1"].name if run == "m2d2_stage2" and shared else name
        res = clap.get(run)
        rows.append({"model": model_label(run, recipe), "run": name,
                     "zero_shot": {t: v["accuracy"] for t, v in res["zero_shot"].items()} if res else None,
                     "retrieval": cr.retrieval_summary(res["retrieval"]) if res else None,
                     "probe": probe_scores(report, probe_name),
                     "probe_of": probe_name})
    rows.append({"model": "log-mel stats (probe baseline)", "run": None, "zero_shot": None, "retrieval": None,
                 "probe": probe_scores(report, "log-mel stats"), "probe_of": "log-mel stats"})
    rows.append({"model": "chance", "run": None, "zero_shot": chance["zero_shot"],
                 "retrieval": cr.retrieval_summary(chance["retrieval"]), "probe": None})
    header, cells = cr.results_table(rows, TASKS)
    r0 = next(iter(clap.values()))["retrieval"]
    ptable = ["| model | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for m in report["models"]:
        res = [report["tasks"][t]["results"][m] for t in TASKS]
        ptable.append(f"| {m} | " + " | ".join(f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}" for r in res) + " |")
    excluded = {run: {t: v["excluded_prompts"] for t, v in res["zero_shot"].items() if v["excluded_prompts"]}
                for run, res in clap.items()}
    excl = next(iter(excluded.values()))
    excl_txt = "; ".join(f"{t}: " + ", ".join(f"'{p}'" for ps in v.values() for p in ps) for t, v in excl.items())
    lines = [
        f"# Open suite: audio–language results ({scale})", "",
        f"Trained on the train side of `captions.csv` ({n_train} clips, train templates); evaluated on the test side "
        f"({r0['n_audio']} clips, {r0['n_captions']} captions: unseen prompts / kits / programs, the TimGM6mb source "
        "and test-only templates). Scores in %.", "",
        "- ZS = zero-shot accuracy on the task's test clips (cosine with the ensemble of the suite's "
        "`zeroshot_labels.json` prompts per class, prompts that are verbatim training captions removed).",
        "- T→A / A→T = text→audio / audio→text retrieval over all test captions (R@k, mAP@10; WavCaps definitions). "
        "Captions are templated, so many test clips share a caption text and R@1 has a low ceiling.",
        f"- probe avg = mean linear-probe accuracy over {', '.join(TASKS)} (EVAR protocol on the encoder, "
        f"seeds {report['seeds']}; per task below).", "",
        cr.markdown_table(header, cells), "",
    ]
    if shared:
        lines += ["M2D2 stage 2 keeps the stage-1 audio encoder frozen (identical weights, checked), so its probe "
                  "scores are those of stage 1.", ""]
    lines += ["## Linear probe per task (mean ± std %)", "", *ptable, "",
              "## Notes", "",
              f"- Prompts removed from zero-shot because they are training captions: {excl_txt or 'none'}.",
              "- language_id: the en and es voices are the same speaker (see README), so voice identity cannot "
              "separate those two classes.",
              "- M2D2 stage 2 trains its semantic projector and text encoder only (CLAP loss); stage-1 and M2D-CLAP "
              "learn CLAP jointly with M2D (clap_weight from the recipe).", "",
              "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), "",
              "Details: `clap/eval/<run>.json` (per-prompt and per-class zero-shot, median / mean ranks), "
              "`clap/probe/report.md`."]
    atomic_write_text(data / "clap_results.md", "\n".join(lines) + "\n")
    atomic_write_json(data / "clap_results.json", {
        "scale": scale, "columns": header, "rows": rows, "tasks": list(TASKS), "recipe": recipe,
        "runs": {k: str(v) for k, v in runs.items()}, "clap_eval": clap, "chance": {
            "zero_shot": chance["zero_shot"], "retrieval": cr.retrieval_summary(chance["retrieval"])},
        "probe_seeds": report["seeds"], "stage2_shares_stage1_encoder": shared, "timings_s": timings,
        "n_train_clips": n_train, "n_test_clips": r0["n_audio"], "n_test_captions": r0["n_captions"],
        "probe_report": "clap/probe/report.json"})


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    global TIMES
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    recipe = load_clap_recipe(args.recipes, args.scale)
    data = build_data.build(args)
    (data / "clap").mkdir(exist_ok=True)
    TIMES = StageTimes(data / "clap" / "timings.json")

    log("== CLAP 1. caption split and prep")
    with TIMES.stage("prep"):
        rows = cr.read_caption_rows(data / "captions.csv")
        cr.check_sides(rows, str(data / "captions.csv"))
        table = write_train_captions(data, rows)
        corpus = prep_train_audio(data, table, args.workers)
    n_train = len(cr.captions_by_file(rows, "train"))

    log("== CLAP 2. pre-training")
    runs = train_all(data, recipe, table, corpus)

    log("== CLAP 3. zero-shot and retrieval")
    tasks = load_tasks(data)
    labels = json.loads((data / "zeroshot_labels.json").read_text())
    batch = int(recipe.get("eval", {}).get("batch_size", 8))
    with TIMES.stage("clap_eval"):
        clap = evaluate_clap(data, runs, recipe, rows, tasks, labels, batch)
    chance = chance_row(data, rows, tasks)

    log("== CLAP 4. linear probe")
    with TIMES.stage("probe"):
        report, shared = probe(data, runs, recipe, tasks, plots=not args.no_plots)

    write_results(data, args.scale, recipe, runs, clap, chance, report, shared, dict(TIMES.times), n_train)
    log(f"wrote {data / 'clap_results.md'} and clap_results.json")
    log((data / "clap_results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
