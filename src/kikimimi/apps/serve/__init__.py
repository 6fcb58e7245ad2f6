"""`kikimimi serve`: a local sound-search and tagging service with a web page.

:func:`kikimimi.apps.serve.app.create_app` assembles the FastAPI application (needs ``pip install
"kikimimi[serve]"``) from :mod:`~kikimimi.apps.serve.state` (settings and the shared state),
:mod:`~kikimimi.apps.serve.deps` (shared dependencies), :mod:`~kikimimi.apps.serve.errors` (one-line JSON
refusals) and one router per concern in :mod:`~kikimimi.apps.serve.routers`.
:mod:`~kikimimi.apps.serve.security` holds the request guard (loopback binding, host, token and its rate
limit, origin, bounded and timed bodies), :mod:`~kikimimi.apps.serve.server` the connection limits (header
deadline, idle-first eviction), :mod:`~kikimimi.apps.serve.files` the checks on every served file (inside the
indexed folder, the file that was indexed), :mod:`~kikimimi.apps.serve.workers` the bounded embedding pool and
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
