"""Patch masking: its home is :mod:`kikimimi.models.masking` (the methods and fine-tuning share it); the names are
re-exported here for code written against this module."""

from __future__ import annotations

from kikimimi.models.masking import *  # noqa: F403
from kikimimi.models.masking import __all__  # noqa: F401
