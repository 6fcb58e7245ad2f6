"""Load ``torch.save`` files without running arbitrary pickled code.

Official NTT checkpoints are pickles. Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``,
which refuses the ``argparse.Namespace`` stored under ``args`` in full training checkpoints and the numpy
scalars/dtypes found in saved arguments and optimiser states (docs/reference.md §5). Instead of
falling back to a full unpickler, :func:`safe_torch_load` keeps ``weights_only=True`` and allow-lists
exactly those harmless types. Anything else is refused with a :class:`CheckpointError` that names the
offending global and the opt-in (``trust_pickle=True`` / ``--trust-pickle``).

A file whose tensors claim more data than it stores (a damaged file, or one crafted to claim e.g. 10^12
elements) is refused by torch before anything that size is allocated; :func:`safe_torch_load` reports it
as such rather than as a generic load failure.
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kikimimi.checkpoints.errors import CheckpointError

__all__ = ["SAFE_GLOBALS", "safe_torch_load"]


def _numpy_globals() -> list[Any]:
    """numpy types needed to rebuild scalars, dtypes and plain arrays (no object construction)."""
    try:  # numpy >= 2
        from numpy._core import multiarray as ma
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
    entries: list[Any] = [np.dtype, np.ndarray, ma.scalar, ma._reconstruct]
    # Files written under numpy 1.x reference the old module path; numpy 2 writes ``numpy._core``.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries.append((ma.scalar, f"{module}.scalar"))
        entries.append((ma._reconstruct, f"{module}._reconstruct"))
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: one class per dtype (Float64DType, ...)
    if dtypes is not None:
        entries.extend(getattr(dtypes, n) for n in sorted(dir(dtypes)) if n.endswith("DType"))
    return entries


#: Globals allowed while unpickling in addition to torch's own weights-only set.
SAFE_GLOBALS: list[Any] = [argparse.Namespace, *_numpy_globals()]

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
#: torch's messages when a tensor or storage claims more bytes than the file's record holds
_SIZE_CLAIM_RE = re.compile(r"record size \(\d+ bytes\) does not match expected size \(\d+ bytes|"
                            r"resize storage that is not resizable|out of bounds for storage of size")


def _offending_global(path: Path, exc: BaseException) -> str:
    found = _GLOBAL_RE.search(str(exc))
    if found:
        return found.group(1)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - best effort only, the caller reports the original error
        names = []
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS if not isinstance(g, tuple)}
    names = [n for n in names if n not in allowed]
    return ", ".join(names) if names else "unknown (see the message below)"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, expected a checkpoint file (.pth/.pt/.ckpt)")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "file is empty (0 bytes); the download or save was probably interrupted")


def safe_torch_load(path: str | Path, *, trust_pickle: bool = False) -> Any:
    """Load a ``torch.save`` file on the CPU.

    Args:
        path: checkpoint file (zip or legacy pickle format).
        trust_pickle: when True, use the full unpickler (``weights_only=False``). Only for files from
            a source you trust: a pickle can run any code while loading.

    Returns:
        Whatever was saved (usually a dict of tensors, or a dict holding ``model``/``args``...).

    Raises:
        CheckpointError: missing, empty, truncated or non-checkpoint file, or (without ``trust_pickle``)
            a pickle that references a global outside torch's weights-only set and :data:`SAFE_GLOBALS`.
    """
    path = Path(path)
    _check_file(path)
    if trust_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise CheckpointError(
                path, f"could not be loaded as a torch checkpoint ({type(exc).__name__}: {exc})"
            ) from exc
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(SAFE_GLOBALS):
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL " in text:
            raise CheckpointError(
                path,
                f"refused to unpickle the global {_offending_global(path, exc)}: it is not on the "
                "safe-loading allow-list and loading it could run arbitrary code. If you trust where "
                "this file comes from, pass trust_pickle=True (command line: --trust-pickle).",
            ) from exc
        raise CheckpointError(path, f"not a torch checkpoint, or a corrupt one ({_short(text)})") from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        text = str(exc)
        damaged = isinstance(exc, (EOFError, zipfile.BadZipFile)) or "central directory" in text
        if _SIZE_CLAIM_RE.search(text):
            reason = (f"a tensor claims more data than the file stores ({_short(text)}); the file is corrupt "
                      "or crafted, and was refused without allocating that memory")
        elif damaged or _damaged_zip(path):
            detail = _short(text) or type(exc).__name__
            reason = f"file is truncated or corrupt ({detail}); save or download it again"
        else:
            reason = f"not a torch checkpoint, or a corrupt one ({type(exc).__name__}: {_short(text)})"
        raise CheckpointError(path, reason) from exc


def _damaged_zip(path: Path) -> bool:
    """True when ``path`` starts like a zip archive (torch's format) but its directory is unreadable."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        return False
    return magic == b"PK\x03\x04" and not zipfile.is_zipfile(path)


def _short(text: str) -> str:
    """The informative part of a torch load error (torch wraps it in long boilerplate)."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n|$)", text)
    if found:
        return found.group(1).strip()
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first.split(". ")[0]
