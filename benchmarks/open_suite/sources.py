"""The Debian package fetcher lives in the package (``kikimimi demo`` uses it too); re-exported here so the
suite's scripts and tests keep ``from sources import …``."""

from kikimimi.data.debian_sources import PACKAGES, TOOLS, SourceError, Sources

__all__ = ["PACKAGES", "TOOLS", "SourceError", "Sources"]
