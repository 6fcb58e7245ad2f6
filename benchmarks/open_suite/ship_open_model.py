"""Ship the open encoder: a training checkpoint → a packaged kikimimi model folder with its evidence.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/open_suite/ship_open_model.py \
        /root/.cache/kikimimi/open-train/final/open-m2d-tiny/checkpoint-7500.pth \
        --out src/kikimimi/weights/open-m2d-tiny

Writes ``OUT/`` (replaced as a whole at the end, so a killed run leaves the previous folder intact):

- ``model.safetensors`` + ``config.json``: the encoder in kikimimi's format, read from the checkpoint the way
  ``kikimimi pretrain`` exports its final ``kikimimi/`` folder (``load_encoder`` with the run's sizes and
  normalisation statistics, then ``save_kikimimi``), with an Apache-2.0 licence note; fp32;
- ``SHA256SUMS``: the SHA-256 of ``model.safetensors`` (``sha256sum -c SHA256SUMS`` checks it; the registry
  entry ``open-m2d-tiny`` reads it and every load verifies the weights against it);
- ``training.json``: the facts in ``kikimimi card --facts`` form: data sources with licences and hours (corpus
  and trained), compute (steps, batch, wall time from the run's ``log.jsonl``, CPU), recipe, the exact commands,
  the evaluation task CSVs;
- ``evidence.json``: everything behind them as numbers (per-source table, loss curve, settings, the weights'
  SHA-256 and size, evaluation seeds, times and margins over the baselines, limits);
- ``evaluation/report.json`` (+ ``report.md``, ``scores.csv``): ``kikimimi.evaluation.run.run_evaluation`` on
  the open suite's four tasks (test splits; ``build_data.py`` full scale): the model, log-mel statistics and the
  same network at random init (seed 0), linear and logistic probes, seeds ``--seeds``;
- ``README.md``: the model card: ``kikimimi card OUT --eval evaluation/report.json --facts training.json``
  (a plain card when that command is not in this checkout) plus the table against the baselines and the limits;
  every score in it is read from ``evaluation/report.json``.

The embedding caches and the unpacked model live in ``--work`` (default ``$KIKIMIMI_HOME/open-ship``), outside
the package. Run folder (``config.json``, ``log.jsonl``): ``--run-dir`` (default: the checkpoint's folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import cpu_model  # noqa: E402

# the shipped numbers are float32 numbers: no automatic bf16 / int8 / ONNX path in the evaluation
os.environ["KIKIMIMI_PRECISION"] = "fp32"

from kikimimi.fileio import atomic_write_json, atomic_write_text  # noqa: E402

NAME = "open-m2d-tiny"
TASKS = ("language_id", "drum_type", "instrument_family", "instrument_family_shifted")
PROBES = ("linear", "logistic")
DEFAULT_CORPUS = Path("/root/.cache/kikimimi/open-corpus/corpus-all")
DEFAULT_SUITE = Path("/root/.cache/kikimimi/open-train/suite/full")
LICENCE_NOTE = ("Apache-2.0. Trained by the kikimimi project with `kikimimi pretrain --recipe open-m2d-tiny` on "
                "openly licensed recordings from Debian packages (training.json lists every source, its licence "
                "and hours); no official NTT weights were used.")
LOGMEL_ROW, RANDOM_SUFFIX = "log-mel stats", " (random init)"


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------ facts
def read_run(run_dir: Path) -> dict:
    """The run's ``config.json`` (settings, decisions)."""
    path = run_dir / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"'{path}': cannot read the run's config.json ({exc}); pass --run-dir") from None


def compute_facts(run_dir: Path, config: dict, step: int) -> dict:
    """Steps, batch, wall time and throughput of the run up to ``step`` from ``log.jsonl``.

    A resumed run restarts ``elapsed_s`` at 0: the wall time is the sum over sessions of the last ``elapsed_s``
    logged at or before ``step`` (work lost between a session's last checkpoint and its end is included, the
    seconds after its last log line are not).
    """
    path = run_dir / "log.jsonl"
    rows = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"'{path}': cannot read the run's log ({exc})") from None
    sessions: list[list[dict]] = []
    for row in rows:
        if not sessions or row["elapsed_s"] < sessions[-1][-1]["elapsed_s"]:
            sessions.append([])
        sessions[-1].append(row)
    kept = [[r for r in s if r["step"] <= step] for s in sessions]
    kept = [s for s in kept if s]
    wall = sum(s[-1]["elapsed_s"] for s in kept)
    last = [r for s in kept for r in s]
    batch = int(config["batch_size"]) * int(config.get("accum_iter") or 1)
    return {
        "step": step, "planned_steps": config.get("steps"), "batch_size": batch,
        "samples_seen": step * batch, "epochs": last[-1]["epoch"] if last else None,
        "train_wall_s": round(wall, 1), "sessions": len(kept),
        "s_per_step": round(wall / step, 3) if step else None,
        "loss_at_step": last[-1]["loss"] if last else None,
        "loss_curve": [[r["step"], round(r["loss"], 5)] for r in last],
        "device": "cpu" if config.get("device") in ("auto", "cpu") else config.get("device"),
        "threads": "1 (OMP_NUM_THREADS=1, nice -n 15: benchmarks/open_suite/train_open_models.sh)",
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "note": "wall time on a shared 2-core machine (other jobs ran beside the training)",
        "log": str(path),
    }


def data_facts(config: dict, corpus: Path, trained: set[str] | None = None) -> dict:
    """Sources, licences and hours of the corpus (``manifest.jsonl``) and of the items the run trained on: the
    resolved audio paths ``trained``, else the items of the prep caches listed in the run's ``config["data"]``."""
    manifest = corpus / "manifest.jsonl"
    try:
        records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise SystemExit(f"'{manifest}': cannot read the corpus manifest ({exc}); pass --corpus") from None
    by_audio = {str((corpus / r["file_name"]).resolve()): r for r in records}
    if trained is None:
        trained = set()
        for data in config.get("data") or []:
            listing = Path(data) / "manifest.csv"
            if listing.is_file():
                import csv

                with open(listing, newline="", encoding="utf-8") as fh:
                    trained |= {str(Path(row["source"]).resolve()) for row in csv.DictReader(fh)}
    unknown = sorted(trained - set(by_audio))
    if unknown:
        raise SystemExit(f"'{manifest}': {len(unknown)} trained items are not in the corpus manifest "
                         f"(e.g. {unknown[0]}); pass the run's --corpus")
    table: dict[tuple[str, str], dict] = defaultdict(lambda: {"segments": 0, "hours": 0.0, "train_items": 0,
                                                              "train_hours": 0.0})
    for key, r in by_audio.items():
        row = table[(r["package"], r["licence"])]
        row.update(family=r.get("licence_family"), version=r.get("version"))
        row["segments"] += 1
        row["hours"] += r["duration_s"] / 3600
        if key in trained:
            row["train_items"] += 1
            row["train_hours"] += r["duration_s"] / 3600
    sources = [{"package": p, "licence": lic, **{k: round(v, 4) if isinstance(v, float) else v
                                                for k, v in row.items()}}
               for (p, lic), row in sorted(table.items(), key=lambda kv: -kv[1]["hours"])]
    licences: dict[str, float] = defaultdict(float)
    for s in sources:
        licences[s["licence"]] += s["train_hours"]
    build = {}
    if (corpus / "build.json").is_file():
        build = json.loads((corpus / "build.json").read_text(encoding="utf-8"))
    return {
        "corpus": str(corpus), "manifest": str(manifest),
        "corpus_hours": round(sum(s["hours"] for s in sources), 3), "corpus_segments": len(records),
        "train_items": sum(s["train_items"] for s in sources),
        "train_hours": round(sum(s["train_hours"] for s in sources), 3),
        "train_view": [str(d) for d in config.get("data") or []],
        "licences_train_hours": {k: round(v, 3) for k, v in sorted(licences.items(), key=lambda kv: -kv[1])},
        "sources": sources,
        "held_out": build.get("held_out"), "leak_check": build.get("leak_check"),
        "licence_files": str(corpus / "licences"),
    }


def commands(argv: list[str], args: argparse.Namespace, config: dict) -> dict:
    """The commands that built the corpus, trained the run and shipped it (README "Open models"); ``argv``: this
    script's arguments as given."""
    view = Path((config.get("data") or ["/root/.cache/kikimimi/open-train/view-music10"])[0])
    try:
        prep = json.loads((view / "view.json").read_text(encoding="utf-8"))["of"]
    except (OSError, ValueError, KeyError):
        prep = str(view.parent / "prep-m2d-16k")
    return {
        "corpus": f".venv/bin/kikimimi data open-corpus {args.corpus}",
        "prep": f".venv/bin/kikimimi prep {args.corpus}/corpus.csv -o {prep} --preset m2d-16k "
                "--dtype float16 --workers 1",
        "view": f".venv/bin/python benchmarks/open_suite/recipe_search.py view --cache {prep} "
                f"--manifest {args.corpus}/manifest.jsonl --music-share 0.1 --seed 0 --out {view}",
        "train": "bash benchmarks/open_suite/train_open_models.sh  # = nice -n 15 kikimimi pretrain --recipe "
                 f"{config.get('recipe')} --data {' '.join(config.get('data') or [])} --out {config.get('out')} "
                 f"--run-name {config.get('run_name')} --no-progress (OMP_NUM_THREADS=1; --resume RUN after a stop)",
        "suite_tasks": f".venv/bin/python benchmarks/open_suite/build_data.py --cache {args.suite.parent}",
        "ship": "HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python "
                + shlex.join(["benchmarks/open_suite/ship_open_model.py", *argv]),
    }


# ------------------------------------------------------------------------------------------ shipping (all three)
def staging_for(out: Path) -> Path:
    """An empty staging folder beside ``out`` (this process's own), where the shipped folder is assembled."""
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def write_sums(folder: Path, names: list[str]) -> dict[str, str]:
    """``folder/SHA256SUMS`` (``sha256sum -c`` format) of the files ``names`` (relative; ``model.safetensors``
    first: the registry pins it) → ``{name: SHA-256}``."""
    from kikimimi.checkpoints.digest import sha256_file

    sums = {name: sha256_file(folder / name) for name in names}
    atomic_write_text(folder / "SHA256SUMS", "".join(f"{d}  {n}\n" for n, d in sums.items()))
    return sums


def install(staging: Path, out: Path) -> None:
    """Put ``staging`` in the place of ``out`` as a whole (a killed run leaves the previous folder intact)."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def open_card(name: str, *, pipeline_tag: str, tags: list[str], intro: str, usage: list[str],
              sections: list[tuple[str, list[str]]]) -> str:
    """A shipped model's card (markdown with YAML front matter): title, one paragraph, a Python example, then
    ``(heading, lines)`` sections (evaluation, training, limits, files)."""
    lines = ["---", "library_name: kikimimi", "license: apache-2.0", f"pipeline_tag: {pipeline_tag}",
             f"tags: [{', '.join(tags)}]", "---", f"# {name}", "", intro, "", "```python", "import kikimimi",
             *usage, "```", ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", *body, ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ export
def export(checkpoint: Path, config: dict, dest: Path, step: int) -> dict:
    """``checkpoint`` → ``dest`` (kikimimi folder), as ``kikimimi pretrain`` exports its final ``kikimimi/``."""
    from kikimimi.checkpoints import load_encoder, save_kikimimi
    from kikimimi.methods import METHODS
    from kikimimi.training.settings import PretrainSettings

    settings = PretrainSettings.from_dict({k: v for k, v in config.items() if k not in ("decisions",)},
                                          source=str(checkpoint))
    stats = config.get("norm_stats") or (config.get("decisions") or {}).get("norm_stats")
    bundle = load_encoder(checkpoint, norm_stats=stats, **METHODS[settings.method].export_kwargs(settings))
    bundle.config["source"] = f"kikimimi pretrain --recipe {config.get('recipe')}, checkpoint-{step}.pth"
    save_kikimimi(bundle, dest, licence_note=LICENCE_NOTE)
    return bundle.config


# ------------------------------------------------------------------------------------------ evaluation
def evaluate(model_dir: Path, suite: Path, work: Path, seeds: list[int]) -> dict:
    """The open suite's tasks (test splits): the model, log-mel statistics and its random init."""
    from kikimimi.evaluation.run import LOGMEL, model_specs, run_evaluation
    from kikimimi.evaluation.tasks import Task

    meta_path = suite / "tasks.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"'{meta_path}': cannot read the open suite's tasks ({exc}); build them with "
                         "benchmarks/open_suite/build_data.py and pass --suite <cache>/full") from None
    tasks = [Task.from_csv(suite / meta[t]["csv"], name=t, unit_s=float(meta[t]["unit_s"])) for t in TASKS]
    specs = model_specs([LOGMEL, str(model_dir)], baselines=True)
    out = work / "eval"
    run_evaluation(specs, tasks, out, seeds=tuple(seeds), plots=False, probes=PROBES, log=log)
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def summary(report: dict, name: str) -> dict:
    """``{task: {probe: {row: mean %}}}`` from ``report.json`` (rows: model, log-mel stats, random init)."""
    rows = {name: name, "log-mel statistics": LOGMEL_ROW, "random init": name + RANDOM_SUFFIX}
    out: dict = {}
    for task, entry in report["tasks"].items():
        for probe in report["probes"]:
            cell = out.setdefault(task, {}).setdefault(probe, {})
            for label, key in rows.items():
                r = entry["results"][key]["probes"][probe]
                cell[label] = {"mean": r["mean"], "std": r["std"]}
    return out


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def margins(table: dict, name: str) -> dict:
    """Per task and probe: the model's margin (points) over the better of the two baselines."""
    return {task: {probe: round(100 * (c[name]["mean"] - max(c["log-mel statistics"]["mean"],
                                                              c["random init"]["mean"])), 1)
                   for probe, c in probes.items()} for task, probes in table.items()}


# ------------------------------------------------------------------------------------------ card
def card_facts(ev: dict, suite: Path) -> dict:
    """``training.json``: the facts in the form ``kikimimi card --facts`` reads (its ``CardFacts`` keys only)."""
    d, c = ev["data"], ev["compute"]
    meta = json.loads((suite / "tasks.json").read_text(encoding="utf-8"))
    return {
        "name": ev["name"], "license": "apache-2.0", "description": ev["description"],
        "tags": ["m2d", "self-supervised", "open-data", "feature-extraction"],
        "datasets": [{"name": s["package"], "licence": s["licence"],
                      "url": f"Debian package {s['package']} {s['version']}" if s.get("version")
                      else "generated by kikimimi (kikimimi.audio.synthetic)" if s["package"] == "kikimimi"
                      else f"{s['package']} (no version recorded)",
                      "notes": f"{s['hours']:.2f} h in the corpus ({s['segments']} segments); trained on "
                               f"{s['train_items']} items, {s['train_hours']:.2f} h"} for s in d["sources"]],
        "compute": {
            "steps": f"{c['step']:,} of the recipe's {c['planned_steps']:,} (checkpoint-{c['step']}.pth)",
            "batch": c["batch_size"], "crops seen": f"{c['samples_seen']:,} ({c['epochs']} epochs of the items)",
            "training data": f"{d['train_items']:,} items, {d['train_hours']:.2f} h of the open corpus "
                             f"({d['corpus_hours']:.2f} h; music capped at 10 % of the items); per licence: "
                             + ", ".join(f"{k} {v:.2f} h" for k, v in d["licences_train_hours"].items()),
            "wall time": f"{c['train_wall_s'] / 3600:.2f} h in {c['sessions']} session(s), {c['s_per_step']} s "
                         "per step",
            "hardware": f"{c['device']}, {c['cpu']}, {c['threads']}",
            "loss at the last logged step": round(c["loss_at_step"], 4) if c["loss_at_step"] is not None else None,
            "note": c["note"],
        },
        "recipe": f"{ev['recipe']} (kikimimi.methods.recipes; benchmarks/open_suite/README.md, \"Open models\")",
        "command": "\n".join(ev["commands"].values()),
        "eval_tasks": {t: str(suite / meta[t]["csv"]) for t in TASKS},
    }


def baseline_lines(ev: dict, report: dict) -> list[str]:
    """The card's comparison with the baselines (every number from ``evaluation/report.json``) and its limits."""
    name = ev["name"]
    table = summary(report, name)
    lines = ["## Compared with baselines", "",
             f"Open suite (benchmarks/open_suite, test splits: prompts, kits and programs never seen in training), "
             f"accuracy % (mean ± std over probe seeds {report['seeds']}, float32); every number is in "
             "`evaluation/report.json` (`evaluation/report.md` has per-class accuracy).", "",
             f"| task | probe | {name} | log-mel statistics | random init |", "|---|---|---:|---:|---:|"]
    for task, probes in table.items():
        for probe, cell in probes.items():
            lines.append(f"| {task} | {probe} | " + " | ".join(
                f"{pct(cell[k]['mean'])} ± {pct(cell[k]['std'])}" for k in (name, "log-mel statistics", "random init"))
                + " |")
    lines += ["", "Reproduce every number of this card (evaluation included):", "", "```bash",
              ev["commands"]["ship"], "```", "", "## Intended use and limits", "", *[f"- {x}" for x in ev["limits"]],
              ""]
    return lines


def fallback_card(ev: dict, report: dict) -> list[str]:
    """The card when ``kikimimi card`` (kikimimi.evaluation.model_card) is not in this checkout."""
    name, d, c = ev["name"], ev["data"], ev["compute"]
    lines = [
        "---", "library_name: kikimimi", "license: apache-2.0", "pipeline_tag: feature-extraction",
        "tags: [kikimimi, audio, m2d, self-supervised]", "---", "", f"# {name}", "",
        f"{ev['description']} `kikimimi.load(\"{name}\")` or `--model {name}` (packaged: no download).", "",
        "## Model", "", f"- {ev['model']['architecture']}; input {ev['model']['input']}; "
        f"{ev['model']['embedding_dim']}-d frames and clip embedding (mean over time)",
        f"- `model.safetensors`: {ev['weights']['size_bytes']:,} bytes ({ev['weights']['dtype']}), SHA-256 "
        f"`{ev['weights']['sha256']}` (`SHA256SUMS`; verified on every load)", f"- licence: {ev['licence']}", "",
        "## Training data", "",
        f"{d['train_items']:,} items, {d['train_hours']:.2f} h of the open corpus ({d['corpus_hours']:.2f} h). Per "
        "licence: " + ", ".join(f"{k} {v:.2f} h" for k, v in d["licences_train_hours"].items()) + ".", "",
        "| package | licence | corpus h | trained items | trained h |", "|---|---|---:|---:|---:|",
        *[f"| {s['package']} | {s['licence']} | {s['hours']:.2f} | {s['train_items']} | {s['train_hours']:.2f} |"
          for s in d["sources"]],
        "", "## Compute", "",
        f"- {c['step']:,} steps of batch {c['batch_size']} (of {c['planned_steps']:,}), {c['train_wall_s'] / 3600:.2f} "
        f"h wall in {c['sessions']} session(s) on {c['device']}, {c['cpu']}, {c['threads']}; recipe `{ev['recipe']}`",
        "",
    ]
    return lines


def write_card(out: Path, ev: dict, facts: dict, report: dict) -> str:
    """``out/README.md``: ``kikimimi card`` (folder, ``evaluation/report.json``, ``training.json``) plus the comparison
    with the baselines and the limits; returns which writer made the first part."""
    try:
        from kikimimi.evaluation.model_card import CardFacts, build_card
    except ImportError:  # kikimimi card (issue 31) not in this checkout
        head, how = "\n".join(fallback_card(ev, report)), "fallback"
    else:
        head = build_card(out, [out / "evaluation" / "report.json"], facts=CardFacts.from_dict(facts, "training.json"),
                          report_model=ev["name"])
        # the folder is loaded by its registry name wherever it is installed (the card names the build folder)
        head = head.replace(repr(str(out)), repr(ev["name"])).replace(str(out), ev["name"])
        how = "kikimimi card"
    extra = "\n".join(baseline_lines(ev, report))
    if "\n## Files\n" in head:  # beside the card's own results, before the file list
        before, after = head.split("\n## Files\n", 1)
        text = before.rstrip("\n") + "\n\n" + extra + "\n## Files\n" + after
    else:
        text = head.rstrip("\n") + "\n\n" + extra
    atomic_write_text(out / "README.md", text)
    return how


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="checkpoint-N.pth of the open-m2d-tiny run")
    p.add_argument("--out", type=Path, required=True, help="the model folder to write (replaced at the end)")
    p.add_argument("--run-dir", type=Path, default=None, help="the run folder (default: the checkpoint's folder)")
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the open corpus (manifest.jsonl)")
    p.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="the open suite's task folder (tasks.json)")
    p.add_argument("--work", type=Path, default=None, help="caches and the unpacked model (default: "
                   "$KIKIMIMI_HOME/open-ship)")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="probe seeds")
    p.add_argument("--name", default=NAME, help="model name (registry name, card title)")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    from kikimimi.checkpoints.digest import sha256_file
    from kikimimi.checkpoints.home import cache_root
    from kikimimi.checkpoints.safe_load import safe_torch_load

    started = time.perf_counter()
    ckpt = a.checkpoint.resolve()
    run_dir = (a.run_dir or ckpt.parent).resolve()
    work = (a.work or cache_root() / "open-ship").resolve()
    config = read_run(run_dir)
    step = int(safe_torch_load(ckpt).get("step", 0))
    log(f"== {ckpt} (step {step}); run {run_dir}; work {work}; CPU {cpu_model()}")
    model_dir = work / a.name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_config = export(ckpt, config, model_dir, step)
    weights = model_dir / "model.safetensors"
    digest = sha256_file(weights)
    log(f"   exported {model_dir} ({weights.stat().st_size:,} bytes, SHA-256 {digest})")
    t, cpu = time.perf_counter(), time.process_time()
    report = evaluate(model_dir, a.suite.resolve(), work, a.seeds)
    eval_s, eval_cpu = time.perf_counter() - t, time.process_time() - cpu
    vit = model_config["vit"]
    ev = {
        "format": "kikimimi-ship-evidence/1", "name": a.name, "licence": "Apache-2.0",
        "description": "kikimimi's own tiny M2D audio encoder (ViT-tiny, 16 kHz), self-supervised on openly "
                       "licensed recordings only.",
        "model": {"architecture": f"M2D ViT-tiny ({vit['embed_dim']}-d, depth {vit['depth']}, "
                                  f"{vit['num_heads']} heads, patch {vit['patch_size'][0]}x{vit['patch_size'][1]})",
                  "input": f"{vit['input_size'][0]} mels x {vit['input_size'][1]} frames "
                           f"({vit['input_size'][1] / 100:.2f} s chunks) at {vit['sample_rate']} Hz",
                  "embedding_dim": vit["input_size"][0] // vit["patch_size"][0] * vit["embed_dim"]},
        "recipe": config.get("recipe"),
        "checkpoint": {"file": ckpt.name, "step": step},
        "weights": {"file": "model.safetensors", "sha256": digest, "size_bytes": weights.stat().st_size,
                    "dtype": "float32"},
        "data": data_facts(config, a.corpus.resolve()),
        "compute": compute_facts(run_dir, config, step),
        "settings": {k: config.get(k) for k in ("method", "size", "input_frames", "patch_size", "batch_size", "lr",
                                                 "warmup_steps", "mask_ratio", "ema_taus", "seed", "norm_stats")},
        "commands": commands(argv, a, config),
        "evaluation": {"report": "evaluation/report.json", "tasks": list(TASKS), "probes": list(PROBES),
                       "seeds": a.seeds, "split": "test", "suite": str(a.suite),
                       "baselines": ["log-mel statistics", "the same network at random init (seed 0)"],
                       "precision": "fp32",
                       "eval_wall_s": round(eval_s, 1), "eval_cpu_s": round(eval_cpu, 1),
                       "margins_points": margins(summary(report, a.name), a.name)},
        "limits": [
            "a small encoder trained for a few CPU-hours: a starting point for probes, search and further "
            "pre-training, not a replacement for the official AudioSet-trained M2D",
            "16 kHz input; telephone speech (8 kHz band), game and hold music, drum samples, rendered notes and "
            "UI sounds dominate the training data; environmental and real-world recordings are rare",
            "part of the training audio is copyleft-licensed (CC-BY-SA, GPL; see the table): the weights are "
            "released under Apache-2.0 by the kikimimi project; check the sources' terms for your use",
        ],
    }
    staging = staging_for(a.out)
    shutil.copytree(model_dir, staging)
    write_sums(staging, ["model.safetensors"])
    (staging / "evaluation").mkdir()
    for f in ("report.json", "report.md", "scores.csv"):
        shutil.copyfile(work / "eval" / f, staging / "evaluation" / f)
    facts = card_facts(ev, a.suite.resolve())
    atomic_write_json(staging / "training.json", facts)
    atomic_write_json(staging / "evidence.json", ev)
    how = write_card(staging, ev, facts, report)
    install(staging, a.out)
    table = summary(report, a.name)
    log(f"\n== {a.out} (card: {how}): step {step}; evaluation {eval_s / 60:.1f} min wall, {eval_cpu / 60:.1f} "
        "min CPU; total "
        f"{(time.perf_counter() - started) / 60:.1f} min wall, {time.process_time() / 60:.1f} min CPU (load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    log(f"{'task':<27} {'probe':<9} {a.name:>16} {'log-mel stats':>14} {'random init':>12} {'margin':>7}")
    m = margins(table, a.name)
    for task, probes in table.items():
        for probe, cell in probes.items():
            log(f"{task:<27} {probe:<9} {pct(cell[a.name]['mean']):>16} {pct(cell['log-mel statistics']['mean']):>14} "
                f"{pct(cell['random init']['mean']):>12} {m[task][probe]:>+7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
