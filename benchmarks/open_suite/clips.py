"""The clip writers live in the package (``kikimimi demo`` uses them too); re-exported here so the suite's
scripts and tests keep ``from clips import …`` (``SKIPPED`` is the package's list object)."""

from kikimimi.data.clips import (
    SAMPLE_RATE,
    SILENT_PEAK,
    SKIPPED,
    clip_file,
    is_silent,
    load_16k,
    segment_file,
    write_wav,
)

__all__ = ["SAMPLE_RATE", "SILENT_PEAK", "SKIPPED", "clip_file", "is_silent", "load_16k", "segment_file", "write_wav"]
