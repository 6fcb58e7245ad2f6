"""Build the open suite's data from Debian package audio: evaluation tasks, pre-training corpus, captions.

    python benchmarks/open_suite/build_data.py [--small | --smoke] [--cache DIR] [--deb-dir DIR] [--extracted DIR]

Writes into ``<cache>/<scale>/`` (scale = full, small or smoke): ``language_id.csv``, ``drum_type.csv``,
``instrument_family.csv``, ``instrument_family_shifted.csv`` (EVAR task CSVs, paths relative to that folder),
``tasks.json`` (counts per class and split, unit lengths, group keys), ``corpus.csv`` (pre-training audio list),
``captions.csv`` + ``zeroshot_labels.json`` and ``build.json`` (hours, sources, leakage checks). Every stage
skips outputs that exist, so an interrupted build resumes. See README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build_tasks as bt  # noqa: E402
import captions as cap  # noqa: E402
import corpus as cp  # noqa: E402
from clips import SKIPPED  # noqa: E402
from midi import EXCLUDED_FAMILIES  # noqa: E402
from sources import Sources  # noqa: E402
from splits import check_disjoint_files, summarise_rows  # noqa: E402

from kikimimi.fileio import atomic_write_json  # noqa: E402

DEFAULT_CACHE = HERE / "cache"

#: per scale: task sizes and corpus hours per source (None = everything)
SCALES: dict[str, dict] = {
    "full": {"lang_prompts": 240, "drum_cap": 25, "notes_per_program": 12,
             "corpus_h": {"asterisk": None, "hedgewars_music": None, "hedgewars_sounds": None, "wesnoth": None,
                          "sonic_pi": None, "freedesktop": None}, "music_h": 1.0},
    "small": {"lang_prompts": 60, "drum_cap": 5, "notes_per_program": 4,
              "corpus_h": {"asterisk": 0.3, "hedgewars_music": 0.25, "hedgewars_sounds": 0.1, "wesnoth": 0.05,
                           "sonic_pi": 0.05, "freedesktop": None}, "music_h": 0.25},
    "smoke": {"lang_prompts": 10, "drum_cap": 1, "notes_per_program": 1,
              "corpus_h": {"asterisk": 0.02, "hedgewars_music": 0.01, "hedgewars_sounds": 0.01, "wesnoth": 0.005,
                           "sonic_pi": 0.005, "freedesktop": 0.005}, "music_h": 0.02},
}
ASTERISK = ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav", "asterisk-core-sounds-fr-wav",
            "asterisk-core-sounds-it-wav", "asterisk-core-sounds-ru-wav")


def add_arguments(p: argparse.ArgumentParser) -> None:
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--small", dest="scale", action="store_const", const="small", help="~1 h corpus, small tasks")
    scale.add_argument("--smoke", dest="scale", action="store_const", const="smoke", help="minutes of audio (tests)")
    p.set_defaults(scale="full")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache folder (default: %(default)s)")
    p.add_argument("--deb-dir", type=Path, default=None, help="folder with already downloaded .deb files")
    p.add_argument("--extracted", type=Path, default=None, help="folder where the packages are already extracted")
    p.add_argument("--no-network", action="store_true", help="never call apt-get (fail when something is missing)")
    p.add_argument("--seed", type=int, default=0)


def log(msg: str) -> None:
    print(msg, flush=True)


def build(args: argparse.Namespace) -> Path:
    """Run every stage; returns the data folder."""
    cfg = SCALES[args.scale]
    data = Path(args.cache) / args.scale
    data.mkdir(parents=True, exist_ok=True)
    src = Sources(Path(args.cache), args.deb_dir, args.extracted, allow_network=not args.no_network, log=log)
    t0 = time.perf_counter()

    log(f"== sources ({args.scale})")
    voices = {Path(src.path(pkg)).name: src.path(pkg) for pkg in ASTERISK}
    drumkits = src.path("hydrogen-drumkits")
    soundfonts = (src.path("fluid-soundfont-gm"), src.path("timgm6mb-soundfont"))
    fluidsynth = src.tool("fluidsynth")
    copy_licences(src, data / "licences")

    log("== 1. evaluation tasks")
    prompts = bt.asterisk_prompts(voices)
    chosen = bt.choose_language_prompts(prompts, cfg["lang_prompts"], args.seed)
    tasks: dict[str, list[dict]] = {}
    tasks["language_id"] = _stage(data / "language_id.csv",
                                  lambda: bt.build_language(prompts, chosen, data, args.seed))
    tasks["drum_type"] = _stage(data / "drum_type.csv",
                                lambda: bt.build_drums(drumkits, data, args.seed, cfg["drum_cap"]))
    if not (data / "instrument_family_shifted.csv").exists():
        main, shifted, _ = bt.build_instruments(fluidsynth, soundfonts, data, args.seed, cfg["notes_per_program"])
        bt.write_rows(data / "instrument_family_shifted.csv", shifted)
        bt.write_rows(data / "instrument_family.csv", main)
    tasks["instrument_family"] = bt.read_rows(data / "instrument_family.csv")
    tasks["instrument_family_shifted"] = bt.read_rows(data / "instrument_family_shifted.csv")
    summary = {}
    for name, rows in tasks.items():
        bt.check_no_leakage(rows, bt.GROUP_KEY[name], name=name)
        key = bt.GROUP_KEY[name]
        summary[name] = {"csv": f"{name}.csv", "unit_s": bt.TASK_UNIT_S[name], "group_key": key,
                         "n_clips": len(rows), "counts": summarise_rows(rows),
                         "groups_per_split": dict(Counter(s for _, s in {(r[key], r["split"]) for r in rows}))}
        log(f"   {name:<26} {len(rows):5d} clips, {len(summary[name]['counts']) - 1} classes, "
            f"split by {key}: {summary[name]['counts']['_total']}")
    atomic_write_json(data / "tasks.json", summary)

    log("== 2. pre-training corpus")
    test_programs = sorted({int(r["program"]) for r in tasks["instrument_family"] if r["split"] == "test"})
    corpus_rows = _stage(data / "corpus.csv", lambda: _build_corpus(src, cfg, data, voices, prompts, set(chosen),
                                                                    fluidsynth, soundfonts[0], test_programs,
                                                                    args.seed))
    eval_origins = {r["origin"] for rows in tasks.values() for r in rows}
    check_disjoint_files(eval_origins, (r["origin"] for r in corpus_rows))
    check_disjoint_files((r["file_name"] for rows in tasks.values() for r in rows),
                         (r["file_name"] for r in corpus_rows))
    corpus_prompts = {_asterisk_prompt(r["origin"], voices) for r in corpus_rows if r["source"] == "asterisk"}
    leaked = corpus_prompts & set(chosen)
    assert not leaked, f"language-task prompts in the corpus: {sorted(leaked)[:3]}"
    hours = Counter()
    for r in corpus_rows:
        hours[r["source"]] += float(r["duration_s"]) / 3600
    log(f"   corpus: {len(corpus_rows)} segments, {sum(hours.values()):.2f} h: "
        + ", ".join(f"{k} {v:.2f} h" for k, v in sorted(hours.items())))

    log("== 3. caption pairs and zero-shot labels")
    cap_rows = _stage(data / "captions.csv", lambda: cap.caption_rows(tasks, args.seed))
    atomic_write_json(data / "zeroshot_labels.json", cap.ZERO_SHOT)
    n_cap = Counter(r["split"] for r in cap_rows)
    log(f"   captions: {dict(n_cap)} ({len({r['file_name'] for r in cap_rows})} files)")

    atomic_write_json(data / "build.json", {
        "scale": args.scale, "seed": args.seed, "config": cfg, "corpus_hours": round(sum(hours.values()), 4),
        "corpus_hours_per_source": {k: round(v, 4) for k, v in sorted(hours.items())},
        "corpus_segments": len(corpus_rows), "captions": dict(n_cap),
        "instrument_test_programs": test_programs,
        "skipped_sources": [{"path": p, "reason": r} for p, r in SKIPPED],
        "checks": ["no file/prompt/kit/program on two sides of any task split",
                   "no evaluation clip or its source file in the corpus",
                   "no language-task prompt name (any language) in the corpus",
                   "no hydrogen-drumkits sample in the corpus",
                   "corpus music uses no instrument-task test program",
                   "no caption file or template on both caption sides"],
        "seconds": round(time.perf_counter() - t0, 1)})
    if SKIPPED:
        log(f"   {len(SKIPPED)} undecodable source file(s) skipped (listed in build.json)")
    log(f"done in {time.perf_counter() - t0:.0f} s: {data}")
    return data


def copy_licences(src: Sources, dest: Path) -> None:
    """Copy each package's ``usr/share/doc/<package>/copyright`` next to the derived data (attribution)."""
    src.copy_licences(dest)


def _stage(csv_path: Path, make) -> list[dict]:
    if csv_path.exists():
        log(f"   {csv_path.name} exists, kept")
        return bt.read_rows(csv_path)
    rows = make()
    bt.write_rows(csv_path, rows)
    return rows


def _asterisk_prompt(origin: str, voices: dict[str, Path]) -> str:
    p = Path(origin)
    for folder in voices.values():
        try:
            return p.relative_to(folder).with_suffix("").as_posix()
        except ValueError:
            continue
    raise ValueError(f"'{origin}' is not inside an Asterisk voice folder")


def _build_corpus(src: Sources, cfg: dict, data: Path, voices: dict[str, Path], prompts, task_prompts: set[str],
                  fluidsynth: str, soundfont: Path, test_programs: list[int], seed: int) -> list[dict]:
    budget = cfg["corpus_h"]
    rows: list[dict] = []
    # Asterisk: only prompt names the language task never uses (every voice of them)
    files = sorted(p for name, per_voice in prompts.items() if name not in task_prompts for p in per_voice.values())
    # each package is its own tree (or all share one --extracted tree): a segment is named <voice>/<prompt>
    sounds_dirs = sorted({folder.parent for folder in voices.values()})
    n = cp.add_files(rows, "asterisk", files, data, sounds_dirs, budget["asterisk"], seed)
    log(f"   asterisk: {n} files from {len({n for n in prompts if n not in task_prompts})} held-out prompts")
    hw = src.path("hedgewars-data").parent  # .../Data
    wes = src.root("wesnoth-1.16-data") / "usr/share/games/wesnoth/1.16"
    groups = {
        "hedgewars_music": (cp.collect(hw / "Music"), hw),
        "hedgewars_sounds": (cp.collect(hw / "Sounds"), hw),
        "wesnoth": (cp.collect(wes), wes),
        "sonic_pi": (cp.collect(src.path("sonic-pi-samples")), src.path("sonic-pi-samples")),
        "freedesktop": (cp.collect(src.path("sound-theme-freedesktop")), src.path("sound-theme-freedesktop")),
    }
    for name, (files, base) in groups.items():
        n = cp.add_files(rows, name, files, data, base, budget[name], seed)
        log(f"   {name}: {n} of {len(files)} files")
    allowed = [p for p in range(128) if p not in set(test_programs)]
    used = cp.add_music(rows, fluidsynth, soundfont, allowed, cfg["music_h"], data, seed)
    assert not used & set(test_programs), "corpus music used an instrument-task test program"
    log(f"   music: {cfg['music_h']:.2f} h through {soundfont.name}, {len(used)} GM programs (no task test "
        f"program; the non-task families {', '.join(EXCLUDED_FAMILIES)} allowed)")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    build(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
