"""Two evaluation tasks from registry audio, written as EVAR task CSVs (``file_name,label,split,…``).

- ``language_id``: spoken language of Asterisk telephone prompts (5 voices), split by **prompt name**
  (the same sentence never appears on two sides);
- ``drum_type``: coarse drum-hit type of hydrogen-drumkits samples (6 classes), split by **kit**.

File names in the rows are relative to the data folder that holds the clips. Every builder returns its rows
(dicts) and asserts :func:`kikimimi.data.splits.check_no_leakage` on them. Used by ``kikimimi demo``
(:mod:`kikimimi.apps.first_run.real_data`) and by ``benchmarks/open_suite/build_tasks.py``.
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kikimimi.data.clips import clip_file
from kikimimi.data.splits import check_no_leakage, covering_group_split
from kikimimi.fileio import atomic_write_text

__all__ = ["DRUM_CLASSES", "RATIOS", "VOICES", "NON_SPEECH", "asterisk_prompts", "build_drums", "build_language",
           "choose_language_prompts", "drum_class", "parse_drumkit", "read_rows", "slug", "write_rows"]

#: train / valid / test fractions of the groups (prompts, kits)
RATIOS = (0.6, 0.15, 0.25)

# ------------------------------------------------------------------------------------------------ common


def write_rows(path: Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    """Atomically write ``rows`` as CSV (columns: ``columns`` or the first row's keys)."""
    if not rows:
        raise ValueError(f"'{path}': no rows to write")
    cols = list(columns or rows[0].keys())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_rows(path: Path) -> list[dict]:
    """The rows of a CSV written by :func:`write_rows` (dicts of strings)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def slug(text: str) -> str:
    """``text`` with every run of characters outside ``[A-Za-z0-9_.-]`` replaced by ``_`` (a safe file name)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


# ------------------------------------------------------------------------------------------------ (a) language

#: Asterisk voice folder → (language label, speaker gender). en and es are the same speaker (Allison).
VOICES = {"en_US_f_Allison": ("english", "woman"), "es_MX_f_Allison": ("spanish", "woman"),
          "fr_CA_f_June": ("french", "woman"), "it_IT_m_Carlo": ("italian", "man"),
          "ru_RU_f_IvrvoiceRU": ("russian", "woman")}
#: prompt names that are tones or silence, not speech
NON_SPEECH = re.compile(r"^(silence/.*|beep|beeperr|ascending-2tone|descending-2tone|.*tone.*)$")


def asterisk_prompts(sounds_dirs: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """``{prompt name: {voice: wav path}}`` where prompt name = path inside the voice folder without ``.wav``."""
    prompts: dict[str, dict[str, Path]] = defaultdict(dict)
    for voice, folder in sounds_dirs.items():
        for p in sorted(Path(folder).rglob("*.wav")):
            prompts[p.relative_to(folder).with_suffix("").as_posix()][voice] = p
    return dict(prompts)


def choose_language_prompts(prompts: dict[str, dict[str, Path]], n_prompts: int, seed: int) -> list[str]:
    """Seeded choice of ``n_prompts`` speech prompts that exist in every voice."""
    full = sorted(name for name, v in prompts.items() if len(v) == len(VOICES) and not NON_SPEECH.match(name))
    if n_prompts > len(full):
        raise ValueError(f"asked for {n_prompts} language prompts, only {len(full)} exist in all voices")
    rng = np.random.default_rng(seed)
    return sorted(full[int(i)] for i in rng.choice(len(full), n_prompts, replace=False))


def build_language(prompts: dict[str, dict[str, Path]], chosen: Sequence[str], data: Path, seed: int,
                   max_s: float = 4.0) -> list[dict]:
    """Language-ID rows for the ``chosen`` prompts (every voice), split by prompt name."""
    mapping = covering_group_split({p: [VOICES[v][0] for v in prompts[p]] for p in chosen}, RATIOS, seed)
    rows = []
    for prompt in chosen:
        for voice, src in sorted(prompts[prompt].items()):
            lang, gender = VOICES[voice]
            rel = f"audio/language_id/{lang}/{slug(prompt)}.wav"
            if clip_file(src, data / rel, max_s) <= 0:
                continue
            rows.append({"file_name": rel, "label": lang, "split": mapping[prompt], "prompt": prompt,
                         "voice": voice, "gender": gender, "origin": str(src)})
    check_no_leakage(rows, "prompt", name="language_id")
    return rows


# ------------------------------------------------------------------------------------------------ (b) drums

DRUM_CLASSES = ("kick", "snare", "hihat", "tom", "cymbal", "other")
_DRUM_RULES: tuple[tuple[str, str], ...] = (
    ("hihat", r"hi-?hat|\bhh\b|hat"),
    ("kick", r"kick|bass ?drum|\bbd\b"),
    ("snare", r"snare"),
    ("tom", r"tom"),
    ("cymbal", r"crash|ride|cymbal|splash|china|paiste"),
    ("other", r"clap|cowbell|stick|rim|tambourine|conga|bongo|clave|woodblock|maraca|cajon|snap|agogo|djembe|"
              r"sangban|dununba|kenkeni|waterglass|whistle|shaker"),
)


def drum_class(instrument_name: str) -> str | None:
    """Coarse class of a drumkit.xml instrument name, or ``None`` when the name says nothing (``"23"``, ``"FX"``)."""
    name = instrument_name.lower()
    for cls, pattern in _DRUM_RULES:
        if re.search(pattern, name):
            return cls
    return None


def parse_drumkit(xml_path: Path) -> tuple[str, str, list[tuple[str, Path]]]:
    """``(kit name, licence text, [(instrument name, sample path)])`` from a hydrogen ``drumkit.xml``."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"'{xml_path}': not a readable drumkit.xml: {err}") from None
    ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""

    def q(tag: str) -> str:
        return f"{{{ns}}}{tag}" if ns else tag

    kit = (root.findtext(q("name")) or xml_path.parent.name).strip()
    licence = (root.findtext(q("license")) or "").strip()
    out = []
    for inst in root.iter(q("instrument")):
        name = (inst.findtext(q("name")) or "").strip()
        for fn in inst.iter(q("filename")):
            if fn.text and fn.text.strip():
                out.append((name, xml_path.parent / fn.text.strip()))
    return kit, licence, out


def build_drums(drumkits: Path, data: Path, seed: int, cap_per_class: int | None, max_s: float = 1.0) -> list[dict]:
    """Drum-type rows from every kit (≤ ``cap_per_class`` samples per kit and class), split by kit."""
    rng = np.random.default_rng(seed)
    per_kit: dict[str, list[tuple[str, str, Path]]] = {}
    for xml in sorted(Path(drumkits).glob("*/drumkit.xml")):
        kit, _, samples = parse_drumkit(xml)
        seen: set[Path] = set()
        by_class: dict[str, list[tuple[str, str, Path]]] = defaultdict(list)
        for inst, path in samples:
            cls = drum_class(inst)
            if cls is None or path in seen or not path.is_file():
                continue
            seen.add(path)
            by_class[cls].append((cls, inst, path))
        items = []
        for cls in sorted(by_class):
            group = by_class[cls]
            if cap_per_class is not None and len(group) > cap_per_class:
                group = [group[int(i)] for i in sorted(rng.choice(len(group), cap_per_class, replace=False))]
            items += group
        if items:
            per_kit[kit] = items
    mapping = covering_group_split({k: [c for c, _, _ in v] for k, v in per_kit.items()}, RATIOS, seed,
                                   require=("train", "test"))
    rows = []
    for kit, items in per_kit.items():
        for cls, inst, path in items:
            rel = f"audio/drum_type/{slug(kit)}/{cls}-{slug(path.stem)}.wav"
            if clip_file(path, data / rel, max_s) <= 0:
                continue
            rows.append({"file_name": rel, "label": cls, "split": mapping[kit], "kit": kit, "instrument": inst,
                         "origin": str(path)})
    check_no_leakage(rows, "kit", name="drum_type")
    return rows
