"""`kikimimi serve`: a local sound-search and tagging service with a web page.

:func:`kikimimi.apps.serve.app.create_app` builds the FastAPI application (needs ``pip install
"kikimimi[serve]"``); :mod:`~kikimimi.apps.serve.security` holds the safety rules (loopback binding,
token, bounded bodies), :mod:`~kikimimi.apps.serve.workers` the bounded embedding pool and
:mod:`~kikimimi.apps.serve.spectrogram` the small PNG pictures of the result rows. The page itself is in
``static/`` and the default label list in ``labels.txt``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_LABELS_FILE", "STATIC_DIR", "default_labels"]

STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_LABELS_FILE = Path(__file__).with_name("labels.txt")


def default_labels() -> list[str]:
    """The label list shipped with the package (one label a line; ``#`` comments and blank lines skipped)."""
    lines = DEFAULT_LABELS_FILE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
