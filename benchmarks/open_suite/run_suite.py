"""Run the open suite: build data, pre-train tiny M2D and BYOL-A, probe every task, write one results table.

    python benchmarks/open_suite/run_suite.py [--small | --smoke] [--cache DIR] [--deb-dir DIR] [--extracted DIR]

Stages (each skips work whose output exists; a killed pre-training run continues with ``--resume``):

1. ``build_data.build`` (tasks, corpus, captions) into ``<cache>/<scale>/``;
2. ``kikimimi prep`` log-mel caches of the corpus (``prep-m2d-16k``, ``prep-byola``);
3. ``python -m kikimimi pretrain`` for M2D and BYOL-A with the flags of ``recipes.json`` (``--recipes``);
4. ``kikimimi.evaluation.run.run_evaluation`` on every task: log-mel baseline, random init, BYOL-A, M2D
   (``eval/report.md`` with per-class tables and plots);
5. ``results.md`` + ``results.json``: one table, models × tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build_data  # noqa: E402

from kikimimi.fileio import atomic_write_json, atomic_write_text  # noqa: E402

TASKS = ("language_id", "drum_type", "instrument_family", "instrument_family_shifted")
METHODS = ("m2d", "byola")


def add_arguments(p: argparse.ArgumentParser) -> None:
    build_data.add_arguments(p)
    p.add_argument("--recipes", type=Path, default=HERE / "recipes.json", help="pre-training flags per scale")
    p.add_argument("--workers", type=int, default=2, help="processes for kikimimi prep")
    p.add_argument("--no-plots", action="store_true", help="skip confusion matrices and t-SNE maps")


def log(msg: str) -> None:
    print(msg, flush=True)


def load_recipe(path: Path, scale: str) -> dict:
    """The ``scale`` entry of the recipes file (``m2d``, ``byola`` and ``eval`` sections)."""
    try:
        recipes = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"'{path}': cannot read the recipes JSON: {err}") from None
    if scale not in recipes or not all(k in recipes[scale] for k in METHODS):
        raise SystemExit(f"'{path}': needs a '{scale}' entry with 'm2d' and 'byola' sections")
    return recipes[scale]


def kikimimi_cli(argv: list[str], what: str) -> None:
    """Run ``python -m kikimimi ARGV`` in a child process (its output streams through)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = subprocess.run([sys.executable, "-m", "kikimimi", *argv], env=env, check=False).returncode
    if code:
        raise SystemExit(f"{what} failed with exit code {code}: python -m kikimimi {' '.join(argv)}")


def prep(data: Path, preset: str, workers: int) -> Path:
    """Log-mel cache of the corpus for one front-end preset (files already converted are skipped)."""
    cache = data / f"prep-{preset}"
    if (cache / ".done").exists():
        return cache
    kikimimi_cli(["prep", str(data / "corpus.csv"), "-o", str(cache), "--preset", preset, "--workers", str(workers),
                  "--quiet"], f"prep {preset}")
    (cache / ".done").write_text("ok\n")
    return cache


def pretrain_run(runs: Path, method: str, settings: dict, corpus: Path) -> Path:
    """Train, resume or reuse one run under ``runs`` (``settings["run_name"]`` names it); returns its folder."""
    settings = dict(settings)
    name = settings.pop("run_name")
    run_dir = runs / name
    if (run_dir / "kikimimi" / "config.json").exists():
        log(f"   {name}: already trained")
        return run_dir
    if (run_dir / "last.pth").exists() or any(run_dir.glob("checkpoint-*.pth")):
        log(f"   {name}: resuming")
        kikimimi_cli(["pretrain", "--resume", str(run_dir), "--no-progress"], f"pretrain {method} (resume)")
    else:
        if run_dir.exists():  # killed before its first checkpoint: start again in the same folder
            shutil.rmtree(run_dir)
        runs.mkdir(parents=True, exist_ok=True)
        recipe = runs / f"{name}.recipe.json"
        atomic_write_json(recipe, {"method": method, **settings})
        kikimimi_cli(["pretrain", "--method", method, "--data", str(corpus), "--out", str(runs), "--run-name", name,
                      "--config", str(recipe), "--no-progress"], f"pretrain {method}")
    if not (run_dir / "kikimimi" / "config.json").exists():
        raise SystemExit(f"'{run_dir}': pre-training ended without writing kikimimi/config.json")
    return run_dir


def pretrain(data: Path, method: str, settings: dict, prep_dir: Path) -> Path:
    """One open-suite pre-training run in ``<data>/runs``."""
    return pretrain_run(data / "runs", method, settings, prep_dir)


def load_tasks(data: Path):
    from kikimimi.evaluation.tasks import Task

    meta = json.loads((data / "tasks.json").read_text())
    return [Task.from_csv(data / meta[t]["csv"], name=t, unit_s=float(meta[t]["unit_s"])) for t in TASKS]


def evaluate(data: Path, runs: dict[str, Path], recipe: dict, plots: bool):
    """Probe every task with the baselines and both encoders; returns (EvalOutcome | None, report dict)."""
    from kikimimi.evaluation.run import model_specs, run_evaluation

    out = data / "eval"
    report_json = out / "report.json"
    tasks = load_tasks(data)
    ev = recipe.get("eval", {})
    specs = model_specs([str(runs["m2d"] / "kikimimi"), str(runs["byola"] / "kikimimi")], lr=ev.get("lr"))
    if report_json.exists():
        old = json.loads(report_json.read_text())
        if set(old.get("tasks", {})) == set(TASKS) and set(old.get("models", {})) == {s.name for s in specs} and all(
                old["models"][s.name]["fingerprint"] == s.fingerprint for s in specs):
            log("   eval/report.json is up to date, kept")
            return old
    run_evaluation(specs, tasks, out, seeds=tuple(ev.get("seeds", (42, 43, 44))), plots=plots,
                   log=lambda line: log("   " + line))
    return json.loads(report_json.read_text())


def write_results(data: Path, report: dict, scale: str, timings: dict[str, float], recipe: dict) -> None:
    """``results.md`` (models × tasks, mean ± std %) and ``results.json``."""
    build = json.loads((data / "build.json").read_text())
    meta = json.loads((data / "tasks.json").read_text())
    models = list(report["models"])
    lines = [f"# Open suite results ({scale})", "",
             f"Pre-training corpus: {build['corpus_hours']:.2f} h of registry audio "
             f"({', '.join(f'{k} {v:.2f} h' for k, v in build['corpus_hours_per_source'].items())}).",
             f"Linear probe (EVAR protocol), seeds {report['seeds']}; scores are test accuracy in % (mean ± std).", "",
             "| model | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    table: dict[str, dict[str, dict]] = {}
    for m in models:
        cells = []
        for t in TASKS:
            r = report["tasks"][t]["results"][m]
            table.setdefault(m, {})[t] = {"metric": r["metric"], "mean": r["mean"], "std": r["std"]}
            cells.append(f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "| task | clips (train/valid/test) | classes | unit (s) | split by |", "|---|---|---|---|---|"]
    for t in TASKS:
        tot = meta[t]["counts"]["_total"]
        lines.append(f"| {t} | {meta[t]['n_clips']} ({tot['train']}/{tot['valid']}/{tot['test']}) | "
                     f"{len(meta[t]['counts']) - 1} | {meta[t]['unit_s']:g} | {meta[t]['group_key']} |")
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
              "", "Per-class accuracy, confusion matrices and t-SNE maps: `eval/report.md`."]
    atomic_write_text(data / "results.md", "\n".join(lines) + "\n")
    atomic_write_json(data / "results.json", {"scale": scale, "results": table, "tasks": meta,
                                              "corpus_hours": build["corpus_hours"], "recipe": recipe,
                                              "timings_s": timings, "eval_report": "eval/report.json"})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    recipe = load_recipe(args.recipes, args.scale)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = build_data.build(args)
    timings["build"] = time.perf_counter() - t
    log("== 4. pre-training")
    runs = {}
    for method, preset in (("m2d", "m2d-16k"), ("byola", "byola")):
        t = time.perf_counter()
        runs[method] = pretrain(data, method, recipe[method], prep(data, preset, args.workers))
        timings[f"pretrain_{method}"] = time.perf_counter() - t
    log("== 5. linear-probe evaluation")
    t = time.perf_counter()
    report = evaluate(data, runs, recipe, plots=not args.no_plots)
    timings["evaluation"] = time.perf_counter() - t
    write_results(data, report, args.scale, timings, recipe)
    log(f"wrote {data / 'results.md'} and results.json")
    log((data / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
