"""The kikimimi home folder: downloaded models, their records, locks and the user model registry.

``$KIKIMIMI_HOME`` when set, else the platform's user cache folder (``platformdirs.user_cache_dir``, e.g.
``~/.cache/kikimimi`` on Linux, ``~/Library/Caches/kikimimi`` on macOS).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["HOME_ENV", "cache_root"]

HOME_ENV = "KIKIMIMI_HOME"


def cache_root() -> Path:
    """The kikimimi home folder (not created here)."""
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value).expanduser() if value else Path(platformdirs.user_cache_dir("kikimimi", appauthor=False))
