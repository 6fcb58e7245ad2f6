"""The open corpus: every openly licensed recording installable through Debian's packages, plus kikimimi's own
rendered and synthetic sounds, as 16 kHz mono WAV segments with a manifest and captions written from metadata.

``build_open_corpus(out_dir)`` (``kikimimi data open-corpus OUT``) goes through :data:`SOURCES` in order. A
*source* is one package's audio (or a render through a soundfont, or the synthetic generator); each source
file is

1. described from its path (language, speaker sex, letter, drum piece, event name, … → ``meta``) and given its
   licence from the package's ``copyright`` file (:mod:`kikimimi.data.licences`);
2. skipped when held out (see below), when its ``copyright`` file states no licence for it (an open licence cannot
   be assumed), when ``licences="permissive"`` and its licence is not permissive, or when the describer says it
   is not audio to keep;
3. decoded to 16 kHz mono (soxr HQ, :func:`kikimimi.data.clips.load_16k`), quantised to 16-bit exactly as the
   task clips are, de-duplicated (the SHA-256 of the whole decoded file, then of every segment) and cut into
   ≤ ``segment_s`` segments (silent segments, tails < 0.5 s and files < 0.05 s dropped).

**Held out** (:class:`HeldOut`, from :func:`compute_held_out`): the valid and test prompt names of every
language-ID task of the first run and of the open suite (all scales; in every Asterisk voice), the valid and
test kits of their drum-type task, and the valid and test GM programs of the open suite's instrument task (no
render uses them; TimGM6mb, the suite's shifted-test soundfont, is never rendered). The test clips of those
tasks are re-made in ``<cache>/reference`` exactly as the tasks make them; :func:`check_no_test_leak` compares
their audio hashes (whole clip, and 0.25 s from the first sound) against every corpus segment and raises on a
match — every build runs it.

**Outputs** in ``out_dir``: ``audio/<source>/…wav``; ``manifest.jsonl`` (one JSON object per segment: file name,
source, package, version, licence and its family, SHA-256 of the segment's and of the source file's audio,
onset hash, start and duration, origin, ``meta``); ``corpus.csv`` (``file_name,source,package,licence,
duration_s``, a pre-training list); ``captions.csv`` (``file_name,caption,template,kind``, train templates only,
:mod:`kikimimi.data.open_captions`); ``heldout_templates.json``; ``licences/<package>.copyright``;
``build.json`` (settings, the corpus table, what was skipped and why, the leak check, seconds).

**Resume**: packages are cached (``<cache>/debian``); every processed source file is appended to
``parts/<source>.partial.jsonl`` (a killed build skips what is recorded there; its segment files are kept) and a
finished source is renamed ``parts/<source>.jsonl``. Sources may be added between runs: finished ones are kept
and every source is de-duplicated against all finished ones. A package that cannot be fetched (not in this
machine's apt sources) or a renderer that fails skips its source (``build.json`` → ``unavailable``). Only one
build runs in a folder at a time (a lock). The data layer does not know the kikimimi home folder: the caller
passes ``cache`` (the command uses ``$KIKIMIMI_HOME/open-corpus``).
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from kikimimi.audio.decode import resample
from kikimimi.audio.synthetic import SOUND_CLASSES, make_sound, speech_like
from kikimimi.data.clips import SAMPLE_RATE, load_16k
from kikimimi.data.debian_sources import SourceError, Sources
from kikimimi.data.licences import Copyright, licence_family, normalise_licence, parse_copyright
from kikimimi.data.midi import (
    FAMILY_RANGE,
    GM_DRUMS,
    GM_PROGRAMS,
    Note,
    family_of,
    midi_bytes,
    note_name,
    split_programs,
)
from kikimimi.data.open_captions import TEMPLATES, caption_file, heldout_templates, words_of
from kikimimi.data.registry_tasks import (
    NON_SPEECH,
    VOICES,
    asterisk_prompts,
    build_drums,
    build_language,
    choose_language_prompts,
    drum_class,
    parse_drumkit,
    slug,
)
from kikimimi.data.splits import LeakageError
from kikimimi.fileio import atomic_open, atomic_write_json, atomic_write_text

__all__ = ["DRUM_TASK", "LANGUAGE_TASKS", "LICENCE_MODES", "SOURCES", "HeldOut", "Item", "OpenCorpus", "SourceSpec",
           "build_open_corpus", "check_no_test_leak", "clip_fingerprints", "compute_held_out", "corpus_table",
           "fingerprints", "format_table", "pcm16", "read_manifest"]

SEGMENT_S = 10.0
MIN_SEGMENT_S = 0.5  # shortest tail segment kept (s)
MIN_SOUND_S = 0.05  # shortest whole file kept (s): drum hits, clicks and letters are often < 0.5 s
#: onset fingerprint: 0.25 s of 16-bit samples from the first one above ONSET_LEVEL
ONSET_WINDOW = 4000
ONSET_LEVEL = 64
LICENCE_MODES = ("all", "permissive")
#: skip reason of a file whose package's ``copyright`` file names no licence for it
NO_LICENCE = "no licence stated"
#: bump when the segment recipe changes (a corpus folder built by another version is refused)
CORPUS_VERSION = 1

#: language-ID tasks whose valid/test prompts are held out: name → (prompt names, clip length s). Mirrors
#: ``build_real_set``'s defaults (first run) and the open suite's ``SCALES`` (tests/data/test_open_corpus.py checks).
LANGUAGE_TASKS: dict[str, tuple[int, float]] = {"first-run": (40, 3.0), "open-suite-full": (240, 4.0),
                                                "open-suite-small": (60, 4.0), "open-suite-smoke": (10, 4.0)}
#: the drum task's clip length (s); its kit split does not depend on the per-class cap
DRUM_TASK = {"max_s": 1.0}
ASTERISK_CORE = ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav", "asterisk-core-sounds-fr-wav",
                 "asterisk-core-sounds-it-wav", "asterisk-core-sounds-ru-wav")


# ================================================================================================ hashing


def pcm16(wave: np.ndarray) -> np.ndarray:
    """``wave`` (float ``[samples]``) as the int16 samples a 16-bit WAV of it holds (the same quantiser as
    :func:`kikimimi.data.clips.write_wav`, so a task clip and a corpus segment of one source compare equal)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0), SAMPLE_RATE, format="WAV",
             subtype="PCM_16")
    buf.seek(0)
    q, _ = sf.read(buf, dtype="int16")
    return np.ascontiguousarray(q.reshape(-1))


def fingerprints(q: np.ndarray) -> tuple[str, str | None]:
    """``(SHA-256 of the int16 samples, SHA-256 of ONSET_WINDOW samples from the first |x| > ONSET_LEVEL)``; the
    onset hash is ``None`` when fewer than ONSET_WINDOW samples follow the onset (or there is none)."""
    q = np.ascontiguousarray(np.asarray(q, dtype=np.int16).reshape(-1))
    full = hashlib.sha256(q.tobytes()).hexdigest()
    loud = np.flatnonzero(np.abs(q.astype(np.int32)) > ONSET_LEVEL)
    if loud.size == 0 or q.size - int(loud[0]) < ONSET_WINDOW:
        return full, None
    start = int(loud[0])
    return full, hashlib.sha256(q[start : start + ONSET_WINDOW].tobytes()).hexdigest()


def clip_fingerprints(path: str | os.PathLike) -> tuple[str, str | None]:
    """:func:`fingerprints` of a 16-bit WAV clip (e.g. a task's test clip) as stored on disk."""
    q, _ = sf.read(str(path), dtype="int16", always_2d=True)
    return fingerprints(q[:, 0])


def check_no_test_leak(manifest: Iterable[dict], test_clips: Iterable[str | os.PathLike]) -> int:
    """Assert that no test clip's audio is in the corpus: neither its whole-clip hash nor its onset hash equals
    that of a corpus segment (a test clip cut from the start of a file shares the onset hash of the file's
    first segment). Returns the number of test clips checked.

    Raises:
        LeakageError: naming one test clip, the corpus segment that holds it and how many leak.
    """
    by_full: dict[str, str] = {}
    by_onset: dict[str, str] = {}
    for row in manifest:
        by_full.setdefault(row["sha256"], row["file_name"])
        if row.get("onset_sha256"):
            by_onset.setdefault(row["onset_sha256"], row["file_name"])
    leaks = []
    n = 0
    for clip in test_clips:
        n += 1
        full, onset = clip_fingerprints(clip)
        hit = by_full.get(full) or (by_onset.get(onset) if onset else None)
        if hit:
            leaks.append((str(clip), hit))
    if leaks:
        raise LeakageError(f"{len(leaks)} test clip(s) are in the open corpus, e.g. '{leaks[0][0]}' as "
                           f"'{leaks[0][1]}'")
    return n


# ================================================================================================ sources


@dataclass
class Item:
    """One source file (or rendered/generated sound) before decoding.

    ``origin``: stable id (path relative to the extraction root, or ``render:…``); ``meta``: caption metadata
    (``kind`` and fields); ``licence``; ``load``: returns float32 ``[samples]`` at 16 kHz; ``held_out``: the
    reason when it must stay out (a test prompt, kit or program), else ``""``.
    """

    origin: str
    meta: dict[str, str]
    licence: str
    load: Callable[[], np.ndarray]
    held_out: str = ""


@dataclass
class HeldOut:
    """What the corpus must not contain: prompt names (any Asterisk voice), drum kits, GM programs, and the test
    clips whose audio hashes :func:`check_no_test_leak` compares."""

    prompts: set[str] = field(default_factory=set)
    kits: set[str] = field(default_factory=set)
    programs: set[int] = field(default_factory=set)
    test_clips: list[Path] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"prompts": sorted(self.prompts), "kits": sorted(self.kits), "programs": sorted(self.programs),
                "test_clips": [str(p) for p in self.test_clips]}

    @classmethod
    def from_json(cls, d: dict) -> HeldOut:
        return cls(set(d["prompts"]), set(d["kits"]), {int(p) for p in d["programs"]},
                   [Path(p) for p in d["test_clips"]])


@dataclass
class Context:
    """What a source's item generator gets: the package fetcher, a work folder, the held-out sets, the seed."""

    sources: Sources
    work: Path
    held_out: HeldOut
    seed: int
    log: Callable[[str], None]


@dataclass(frozen=True)
class SourceSpec:
    """One corpus source.

    Args:
        name: unique source name (folder name under ``audio/`` and ``parts/``).
        package: Debian package (``None`` for the synthetic generator).
        items: ``(spec, context) -> Iterator[Item]``.
        folders: audio folders inside the package (relative to its extraction root), for file sources.
        describe: for file sources, ``(path relative to the root) -> meta`` or ``None`` to skip the file.
        licence: a fixed licence (overrides the copyright file; for free-text copyright files read by hand).
        licence_path: maps an installed path to the path matched against the copyright file's patterns.
        held_out: for file sources, ``(path, HeldOut) -> reason or ""``.
        decode: ``"auto"`` (kikimimi's loader) or ``"gsm"`` (headerless 8 kHz GSM 6.10).
        note: a short remark for the build record.
    """

    name: str
    package: str | None
    items: Callable[[SourceSpec, Context], Iterator[Item]]
    folders: tuple[str, ...] = ()
    describe: Callable[[str], dict | None] | None = None
    licence: str | None = None
    licence_path: Callable[[str], str] | None = None
    held_out: Callable[[str, HeldOut], str] | None = None
    decode: str = "auto"
    note: str = ""


AUDIO_SUFFIXES = (".wav", ".ogg", ".oga", ".flac", ".opus", ".gsm")


def _copyright(root: Path, package: str) -> Copyright | None:
    f = root / "usr/share/doc" / package / "copyright"
    return parse_copyright(f) if f.is_file() else None


def _load_gsm(path: Path) -> np.ndarray:
    try:
        wave, sr = sf.read(str(path), format="RAW", subtype="GSM610", samplerate=8000, channels=1, dtype="float32")
    except (RuntimeError, sf.LibsndfileError):
        return np.zeros(0, dtype=np.float32)
    return resample(np.asarray(wave, dtype=np.float32).reshape(-1), 8000, SAMPLE_RATE).astype(np.float32)


def file_items(spec: SourceSpec, ctx: Context) -> Iterator[Item]:
    """Items of a file source: every audio file under ``spec.folders`` that ``spec.describe`` keeps."""
    assert spec.package is not None and spec.describe is not None
    root = ctx.sources.extract(spec.package, spec.folders[0] if spec.folders else "usr")
    cr = _copyright(root, spec.package)
    for folder in spec.folders:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES):
            rel = path.relative_to(root).as_posix()
            meta = spec.describe(rel)
            if meta is None:
                continue
            lic = meta.pop("licence", None) or spec.licence
            if not lic:
                key = spec.licence_path(rel) if spec.licence_path else rel
                lic = cr.licence_for(key) if cr else "unknown"
            held = spec.held_out(rel, ctx.held_out) if spec.held_out else ""
            loader = (lambda p=path: _load_gsm(p)) if spec.decode == "gsm" else (lambda p=path: load_16k(p))
            yield Item(rel, meta, lic, loader, held)


# ------------------------------------------------------------------------------------------------ describers

SOUNDS = "usr/share/asterisk/sounds"
#: Asterisk voice folder → (language, speaker sex) beyond the five core voices of the language task
EXTRA_VOICES = {"it_IT_f_Menardi": ("italian", "woman"), "fr": ("french", "woman"), "es": ("spanish", "")}
_PHONETIC = re.compile(r"^([a-z]+)_p$")


def _prompt_of(rel: str) -> tuple[str, str]:
    """``usr/share/asterisk/sounds/<voice>/<prompt>.<ext>`` → ``(voice, prompt)``."""
    parts = rel.split("/")
    return parts[4], "/".join(parts[5:]).rsplit(".", 1)[0]


def describe_asterisk(rel: str) -> dict | None:
    voice, prompt = _prompt_of(rel)
    language, sex = VOICES.get(voice) or EXTRA_VOICES.get(voice, ("", ""))
    if not language:
        return None
    if prompt.startswith("silence/"):
        return None
    if NON_SPEECH.match(prompt):
        return {"kind": "tone", "name": words_of(prompt.split("/")[-1]) or "beep", "voice": voice}
    text = ""
    folder, _, leaf = prompt.rpartition("/")
    if folder == "digits" and leaf.isdigit():
        text = leaf
    elif folder == "letters" and len(leaf) == 1:
        text = leaf
    elif folder == "phonetic" and (m := _PHONETIC.match(leaf)):
        text = m.group(1)
    return {"kind": "speech", "language": language.capitalize(), "sex": sex, "voice": voice, "prompt": prompt,
            "text": text, "channel": "telephone"}


def asterisk_held_out(rel: str, held: HeldOut) -> str:
    _, prompt = _prompt_of(rel)
    return "language-task valid/test prompt" if prompt in held.prompts else ""


def asterisk_licence_path(rel: str) -> str:
    """The core-sound packages' copyright file names source files ``<lang>-…`` (``ru-*``: CC BY 3.0)."""
    voice, prompt = _prompt_of(rel)
    return f"{voice[:2]}-{prompt}"


def describe_moh(rel: str) -> dict | None:
    stem = Path(rel).stem
    artist, _, title = stem.partition("-")
    return {"kind": "music", "title": words_of(title or stem), "artist": words_of(artist), "style": "hold",
            "source": "a telephone hold line"}


KLETTRES_LANG = {"ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "en": "English",
                 "en_GB": "British English", "es": "Spanish", "fr": "French", "he": "Hebrew", "hu": "Hungarian",
                 "id": "Indonesian", "it": "Italian", "kn": "Kannada", "lt": "Lithuanian", "ml": "Malayalam",
                 "nb": "Norwegian", "nds": "Low German", "nl": "Dutch", "nn": "Norwegian Nynorsk",
                 "pt_BR": "Brazilian Portuguese", "ru": "Russian", "sk": "Slovak", "te": "Telugu", "tn": "Setswana",
                 "uk": "Ukrainian"}


def describe_klettres(rel: str) -> dict | None:
    parts = rel.split("/")  # usr/share/klettres/<lang>/<alpha|syllab>/<x>.ogg
    if len(parts) < 6 or parts[4] not in ("alpha", "syllab"):
        return None
    language = KLETTRES_LANG.get(parts[3], parts[3])
    text = re.sub(r"-\d+$", "", Path(parts[-1]).stem)
    if parts[4] == "alpha":
        return {"kind": "letter", "language": language, "letter": text, "lang_code": parts[3]}
    return {"kind": "syllable", "language": language, "text": text, "lang_code": parts[3]}


TONE_WORDS = {"1": "first", "2": "second", "3": "third", "4": "fourth", "5": "neutral"}


def describe_gcin(rel: str) -> dict | None:
    folder, stem = rel.split("/")[-2], Path(rel).stem  # ogg/<zhuyin+tone>/<voice>.ogg
    m = re.match(r"^(\D+)(\d)?$", folder)
    if not m:
        return None
    return {"kind": "syllable", "language": "Mandarin Chinese", "text": m.group(1),
            "tone": TONE_WORDS.get(m.group(2) or "", ""), "speaker": stem}


LMMS_CATEGORY = {"basses": "bass", "bassloops": "bass loop", "beats": "drum beat", "drums": "drum",
                 "effects": "sound effect", "instruments": "instrument", "latin": "latin percussion",
                 "misc": "miscellaneous", "shapes": "waveform", "stringsnpads": "strings and pads",
                 "waveforms": "waveform"}


def describe_lmms(rel: str) -> dict | None:
    parts = rel.split("/")  # usr/share/lmms/samples/<category>/…
    if len(parts) < 6:
        return None
    return {"kind": "sample", "category": LMMS_CATEGORY.get(parts[4], words_of(parts[4])),
            "name": words_of(Path(rel).stem), "source": "LMMS"}


SONIC_PI_PREFIX = {"ambi": "ambient", "bass": "bass", "bd": "bass drum", "drum": "drum", "elec": "electronic",
                   "glitch": "glitch", "guit": "guitar", "loop": "loop", "mehackit": "electronic",
                   "misc": "miscellaneous", "perc": "percussion", "sn": "snare drum", "tabla": "tabla",
                   "vinyl": "vinyl"}


def describe_sonic_pi(rel: str) -> dict | None:
    stem = Path(rel).stem
    prefix, _, rest = stem.partition("_")
    return {"kind": "sample", "category": SONIC_PI_PREFIX.get(prefix, words_of(prefix)),
            "name": words_of(rest or stem), "source": "Sonic Pi"}


def _theme(theme: str, drop: Sequence[str] = ()) -> Callable[[str], dict | None]:
    def describe(rel: str) -> dict | None:
        parent = Path(rel).parent.name
        category = "" if parent in ("stereo", "sounds", "sound", "sound-icons") else words_of(parent)
        if category.endswith("s") and category not in ("notifications",):
            category = category[:-1]
        category = {"notifications": "notification"}.get(category, category)
        event = words_of(Path(rel).stem, drop=drop)
        return {"kind": "event", "event": event or words_of(Path(rel).stem), "theme": theme, "category": category}
    return describe


def _game(game: str, music: Sequence[str] = ("music", "musics"), voices: str | None = None,
          speech: str | None = None, style: str = "video game") -> Callable[[str], dict | None]:
    """Describer for a game's files: folders named in ``music`` → music, ``voices`` → voice lines,
    ``speech`` (a folder pattern) → English dialogue, everything else → sound effects."""
    def describe(rel: str) -> dict | None:
        lower = rel.lower().split("/")
        stem = Path(rel).stem
        if any(m in lower for m in music):
            title = words_of(stem)
            title = "" if title in ("track", "music", "song", "theme", "") else title
            return {"kind": "music", "title": title, "style": style, "source": game}
        if voices and voices in lower:
            return {"kind": "voice", "text": words_of(stem), "game": game, "pack": rel.split("/")[-2]}
        if speech and re.search(speech, rel):
            return {"kind": "speech", "language": "English", "game": game, "sex": "", "text": ""}
        if re.search(r"music|mainzik", stem, flags=re.IGNORECASE):
            return {"kind": "music", "title": "", "style": style, "source": game}
        name = words_of(stem)
        generic = name in ("sound", "sfx", "snd", "effect", "music") or not re.search(r"[a-z]{3}", name)
        return {"kind": "sfx", "name": "" if generic else name, "game": game}
    return describe


def hydrogen_items(spec: SourceSpec, ctx: Context) -> Iterator[Item]:
    """Hydrogen drum-kit samples named by their kit's ``drumkit.xml`` (licence per kit); held-out kits skipped.
    An instrument with a drum name is a ``drum`` hit, any other (guitar strums, effects) a ``sample``."""
    assert spec.package is not None
    root = ctx.sources.extract(spec.package, spec.folders[0])
    cr = _copyright(root, spec.package)
    for xml in sorted((root / spec.folders[0]).glob("*/drumkit.xml")):
        kit, kit_licence, samples = parse_drumkit(xml)
        licence = normalise_licence(kit_licence) if kit_licence else _kit_licence(cr, xml.parent.name)
        seen: set[Path] = set()
        for inst, path in samples:
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            coarse = drum_class(inst) or ""
            if coarse:
                meta = {"kind": "drum", "piece": words_of(inst) or coarse, "coarse": coarse, "kit": kit,
                        "instrument": inst}
            else:
                category = words_of(re.sub(r"\([^)]*\)|\S+\.(com|org|net)\b", " ", kit))
                meta = {"kind": "sample", "category": category, "name": re.sub(r"[_\s]+", " ", inst).strip().lower(),
                        "source": "Hydrogen", "kit": kit}
            held = "drum-task valid/test kit" if kit in ctx.held_out.kits else ""
            yield Item(path.relative_to(root).as_posix(), meta, licence, lambda p=path: load_16k(p), held)


def _kit_licence(cr: Copyright | None, folder: str) -> str:
    """A kit without a ``<license>``: the copyright stanza for ``drumkits/<name>.h2drumkit`` whose name matches
    the kit folder (ignoring case, spaces and underscores), else the package default."""
    if cr is None:
        return "unknown"
    key = re.sub(r"[\s_-]+", "", folder).lower()
    for patterns, licence in cr.stanzas:
        for pat in patterns:
            stem = re.sub(r"\.h2drumkit$", "", pat.rsplit("/", 1)[-1])
            if re.sub(r"[\s_-]+", "", stem).lower() == key:
                return licence
    return cr.default


# ------------------------------------------------------------------------------------------------ renders

SLOT_S = 2.5
NOTE_S = 1.6
DRUM_SLOT_S = 1.5
NOTE_VELOCITIES = (45, 80, 115)
DRUM_VELOCITIES = (40, 70, 100, 127)
NOTES_PER_PROGRAM = 10


def dynamics(velocity: int) -> str:
    """MIDI velocity → ``soft`` (< 60), ``medium`` (< 100) or ``loud``."""
    return "soft" if velocity < 60 else "medium" if velocity < 100 else "loud"


def _render_fluidsynth(tool: str, soundfont: Path, midi: bytes, out_wav: Path) -> np.ndarray:
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    if not out_wav.exists():
        mid = out_wav.with_suffix(".mid")
        mid.write_bytes(midi)
        tmp = out_wav.with_suffix(".tmp.wav")
        cmd = [tool, "-ni", "-q", "-g", "0.6", "-R", "0", "-C", "0", "-r", str(SAMPLE_RATE), "-F", str(tmp),
               str(soundfont), str(mid)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not tmp.exists():
            raise SourceError(f"fluidsynth failed on '{mid}' with '{soundfont}': {res.stderr.strip()[-300:]}")
        tmp.replace(out_wav)
    return _read_render(out_wav)


def _render_timidity(tool: str, cfg: Path, midi: bytes, out_wav: Path) -> np.ndarray:
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    if not out_wav.exists():
        mid = out_wav.with_suffix(".mid")
        mid.write_bytes(midi)
        tmp = out_wav.with_suffix(".tmp.wav")
        cmd = [tool, "-c", str(cfg), "-Ow", "--output-mono", "-s", str(SAMPLE_RATE), "-EFreverb=0", "-EFchorus=0",
               "-o", str(tmp), str(mid)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not tmp.exists():
            raise SourceError(f"timidity failed on '{mid}' with '{cfg}': {(res.stderr or res.stdout).strip()[-300:]}")
        tmp.replace(out_wav)
    return _read_render(out_wav)


def _read_render(path: Path) -> np.ndarray:
    wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise SourceError(f"'{path}': the renderer wrote {sr} Hz, expected {SAMPLE_RATE}")
    return wave.mean(axis=1)


def note_plan(programs: Sequence[int], seed: int, per_program: int = NOTES_PER_PROGRAM) -> list[Note]:
    """``per_program`` pitches spread over each program's family range (seeded jitter), velocities cycling
    through :data:`NOTE_VELOCITIES`; one note per ``SLOT_S`` slot on channel 0."""
    rng = np.random.default_rng(seed)
    plan = []
    for prog in programs:
        lo, hi = FAMILY_RANGE[family_of(prog)]
        pitches = sorted({int(np.clip(round(p + rng.integers(-1, 2)), lo, hi))
                          for p in np.linspace(lo, hi, per_program)})
        for k, pitch in enumerate(pitches):
            plan.append(Note(len(plan) * SLOT_S, NOTE_S, pitch, NOTE_VELOCITIES[(k + prog) % 3], prog))
    return plan


def drum_plan(keys: Sequence[int], channel: int = 9) -> list[Note]:
    """Every GM drum key × :data:`DRUM_VELOCITIES`, one hit per ``DRUM_SLOT_S`` slot on ``channel`` (9 = GM
    percussion; a drum-kit soundfont whose kit is preset 0 of bank 0 plays on channel 0)."""
    return [Note(i * DRUM_SLOT_S, 0.3, key, vel, 0, channel)
            for i, (key, vel) in enumerate((k, v) for k in keys for v in DRUM_VELOCITIES)]


def _slots(plan: Sequence[Note], slot_s: float) -> tuple[bytes, int]:
    midi = midi_bytes(plan, silence_at=[n.start_s + slot_s - 0.05 for n in plan], end_s=len(plan) * slot_s)
    return midi, int(slot_s * SAMPLE_RATE)


def _slot_clips(render: Callable[[bytes, Path], np.ndarray], midi: bytes, wav: Path,
                n: int) -> Callable[[int], np.ndarray]:
    """``clip(i)``: the ``i``-th slot of ``n`` samples of ``midi`` rendered to ``wav`` (rendered once, on first use)."""
    rendered: dict[str, np.ndarray] = {}

    def clip(i: int) -> np.ndarray:
        if "wave" not in rendered:
            rendered["wave"] = render(midi, wav)
        return rendered["wave"][i * n : (i + 1) * n]

    return clip


def _note_items(ctx: Context, name: str, plan: list[Note], render: Callable[[bytes, Path], np.ndarray],
                soundfont: str, licence: str) -> Iterator[Item]:
    midi, n = _slots(plan, SLOT_S)
    clip = _slot_clips(render, midi, ctx.work / f"{name}-{hashlib.sha1(midi).hexdigest()[:10]}.wav", n)

    for i, note in enumerate(plan):
        fam = family_of(note.program)
        meta = {"kind": "note", "instrument": GM_PROGRAMS[note.program], "family": fam.replace("_", " "),
                "program": str(note.program), "pitch": str(note.pitch), "note": note_name(note.pitch),
                "velocity": str(note.velocity), "dynamics": dynamics(note.velocity), "soundfont": soundfont}
        if fam == "sound_effects":  # seashore, helicopter, applause …: a sound, not an instrument playing a note
            meta = {**meta, "kind": "sfx", "name": f"synthesized {GM_PROGRAMS[note.program]}"}
        held = "instrument-task valid/test program" if note.program in ctx.held_out.programs else ""
        yield Item(f"render:{soundfont}:p{note.program:03d}-n{note.pitch:03d}-v{note.velocity:03d}", meta, licence,
                   lambda i=i: clip(i), held)


def _drum_items(ctx: Context, name: str, keys: Sequence[int], render: Callable[[bytes, Path], np.ndarray],
                kit: str, soundfont: str, licence: str, channel: int = 9) -> Iterator[Item]:
    plan = drum_plan(keys, channel)
    midi, n = _slots(plan, DRUM_SLOT_S)
    clip = _slot_clips(render, midi, ctx.work / f"{name}-{hashlib.sha1(midi).hexdigest()[:10]}.wav", n)

    for i, note in enumerate(plan):
        meta = {"kind": "drum", "piece": GM_DRUMS[note.pitch], "kit": kit, "velocity": str(note.velocity),
                "dynamics": dynamics(note.velocity), "gm_key": str(note.pitch), "soundfont": soundfont}
        yield Item(f"render:{soundfont}:k{note.pitch:03d}-v{note.velocity:03d}", meta, licence, lambda i=i: clip(i))


def _package_licence(ctx: Context, package: str, probe: str, override: str | None) -> tuple[Path, str]:
    root = ctx.sources.extract(package, probe)
    if override:
        return root, override
    cr = _copyright(root, package)
    return root, cr.licence_for(probe) if cr else "unknown"


def soundfont_items(spec: SourceSpec, ctx: Context) -> Iterator[Item]:
    """One note per program (``NOTES_PER_PROGRAM`` pitches each) through a GM soundfont with fluidsynth; the
    open suite's instrument-task valid/test programs are skipped before rendering."""
    assert spec.package is not None
    root, licence = _package_licence(ctx, spec.package, spec.folders[0], spec.licence)
    tool = ctx.sources.tool("fluidsynth")
    sf_path = root / spec.folders[0]
    programs = [p for p in range(128) if p not in ctx.held_out.programs]
    plan = note_plan(programs, ctx.seed)
    yield from _note_items(ctx, spec.name, plan, lambda midi, out: _render_fluidsynth(tool, sf_path, midi, out),
                           sf_path.name, licence)


def avldrums_items(spec: SourceSpec, ctx: Context) -> Iterator[Item]:
    """Every GM drum key at four velocities through each AVL drum kit (fluidsynth); the licence is looked up for
    each ``.sf2`` file (the copyright file names ``sf2/*``: CC BY-SA 3.0)."""
    assert spec.package is not None
    root = ctx.sources.extract(spec.package, spec.folders[0])
    cr = _copyright(root, spec.package)
    tool = ctx.sources.tool("fluidsynth")
    for sf2 in sorted((root / spec.folders[0]).glob("*.sf2")):
        licence = spec.licence or (cr.licence_for(sf2.relative_to(root).as_posix()) if cr else "unknown")
        kit = words_of(re.sub(r"_\d+_LV2$", "", sf2.stem)).title()
        yield from _drum_items(ctx, f"{spec.name}-{slug(sf2.stem)}", sorted(GM_DRUMS),
                               lambda midi, out, sf2=sf2: _render_fluidsynth(tool, sf2, midi, out), kit, sf2.name,
                               licence, channel=0)


def freepats_items(spec: SourceSpec, ctx: Context) -> Iterator[Item]:
    """Freepats GUS patches through timidity: every program its ``freepats.cfg`` defines (notes) and its drum
    set (hits); valid/test programs of the open suite's instrument task are skipped."""
    assert spec.package is not None
    root, licence = _package_licence(ctx, spec.package, spec.folders[0], spec.licence)
    tool = ctx.sources.tool("timidity")
    cfg_src = root / "usr/share/doc/freepats/examples/freepats.cfg"
    text = cfg_src.read_text(encoding="utf-8", errors="replace")
    cfg = ctx.work / "freepats-timidity.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg, f"dir {root / spec.folders[0]}\n{text}")
    programs, drums, section = [], [], None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("bank 0"):
            section = "bank"
        elif s.startswith("drumset 0"):
            section = "drum"
        elif (m := re.match(r"^(\d+)\s+\S+\.pat", s)) and section:
            (programs if section == "bank" else drums).append(int(m.group(1)))
    keep = [p for p in programs if 0 <= p < 128 and p not in ctx.held_out.programs]

    def render(midi: bytes, out: Path) -> np.ndarray:
        return _render_timidity(tool, cfg, midi, out)

    yield from _note_items(ctx, spec.name, note_plan(keep, ctx.seed), render, "freepats", licence)
    yield from _drum_items(ctx, f"{spec.name}-drums", [k for k in drums if k in GM_DRUMS], render, "Freepats",
                           "freepats", licence)


SYNTHETIC_WORDS = {"tone": "a steady pure sine tone", "chirp": "a sine sweep gliding in pitch",
                   "noise_burst": "bursts of filtered noise", "harmonic_note": "a harmonic note that swells and fades",
                   "clicks": "a train of sharp clicks", "am_tone": "a tone with tremolo",
                   "fm_tone": "a tone with vibrato", "speech_like": "a buzzy vowel-like babble"}


def synthetic_items(spec: SourceSpec, ctx: Context, per_class: int = 40, duration_s: float = 4.0) -> Iterator[Item]:
    """kikimimi's own seeded synthetic sounds (:mod:`kikimimi.audio.synthetic`), ``per_class`` per class."""
    classes = [c for c in SOUND_CLASSES if c != "silence"] + ["speech_like"]
    for cls in classes:
        for i in range(per_class):
            def load(cls: str = cls, i: int = i) -> np.ndarray:
                rng = np.random.default_rng((ctx.seed, classes.index(cls), i, 0x0C))
                if cls == "speech_like":
                    return speech_like(duration_s, SAMPLE_RATE, rng)
                return make_sound(cls, duration_s, SAMPLE_RATE, rng)
            meta = {"kind": "synthetic", "what": SYNTHETIC_WORDS[cls], "class": cls}
            yield Item(f"synthetic:{cls}:{i:04d}", meta, "Apache-2.0", load)


def _files(name: str, package: str, folders: Sequence[str], describe: Callable[[str], dict | None],
           **kw) -> SourceSpec:
    return SourceSpec(name, package, file_items, tuple(folders), describe, **kw)


def _asterisk(package: str, voice: str, **kw) -> SourceSpec:
    return _files(package, package, [f"{SOUNDS}/{voice}"], describe_asterisk, held_out=asterisk_held_out, **kw)


_CORE_VOICES = {"asterisk-core-sounds-en-wav": "en_US_f_Allison", "asterisk-core-sounds-es-wav": "es_MX_f_Allison",
                "asterisk-core-sounds-fr-wav": "fr_CA_f_June", "asterisk-core-sounds-it-wav": "it_IT_m_Carlo",
                "asterisk-core-sounds-ru-wav": "ru_RU_f_IvrvoiceRU"}
WES = "usr/share/games/wesnoth/1.16"

#: every source, in build (and de-duplication priority) order
SOURCES: tuple[SourceSpec, ...] = (
    *(_asterisk(pkg, voice, licence_path=asterisk_licence_path) for pkg, voice in _CORE_VOICES.items()),
    _asterisk("asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi"),
    _asterisk("asterisk-prompt-fr-armelle", "fr", decode="gsm"),
    _asterisk("asterisk-prompt-es-co", "es", decode="gsm"),
    _files("asterisk-moh-opsound-wav", "asterisk-moh-opsound-wav", ["usr/share/asterisk/moh"], describe_moh),
    _files("klettres-data", "klettres-data", ["usr/share/klettres"], describe_klettres),
    _files("gcin-voice", "gcin-voice", ["usr/share/gcin-voice/ogg"], describe_gcin),
    SourceSpec("hydrogen-drumkits", "hydrogen-drumkits", hydrogen_items, ("usr/share/hydrogen/data/drumkits",)),
    _files("sonic-pi-samples", "sonic-pi-samples", ["usr/share/sonic-pi/samples"], describe_sonic_pi),
    _files("lmms-common", "lmms-common", ["usr/share/lmms/samples"], describe_lmms),
    _files("sound-theme-freedesktop", "sound-theme-freedesktop", ["usr/share/sounds/freedesktop"],
           _theme("freedesktop")),
    _files("lomiri-sounds", "lomiri-sounds", ["usr/share/sounds/lomiri"], _theme("Lomiri")),
    _files("yaru-theme-sound", "yaru-theme-sound", ["usr/share/sounds/Yaru"], _theme("Yaru")),
    _files("deepin-sound-theme", "deepin-sound-theme", ["usr/share/sounds/deepin"], _theme("Deepin")),
    _files("oxygen-sounds", "oxygen-sounds", ["usr/share/sounds"], _theme("KDE Oxygen", ("oxygen", "sys", "im"))),
    _files("sound-icons", "sound-icons", ["usr/share/sounds/sound-icons"], _theme("speech-dispatcher sound icon")),
    _files("psi-plus-sounds", "psi-plus-sounds", ["usr/share/psi-plus/sound"], _theme("Psi+ chat")),
    _files("eiskaltdcpp-sounds", "eiskaltdcpp-sounds", ["usr/share/eiskaltdcpp/sounds"], _theme("EiskaltDC++")),
    _files("hedgewars-data", "hedgewars-data", ["usr/share/games/hedgewars/Data/Sounds",
                                                 "usr/share/games/hedgewars/Data/Music"],
           _game("Hedgewars", voices="voices")),
    _files("wesnoth-1.16-data", "wesnoth-1.16-data", [WES], _game("Battle for Wesnoth")),
    _files("wesnoth-1.16-music", "wesnoth-1.16-music", [f"{WES}/data/core/music"],
           _game("Battle for Wesnoth", music=("music",), style="orchestral video game")),
    _files("fillets-ng-data", "fillets-ng-data", ["usr/share/games/fillets-ng"],
           _game("Fish Fillets", speech=r"/sound/[^/]+/en/")),
    _files("colobot-common-sounds", "colobot-common-sounds", ["usr/share/games/colobot"], _game("Colobot")),
    _files("heroes-sound-effects", "heroes-sound-effects", ["usr/share/games/heroes/sfx"], _game("Heroes")),
    _files("wordwarvi-sound", "wordwarvi-sound", ["usr/share/wordwarvi/sounds"], _game("Word War vi")),
    _files("warzone2100-music", "warzone2100-music", ["usr/share/games/warzone2100/music"],
           _game("Warzone 2100", style="electronic video game")),
    _files("supertux-data", "supertux-data", ["usr/share/games/supertux2"], _game("SuperTux", speech=r"/speech/")),
    _files("freedroidrpg-data", "freedroidrpg-data", ["usr/share/freedroidrpg/data/sound"],
           _game("FreedroidRPG", voices="tux_ingame_comments")),
    _files("xmoto-data", "xmoto-data", ["usr/share/games/xmoto"], _game("X-Moto")),
    _files("extremetuxracer-data", "extremetuxracer-data", ["usr/share/games/etr"], _game("Extreme Tux Racer")),
    _files("lincity-ng-data", "lincity-ng-data", ["usr/share/games/lincity-ng"], _game("LinCity-NG")),
    _files("frozen-bubble-data", "frozen-bubble-data", ["usr/share/games/frozen-bubble/snd"],
           _game("Frozen Bubble")),
    _files("tuxtype-data", "tuxtype-data", ["usr/share/tuxtype"], _game("Tux Typing")),
    _files("pingus-data", "pingus-data", ["usr/share/games/pingus/data/sounds"], _game("Pingus")),
    SourceSpec("hydrogen-drumkits-effects", "hydrogen-drumkits-effects", hydrogen_items,
               ("usr/share/hydrogen/data/drumkits",)),
    SourceSpec("musescore-general-soundfont-small", "musescore-general-soundfont-small", soundfont_items,
               ("usr/share/sounds/sf3/MuseScore_General_Lite.sf3",), licence="MIT",
               note="copyright file (free text): MIT, parts PD or CC0"),
    SourceSpec("fluid-soundfont-gm", "fluid-soundfont-gm", soundfont_items, ("usr/share/sounds/sf2/FluidR3_GM.sf2",),
               licence="MIT", note="FluidR3 GM soundfont: MIT (copyright file, free text)"),
    SourceSpec("avldrums.lv2-soundfont", "avldrums.lv2-soundfont", avldrums_items, ("usr/share/sounds/sf2",)),
    SourceSpec("freepats", "freepats", freepats_items, ("usr/share/midi/freepats",), licence="GPL-2+ with exception",
               note="copyright file (free text): GPL-2+ with a rendering exception"),
    SourceSpec("kikimimi-synthetic", None, synthetic_items, note="kikimimi's own generator (Apache-2.0)"),
)


# ================================================================================================ held out


def compute_held_out(sources: Sources, ref_dir: Path, seed: int = 0,
                     log: Callable[[str], None] = print) -> HeldOut:
    """Re-make the language-ID and drum-type tasks of the first run and the open suite (seed ``seed``) in
    ``ref_dir`` exactly as they are made (:mod:`kikimimi.data.registry_tasks`), and collect their valid/test
    prompt names and kits, their test clips, and the instrument task's valid/test programs. Cached in
    ``ref_dir/held_out-s<seed>.json`` (re-made when a clip is missing)."""
    ref_dir = Path(ref_dir)
    record = ref_dir / f"held_out-s{seed}.json"
    if record.is_file():
        held = HeldOut.from_json(json.loads(record.read_text(encoding="utf-8")))
        if all(p.is_file() for p in held.test_clips):
            return held
    log("   re-making the first run's and the open suite's language/drum test splits (held-out reference)")
    voices = {sources.path(pkg).name: sources.path(pkg) for pkg in ASTERISK_CORE}
    prompts = asterisk_prompts(voices)
    held = HeldOut()
    for name, (n_prompts, max_s) in LANGUAGE_TASKS.items():
        chosen = choose_language_prompts(prompts, n_prompts, seed)
        rows = build_language(prompts, chosen, ref_dir / name, seed, max_s=max_s)
        held.prompts |= {r["prompt"] for r in rows if r["split"] != "train"}
        held.test_clips += [ref_dir / name / r["file_name"] for r in rows if r["split"] == "test"]
    rows = build_drums(sources.path("hydrogen-drumkits"), ref_dir / "drums", seed, None, DRUM_TASK["max_s"])
    held.kits = {r["kit"] for r in rows if r["split"] != "train"}
    held.test_clips += [ref_dir / "drums" / r["file_name"] for r in rows if r["split"] == "test"]
    held.programs = {p for p, s in split_programs(seed).items() if s != "train"}
    atomic_write_json(record, held.to_json())
    return held


# ================================================================================================ build


@dataclass
class OpenCorpus:
    """What :func:`build_open_corpus` made."""

    root: Path
    manifest: Path
    corpus_csv: Path
    captions_csv: Path
    table: list[dict]
    hours: float
    files: int
    segments: int
    skipped: dict[str, int]
    seconds: float
    test_clips_checked: int
    unavailable: dict[str, str] = field(default_factory=dict)


def _read_records(path: Path) -> list[dict]:
    out = []
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is redone
    return out


def _write_segment(path: Path, q: np.ndarray) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        sf.write(fh, q, SAMPLE_RATE, format="WAV", subtype="PCM_16")


def _is_silent(q: np.ndarray) -> bool:
    return q.size == 0 or int(np.max(np.abs(q.astype(np.int32)))) < 4  # the float SILENT_PEAK (1e-4) in 16 bits


def _process(item: Item, spec: SourceSpec, out: Path, seen_files: dict[str, str], seen_segments: set[str],
             segment_s: float) -> dict:
    """Decode, hash, de-duplicate and cut one item; returns its record (segments relative to ``out``)."""
    rec: dict = {"origin": item.origin, "licence": item.licence, "meta": item.meta, "segments": []}
    wave = item.load()
    q = pcm16(wave) if wave.size else np.zeros(0, dtype=np.int16)
    if _is_silent(q):
        rec["skipped"] = "silent or undecodable"
        return rec
    file_sha, _ = fingerprints(q)
    rec["file_sha256"] = file_sha
    if file_sha in seen_files:
        rec["skipped"] = "duplicate"
        rec["duplicate_of"] = seen_files[file_sha]
        return rec
    seen_files[file_sha] = f"{spec.name}:{item.origin}"
    n = int(segment_s * SAMPLE_RATE)
    digest = hashlib.sha1(item.origin.encode("utf-8")).hexdigest()[:8]
    stem = slug(re.sub(r"\.[A-Za-z0-9]+$", "", item.origin.replace("/", "_")))[-80:] or "clip"
    for k, start in enumerate(range(0, q.shape[0], n)):
        seg = q[start : start + n]
        short = MIN_SEGMENT_S if start > 0 else MIN_SOUND_S  # a short one-shot is kept whole; short tails are not
        if seg.shape[0] < short * SAMPLE_RATE or _is_silent(seg):
            continue
        sha, onset = fingerprints(seg)
        if sha in seen_segments:
            continue
        seen_segments.add(sha)
        rel = f"audio/{spec.name}/{stem}~{digest}-{k:03d}.wav"
        _write_segment(out / rel, seg)
        rec["segments"].append({"file_name": rel, "start_s": round(start / SAMPLE_RATE, 3),
                                "duration_s": round(seg.shape[0] / SAMPLE_RATE, 3), "sha256": sha,
                                "onset_sha256": onset})
    return rec


def _skip_reason(item: Item, licences: str) -> str:
    if item.held_out:
        return item.held_out
    if item.licence == "unknown":
        return NO_LICENCE
    if licences == "permissive" and licence_family(item.licence) != "permissive":
        return "not permissive"
    return ""


def build_open_corpus(out_dir: str | os.PathLike, *, licences: str = "all", cache: str | os.PathLike | None = None,
                      sources: Sequence[SourceSpec] | None = None, only: Sequence[str] | None = None,
                      allow_network: bool = True, deb_dir: str | os.PathLike | None = None,
                      extracted: str | os.PathLike | None = None, held_out: HeldOut | None = None,
                      seed: int = 0, segment_s: float = SEGMENT_S, per_file: int = 3,
                      log: Callable[[str], None] = print) -> OpenCorpus:
    """Build (or finish, or reuse) the open corpus in ``out_dir``; see the module docstring.

    Args:
        out_dir: output folder (audio, manifest, captions, build record).
        licences: ``"all"`` or ``"permissive"`` (leaves out GPL, LGPL, GFDL, CC BY-SA and unknown licences).
        cache: package cache and work folder (default ``out_dir/../open-corpus-cache``); ``.deb`` files in
            ``cache/debian/debs``, extractions in ``cache/debian/x``, renders in ``cache/render``, the held-out
            reference clips in ``cache/reference``.
        sources: the source list (default :data:`SOURCES`); ``only``: names of the sources to use.
        allow_network: ``False`` never calls ``apt-get`` (a missing package raises ``SourceError``).
        deb_dir, extracted: already downloaded ``.deb`` files / an extraction tree (see :class:`Sources`).
        held_out: what to hold out (default: :func:`compute_held_out`, which needs the Asterisk core voices and
            hydrogen-drumkits).
        seed: seed of the held-out splits (the tasks' seed), note plans and synthetic sounds.
        segment_s: longest segment (s); per_file: training captions per file.
        log: progress printer.

    Raises:
        ValueError: bad ``licences`` or source names, ``out_dir`` was built with other settings, or another
            build is running in it (a lock on ``out_dir/.lock``).
        kikimimi.data.debian_sources.SourceError: a package or tool could not be fetched.
        kikimimi.data.splits.LeakageError: a test clip's audio is in the corpus.
    """
    t0 = time.perf_counter()
    if licences not in LICENCE_MODES:
        raise ValueError(f"licences must be one of {LICENCE_MODES}, got {licences!r}")
    out = Path(out_dir)
    specs = list(SOURCES if sources is None else sources)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate source names in {names}")
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; known: {names}")
        specs = [s for s in specs if s.name in set(only)]
    cache_dir = Path(cache) if cache is not None else out.parent / "open-corpus-cache"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ValueError(f"'{out}': another build is running in this folder") from None
        return _build(out, specs, licences, cache_dir, allow_network, deb_dir, extracted, held_out, seed, segment_s,
                      per_file, log, t0)


def _build(out: Path, specs: list[SourceSpec], licences: str, cache_dir: Path, allow_network: bool,
           deb_dir: str | os.PathLike | None, extracted: str | os.PathLike | None, held_out: HeldOut | None,
           seed: int, segment_s: float, per_file: int, log: Callable[[str], None], t0: float) -> OpenCorpus:
    # the source list may grow between runs (finished sources are kept); these settings may not change
    settings = {"version": CORPUS_VERSION, "licences": licences, "seed": seed, "segment_s": segment_s}
    settings_file = out / "settings.json"
    if settings_file.is_file():
        old = json.loads(settings_file.read_text(encoding="utf-8"))
        diff = sorted(k for k in settings if old.get(k) != settings[k])
        if diff:
            raise ValueError(f"'{out}': built with other settings ({', '.join(diff)}); use another folder")
    else:
        atomic_write_json(settings_file, settings)
    src = Sources(cache_dir / "debian", deb_dir=Path(deb_dir) if deb_dir else None,
                  extracted=Path(extracted) if extracted else None, allow_network=allow_network, log=log)
    if held_out is None:
        held_out = compute_held_out(src, cache_dir / "reference", seed, log)
    ctx = Context(src, cache_dir / "render", held_out, seed, log)

    seen_files: dict[str, str] = {}
    seen_segments: set[str] = set()
    records: dict[str, list[dict]] = {}
    versions: dict[str, str] = {}
    notes: dict[str, str] = {}
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    for spec in specs:  # de-duplicate against every finished source, also those listed after the one being built
        _remember(_read_records(parts / f"{spec.name}.jsonl"), spec, seen_files, seen_segments)
    unavailable: dict[str, str] = {}
    for spec in specs:
        if spec.note:
            notes[spec.name] = spec.note
        try:
            records[spec.name] = _build_source(spec, ctx, out, licences, seen_files, seen_segments, segment_s,
                                               versions, log)
        except SourceError as err:  # a package missing from this machine's apt sources, a renderer that fails
            unavailable[spec.name] = str(err)
            log(f"   {spec.name}: skipped, {err}")
    specs = [s for s in specs if s.name in records]

    rows = _manifest_rows(specs, records, versions)
    _write_outputs(out, rows, specs, src, per_file, seed)
    n_checked = check_no_test_leak(rows, held_out.test_clips)
    table = corpus_table(rows)
    skipped = Counter(r["skipped"] for recs in records.values() for r in recs if r.get("skipped"))
    hours = sum(float(r["duration_s"]) for r in rows) / 3600
    files = len({(r["source"], r["origin"]) for r in rows})
    seconds = time.perf_counter() - t0
    atomic_write_json(out / "build.json", {
        **settings, "sources": [s.name for s in specs], "hours": round(hours, 4),
        "audio_seconds": round(hours * 3600, 1), "files": files,
        "segments": len(rows), "table": table,
        "skipped": dict(skipped), "unavailable": unavailable, "versions": versions, "notes": notes,
        "held_out": {"prompts": len(held_out.prompts), "kits": sorted(held_out.kits),
                     "programs": sorted(held_out.programs)},
        "leak_check": f"{n_checked} test clips of the first run's and the open suite's language/drum tasks: "
                      "no whole-clip or onset hash in the corpus",
        "seconds": round(seconds, 1)})
    log(f"   open corpus: {hours:.2f} h, {files} files, {len(rows)} segments; leak check passed on {n_checked} "
        f"test clips; {seconds:.0f} s")
    return OpenCorpus(out, out / "manifest.jsonl", out / "corpus.csv", out / "captions.csv", table, hours, files,
                      len(rows), dict(skipped), seconds, n_checked, unavailable)


def _build_source(spec: SourceSpec, ctx: Context, out: Path, licences: str, seen_files: dict[str, str],
                  seen_segments: set[str], segment_s: float, versions: dict[str, str],
                  log: Callable[[str], None]) -> list[dict]:
    """Records of one source: read from ``parts/<name>.jsonl`` when finished, else made (resuming the partial)."""
    src = ctx.sources
    parts = out / "parts"
    done_file, partial = parts / f"{spec.name}.jsonl", parts / f"{spec.name}.partial.jsonl"
    if spec.package:
        versions[spec.package] = src.version(spec.package, src.extract(spec.package, spec.folders[0]
                                                                        if spec.folders else "usr"))
    if done_file.is_file():
        recs = _read_records(done_file)
        _remember(recs, spec, seen_files, seen_segments)
        log(f"   {spec.name}: done before ({len(recs)} files)")
        return recs
    t1 = time.perf_counter()
    recs = _read_records(partial)
    if recs:  # rewrite without a cut last line, then append
        atomic_write_text(partial, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
        log(f"   {spec.name}: resuming after {len(recs)} files")
    _remember(recs, spec, seen_files, seen_segments)
    done = {r["origin"] for r in recs}
    with open(partial, "a", encoding="utf-8") as fh:
        for item in spec.items(spec, ctx):
            if item.origin in done:
                continue
            reason = _skip_reason(item, licences)
            if reason:
                rec = {"origin": item.origin, "licence": item.licence, "meta": item.meta, "segments": [],
                       "skipped": reason}
            else:
                rec = _process(item, spec, out, seen_files, seen_segments, segment_s)
            recs.append(rec)
            done.add(item.origin)
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()
    partial.replace(done_file)
    secs = sum(seg["duration_s"] for r in recs for seg in r["segments"])
    log(f"   {spec.name}: {len(recs)} files, {secs / 3600:.2f} h in {time.perf_counter() - t1:.0f} s")
    return recs


def _remember(recs: Iterable[dict], spec: SourceSpec, seen_files: dict[str, str], seen_segments: set[str]) -> None:
    for r in recs:
        if r.get("file_sha256") and not r.get("skipped"):
            seen_files.setdefault(r["file_sha256"], f"{spec.name}:{r['origin']}")
        seen_segments.update(s["sha256"] for s in r["segments"])


def _manifest_rows(specs: Sequence[SourceSpec], records: dict[str, list[dict]],
                   versions: dict[str, str]) -> list[dict]:
    rows = []
    for spec in specs:
        for r in records[spec.name]:
            if r["licence"] == "unknown":  # kept by a build from before that rule: left out here
                continue
            for s in r["segments"]:
                rows.append({"file_name": s["file_name"], "source": spec.name, "package": spec.package or "kikimimi",
                             "version": versions.get(spec.package or "", "") if spec.package else "",
                             "licence": r["licence"], "licence_family": licence_family(r["licence"]),
                             "sha256": s["sha256"], "onset_sha256": s["onset_sha256"],
                             "file_sha256": r["file_sha256"], "start_s": s["start_s"],
                             "duration_s": s["duration_s"], "origin": r["origin"], "meta": r["meta"]})
    return rows


def _write_outputs(out: Path, rows: Sequence[dict], specs: Sequence[SourceSpec], src: Sources, per_file: int,
                   seed: int) -> None:
    atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file_name", "source", "package", "licence", "duration_s"])
    for r in rows:
        w.writerow([r["file_name"], r["source"], r["package"], r["licence"], f"{r['duration_s']:.3f}"])
    atomic_write_text(out / "corpus.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file_name", "caption", "template", "kind"])
    rng = np.random.default_rng(seed)
    for r in rows:
        for template, text in caption_file(r["meta"], per_file=per_file, rng=rng):
            w.writerow([r["file_name"], text, template, r["meta"]["kind"]])
    atomic_write_text(out / "captions.csv", buf.getvalue())
    atomic_write_json(out / "heldout_templates.json", heldout_templates())
    lic_dir = out / "licences"
    lic_dir.mkdir(exist_ok=True)
    for spec in specs:
        if spec.package:
            f = src.extract(spec.package, spec.folders[0] if spec.folders else "usr") / "usr/share/doc" / \
                spec.package / "copyright"
            if f.is_file():
                shutil.copyfile(f, lic_dir / f"{spec.package}.copyright")


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``manifest.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def corpus_table(rows: Iterable[dict]) -> list[dict]:
    """Per (package, licence): files, segments and hours, sorted by hours (largest first)."""
    acc: dict[tuple[str, str], dict] = defaultdict(lambda: {"files": set(), "segments": 0, "seconds": 0.0})
    for r in rows:
        a = acc[(r["package"], r["licence"])]
        a["files"].add(r["origin"])
        a["segments"] += 1
        a["seconds"] += float(r["duration_s"])
    table = [{"package": p, "licence": lic, "family": licence_family(lic), "files": len(a["files"]),
              "segments": a["segments"], "hours": round(a["seconds"] / 3600, 4)} for (p, lic), a in acc.items()]
    return sorted(table, key=lambda t: (-t["hours"], t["package"], t["licence"]))


def format_table(table: Sequence[dict]) -> str:
    """The corpus table as Markdown, with a total line."""
    lines = ["| package | licence | family | files | segments | hours |", "|---|---|---|---:|---:|---:|"]
    for t in table:
        lines.append(f"| {t['package']} | {t['licence']} | {t['family']} | {t['files']} | {t['segments']} | "
                     f"{t['hours']:.2f} |")
    lines.append(f"| **total** | | | {sum(t['files'] for t in table)} | {sum(t['segments'] for t in table)} | "
                 f"**{sum(t['hours'] for t in table):.2f}** |")
    return "\n".join(lines)


#: every kind a describer can produce has templates (checked at import)
assert all(k in TEMPLATES for k in ("speech", "letter", "syllable", "drum", "note", "event", "voice", "sfx", "music",
                                    "sample", "synthetic", "tone"))
