"""The exit status of every sub-command, written once (docs/usage.md, "Exit status").

- :data:`DONE` (0): the command did its work. A batch command (many input files) is done when at least one
  input was processed; the files that failed are listed on stderr, one line each naming the file and the
  reason (and in the output's errors file where there is one).
- :data:`NOTHING_DONE` (1): the invocation was valid but nothing could be done: every input failed, or the
  run itself failed part-way.
- :data:`USAGE` (2): a usage error, found before any work and before any output is created: a bad flag or
  setting, an input path that does not exist, inputs that hold no audio file (an empty folder), an empty
  query, an unusable model or index. One line on stderr, no traceback.

Commands raise :class:`UsageError` (or return :data:`USAGE`); `kikimimi.cli` prints it as one line.
This module imports nothing heavy: every sub-command's ``--help`` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

DONE = 0
NOTHING_DONE = 1
USAGE = 2

__all__ = ["DONE", "NOTHING_DONE", "USAGE", "UsageError", "batch_status", "check_inputs", "check_model_paths",
           "check_paths", "collect_inputs"]


class UsageError(ValueError):
    """A usage error (exit :data:`USAGE`): the message is one line in the user's terms."""


def batch_status(done: int, failed: int) -> int:
    """The exit status of a batch: :data:`DONE` when at least one input was processed (or none failed),
    :data:`NOTHING_DONE` when every input failed."""
    return DONE if done > 0 or failed == 0 else NOTHING_DONE


def check_paths(paths: Sequence[str | os.PathLike], what: str = "file or folder") -> None:
    """Raise :class:`UsageError` "no such file or folder: X" when a path given on the command line does not
    exist (the first one, and how many more)."""
    missing = [os.fspath(p) for p in paths if not os.path.exists(Path(p).expanduser())]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"no such {what}: {missing[0]}{more}")


def _has_audio(folder: Path) -> bool:
    """True as soon as one audio file (not hidden) is found below ``folder`` (stops at the first one)."""
    from kikimimi.fileio import AUDIO_EXTENSIONS

    for _base, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(not n.startswith(".") and os.path.splitext(n)[1].lower() in AUDIO_EXTENSIONS for n in names):
            return True
    return False


def check_inputs(inputs: Sequence[str | os.PathLike]) -> None:
    """The cheap checks of :func:`collect_inputs`, for commands whose library call expands the inputs itself:
    :func:`check_paths`, then :class:`UsageError` when every input is a folder without audio files (CSV lists
    are not read here: the library reports their problems)."""
    check_paths(inputs)
    folders = [Path(i).expanduser() for i in inputs if Path(i).expanduser().is_dir()]
    if len(folders) == len(inputs) and not any(_has_audio(f) for f in folders):
        raise UsageError(f"no audio files found in {', '.join(os.fspath(i) for i in inputs)}")


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The audio files of the command-line ``inputs`` (files, folders, CSV lists;
    :func:`kikimimi.fileio.collect_audio_files`), after :func:`check_paths`. Raises :class:`UsageError` when
    a path is missing, a CSV list is unusable, or the inputs hold no audio file."""
    from kikimimi.fileio import InputListError, collect_audio_files

    check_paths(inputs)
    try:
        files = collect_audio_files(list(inputs))
    except InputListError as exc:
        raise UsageError(str(exc)) from exc
    if not files:
        raise UsageError(f"no audio files found in {', '.join(os.fspath(i) for i in inputs)}")
    return files


#: file name endings that make a model argument a path rather than a registered model name
_MODEL_SUFFIXES = (".pth", ".ckpt", ".pt", ".bin", ".safetensors", ".onnx", ".json")


def check_model_paths(values: Sequence[str | os.PathLike | None]) -> None:
    """:func:`check_paths` for model arguments, which also take registered names (``m2d-clap-2025``): a value
    that does not exist is a usage error only when it reads as a path (a folder separator, a leading ``.`` or
    ``~``, or a weight-file ending); a name is left to the model registry (which suggests close matches)."""
    paths = []
    for v in values:
        if v is None:
            continue
        text = os.fspath(v)
        if os.sep in text or "/" in text or text.startswith((".", "~")) or text.lower().endswith(_MODEL_SUFFIXES):
            paths.append(text)
    check_paths(paths)
