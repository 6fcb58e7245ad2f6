"""Write EVAR-style task CSVs from standard datasets already on disk, using their public metadata layouts.

Every adapter takes the dataset root folder (plus options) and returns a list of :class:`TaskRow`;
:func:`write_task_csv` writes them as ``file_name,label,split|fold[,extra columns]`` with paths relative to
the CSV's folder (so the CSV loads with :meth:`kikimimi.evaluation.tasks.Task.from_csv`). Audio files are not
read; only file names and metadata are used. Missing metadata files raise :class:`AdapterError` naming them.

===========  ==========================================================================================
key          layout expected under ``root``
===========  ==========================================================================================
esc50        ``meta/esc50.csv`` (filename, fold, category), ``audio/<filename>``
us8k         ``metadata/UrbanSound8K.csv`` (slice_file_name, fold, class), ``audio/fold<N>/<file>``
spcv2        ``<word>/<file>.wav``, ``validation_list.txt``, ``testing_list.txt``
gtzan        ``[genres|genres_original/]<genre>/<file>``; optional ``{train,valid,test}_filtered.txt``
nsynth       ``nsynth-{train,valid,test}/examples.json`` + ``audio/<note>.wav``
cremad       ``AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav`` (speaker-disjoint seeded split)
vc1          ``iden_split.txt`` ("1 id10001/xyz/00001.wav"), audio under ``wav/`` (or ``vox1_*_wav/wav``)
voxforge     a user CSV (file_name,label,split) or ``<language>/<speaker folder>/**/<file>``
surge        ``<tone>_<pitch>[_...].<ext>`` files (or a regex); optional tone→split CSV
fsd50k       ``FSD50K.ground_truth/{dev,eval}.csv``; ``FSD50K.{dev,eval}_audio/<fname>.wav``
as20k        ``balanced_train_segments.csv``, ``eval_segments.csv``; ``<YTID>.wav`` in audio folders
circor       ``training_data.csv`` (Patient ID, Recording locations:, Murmur); ``training_data/<pid>_*.wav``
===========  ==========================================================================================
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kikimimi.evaluation.tasks import SPLITS, group_split, stratified_split
from kikimimi.fileio import AUDIO_EXTENSIONS, atomic_write_text

__all__ = [
    "ADAPTERS",
    "AdapterError",
    "TaskRow",
    "adapt_as20k",
    "adapt_circor",
    "adapt_cremad",
    "adapt_esc50",
    "adapt_fsd50k",
    "adapt_gtzan",
    "adapt_nsynth",
    "adapt_spcv2",
    "adapt_surge",
    "adapt_us8k",
    "adapt_vc1",
    "adapt_voxforge",
    "write_task_csv",
]

class AdapterError(ValueError):
    """Dataset metadata is missing or malformed; the message names the file (and row)."""


@dataclass
class TaskRow:
    """One task CSV row: absolute audio ``path``, ``label`` (comma-joined if multi-label), ``split`` or
    ``fold``, and ``extra`` columns."""

    path: Path
    label: str
    split: str | None = None
    fold: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ helpers
def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise AdapterError(f"'{path}': {what} not found")
    return path


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a metadata CSV with stripped names and values; a missing required column raises
    :class:`AdapterError` naming the file."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = cols
        missing = [c for c in required if c not in cols]
        if missing:
            raise AdapterError(f"'{path}': missing column(s) {missing} (found {cols})")
        return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _int(value: str, path: Path, line: int, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise AdapterError(f"'{path}' line {line}: {column} must be an integer, got '{value}'") from None


# ------------------------------------------------------------------------------------------ adapters
def adapt_esc50(root: str | Path) -> list[TaskRow]:
    """ESC-50: 5 official folds, label = ``category``."""
    root = Path(root)
    meta = _need_file(root / "meta" / "esc50.csv", "ESC-50 metadata")
    rows = _read_csv(meta, ("filename", "fold", "category"))
    return [
        TaskRow(root / "audio" / r["filename"], r["category"], fold=_int(r["fold"], meta, i, "fold"))
        for i, r in enumerate(rows, start=2)
    ]


def adapt_us8k(root: str | Path) -> list[TaskRow]:
    """UrbanSound8K: 10 official folds, label = ``class``; audio under ``audio/fold<N>/``."""
    root = Path(root)
    meta = _need_file(root / "metadata" / "UrbanSound8K.csv", "UrbanSound8K metadata")
    out = []
    for i, r in enumerate(_read_csv(meta, ("slice_file_name", "fold", "class")), start=2):
        fold = _int(r["fold"], meta, i, "fold")
        out.append(TaskRow(root / "audio" / f"fold{fold}" / r["slice_file_name"], r["class"], fold=fold))
    return out


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise AdapterError(f"'{path}': split list not found")
    return {line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()}


def adapt_spcv2(root: str | Path) -> list[TaskRow]:
    """Speech Commands V2: word folders; ``validation_list.txt`` / ``testing_list.txt`` pick valid/test,
    everything else is train; ``_background_noise_`` is excluded."""
    root = Path(root)
    valid = _read_list(root / "validation_list.txt")
    test = _read_list(root / "testing_list.txt")
    out = []
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if word_dir.name.startswith((".", "_")):  # _background_noise_ and hidden folders
            continue
        for f in sorted(word_dir.glob("*.wav")):
            rel = f"{word_dir.name}/{f.name}"
            split = "valid" if rel in valid else "test" if rel in test else "train"
            out.append(TaskRow(f, word_dir.name, split=split))
    if not out:
        raise AdapterError(f"'{root}': no word folders with .wav files")
    return out


def _class_folders(root: Path) -> list[tuple[str, Path]]:
    """``(label, file)`` for every audio file in sub-folders of ``root``."""
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        out += [(d.name, f) for f in _audio_files(d)]
    return out


def adapt_gtzan(
    root: str | Path,
    *,
    split_dir: str | Path | None = None,
    ratios: Sequence[float] = (0.5, 0.2, 0.3),
    seed: int = 0,
) -> list[TaskRow]:
    """GTZAN genres. With ``{train,valid,test}_filtered.txt`` (lines ``blues/blues.00000.wav``) in
    ``split_dir`` (default: ``root``) only the listed files are used in those splits (the fault-filtered
    split); otherwise a seeded stratified split with ``ratios``."""
    root = Path(root)
    audio_root = next(
        (root / n for n in ("genres", "genres_original", "Data/genres_original") if (root / n).is_dir()), root
    )
    files = _class_folders(audio_root)
    if not files:
        raise AdapterError(f"'{audio_root}': no genre folders with audio files")
    sdir = Path(split_dir) if split_dir is not None else root
    lists = {s: sdir / f"{s}_filtered.txt" for s in SPLITS}
    if all(p.is_file() for p in lists.values()):
        by_rel = {f"{lab}/{f.name}": (lab, f) for lab, f in files}
        out = []
        for split, p in lists.items():
            for rel in p.read_text().splitlines():
                rel = rel.strip()
                if not rel:
                    continue
                if rel not in by_rel:
                    genre = rel.split("/")[0]
                    by_rel[rel] = (genre, audio_root / rel)  # keep; the extractor reports it if missing
                lab, f = by_rel[rel]
                out.append(TaskRow(f, lab, split=split))
        return out
    if split_dir is not None:
        missing = [str(p) for p in lists.values() if not p.is_file()]
        raise AdapterError(f"GTZAN split files not found: {missing}")
    splits = stratified_split([lab for lab, _ in files], ratios, seed)
    return [TaskRow(f, lab, split=s) for (lab, f), s in zip(files, splits, strict=True)]


def adapt_nsynth(root: str | Path, *, label_field: str = "instrument_family_str") -> list[TaskRow]:
    """NSynth: official train/valid/test; label = ``label_field`` of ``examples.json`` (default instrument
    family; ``pitch`` or ``velocity`` for the other EVAR NSynth tasks)."""
    root = Path(root)
    out = []
    for folder, split in (("nsynth-train", "train"), ("nsynth-valid", "valid"), ("nsynth-test", "test")):
        meta = _need_file(root / folder / "examples.json", f"NSynth {split} metadata")
        try:
            examples = json.loads(meta.read_text())
        except json.JSONDecodeError as e:
            raise AdapterError(f"'{meta}': invalid JSON ({e})") from None
        for note, info in sorted(examples.items()):
            if label_field not in info:
                raise AdapterError(f"'{meta}': example '{note}' has no field '{label_field}'")
            out.append(TaskRow(root / folder / "audio" / f"{note}.wav", str(info[label_field]), split=split))
    return out


_CREMAD_NAME = re.compile(
    r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{1,2})$"
)


def adapt_cremad(
    root: str | Path,
    *,
    label: str = "emotion",
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> list[TaskRow]:
    """CREMA-D: emotion code from ``1001_DFA_ANG_XX.wav``; speaker-disjoint seeded split by actor id.

    ``label="gender"`` reads ``VideoDemographics.csv`` (ActorID, Sex) from ``root``.
    """
    root = Path(root)
    audio = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    files = []
    for f in sorted(audio.glob("*.wav")):
        m = _CREMAD_NAME.match(f.stem)
        if m:
            files.append((f, m))
    if not files:
        raise AdapterError(f"'{audio}': no CREMA-D files named like 1001_DFA_ANG_XX.wav")
    sex: dict[str, str] = {}
    if label == "gender":
        demo = _need_file(root / "VideoDemographics.csv", "CREMA-D demographics")
        sex = {r["ActorID"]: r["Sex"] for r in _read_csv(demo, ("ActorID", "Sex"))}
    elif label != "emotion":
        raise ValueError(f"label must be 'emotion' or 'gender', got {label!r}")
    split_of = group_split([m["actor"] for _, m in files], ratios, seed)
    out = []
    for f, m in files:
        lab = m["emotion"] if label == "emotion" else sex.get(m["actor"], "")
        if not lab:
            raise AdapterError(f"'{root / 'VideoDemographics.csv'}': no Sex for actor {m['actor']}")
        out.append(TaskRow(f, lab, split=split_of[m["actor"]], extra={"speaker": m["actor"]}))
    return out


def adapt_vc1(root: str | Path, *, audio_dirs: Sequence[str | Path] | None = None) -> list[TaskRow]:
    """VoxCeleb1 identification: ``iden_split.txt`` (1 = train, 2 = valid, 3 = test); label = speaker id.

    Each file is looked up in ``audio_dirs`` (default ``wav``, ``vox1_dev_wav/wav``, ``vox1_test_wav/wav``,
    ``root``); the first folder holding it wins, else the first folder is used (reported at extraction).
    """
    root = Path(root)
    meta = _need_file(root / "iden_split.txt", "VoxCeleb1 identification split")
    dirs = (
        [Path(d) for d in audio_dirs]
        if audio_dirs
        else [root / "wav", root / "vox1_dev_wav" / "wav", root / "vox1_test_wav" / "wav", root]
    )
    codes = {"1": "train", "2": "valid", "3": "test"}
    out = []
    for i, line in enumerate(meta.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[0] not in codes:
            raise AdapterError(f"'{meta}' line {i}: expected '<1|2|3> idXXXXX/<video>/<n>.wav', got '{line}'")
        rel = parts[1]
        path = next((d / rel for d in dirs if (d / rel).is_file()), dirs[0] / rel)
        out.append(TaskRow(path, rel.split("/")[0], split=codes[parts[0]]))
    return out


def adapt_voxforge(
    root: str | Path,
    *,
    csv_path: str | Path | None = None,
    ratios: Sequence[float] = (0.69, 0.15, 0.16),
    seed: int = 0,
) -> list[TaskRow]:
    """VoxForge language id. With ``csv_path`` (columns file_name, label, split; paths relative to
    ``root``) the given split is used; otherwise ``root/<language>/<speaker folder>/**/<audio>`` with a
    seeded split by speaker folder (no speaker in two splits)."""
    root = Path(root)
    if csv_path is not None:
        path = _need_file(Path(csv_path), "VoxForge CSV")
        rows = _read_csv(path, ("file_name", "label", "split"))
        out = []
        for i, r in enumerate(rows, start=2):
            split = {"val": "valid"}.get(r["split"].lower(), r["split"].lower())
            if split not in SPLITS:
                raise AdapterError(f"'{path}' line {i}: unknown split '{r['split']}'")
            out.append(TaskRow(root / r["file_name"], r["label"], split=split))
        return out
    files = []
    for lang in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for spk in sorted(p for p in lang.iterdir() if p.is_dir()):
            files += [(lang.name, f"{lang.name}/{spk.name}", f) for f in _audio_files(spk)]
    if not files:
        raise AdapterError(f"'{root}': no <language>/<speaker>/ folders with audio files")
    split_of = group_split([g for _, g, _ in files], ratios, seed)
    return [TaskRow(f, lang, split=split_of[g], extra={"speaker": g}) for lang, g, f in files]


_SURGE_PATTERN = r"^(?P<tone>.+?)_(?P<pitch>\d{1,3})(?:_(?P<velocity>\d{1,3}))?$"


def adapt_surge(
    root: str | Path,
    *,
    pattern: str = _SURGE_PATTERN,
    split_csv: str | Path | None = None,
    ratios: Sequence[float] = (0.81, 0.09, 0.10),
    seed: int = 0,
) -> list[TaskRow]:
    """Surge synthesiser pitch task: label = pitch, split by tone preset (no preset in two splits).

    ``pattern`` is a regex on the file stem with groups ``tone`` and ``pitch``. ``split_csv`` maps tone
    presets to splits (a ``split`` column and the tone in a ``tone`` column, else the first column); without
    it a seeded split by preset with ``ratios``.
    """
    root = Path(root)
    rx = re.compile(pattern)
    files = []
    for f in _audio_files(root):
        m = rx.match(f.stem)
        if m:
            files.append((f, m["tone"], str(int(m["pitch"]))))
    if not files:
        raise AdapterError(f"'{root}': no audio files whose names match {pattern!r}")
    if split_csv is not None:
        path = _need_file(Path(split_csv), "Surge tone split CSV")
        text = path.read_text(encoding="utf-8-sig")
        reader = csv.DictReader(io.StringIO(text))
        cols = reader.fieldnames or []
        if "split" not in cols:
            raise AdapterError(f"'{path}': needs a 'split' column (found {cols})")
        tone_col = "tone" if "tone" in cols else cols[0]
        split_of = {}
        for i, r in enumerate(reader, start=2):
            split = {"val": "valid"}.get(r["split"].strip().lower(), r["split"].strip().lower())
            if split not in SPLITS:
                raise AdapterError(f"'{path}' line {i}: unknown split '{r['split']}'")
            split_of[r[tone_col].strip()] = split
        unknown = sorted({t for _, t, _ in files} - set(split_of))
        if unknown:
            raise AdapterError(f"'{path}': no split for tone preset(s) {unknown[:5]}")
    else:
        split_of = group_split([t for _, t, _ in files], ratios, seed)
    return [TaskRow(f, pitch, split=split_of[tone], extra={"tone": tone}) for f, tone, pitch in files]


def adapt_fsd50k(root: str | Path, *, use_mids: bool = False) -> list[TaskRow]:
    """FSD50K (multi-label): dev ``split`` train/val → train/valid, eval → test; label = ``labels`` names
    (or ``mids``)."""
    root = Path(root)
    gt = root / "FSD50K.ground_truth"
    column = "mids" if use_mids else "labels"
    out = []
    dev = _need_file(gt / "dev.csv", "FSD50K dev ground truth")
    for i, r in enumerate(_read_csv(dev, ("fname", column, "split")), start=2):
        split = {"train": "train", "val": "valid"}.get(r["split"])
        if split is None:
            raise AdapterError(f"'{dev}' line {i}: unknown split '{r['split']}' (train or val)")
        out.append(TaskRow(root / "FSD50K.dev_audio" / f"{r['fname']}.wav", r[column], split=split))
    ev = _need_file(gt / "eval.csv", "FSD50K eval ground truth")
    for r in _read_csv(ev, ("fname", column)):
        out.append(TaskRow(root / "FSD50K.eval_audio" / f"{r['fname']}.wav", r[column], split="test"))
    return out


def _read_audioset_segments(path: Path) -> list[tuple[str, str]]:
    """``(YTID, "mid1,mid2")`` from an AudioSet segments CSV (``#`` header lines skipped)."""
    out = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = next(csv.reader([line], skipinitialspace=True))
        if len(fields) < 4:
            raise AdapterError(
                f"'{path}' line {i}: expected YTID, start_seconds, end_seconds, positive_labels"
            )
        out.append((fields[0].strip(), fields[3].strip()))
    return out


def adapt_as20k(
    root: str | Path,
    *,
    train_audio: str | Path | None = None,
    eval_audio: str | Path | None = None,
    keep_missing: bool = False,
) -> list[TaskRow]:
    """AudioSet-20K (balanced train → train, eval → test, no valid; labels = MIDs, multi-label).

    Audio ``<YTID>.wav`` (or ``Y<YTID>.wav``) is looked up in ``train_audio`` / ``eval_audio`` (defaults:
    the first existing of ``balanced_train_segments``, ``balanced_train``, ``audio/balanced_train``, and
    the matching ``eval`` folders, else ``root``). Segments whose audio is missing are dropped unless
    ``keep_missing`` (availability varies per copy of AudioSet).
    """
    root = Path(root)

    def pick(given, names):
        if given is not None:
            return Path(given)
        return next((root / n for n in names if (root / n).is_dir()), root)

    parts = (
        (
            "balanced_train_segments.csv",
            "train",
            pick(train_audio, ("balanced_train_segments", "balanced_train", "audio/balanced_train")),
        ),
        ("eval_segments.csv", "test", pick(eval_audio, ("eval_segments", "eval", "audio/eval"))),
    )
    out = []
    for csv_name, split, folder in parts:
        meta = _need_file(root / csv_name, "AudioSet segments CSV")
        present = {p.stem: p for p in folder.glob("*.wav")}
        for ytid, labels in _read_audioset_segments(meta):
            path = present.get(ytid) or present.get(f"Y{ytid}")
            if path is None:
                if not keep_missing:
                    continue
                path = folder / f"{ytid}.wav"
            out.append(TaskRow(path, labels, split=split))
    return out


def adapt_circor(
    root: str | Path,
    *,
    split_csv: str | Path | None = None,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> list[TaskRow]:
    """CirCor DigiScope 2022: one row per recording ``<pid>_<loc>[_n].wav``, label = the patient's
    ``Murmur`` (Present / Unknown / Absent), extra columns ``recording_id`` and ``patient_id``.

    Split by patient: ``split_csv`` (columns ``patient_id``/``Patient ID`` and ``split``) or a seeded split
    stratified by murmur label.
    """
    root = Path(root)
    meta = _need_file(root / "training_data.csv", "CirCor metadata")
    loc_col = "Recording locations:"
    rows = _read_csv(meta, ("Patient ID", "Murmur"))
    if rows and loc_col not in rows[0]:
        loc_col = "Recording locations"
        if loc_col not in rows[0]:
            raise AdapterError(f"'{meta}': missing column 'Recording locations:'")
    audio = root / "training_data" if (root / "training_data").is_dir() else root
    patients: list[tuple[str, str, list[Path]]] = []
    for i, r in enumerate(rows, start=2):
        pid, murmur = r["Patient ID"], r["Murmur"]
        if murmur not in ("Present", "Unknown", "Absent"):
            raise AdapterError(f"'{meta}' line {i}: Murmur must be Present/Unknown/Absent, got '{murmur}'")
        files = sorted(audio.glob(f"{pid}_*.wav"))
        if not files:  # audio not present yet: name the expected files
            locs = [loc for loc in r[loc_col].split("+") if loc]
            names, seen = [], {}
            for loc in locs:
                seen[loc] = seen.get(loc, 0) + 1
            counter: dict[str, int] = {}
            for loc in locs:
                counter[loc] = counter.get(loc, 0) + 1
                names.append(f"{pid}_{loc}.wav" if seen[loc] == 1 else f"{pid}_{loc}_{counter[loc]}.wav")
            files = [audio / n for n in names]
        patients.append((pid, murmur, files))
    if split_csv is not None:
        path = _need_file(Path(split_csv), "CirCor split CSV")
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            pid_col = next((c for c in ("patient_id", "Patient ID") if c in cols), None)
            if pid_col is None or "split" not in cols:
                raise AdapterError(f"'{path}': needs columns patient_id (or 'Patient ID') and split")
            split_of = {r[pid_col].strip(): r["split"].strip().lower() for r in reader}
        missing = [p for p, _, _ in patients if p not in split_of]
        if missing:
            raise AdapterError(f"'{path}': no split for patient(s) {missing[:5]}")
    else:
        labels = [m for _, m, _ in patients]
        split_of = dict(zip([p for p, _, _ in patients], stratified_split(labels, ratios, seed), strict=True))
    out = []
    for pid, murmur, files in patients:
        for f in files:
            out.append(
                TaskRow(f, murmur, split=split_of[pid], extra={"recording_id": f.stem, "patient_id": pid})
            )
    return out


#: name → adapter; every adapter takes ``root`` and keyword options.
ADAPTERS: dict[str, Callable[..., list[TaskRow]]] = {
    "esc50": adapt_esc50,
    "us8k": adapt_us8k,
    "spcv2": adapt_spcv2,
    "gtzan": adapt_gtzan,
    "nsynth": adapt_nsynth,
    "cremad": adapt_cremad,
    "vc1": adapt_vc1,
    "voxforge": adapt_voxforge,
    "surge": adapt_surge,
    "fsd50k": adapt_fsd50k,
    "as20k": adapt_as20k,
    "circor": adapt_circor,
}


def write_task_csv(
    name: str, root: str | Path, out_csv: str | Path, *, absolute: bool = False, **options
) -> Path:
    """Run adapter ``name`` on ``root`` and write the task CSV.

    Args:
        name: a key of :data:`ADAPTERS`.
        root: dataset root folder.
        out_csv: CSV to write (parent folders created); paths are written relative to its folder unless
            ``absolute``.
        **options: adapter options (e.g. ``seed``, ``split_csv``).

    Returns:
        ``out_csv`` as a :class:`~pathlib.Path`.
    """
    if name not in ADAPTERS:
        raise ValueError(f"unknown dataset adapter {name!r}; choose one of {sorted(ADAPTERS)}")
    root = Path(root)
    if not root.is_dir():
        raise AdapterError(f"'{root}': dataset folder not found")
    rows = ADAPTERS[name](root, **options)
    if not rows:
        raise AdapterError(f"'{root}': the {name} adapter found no items")
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    base = out_csv.parent.resolve()
    extras = sorted({k for r in rows for k in r.extra})
    use_fold = rows[0].split is None
    header = ["file_name", "label", "fold" if use_fold else "split", *extras]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        path = Path(r.path).resolve()
        file_name = path.as_posix() if absolute else Path(os.path.relpath(path, base)).as_posix()
        writer.writerow(
            [file_name, r.label, r.fold if use_fold else r.split, *(r.extra.get(k, "") for k in extras)]
        )
    atomic_write_text(out_csv, buf.getvalue())  # a kikimimi temporary, never a fixed name a user's file may have
    return out_csv
