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
``static/``; the default label list is the packaged vocabulary of
:func:`kikimimi.inference.evidence.default_labels` (shared with ``kikimimi ask`` / ``describe``).
"""

from __future__ import annotations

from pathlib import Path

from kikimimi.inference.evidence import DEFAULT_LABELS_FILE, default_labels

__all__ = ["DEFAULT_LABELS_FILE", "STATIC_DIR", "default_labels"]

STATIC_DIR = Path(__file__).with_name("static")
