"""Minimal Standard MIDI File writer and the General MIDI program families (no third-party MIDI library).

Used by the open suite (``benchmarks/open_suite``) and the open corpus (:mod:`kikimimi.data.open_corpus`).

Times are in seconds; the file uses 480 ticks per quarter at 120 BPM (960 ticks per second).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["EXCLUDED_FAMILIES", "FAMILY_RANGE", "GM_DRUMS", "GM_FAMILIES", "GM_PROGRAMS", "NOTE_NAMES",
           "TASK_FAMILIES", "Note", "family_of", "midi_bytes", "note_name", "split_programs"]

TICKS_PER_QUARTER = 480
TICKS_PER_SECOND = 960  # 120 BPM

#: The 16 General MIDI families of 8 programs each (program numbers 0–127, family = program // 8).
GM_FAMILIES = ("piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
               "reed", "pipe", "synth_lead", "synth_pad", "synth_effects", "ethnic", "percussive",
               "sound_effects")

#: Families whose programs share a role rather than a sound (rain, gunshot, helicopter…); kept out of the task.
EXCLUDED_FAMILIES = ("synth_effects", "sound_effects")

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

#: Pitch range (MIDI notes, inclusive) that sounds natural for each family.
FAMILY_RANGE = {"bass": (28, 55), "piano": (36, 84), "organ": (36, 84), "guitar": (40, 76), "strings": (40, 84),
                "ensemble": (40, 84), "brass": (40, 77), "reed": (45, 81), "pipe": (60, 96),
                "synth_lead": (48, 84), "synth_pad": (40, 79), "ethnic": (48, 79), "percussive": (40, 76),
                "chromatic_percussion": (55, 96), "synth_effects": (40, 79), "sound_effects": (48, 72)}


def family_of(program: int) -> str:
    """GM family name of a program number 0–127."""
    if not 0 <= program <= 127:
        raise ValueError(f"GM program must be 0–127, got {program}")
    return GM_FAMILIES[program // 8]


def note_name(note: int) -> str:
    """``60 -> "C4"`` (scientific pitch notation, MIDI 60 = middle C)."""
    return f"{NOTE_NAMES[note % 12]}{note // 12 - 1}"


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    if value < 0:
        raise ValueError("negative MIDI delta time")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


@dataclass(frozen=True)
class Note:
    """One note: ``start_s``/``duration_s`` in seconds, MIDI ``pitch`` and ``velocity`` (1–127) on ``channel``."""

    start_s: float
    duration_s: float
    pitch: int
    velocity: int = 100
    program: int = 0
    channel: int = 0


def midi_bytes(notes: Sequence[Note], *, silence_at: Sequence[float] = (), end_s: float | None = None) -> bytes:
    """A format-0 Standard MIDI File playing ``notes``.

    A program change is sent whenever a note's program differs from its channel's current one.
    ``silence_at`` lists times (s) where an *all sound off* (CC 120) on every used channel cuts tails.
    """
    events: list[tuple[int, int, bytes]] = []  # (tick, order, bytes) — order: offs/cuts before ons
    current: dict[int, int] = {}
    for n in sorted(notes, key=lambda n: (n.start_s, n.channel)):
        if not (0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 and 0 <= n.channel <= 15):
            raise ValueError(f"bad note {n}")
        on, off = int(round(n.start_s * TICKS_PER_SECOND)), int(round((n.start_s + n.duration_s) * TICKS_PER_SECOND))
        if n.channel != 9 and current.get(n.channel) != n.program:
            events.append((on, 1, bytes([0xC0 | n.channel, n.program])))
            current[n.channel] = n.program
        events.append((on, 2, bytes([0x90 | n.channel, n.pitch, n.velocity])))
        events.append((max(off, on + 1), 0, bytes([0x80 | n.channel, n.pitch, 0])))
    channels = sorted({n.channel for n in notes}) or [0]
    for t in silence_at:
        tick = int(round(t * TICKS_PER_SECOND))
        for ch in channels:
            events.append((tick, 0, bytes([0xB0 | ch, 120, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track = bytearray(_vlq(0) + b"\xff\x51\x03" + (500000).to_bytes(3, "big"))  # tempo 120 BPM
    last = 0
    for tick, _, data in events:
        track += _vlq(tick - last) + data
        last = tick
    end_tick = max(last, int(round((end_s or 0) * TICKS_PER_SECOND)))
    track += _vlq(end_tick - last) + b"\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_QUARTER)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


#: Families of the open suite's instrument task (every family but :data:`EXCLUDED_FAMILIES`).
TASK_FAMILIES = tuple(f for f in GM_FAMILIES if f not in EXCLUDED_FAMILIES)


def split_programs(seed: int) -> dict[int, str]:
    """The open suite's instrument-task program split: per task family 5 train, 1 valid and 2 test programs
    (seeded) → ``{program: split}``. The open corpus renders no valid/test program of it."""
    rng = np.random.default_rng(seed)
    out = {}
    for fam in TASK_FAMILIES:
        progs = [GM_FAMILIES.index(fam) * 8 + k for k in rng.permutation(8)]
        for i, p in enumerate(progs):
            out[int(p)] = "train" if i < 5 else "valid" if i < 6 else "test"
    return out


#: General MIDI program names (program 0–127), lower case, as words for captions.
GM_PROGRAMS = (
    "acoustic grand piano", "bright acoustic piano", "electric grand piano", "honky-tonk piano", "electric piano",
    "electric piano", "harpsichord", "clavinet", "celesta", "glockenspiel", "music box", "vibraphone", "marimba",
    "xylophone", "tubular bells", "dulcimer", "drawbar organ", "percussive organ", "rock organ", "church organ",
    "reed organ", "accordion", "harmonica", "tango accordion", "nylon-string acoustic guitar",
    "steel-string acoustic guitar", "jazz electric guitar", "clean electric guitar", "muted electric guitar",
    "overdriven guitar", "distortion guitar", "guitar harmonics", "acoustic bass", "fingered electric bass",
    "picked electric bass", "fretless bass", "slap bass", "slap bass", "synth bass", "synth bass", "violin", "viola",
    "cello", "contrabass", "tremolo strings", "pizzicato strings", "orchestral harp", "timpani", "string ensemble",
    "slow string ensemble", "synth strings", "synth strings", "choir aahs", "voice oohs", "synth voice",
    "orchestra hit", "trumpet", "trombone", "tuba", "muted trumpet", "french horn", "brass section", "synth brass",
    "synth brass", "soprano sax", "alto sax", "tenor sax", "baritone sax", "oboe", "english horn", "bassoon",
    "clarinet", "piccolo", "flute", "recorder", "pan flute", "blown bottle", "shakuhachi", "whistle", "ocarina",
    "square-wave synth lead", "sawtooth synth lead", "calliope synth lead", "chiff synth lead",
    "charang synth lead", "voice synth lead", "fifths synth lead", "bass and lead synth", "new age synth pad",
    "warm synth pad", "polysynth pad", "choir synth pad", "bowed synth pad", "metallic synth pad", "halo synth pad",
    "sweep synth pad", "rain synth effect", "soundtrack synth effect", "crystal synth effect",
    "atmosphere synth effect", "brightness synth effect", "goblins synth effect", "echoes synth effect",
    "sci-fi synth effect", "sitar", "banjo", "shamisen", "koto", "kalimba", "bagpipe", "fiddle", "shanai",
    "tinkle bell", "agogo", "steel drums", "woodblock", "taiko drum", "melodic tom", "synth drum", "reverse cymbal",
    "guitar fret noise", "breath noise", "seashore", "bird tweet", "telephone ring", "helicopter", "applause",
    "gunshot",
)

#: General MIDI percussion key (channel 10) → drum piece, as words for captions.
GM_DRUMS = {
    35: "acoustic bass drum", 36: "bass drum", 37: "side stick", 38: "snare drum", 39: "hand clap",
    40: "electric snare", 41: "low floor tom", 42: "closed hi-hat", 43: "high floor tom", 44: "pedal hi-hat",
    45: "low tom", 46: "open hi-hat", 47: "low-mid tom", 48: "high-mid tom", 49: "crash cymbal", 50: "high tom",
    51: "ride cymbal", 52: "china cymbal", 53: "ride bell", 54: "tambourine", 55: "splash cymbal", 56: "cowbell",
    57: "crash cymbal", 59: "ride cymbal",
}
