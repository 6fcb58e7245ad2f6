"""Recipe search for the open models: data views of the open corpus, short runs, a quick validation probe.

    python benchmarks/open_suite/recipe_search.py tasks --suite SUITE_DATA --out TASKS_DIR
    python benchmarks/open_suite/recipe_search.py view --cache PREP_CACHE --manifest CORPUS/manifest.jsonl \
        --music-share 0.1 --out VIEW_CACHE
    python benchmarks/open_suite/recipe_search.py eval --tasks TASKS_DIR --out EVAL_DIR [--baselines] RUN/kikimimi …
    python benchmarks/open_suite/recipe_search.py table EVAL_DIR …

- ``tasks``: the open suite's tasks (``build_data.py`` output, e.g. ``<cache>/full``) with their **test rows
  dropped** and their validation rows scored in place of test (``split=test``); the probes then pick their
  hyper-parameters on kikimimi's class-complete 10 % hold-out of the training rows. A recipe is chosen without
  looking at any test clip. ``instrument_family_shifted`` is left out: its train/valid rows equal
  ``instrument_family``'s.
- ``view``: a ``kikimimi prep`` cache that lists a subset of another cache's files (absolute paths in its
  ``manifest.csv``, the same ``prep.json``): every file whose open-corpus ``meta.kind`` is not ``music`` plus a
  seeded sample of the music files, so that music is ``--music-share`` of the training **items** (the trainer
  draws one crop per item and epoch, so the item share is the crop share).
- ``eval``: :func:`kikimimi.evaluation.run.run_evaluation` on those tasks, linear and logistic probes, one seed
  (``--seeds``), no plots; ``--baselines`` adds log-mel statistics and the first model's random init.
- ``table``: one Markdown table (rows = models and probes, columns = tasks and their mean) from ``scores.csv``
  files.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

TASKS = ("language_id", "drum_type", "instrument_family")


def make_tasks(suite: Path, out: Path) -> list[Path]:
    """Write ``<out>/<task>.csv`` (valid rows as test, train rows kept, test rows dropped, absolute paths)."""
    meta = json.loads((suite / "tasks.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in TASKS:
        src = suite / meta[name]["csv"]
        with open(src, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = list(reader.fieldnames or [])
            rows = []
            for row in reader:
                if row["split"] == "test":
                    continue
                row["split"] = "test" if row["split"] == "valid" else row["split"]
                row["file_name"] = str((suite / row["file_name"]).resolve())
                rows.append(row)
        if not any(r["split"] == "test" for r in rows):
            raise SystemExit(f"'{src}': no validation rows")
        dest = out / f"{name}.csv"
        with open(dest, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        (out / f"{name}.task.json").write_text(json.dumps({"unit_s": float(meta[name]["unit_s"])}) + "\n")
        n_test = sum(r["split"] == "test" for r in rows)
        print(f"{dest}: {len(rows) - n_test} train, {n_test} validation rows (as test)")
        written.append(dest)
    return written


def make_view(cache: Path, manifest: Path, music_share: float, out: Path, seed: int = 0) -> Path:
    """A prep-cache view of ``cache``: non-music files plus music files up to ``music_share`` of the items."""
    kinds = {}
    with open(manifest, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            kinds[str((manifest.parent / rec["file_name"]).resolve())] = (rec.get("meta") or {}).get("kind")
    with open(cache / "manifest.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    music, other, unknown = [], [], 0
    for row in rows:
        key = str(Path(row["source"]).resolve())  # the audio file the cache entry was made from
        if key not in kinds:
            unknown += 1
        (music if kinds.get(key) == "music" else other).append(row)
    if unknown:
        raise SystemExit(f"'{cache}': {unknown} cached files are not in '{manifest}'")
    if not 0.0 <= music_share < 1.0:
        raise SystemExit(f"--music-share must be in [0, 1), got {music_share}")
    n_music = min(len(music), round(music_share / (1.0 - music_share) * len(other)))
    chosen = {id(r) for r in random.Random(seed).sample(music, n_music)} | {id(r) for r in other}
    kept = [r for r in rows if id(r) in chosen]
    out.mkdir(parents=True, exist_ok=True)
    (out / "prep.json").write_text((cache / "prep.json").read_text())
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in kept:
            w.writerow({**r, "file_name": str((cache / r["file_name"]).resolve())})
    (out / "view.json").write_text(json.dumps({"of": str(cache.resolve()), "music_share": music_share,
                                               "seed": seed, "items": len(kept), "music_items": n_music,
                                               "other_items": len(other)}, indent=1) + "\n")
    print(f"{out}: {len(kept)} items, {n_music} music of {len(music)} ({n_music / max(1, len(kept)):.1%})")
    return out


def evaluate(models: list[str], tasks_dir: Path, out: Path, baselines: bool, seeds: list[int]) -> Path:
    """Probe ``models`` (and with ``baselines`` log-mel statistics and the first model's random init)."""
    from kikimimi.evaluation.run import LOGMEL, model_specs, run_evaluation
    from kikimimi.evaluation.tasks import Task

    tasks = [Task.from_csv(tasks_dir / f"{t}.csv", name=t) for t in TASKS]
    specs = []
    for i, m in enumerate(models):
        with_base = baselines and i == 0
        specs += model_specs([LOGMEL, m] if with_base else [m], baselines=with_base)
    if baselines and not models:
        specs = model_specs([LOGMEL])
    run_evaluation(specs, tasks, out, seeds=tuple(seeds), plots=False, probes=("linear", "logistic"),
                   log=print, verdicts=False)
    print(f"wrote {out / 'scores.csv'}")
    return out / "scores.csv"


def table(dirs: list[Path]) -> str:
    """Markdown: one row per (model, probe), accuracy % per task and the mean over tasks."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for d in dirs:
        with open(Path(d) / "scores.csv", newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                if r["task"] in TASKS:
                    rows.setdefault((r["model"], r["probe"]), {})[r["task"]] = 100 * float(r["mean"])
    lines = ["| model | probe | " + " | ".join(TASKS) + " | mean |", "|---|---|" + "---:|" * (len(TASKS) + 1)]
    for (model, probe), s in rows.items():
        cells = [f"{s[t]:.1f}" if t in s else "–" for t in TASKS]
        mean = sum(s.values()) / len(s) if len(s) == len(TASKS) else float("nan")
        lines.append(f"| {model} | {probe} | " + " | ".join(cells) + f" | {mean:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tasks", help="validation-as-test task CSVs")
    t.add_argument("--suite", type=Path, required=True, help="build_data.py output folder (e.g. <cache>/full)")
    t.add_argument("--out", type=Path, required=True)
    v = sub.add_parser("view", help="a prep-cache view with a capped music share")
    v.add_argument("--cache", type=Path, required=True)
    v.add_argument("--manifest", type=Path, required=True, help="the open corpus's manifest.jsonl")
    v.add_argument("--music-share", type=float, required=True)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--out", type=Path, required=True)
    e = sub.add_parser("eval", help="quick validation probe of checkpoints")
    e.add_argument("models", nargs="*", help="run/kikimimi folders")
    e.add_argument("--tasks", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--baselines", action="store_true", help="add log-mel statistics and a random init")
    e.add_argument("--seeds", type=int, nargs="+", default=[42])
    tb = sub.add_parser("table", help="Markdown table from eval folders")
    tb.add_argument("dirs", type=Path, nargs="+")
    a = p.parse_args(argv)
    if a.cmd == "tasks":
        make_tasks(a.suite, a.out)
    elif a.cmd == "view":
        make_view(a.cache, a.manifest, a.music_share, a.out, a.seed)
    elif a.cmd == "eval":
        evaluate(a.models, a.tasks, a.out, a.baselines, a.seeds)
    else:
        print(table(a.dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
