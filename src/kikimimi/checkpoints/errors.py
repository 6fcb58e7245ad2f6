"""The one exception type raised by :mod:`kikimimi.checkpoints`."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint file could not be read or mapped onto a kikimimi model.

    ``str(err)`` starts with the quoted file name, followed by the cause and, where possible, what to do.
    """

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(reason if path is None else f"'{path}': {reason}")
