"""Minimal Standard MIDI File writer and the General MIDI program families (no third-party MIDI library).

Times are in seconds; the file uses 480 ticks per quarter at 120 BPM (960 ticks per second).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

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
