"""The open suite's builder on a fresh machine's layout: every Debian package extracted into its own tree.

The trees hold tiny generated stand-ins at the packages' real paths (``benchmarks/open_suite/sources.py``), and
``fluidsynth`` is a small script on ``PATH`` that writes noise as long as the MIDI file it is given. No network.
"""

from __future__ import annotations

import csv
import os
import stat
import sys
import textwrap
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "open_suite"
sys.path.insert(0, str(SUITE))

import build_data  # noqa: E402
import build_tasks as bt  # noqa: E402
from clips import write_wav  # noqa: E402
from sources import PACKAGES  # noqa: E402

KIT_XML = """<?xml version="1.0" encoding="UTF-8"?>
<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit">
 <name>{name}</name><license>CC0</license><instrumentList>{instruments}</instrumentList>
</drumkit_info>"""
INST = "<instrument><id>{i}</id><name>{name}</name><layer><filename>{file}</filename></layer></instrument>"

#: A stand-in for fluidsynth: ``-F OUT`` gets 16 kHz noise lasting as long as the format-0 MIDI file (960 ticks/s).
FAKE_FLUIDSYNTH = textwrap.dedent('''\
    #!{python}
    import sys
    import numpy as np
    import soundfile as sf

    def vlq(b, i):
        v = 0
        while True:
            v = (v << 7) | (b[i] & 0x7F)
            i += 1
            if not b[i - 1] & 0x80:
                return v, i

    args = sys.argv[1:]
    out, mid = args[args.index("-F") + 1], args[-1]
    b = open(mid, "rb").read()
    i, ticks = 22, 0  # after MThd (14 bytes) and the MTrk header (8 bytes)
    while i < len(b):
        delta, i = vlq(b, i)
        ticks += delta
        if b[i] == 0xFF:
            n, j = vlq(b, i + 2)
            i = j + n
        else:
            i += 2 if b[i] >> 4 == 0xC else 3
    n = int(ticks / 960 * 16000)
    sf.write(out, (0.1 * np.random.default_rng(n).standard_normal(n)).astype("float32"), 16000)
''')


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def _package_trees(x: Path) -> None:
    """``x/<package>/`` for every package, marked complete as ``Sources`` leaves a finished extraction."""
    roots = {pkg: x / pkg for pkg in PACKAGES}
    seed = iter(range(10_000))
    for pkg, voice_dir in zip(build_data.ASTERISK, bt.VOICES, strict=True):
        folder = roots[pkg] / "usr/share/asterisk/sounds" / voice_dir
        for p in [f"vm-p{i}" for i in range(14)] + ["digits/1", "digits/2", "letters/asterisk", "beep"]:
            write_wav(folder / f"{p}.wav", _noise(0.8, next(seed)))
    kits = roots["hydrogen-drumkits"] / PACKAGES["hydrogen-drumkits"]
    for k in range(6):
        names = ["Kick", "Snare", "Closed Hat"]
        for i in range(len(names)):
            write_wav(kits / f"Kit {k}" / f"s{i}.wav", _noise(0.2, next(seed)))
        insts = "".join(INST.format(i=i, name=n, file=f"s{i}.wav") for i, n in enumerate(names))
        (kits / f"Kit {k}" / "drumkit.xml").write_text(KIT_XML.format(name=f"Kit {k}", instruments=insts))
    hw = roots["hedgewars-data"] / "usr/share/games/hedgewars/Data"
    others = {hw / "Sounds/voices/Pack/Hello.ogg": 1.0, hw / "Music/main.ogg": 3.0,
              roots["wesnoth-1.16-data"] / PACKAGES["wesnoth-1.16-data"] / "wolf.ogg": 1.0,
              roots["sonic-pi-samples"] / PACKAGES["sonic-pi-samples"] / "bd_haus.flac": 1.0,
              roots["sound-theme-freedesktop"] / PACKAGES["sound-theme-freedesktop"] / "bell.oga": 1.0}
    for path, seconds in others.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        import soundfile as sf

        sf.write(path, _noise(seconds, next(seed)), 16000, format="OGG" if path.suffix != ".flac" else "FLAC")
    for pkg in ("fluid-soundfont-gm", "timgm6mb-soundfont"):
        (roots[pkg] / PACKAGES[pkg]).parent.mkdir(parents=True, exist_ok=True)
        (roots[pkg] / PACKAGES[pkg]).write_bytes(b"sfbk stand-in")
    for pkg, root in roots.items():
        (root / "usr/share/doc" / pkg).mkdir(parents=True, exist_ok=True)
        (root / "usr/share/doc" / pkg / "copyright").write_text(f"{pkg}: test stand-in\n")
        (root / ".complete").write_text(f"{pkg}_test.deb\n")


@pytest.fixture()
def fake_fluidsynth(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "fluidsynth"
    script.write_text(FAKE_FLUIDSYNTH.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


def test_smoke_scale_builds_from_per_package_trees(tmp_path, fake_fluidsynth):
    cache = tmp_path / "cache"
    _package_trees(cache / "x")
    args = Namespace(scale="smoke", cache=cache, deb_dir=None, extracted=None, no_network=True, seed=0)
    data = build_data.build(args)

    for name in ("language_id", "drum_type", "instrument_family", "instrument_family_shifted", "corpus", "captions"):
        assert (data / f"{name}.csv").is_file(), name
    with open(data / "corpus.csv", newline="") as f:
        corpus = list(csv.DictReader(f))
    asterisk = [r for r in corpus if r["source"] == "asterisk"]
    # segments from several separately extracted language packages, each named <voice>/<prompt>
    voices = {Path(r["file_name"]).parts[2] for r in asterisk}
    assert len(voices) >= 2 and voices <= set(bt.VOICES)
    assert all((data / r["file_name"]).is_file() for r in corpus)
    assert {r["source"] for r in corpus} >= {"asterisk", "music_fluidsynth", "wesnoth"}
    with open(data / "language_id.csv", newline="") as f:
        assert {r["label"] for r in csv.DictReader(f)} == {lang for lang, _ in bt.VOICES.values()}
    assert (data / "licences" / "asterisk-core-sounds-ru-wav.copyright").is_file()

    # a second run resumes: every stage's output exists and is kept as it is
    before = (data / "corpus.csv").read_bytes()
    build_data.build(args)
    assert (data / "corpus.csv").read_bytes() == before


def test_relative_to_any_names_the_roots_when_none_holds_the_file(tmp_path):
    import corpus as cp

    assert cp.relative_to_any(tmp_path / "b" / "x.wav", [tmp_path / "a", tmp_path / "b"]) == Path("x.wav")
    with pytest.raises(ValueError, match="inside none of"):
        cp.relative_to_any(tmp_path / "c" / "x.wav", [tmp_path / "a"])
