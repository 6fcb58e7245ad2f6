"""Flags and helpers shared by several sub-commands (not a sub-command itself: no ``NAME``/``run``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_clap_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the CLAP commands (text encoder, device, pickles)."""
    parser.add_argument("--text-encoder",
                        help="text encoder spec (e.g. gte:/path/to/gte-base for M2D-CLAP 2024; default: the one "
                             "inside the checkpoint or recorded in its config.json)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trust-pickle", action="store_true", help="allow arbitrary pickles (trusted files only)")


def load_task(spec: str, unit_s: float | None):
    """An evaluation task from an EVAR-style CSV or a folder with one sub-folder per class."""
    from kikimimi.evaluation.tasks import Task

    path = Path(spec)
    if path.is_dir():
        return Task.from_folder(path, unit_s=unit_s)
    return Task.from_csv(path, unit_s=unit_s)
