"""Licences of Debian package files: DEP-5 ``copyright`` parsing, per-file look-up and licence families.

A machine-readable (DEP-5) ``usr/share/doc/<package>/copyright`` file is a list of stanzas; each ``Files:``
stanza names glob patterns (paths in the *source* tree) and its ``License:`` short name. The last matching
stanza wins in DEP-5. Installed paths differ from source paths (``share/hedgewars/Data/Sounds/x.ogg`` is installed as
``usr/share/games/hedgewars/Data/Sounds/x.ogg``), so a pattern also matches when it matches a trailing part of
the installed path, optionally after dropping up to two leading pattern folders (the rest must still name a
folder or a file, not only ``*``). Because such matches are loose, the matching pattern with the most literal
characters wins (the later one on a tie, as DEP-5's "last match wins"). ``debian/*`` stanzas (the packaging)
are ignored. A free-text copyright
file gives one package-wide licence from the first licence named in it (:func:`licence_from_text`).

:func:`licence_family` sorts a licence name into ``permissive`` (CC0, CC BY, MIT, BSD, public domain, …),
``copyleft`` (GPL, LGPL, GFDL, any share-alike) or ``unknown``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

__all__ = ["Copyright", "LicenceError", "licence_family", "licence_from_text", "normalise_licence", "parse_copyright"]

FAMILIES = ("permissive", "copyleft", "unknown")


class LicenceError(ValueError):
    """A copyright file is missing or unreadable."""


@dataclass
class Copyright:
    """Parsed ``copyright`` file: ``stanzas`` = ``[(patterns, licence)]`` in file order; ``default`` = the
    licence of ``Files: *`` (or of the free text); ``dep5`` tells which parser read it."""

    path: Path
    stanzas: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    default: str = "unknown"
    dep5: bool = True

    def licence_for(self, installed_path: str) -> str:
        """Licence of a file at ``installed_path`` (relative to the extraction root, ``/``-separated)."""
        found, best = self.default, -1
        for patterns, licence in self.stanzas:
            for pat in patterns:
                score = len(re.sub(r"[*?]", "", pat))
                if score >= best and _matches(installed_path, pat):
                    found, best = licence, score
        return found


def _matches(path: str, pattern: str) -> bool:
    if pattern == "*":
        return True
    parts = path.strip("/").split("/")
    pat_parts = pattern.strip("/").split("/")
    for drop in range(0, min(2, len(pat_parts) - 1) + 1):
        pat = "/".join(pat_parts[drop:])
        if drop and not re.search(r"[^*?/]", pat):
            break
        for k in range(len(parts)):
            if fnmatchcase("/".join(parts[k:]), pat):
                return True
    return False


def parse_copyright(path: str | Path) -> Copyright:
    """Parse a Debian ``copyright`` file (DEP-5, or free text as a fallback).

    Raises:
        LicenceError: the file does not exist or is not text.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise LicenceError(f"'{path}': cannot read the copyright file ({err.strerror or err})") from None
    first = text.lstrip().split("\n", 1)[0]
    if not first.lower().startswith("format:"):
        return Copyright(path, [], licence_from_text(text), dep5=False)
    out = Copyright(path)
    for block in re.split(r"\n\s*\n", text):
        fields = _fields(block)
        if "files" not in fields or "license" not in fields:
            continue
        patterns = tuple(p for p in fields["files"].split() if p)
        licence = fields["license"].split("\n", 1)[0].strip()
        if not patterns or not licence or all(p.startswith("debian/") for p in patterns):
            continue
        if patterns == ("*",):
            out.default = licence
        out.stanzas.append((patterns, licence))
    return out


def _fields(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in block.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
            continue
        m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
        if m:
            key = m.group(1).lower()
            fields[key] = m.group(2).strip()
    return fields


#: (regular expression on free text, licence short name); the earliest match in the text wins
_TEXT_RULES: tuple[tuple[str, str], ...] = (
    (r"Attribution[- ]Share[- ]?Alike[^\n]{0,20}?4\.0|by-sa/4\.0", "CC-BY-SA-4.0"),
    (r"Attribution[- ]Share[- ]?Alike|by-sa/3\.0|\bCC[- ]BY[- ]SA\b", "CC-BY-SA-3.0"),
    (r"Creative Commons Attribution[^-]|/licenses/by/|\bCC[- ]BY\b", "CC-BY-3.0"),
    (r"\bCC0\b|Public Domain Dedication|Creative Commons 0", "CC0-1.0"),
    (r"GNU (Library|Lesser) General Public License", "LGPL"),
    (r"GNU General Public License[^\n]*\n?[^\n]*version 3", "GPL-3+"),
    (r"GNU General Public License|\bGPL[- ]?(version )?2\b", "GPL-2+"),
    (r"\bGPL\b", "GPL"),
    (r"\bMIT\b|Permission is hereby granted, free of charge", "MIT"),
    (r"public domain", "public-domain"),
)


def normalise_licence(text: str) -> str:
    """A licence written by hand (e.g. a drum kit's ``<license>``): kept when it is already a short name (no
    spaces), else the name :func:`licence_from_text` finds in it (``"unknown"`` when none)."""
    text = text.strip()
    if text and " " not in text and licence_family(text) != "unknown":
        return text
    return licence_from_text(text)


def licence_from_text(text: str) -> str:
    """The licence first named in a free-text copyright file (see ``_TEXT_RULES``), or ``"unknown"``."""
    best: tuple[int, str] | None = None
    for pattern, name in _TEXT_RULES:
        m = re.search(pattern, text, flags=re.IGNORECASE)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), name)
    return best[1] if best else "unknown"


_COPYLEFT = re.compile(r"(?<![A-Z])(A?GPL|LGPL|GFDL|FDL)|SA(?![A-Z])|share-?alike|copyleft", re.IGNORECASE)
_PERMISSIVE = re.compile(r"CC0|CC[- ]?BY|Attribution|MIT|BSD|Apache|public[- ]domain|ISC|zlib|Expat|Unlicense|WTFPL",
                         re.IGNORECASE)


def licence_family(licence: str) -> str:
    """``"copyleft"`` for GPL / LGPL / AGPL / GFDL / any share-alike (CC BY-SA) licence (also in an ``or``/``and``
    expression), ``"permissive"`` for CC0, CC BY, MIT, BSD, Apache, ISC, zlib, public domain, else ``"unknown"``."""
    if not licence or licence.strip().lower() == "unknown":
        return "unknown"
    if _COPYLEFT.search(licence.replace("CC-SA-BY", "CC-BY-SA")):
        return "copyleft"
    if _PERMISSIVE.search(licence):
        return "permissive"
    return "unknown"
