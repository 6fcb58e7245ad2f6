"""Audio–caption pairs from task metadata, with held-out templates and held-out sources, and zero-shot labels.

Train captions (for the train/valid clips of every task) use only *train* templates; test captions (for the
test clips: unseen prompts, kits and programs, plus the second soundfont, a source never captioned in train)
use only *test* templates, so no template phrase is shared between the sides and the template words alone
cannot identify a clip: within a template only the content words (language, drum type, family, note …) differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LANGUAGE_WORD = {"english": "English", "spanish": "Spanish", "french": "French", "italian": "Italian",
                 "russian": "Russian"}
DRUM_WORD = {"kick": "kick drum", "snare": "snare drum", "hihat": "hi-hat", "tom": "tom-tom", "cymbal": "cymbal",
             "other": "hand percussion"}
FAMILY_WORD = {"piano": "piano", "chromatic_percussion": "mallet percussion", "organ": "organ", "guitar": "guitar",
               "bass": "bass", "strings": "string", "ensemble": "string ensemble", "brass": "brass", "reed": "reed",
               "pipe": "flute", "synth_lead": "synth lead", "synth_pad": "synth pad", "ethnic": "ethnic",
               "percussive": "percussive"}
VELOCITY_WORD = {"70": "soft", "100": "medium", "120": "loud"}

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "language_id": {
        "train": ("a {gender} speaking {language}", "{language} speech from a telephone system",
                  "a short spoken message in {language}"),
        "test": ("a recorded announcement in the {language} language", "{language} words said by a {gender}"),
    },
    "drum_type": {
        "train": ("a {drum} hit", "one {drum} sample from the {kit} drum kit", "a single {drum} sound"),
        "test": ("the sound of a {drum} being struck once", "a short isolated {drum}"),
    },
    "instrument_family": {
        "train": ("a {family} instrument playing {note}", "a single {note} note on a {family} instrument",
                  "a {velocity} {family} note"),
        "test": ("one note played on a {family} instrument, pitch {note}", "a {velocity} tone from a {family}"),
    },
}

ZERO_SHOT = {
    "language_id": {k: [f"a person speaking {v}", f"{v} speech"] for k, v in LANGUAGE_WORD.items()},
    "drum_type": {k: [f"a {v} hit", f"the sound of a {v}"] for k, v in DRUM_WORD.items()},
    "instrument_family": {k: [f"a {v} instrument note", f"the sound of a {v}"] for k, v in FAMILY_WORD.items()},
}


def _fields(task: str, row: dict) -> dict[str, str]:
    if task == "language_id":
        return {"language": LANGUAGE_WORD[row["label"]], "gender": row.get("gender", "person")}
    if task == "drum_type":
        return {"drum": DRUM_WORD[row["label"]], "kit": row.get("kit", "")}
    return {"family": FAMILY_WORD[row["label"]], "note": row.get("note", ""),
            "velocity": VELOCITY_WORD.get(row.get("velocity", ""), "medium")}


def caption_rows(task_rows: dict[str, Sequence[dict]], seed: int = 0, per_file: int = 2) -> list[dict]:
    """``file_name,caption,split,task,source,template`` rows; ``split`` is ``train`` (task train+valid) or ``test``.

    Args:
        task_rows: ``{task name: rows}``; ``instrument_family_shifted`` test rows join the test side only.
        seed: seeds the choice of templates per file.
        per_file: captions per file (distinct templates; at most the templates available on that side).
    """
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    seen: set[str] = set()
    for task, rows in task_rows.items():
        base = "instrument_family" if task.startswith("instrument_family") else task
        for row in rows:
            side = "test" if row["split"] == "test" else "train"
            if task != base and side == "train":
                continue  # the shifted task shares its train rows with the main task
            if row["file_name"] in seen:
                continue
            seen.add(row["file_name"])
            templates = TEMPLATES[base][side]
            picks = rng.choice(len(templates), min(per_file, len(templates)), replace=False)
            fields = _fields(base, row)
            source = row.get("soundfont") or row.get("voice") or row.get("kit") or base
            for t in sorted(int(i) for i in picks):
                out.append({"file_name": row["file_name"], "caption": templates[t].format(**fields), "split": side,
                            "task": base, "source": source, "template": f"{base}/{side}/{t}"})
    check_caption_split(out)
    return out


def check_caption_split(rows: Sequence[dict]) -> None:
    """Assert that no file and no template is on both sides of the caption split."""
    for key in ("file_name", "template"):
        sides: dict[str, set[str]] = {}
        for r in rows:
            sides.setdefault(r[key], set()).add(r["split"])
        bad = sorted(k for k, s in sides.items() if len(s) > 1)
        if bad:
            raise ValueError(f"captions: {key} '{bad[0]}' is in both train and test")
