"""Imports of the optional ``eval`` extra (scikit-learn, matplotlib) with an install hint when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EVAL_EXTRA_HINT", "require"]

EVAL_EXTRA_HINT = 'pip install "kikimimi[eval]"'


def require(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``"sklearn.linear_model"``) from the ``eval`` extra.

    Raises:
        ImportError: the package is not installed; the message names the ``pip install`` to run.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module.split('.')[0]} is needed for evaluation but is not installed: run "
                          f"`{EVAL_EXTRA_HINT}`") from exc
