"""The first run's real recordings: a small labelled set and an unlabelled pool from Debian data packages.

Packages (``apt-get download`` + ``dpkg-deb -x``, :mod:`kikimimi.data.debian_sources`; ≈ 240 MB of ``.deb``):
the Asterisk telephone prompts in five voices (``asterisk-core-sounds-{en,es,fr,it,ru}-wav``) and the Hydrogen
drum kits (``hydrogen-drumkits``). The clips are cut to 16 kHz mono WAV (:mod:`kikimimi.data.clips`) and two
tasks are written with leakage-free splits (:mod:`kikimimi.data.registry_tasks`):

- ``language_id``: which of five voices/languages speaks a prompt (3 s clips), split by prompt name — the same
  sentence is never on two sides. en and es are the same speaker, so the task is "language/speaker ID";
- ``drum_type``: kick / snare / hihat / tom / cymbal / other of one drum sample (1 s clips), split by kit — test
  kits are never heard in training.

The unlabelled pre-training pool holds other Asterisk prompts (names the language task does not use, every
voice) and the drum samples of the *training* kits that the drum task does not use; no evaluation clip, no
language-task sentence and no valid/test kit is in it (asserted).

Everything is cached under ``<cache>`` (default ``$KIKIMIMI_HOME/datasets``, :func:`default_cache`): the
``.deb`` files, their extractions and the derived clips and CSVs, so later runs reuse them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kikimimi.checkpoints.home import cache_root
from kikimimi.data.clips import clip_file
from kikimimi.data.debian_sources import Sources
from kikimimi.data.registry_tasks import (
    NON_SPEECH,
    asterisk_prompts,
    build_drums,
    build_language,
    choose_language_prompts,
    drum_class,
    parse_drumkit,
    read_rows,
    slug,
    write_rows,
)
from kikimimi.data.splits import check_disjoint_files, check_no_leakage
from kikimimi.fileio import atomic_write_json

__all__ = ["ASTERISK_PACKAGES", "DRUM_PACKAGE", "RealSet", "TaskFile", "build_real_set", "default_cache"]

ASTERISK_PACKAGES = ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav", "asterisk-core-sounds-fr-wav",
                     "asterisk-core-sounds-it-wav", "asterisk-core-sounds-ru-wav")
DRUM_PACKAGE = "hydrogen-drumkits"
#: bump when the set's recipe changes, so an old cached set is not reused
SET_VERSION = 1


@dataclass(frozen=True)
class TaskFile:
    """One labelled task: its CSV (``file_name,label,split,…``, paths relative to the CSV's folder)."""

    name: str
    csv: Path
    unit_s: float
    description: str


@dataclass
class RealSet:
    """What :func:`build_real_set` made: tasks, the pre-training pool and where it came from."""

    root: Path
    tasks: list[TaskFile]
    pool_csv: Path
    packages: list[str]
    licences: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    reused: bool = False


def default_cache() -> Path:
    """``$KIKIMIMI_HOME/datasets`` (the kikimimi home folder, :func:`kikimimi.checkpoints.home.cache_root`)."""
    return cache_root() / "datasets"


def _set_name(seed: int, n_prompts: int, drum_cap: int, pool_prompts: int, pool_drums: int) -> str:
    return f"first-run-v{SET_VERSION}-s{seed}-l{n_prompts}-d{drum_cap}-p{pool_prompts}x{pool_drums}"


def build_real_set(cache: Path | None = None, *, allow_network: bool = True, deb_dir: Path | None = None,
                   seed: int = 0, n_prompts: int = 40, drum_cap: int = 3, pool_prompts: int = 80,
                   pool_drums: int = 240, log: Callable[[str], None] = print) -> RealSet:
    """Fetch (or reuse) the packages and build the two tasks and the pool; see the module docstring.

    Args:
        cache: cache folder (default :func:`default_cache`); packages in ``cache/debian``, the set in
            ``cache/<set name>``.
        allow_network: ``False`` never calls ``apt-get`` (a missing package raises ``SourceError``).
        deb_dir: folder with already downloaded ``.deb`` files.
        seed: seed of every random choice (prompts, kit split, pool).
        n_prompts: prompt names of the language task (each spoken by all five voices).
        drum_cap: drum samples per kit and class in the drum task.
        pool_prompts: prompt names (all voices) in the pool; pool_drums: drum samples in the pool (at most).
        log: progress printer.

    Raises:
        kikimimi.data.debian_sources.SourceError: a package could not be fetched or extracted.
        kikimimi.data.splits.LeakageError: an evaluation clip or sentence would be in the pool (a bug).
    """
    t0 = time.perf_counter()
    cache = Path(cache) if cache is not None else default_cache()
    root = cache / _set_name(seed, n_prompts, drum_cap, pool_prompts, pool_drums)
    done = root / "dataset.json"
    packages = [*ASTERISK_PACKAGES, DRUM_PACKAGE]
    if done.is_file():
        info = json.loads(done.read_text(encoding="utf-8"))
        return _from_info(root, info, time.perf_counter() - t0)
    src = Sources(cache / "debian", deb_dir=deb_dir, allow_network=allow_network, log=log)
    voices = {src.path(pkg).name: src.path(pkg) for pkg in ASTERISK_PACKAGES}
    drumkits = src.path(DRUM_PACKAGE)
    licences = src.copy_licences(root / "licences", packages)
    log(f"   packages ready in {time.perf_counter() - t0:.0f} s; cutting 16 kHz clips into {root}")

    prompts = asterisk_prompts(voices)
    chosen = choose_language_prompts(prompts, n_prompts, seed)
    lang_rows = build_language(prompts, chosen, root, seed, max_s=3.0)
    drum_rows = build_drums(drumkits, root, seed, drum_cap)
    pool = _speech_pool(prompts, set(chosen), root, seed, pool_prompts)
    pool += _drum_pool(drumkits, drum_rows, root, seed, pool_drums)

    eval_rows = lang_rows + drum_rows
    check_disjoint_files((r["origin"] for r in eval_rows), (r["origin"] for r in pool))
    check_disjoint_files((r["file_name"] for r in eval_rows), (r["file_name"] for r in pool))
    pool_prompt_names = {r["prompt"] for r in pool if r["source"] == "asterisk"}
    check_disjoint_files(chosen, pool_prompt_names, what="pool's prompt names")
    held_kits = {r["kit"] for r in drum_rows if r["split"] != "train"}
    check_disjoint_files(held_kits, {r["kit"] for r in pool if r["source"] == "hydrogen"}, what="pool's kits")
    check_no_leakage(lang_rows, "prompt", name="language_id")
    check_no_leakage(drum_rows, "kit", name="drum_type")

    write_rows(root / "language_id.csv", lang_rows)
    write_rows(root / "drum_type.csv", drum_rows)
    write_rows(root / "pool.csv", pool, columns=["file_name", "source", "origin"])
    info = {
        "version": SET_VERSION, "seed": seed, "packages": packages,
        "licences": [p.name for p in licences],
        "tasks": {"language_id": {"csv": "language_id.csv", "unit_s": 3.0, "counts": _counts(lang_rows)},
                  "drum_type": {"csv": "drum_type.csv", "unit_s": 1.0, "counts": _counts(drum_rows)}},
        "pool": {"csv": "pool.csv", "clips": len(pool), "sources": dict(Counter(r["source"] for r in pool))},
        "leakage_checks": ["no evaluation clip or source file in the pool", "no language-task prompt name in the pool",
                           "no valid/test kit in the pool", "prompts and kits each on one side of the split"],
    }
    atomic_write_json(done, info)
    return _from_info(root, info, time.perf_counter() - t0, reused=False)


def _counts(rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r["split"], {}).setdefault(r["label"], 0)
        out[r["split"]][r["label"]] += 1
    return out


_DESCRIPTIONS = {
    "language_id": "spoken language of Asterisk telephone prompts (5 voices; en and es are the same speaker), "
                   "3-s clips, split by prompt name",
    "drum_type": "drum-hit type of Hydrogen drum-kit samples (kick, snare, hihat, tom, cymbal, other), 1-s clips, "
                 "split by kit (test kits never heard in training)",
}


def _from_info(root: Path, info: dict, seconds: float, reused: bool = True) -> RealSet:
    tasks = [TaskFile(name, root / t["csv"], float(t["unit_s"]), _DESCRIPTIONS.get(name, name))
             for name, t in info["tasks"].items()]
    return RealSet(root=root, tasks=tasks, pool_csv=root / info["pool"]["csv"], packages=list(info["packages"]),
                   licences=[root / "licences" / n for n in info.get("licences", [])], seconds=seconds, reused=reused)


def _speech_pool(prompts: dict[str, dict[str, Path]], used: set[str], root: Path, seed: int,
                 n_prompts: int) -> list[dict]:
    """Clips (≤ 3 s, every voice) of ``n_prompts`` seeded speech prompt names that the task does not use."""
    names = sorted(p for p in prompts if p not in used and not NON_SPEECH.match(p))
    rng = np.random.default_rng(seed + 11)
    picked = sorted(names[int(i)] for i in rng.choice(len(names), min(n_prompts, len(names)), replace=False))
    rows = []
    for prompt in picked:
        for voice, path in sorted(prompts[prompt].items()):
            rel = f"audio/pool/speech/{voice}/{slug(prompt)}.wav"
            if clip_file(path, root / rel, 3.0) > 0:
                rows.append({"file_name": rel, "source": "asterisk", "origin": str(path), "prompt": prompt})
    return rows


def _drum_pool(drumkits: Path, task_rows: Sequence[dict], root: Path, seed: int, n_max: int) -> list[dict]:
    """Up to ``n_max`` seeded drum samples (≤ 1 s) of the task's *training* kits that the task does not use."""
    train_kits = {r["kit"] for r in task_rows if r["split"] == "train"}
    used = {r["origin"] for r in task_rows}
    candidates: list[tuple[str, Path]] = []
    for xml in sorted(Path(drumkits).glob("*/drumkit.xml")):
        kit, _, samples = parse_drumkit(xml)
        if kit not in train_kits:
            continue
        seen: set[Path] = set()
        for inst, path in samples:
            if path in seen or str(path) in used or not path.is_file() or drum_class(inst) is None:
                continue
            seen.add(path)
            candidates.append((kit, path))
    rng = np.random.default_rng(seed + 12)
    order = sorted(int(i) for i in rng.permutation(len(candidates))[:n_max])
    rows = []
    for i in order:
        kit, path = candidates[i]
        rel = f"audio/pool/drums/{slug(kit)}/{slug(path.stem)}.wav"
        if clip_file(path, root / rel, 1.0) > 0:
            rows.append({"file_name": rel, "source": "hydrogen", "origin": str(path), "kit": kit})
    return rows


def read_pool(real: RealSet) -> list[dict]:
    """The pool's rows (``file_name,source,origin``)."""
    return read_rows(real.pool_csv)
