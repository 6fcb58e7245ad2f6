"""The unlabelled pre-training corpus: registry audio cut into ≤ 10 s 16 kHz segments plus fluidsynth music.

Nothing used by an evaluation task goes in: Asterisk prompts are taken only from prompt names the
language task does not use (in any language), no hydrogen-drumkits sample is used at all, and the
generated music never uses a test program of the instrument task (nor the single-note task material).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from build_tasks import render_midi
from clips import SAMPLE_RATE, is_silent, segment_file, write_wav
from midi import FAMILY_RANGE, Note, family_of, midi_bytes

SEGMENT_S = 10.0
AUDIO_SUFFIXES = (".wav", ".ogg", ".oga", ".flac")


def collect(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def relative_to_any(path: Path, roots: Sequence[Path]) -> Path:
    """``path`` relative to the first of ``roots`` that contains it (packages are extracted to separate trees)."""
    for root in roots:
        try:
            return path.relative_to(root)
        except ValueError:
            continue
    raise ValueError(f"'{path}' is inside none of {[str(r) for r in roots]}")


def add_files(rows: list[dict], source: str, files: Sequence[Path], data: Path, root: Path | Sequence[Path],
              hours: float | None, seed: int) -> int:
    """Cut files (in a seeded random order) into segments under ``data/corpus/<source>/`` until ``hours``.

    ``root`` (one folder, or one per extracted package) gives each segment's name: the file's path below it.
    The last file is cut short to fit the budget; ``hours=None`` takes everything. Appends corpus rows and
    returns how many files were used.
    """
    roots = [Path(root)] if isinstance(root, (str, Path)) else [Path(r) for r in root]
    order = np.random.default_rng(seed).permutation(len(files))
    budget = None if hours is None else hours * 3600
    total, used = 0.0, 0
    for i in order:
        if budget is not None and total >= budget - 0.5:
            break
        f = files[int(i)]
        rel_src = relative_to_any(f, roots).with_suffix("")
        stem = data / "corpus" / source / Path(*[p.replace(" ", "_") for p in rel_src.parts])
        limit = None if budget is None else budget - total
        segs = segment_file(f, stem, SEGMENT_S, limit)
        used += bool(segs)
        for path, dur in segs:
            total += dur
            rows.append({"file_name": path.relative_to(data).as_posix(), "source": source, "origin": str(f),
                         "duration_s": f"{dur:.3f}"})
    return used


# ------------------------------------------------------------------------------------------------ music

PERCUSSION_NOTES = (35, 36, 38, 40, 42, 44, 46, 49, 51, 45, 47, 48, 50, 39, 54, 56)
DURATIONS = (0.125, 0.25, 0.25, 0.5, 0.5, 0.75, 1.0)


def random_music(total_s: float, programs: Sequence[int], seed: int) -> tuple[list[Note], list[float]]:
    """Random multi-voice phrases in ``SEGMENT_S`` blocks: 1–3 voices with random programs + optional drums.

    Returns the notes and the block boundaries (s) where all sound is cut.
    """
    rng = np.random.default_rng(seed)
    notes: list[Note] = []
    cuts = []
    n_blocks = max(1, int(total_s // SEGMENT_S))
    for b in range(n_blocks):
        t0 = b * SEGMENT_S
        end = t0 + SEGMENT_S - 0.3
        for ch in range(int(rng.integers(1, 4))):
            prog = int(rng.choice(programs))
            lo, hi = FAMILY_RANGE[family_of(prog)]
            pitch = int(rng.integers(lo, hi + 1))
            t = t0 + float(rng.uniform(0, 0.5))
            while t < end - 0.1:
                dur = float(rng.choice(DURATIONS)) * float(rng.choice((1, 1, 2)))
                chord = [0] if rng.random() > 0.2 else [0, int(rng.choice((3, 4))), 7]
                for off in chord:
                    p = int(np.clip(pitch + off, 0, 127))
                    notes.append(Note(t, min(dur * 0.9, end - t), p, int(rng.integers(50, 121)), prog, ch))
                t += dur
                pitch = int(np.clip(pitch + rng.integers(-5, 6), lo, hi))
        if rng.random() < 0.4:  # a drum pattern on the GM percussion channel
            step = float(rng.choice((0.25, 0.125)))
            kit = rng.choice(PERCUSSION_NOTES, size=3, replace=False)
            t = t0
            while t < end:
                if rng.random() < 0.6:
                    notes.append(Note(t, 0.1, int(rng.choice(kit)), int(rng.integers(60, 121)), 0, 9))
                t += step
        cuts.append(t0 + SEGMENT_S - 0.05)
    return notes, cuts


def add_music(rows: list[dict], fluidsynth: str, soundfont: Path, programs: Sequence[int], hours: float,
              data: Path, seed: int, chunk_s: float = 600.0) -> set[int]:
    """Render ``hours`` of random music in ``chunk_s`` fluidsynth calls; returns the programs used."""
    used: set[int] = set()
    total = hours * 3600
    n_chunks = max(1, int(np.ceil(total / chunk_s)))
    n = int(SEGMENT_S * SAMPLE_RATE)
    for c in range(n_chunks):
        length = min(chunk_s, total - c * chunk_s)
        notes, _cuts = random_music(length, programs, seed * 1000 + c)
        used |= {nt.program for nt in notes if nt.channel != 9}
        folder = data / "corpus" / "music"
        seg_paths = [folder / f"chunk{c:03d}-{k:03d}.wav" for k in range(max(1, int(length // SEGMENT_S)))]
        if not all(p.exists() for p in seg_paths):
            midi = midi_bytes(notes, silence_at=_cuts, end_s=length)
            wave = render_midi(fluidsynth, soundfont, midi, data / "render" / f"music-{c:03d}.wav")
            for k, p in enumerate(seg_paths):
                seg = wave[k * n : (k + 1) * n]
                if not is_silent(seg):
                    write_wav(p, seg)
            (data / "render" / f"music-{c:03d}.wav").unlink(missing_ok=True)
        for p in seg_paths:
            if p.exists():
                rows.append({"file_name": p.relative_to(data).as_posix(), "source": "music_fluidsynth",
                             "origin": f"render:{soundfont.name}:seed{seed}:chunk{c}",
                             "duration_s": f"{SEGMENT_S:.3f}"})
    return used

