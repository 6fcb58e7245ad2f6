"""The three evaluation tasks of the open suite, written as EVAR task CSVs (``file_name,label,split,…``).

- ``language_id``: spoken language of Asterisk telephone prompts (5 classes), split by **prompt name**;
- ``drum_type``: coarse drum-hit type of hydrogen-drumkits samples (6 classes), split by **kit**;
- ``instrument_family``: GM family of one-note fluidsynth renders (14 families), split by **program**
  (unseen programs in test); ``instrument_family_shifted`` tests the same notes through a second soundfont.

File names in the CSVs are relative to the data folder that holds them. Every builder returns its rows
(dicts) and asserts :func:`splits.check_no_leakage` on them.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from clips import SAMPLE_RATE, clip_file, is_silent, write_wav
from midi import EXCLUDED_FAMILIES, FAMILY_RANGE, GM_FAMILIES, Note, family_of, midi_bytes, note_name
from splits import check_no_leakage, covering_group_split

from kikimimi.fileio import atomic_write_bytes, atomic_write_text

TASK_UNIT_S = {"language_id": 3.0, "drum_type": 1.0, "instrument_family": 3.0, "instrument_family_shifted": 3.0}
GROUP_KEY = {"language_id": "prompt", "drum_type": "kit", "instrument_family": "program",
             "instrument_family_shifted": "program"}
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
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _slug(text: str) -> str:
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
            rel = f"audio/language_id/{lang}/{_slug(prompt)}.wav"
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
            rel = f"audio/drum_type/{_slug(kit)}/{cls}-{_slug(path.stem)}.wav"
            if clip_file(path, data / rel, max_s) <= 0:
                continue
            rows.append({"file_name": rel, "label": cls, "split": mapping[kit], "kit": kit, "instrument": inst,
                         "origin": str(path)})
    check_no_leakage(rows, "kit", name="drum_type")
    return rows


# ------------------------------------------------------------------------------------------------ (c) instruments

TASK_FAMILIES = tuple(f for f in GM_FAMILIES if f not in EXCLUDED_FAMILIES)
SLOT_S = 3.0  # one note per slot: held NOTE_S, cut (all sound off) just before the next slot
NOTE_S = 2.0
VELOCITIES = (70, 100, 120)


def split_programs(seed: int) -> dict[int, str]:
    """Per task family: 5 train, 1 valid and 2 test programs (seeded) → ``{program: split}``."""
    rng = np.random.default_rng(seed)
    out = {}
    for fam in TASK_FAMILIES:
        progs = [GM_FAMILIES.index(fam) * 8 + k for k in rng.permutation(8)]
        for i, p in enumerate(progs):
            out[int(p)] = "train" if i < 5 else "valid" if i < 6 else "test"
    return out


def note_plan(programs: dict[int, str], notes_per_program: int, seed: int) -> list[Note]:
    """``notes_per_program`` seeded pitches (across the family's range) and velocities per program, one per slot."""
    rng = np.random.default_rng(seed + 1)
    plan = []
    for prog in sorted(programs):
        lo, hi = FAMILY_RANGE[family_of(prog)]
        pitches = np.linspace(lo, hi, notes_per_program + 2)[1:-1] if notes_per_program > 1 else [(lo + hi) / 2]
        used: set[int] = set()
        for p in pitches:
            pitch = int(np.clip(round(p + rng.integers(-2, 3)), lo, hi))
            for step in (0, 1, -1, 2, -2, 3, -3, 4, -4):  # keep the pitches of one program distinct
                if lo <= pitch + step <= hi and pitch + step not in used:
                    pitch += step
                    break
            used.add(pitch)
            plan.append(Note(len(plan) * SLOT_S, NOTE_S, pitch, int(rng.choice(VELOCITIES)), prog))
    return plan


def render_midi(fluidsynth: str, soundfont: Path, midi: bytes, out_wav: Path, gain: float = 0.6) -> np.ndarray:
    """Render MIDI bytes with fluidsynth at 16 kHz (no reverb/chorus); returns the mono waveform."""
    import soundfile as sf

    out_wav.parent.mkdir(parents=True, exist_ok=True)
    mid = out_wav.with_suffix(".mid")
    atomic_write_bytes(mid, midi)
    tmp = out_wav.with_suffix(".tmp.wav")
    cmd = [fluidsynth, "-ni", "-q", "-g", str(gain), "-R", "0", "-C", "0", "-r", str(SAMPLE_RATE), "-F", str(tmp),
           str(soundfont), str(mid)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0 or not tmp.exists():
        raise RuntimeError(f"fluidsynth failed on '{mid}' with '{soundfont}': {res.stderr.strip()[-400:]}")
    tmp.replace(out_wav)
    wave, sr = sf.read(str(out_wav), dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise RuntimeError(f"'{out_wav}': fluidsynth wrote {sr} Hz, expected {SAMPLE_RATE}")
    return wave.mean(axis=1)


def render_notes(fluidsynth: str, soundfont: Path, plan: Sequence[Note], work: Path) -> list[np.ndarray]:
    """One fluidsynth call for the whole plan; returns one ``SLOT_S`` clip per note."""
    midi = midi_bytes(plan, silence_at=[n.start_s + SLOT_S - 0.05 for n in plan], end_s=len(plan) * SLOT_S)
    rendered = work / f"notes-{_slug(soundfont.stem)}.wav"
    wave = render_midi(fluidsynth, soundfont, midi, rendered)
    rendered.unlink()  # the clips are written by the caller; the .mid stays as a record of the plan
    n = int(SLOT_S * SAMPLE_RATE)
    wave = np.pad(wave, (0, max(0, len(plan) * n - wave.shape[0])))
    return [wave[i * n : (i + 1) * n] for i in range(len(plan))]


def build_instruments(fluidsynth: str, soundfonts: tuple[Path, Path], data: Path, seed: int,
                      notes_per_program: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows of ``instrument_family`` and ``instrument_family_shifted``, plus the note plan as rows.

    The main task renders every note through ``soundfonts[0]``; the shifted task keeps its train/valid rows
    and replaces the test rows by the same test notes rendered through ``soundfonts[1]``. A note that is
    silent in either soundfont is dropped from both.
    """
    programs = split_programs(seed)
    plan = note_plan(programs, notes_per_program, seed)
    test_plan = [n for n in plan if programs[n.program] == "test"]
    main_csv = data / "instrument_family.csv"
    if main_csv.exists():  # clips were rendered already; rows are re-derived from the CSVs
        return read_rows(main_csv), read_rows(data / "instrument_family_shifted.csv"), _plan_rows(plan, programs)
    work = data / "render"
    main = render_notes(fluidsynth, soundfonts[0], plan, work)
    retimed = [Note(i * SLOT_S, n.duration_s, n.pitch, n.velocity, n.program) for i, n in enumerate(test_plan)]
    shifted = render_notes(fluidsynth, soundfonts[1], retimed, work)
    shifted_of = {id(n): w for n, w in zip(test_plan, shifted, strict=True)}
    rows, shifted_rows = [], []
    for note, wave in zip(plan, main, strict=True):
        split = programs[note.program]
        fam = family_of(note.program)
        alt = shifted_of.get(id(note))
        if is_silent(wave) or (alt is not None and is_silent(alt)):
            continue
        stem = f"p{note.program:03d}-n{note.pitch:03d}-v{note.velocity:03d}"
        base = {"label": fam, "split": split, "program": str(note.program), "pitch": str(note.pitch),
                "note": note_name(note.pitch), "velocity": str(note.velocity)}
        rel = f"audio/instrument_family/{_slug(soundfonts[0].stem)}/{fam}/{stem}.wav"
        write_wav(data / rel, wave)
        row = {"file_name": rel, **base, "soundfont": soundfonts[0].name, "origin": f"render:{rel}"}
        rows.append(row)
        if split != "test":
            shifted_rows.append(row)
        else:
            rel2 = f"audio/instrument_family/{_slug(soundfonts[1].stem)}/{fam}/{stem}.wav"
            write_wav(data / rel2, alt)
            shifted_rows.append({"file_name": rel2, **base, "soundfont": soundfonts[1].name,
                                 "origin": f"render:{rel2}"})
    check_no_leakage(rows, "program", name="instrument_family")
    check_no_leakage(shifted_rows, "program", name="instrument_family_shifted")
    return rows, shifted_rows, _plan_rows(plan, programs)


def _plan_rows(plan: Sequence[Note], programs: dict[int, str]) -> list[dict]:
    return [{"program": n.program, "pitch": n.pitch, "split": programs[n.program]} for n in plan]

