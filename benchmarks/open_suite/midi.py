"""The MIDI writer and the General MIDI tables live in the package (the open corpus uses them too); re-exported
here so the suite's scripts and tests keep ``from midi import …``."""

from kikimimi.data.midi import (
    EXCLUDED_FAMILIES,
    FAMILY_RANGE,
    GM_FAMILIES,
    NOTE_NAMES,
    TICKS_PER_QUARTER,
    TICKS_PER_SECOND,
    Note,
    family_of,
    midi_bytes,
    note_name,
)

__all__ = ["EXCLUDED_FAMILIES", "FAMILY_RANGE", "GM_FAMILIES", "NOTE_NAMES", "TICKS_PER_QUARTER", "TICKS_PER_SECOND",
           "Note", "family_of", "midi_bytes", "note_name"]
