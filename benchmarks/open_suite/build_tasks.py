"""The three evaluation tasks of the open suite, written as EVAR task CSVs (``file_name,label,split,…``).

- ``language_id``: spoken language of Asterisk telephone prompts (5 classes), split by **prompt name**;
- ``drum_type``: coarse drum-hit type of hydrogen-drumkits samples (6 classes), split by **kit**;
- ``instrument_family``: GM family of one-note fluidsynth renders (14 families), split by **program**
  (unseen programs in test); ``instrument_family_shifted`` tests the same notes through a second soundfont.

File names in the CSVs are relative to the data folder that holds them. Every builder returns its rows
(dicts) and asserts ``check_no_leakage`` on them. The language and drum builders live in
:mod:`kikimimi.data.registry_tasks` (``kikimimi demo`` uses them too) and are re-exported here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from midi import FAMILY_RANGE, Note, family_of, midi_bytes, note_name

from kikimimi.data.clips import SAMPLE_RATE, is_silent, write_wav
from kikimimi.data.registry_tasks import *  # noqa: F403  (the language and drum builders, re-exported as bt.*)
from kikimimi.data.registry_tasks import read_rows
from kikimimi.data.registry_tasks import slug as _slug
from kikimimi.data.splits import check_no_leakage
from kikimimi.fileio import atomic_write_bytes

TASK_UNIT_S = {"language_id": 3.0, "drum_type": 1.0, "instrument_family": 3.0, "instrument_family_shifted": 3.0}
GROUP_KEY = {"language_id": "prompt", "drum_type": "kit", "instrument_family": "program",
             "instrument_family_shifted": "program"}

# ------------------------------------------------------------------------------------------------ (c) instruments

# the program split is shared with the open corpus (which renders no valid/test program)
from kikimimi.data.midi import TASK_FAMILIES, split_programs  # noqa: E402, F401  (re-exported as bt.*)

SLOT_S = 3.0  # one note per slot: held NOTE_S, cut (all sound off) just before the next slot
NOTE_S = 2.0
VELOCITIES = (70, 100, 120)


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

