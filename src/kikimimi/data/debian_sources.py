"""Audio from Debian data packages: ``apt-get download`` + ``dpkg-deb -x``, nothing installed.

Every package is extracted into its own folder ``<cache>/x/<package>/`` (a ``.complete`` marker is written
last, so an interrupted extraction is redone). ``deb_dir`` reuses already downloaded ``.deb`` files and
``extracted`` a tree where the packages were already unpacked together (e.g. ``debian-tree/``).

Used by ``kikimimi demo`` (a small real-audio set, :mod:`kikimimi.apps.first_run.real_data`) and by the open
suite's builder (``benchmarks/open_suite/build_data.py``) and by the open corpus
(:mod:`kikimimi.data.open_corpus`, which reads any package through :meth:`Sources.extract`).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["PACKAGES", "TOOLS", "SourceError", "Sources", "changelog_version"]

#: package → a path inside it that proves it is present (relative to the extraction root)
PACKAGES: dict[str, str] = {
    "asterisk-core-sounds-en-wav": "usr/share/asterisk/sounds/en_US_f_Allison",
    "asterisk-core-sounds-es-wav": "usr/share/asterisk/sounds/es_MX_f_Allison",
    "asterisk-core-sounds-fr-wav": "usr/share/asterisk/sounds/fr_CA_f_June",
    "asterisk-core-sounds-it-wav": "usr/share/asterisk/sounds/it_IT_m_Carlo",
    "asterisk-core-sounds-ru-wav": "usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU",
    "hydrogen-drumkits": "usr/share/hydrogen/data/drumkits",
    "sonic-pi-samples": "usr/share/sonic-pi/samples",
    "hedgewars-data": "usr/share/games/hedgewars/Data/Sounds",
    "wesnoth-1.16-data": "usr/share/games/wesnoth/1.16/data/core/sounds",
    "sound-theme-freedesktop": "usr/share/sounds/freedesktop/stereo",
    "fluid-soundfont-gm": "usr/share/sounds/sf2/FluidR3_GM.sf2",
    "timgm6mb-soundfont": "usr/share/sounds/sf2/TimGM6mb.sf2",
}

#: generator binary → Debian package
TOOLS = {"fluidsynth": "fluidsynth", "timidity": "timidity"}


class SourceError(RuntimeError):
    """A package or tool could not be fetched, extracted or found."""


class Sources:
    """Locate (fetching when needed) the data packages.

    Args:
        cache: cache folder (debs in ``cache/debs``, extractions in ``cache/x/<package>``).
        deb_dir: folder with pre-downloaded ``<package>_*.deb`` files.
        extracted: folder where the packages are already extracted together (checked per package).
        allow_network: when ``False`` a missing package raises instead of calling ``apt-get``.
        log: progress printer.
    """

    def __init__(self, cache: Path, deb_dir: Path | None = None, extracted: Path | None = None,
                 allow_network: bool = True, log: Callable[[str], None] = print) -> None:
        self.cache, self.deb_dir, self.extracted = Path(cache), deb_dir, extracted
        self.allow_network, self.log = allow_network, log
        self._updated = False

    def _apt_update(self) -> None:
        if not self._updated:
            self.log("   apt-get update")
            _run(["apt-get", "update"], "apt-get update")
            self._updated = True

    def deb_file(self, package: str) -> Path:
        """The ``.deb`` of ``package``: from ``deb_dir``, the cache, or ``apt-get download`` into the cache.

        ``apt-get download`` is tried first without ``apt-get update`` (fast when the package lists are
        present), then once more after it.
        """
        for folder in (self.deb_dir, self.cache / "debs"):
            if folder and Path(folder).is_dir():
                found = sorted(Path(folder).glob(f"{package}_*.deb"))
                if found:
                    return found[-1]
        if not self.allow_network:
            raise SourceError(f"package {package}: no .deb in {self.deb_dir or self.cache / 'debs'} "
                              "and downloads are disabled")
        target = self.cache / "debs"
        target.mkdir(parents=True, exist_ok=True)
        self.log(f"   apt-get download {package}")
        try:
            _run(["apt-get", "download", package], f"apt-get download {package}", cwd=target)
        except SourceError:
            if self._updated:
                raise
            self._apt_update()
            _run(["apt-get", "download", package], f"apt-get download {package}", cwd=target)
        found = sorted(target.glob(f"{package}_*.deb"))
        if not found:
            raise SourceError(f"apt-get download {package} wrote no .deb into {target}")
        return found[-1]

    def root(self, package: str) -> Path:
        """Extraction root of ``package`` (``root / PACKAGES[package]`` exists)."""
        if package not in PACKAGES:
            raise SourceError(f"unknown package {package!r}; known: {sorted(PACKAGES)}")
        return self.extract(package, PACKAGES[package])

    def extract(self, package: str, probe: str = "usr/share/doc") -> Path:
        """Extraction root of any package (fetched and unpacked when needed); ``root / probe`` must exist.

        Unlike :meth:`root`, ``package`` need not be in :data:`PACKAGES` (the open corpus reads many more).
        """
        if self.extracted and (Path(self.extracted) / probe).exists():
            return Path(self.extracted)
        dest = self.cache / "x" / package
        if (dest / ".complete").exists() and (dest / probe).exists():
            return dest
        deb = self.deb_file(package)
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        self.log(f"   dpkg-deb -x {deb.name}")
        _run(["dpkg-deb", "-x", str(deb), str(dest)], f"dpkg-deb -x {deb}")
        if not (dest / probe).exists():
            raise SourceError(f"'{deb}': extracted, but {probe} is not inside")
        (dest / ".complete").write_text(deb.name + "\n")
        return dest

    def version(self, package: str, root: Path | None = None) -> str:
        """The package's version: the first line of its ``changelog.Debian.gz`` in the extraction, else the
        ``.deb`` file name (``name_VERSION_arch.deb``), else ``"unknown"``."""
        root = Path(root) if root is not None else self.cache / "x" / package
        found = changelog_version(root / "usr/share/doc" / package / "changelog.Debian.gz")
        if found:
            return found
        marker = root / ".complete"
        names = [marker.read_text().strip()] if marker.is_file() else []
        for folder in (self.deb_dir, self.cache / "debs"):
            if folder and Path(folder).is_dir():
                names += [f.name for f in sorted(Path(folder).glob(f"{package}_*.deb"))]
        for name in names:
            parts = name.split("_")
            if len(parts) == 3 and parts[0] == package:
                return parts[1].replace("%3a", ":")
        return "unknown"

    def path(self, package: str) -> Path:
        """``root(package) / PACKAGES[package]``."""
        return self.root(package) / PACKAGES[package]

    def copy_licences(self, dest: Path, packages: Iterable[str] = tuple(PACKAGES)) -> list[Path]:
        """Copy each package's ``usr/share/doc/<package>/copyright`` to ``dest/<package>.copyright``
        (attribution next to the derived data); returns the files that are there."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for pkg in packages:
            f = self.root(pkg) / "usr/share/doc" / pkg / "copyright"
            target = dest / f"{pkg}.copyright"
            if f.is_file() and not target.exists():
                shutil.copyfile(f, target)
            if target.exists():
                out.append(target)
        return out

    def tool(self, binary: str) -> str:
        """Path of a generator binary, installing its package with apt when missing."""
        found = shutil.which(binary)
        if found:
            return found
        if not self.allow_network:
            raise SourceError(f"{binary} is not installed (apt-get install {TOOLS.get(binary, binary)})")
        self._apt_update()
        pkg = TOOLS.get(binary, binary)
        self.log(f"   apt-get install -y --no-install-recommends {pkg}")
        _run(["apt-get", "install", "-y", "--no-install-recommends", pkg], f"apt-get install {pkg}",
             env_extra={"DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which(binary)
        if not found:
            raise SourceError(f"apt-get install {pkg} did not provide {binary}")
        return found


def changelog_version(path: Path) -> str | None:
    """Version in the first line of a Debian changelog (``pkg (1.2-3) unstable; …``; gzip or plain), or ``None``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except (OSError, EOFError):
        return None
    m = re.match(r"^\S+ \(([^)]+)\)", first)
    return m.group(1) if m else None


def _run(cmd: list[str], what: str, cwd: Path | None = None, env_extra: dict[str, str] | None = None) -> None:
    env = {**os.environ, **(env_extra or {})}
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError:
        raise SourceError(f"{what}: '{cmd[0]}' not found (Debian/Ubuntu with apt and dpkg is required)") from None
    if res.returncode != 0:
        raise SourceError(f"{what} failed with exit code {res.returncode}: {res.stderr.strip()[-500:]}")
