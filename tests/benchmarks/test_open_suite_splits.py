"""Split logic of the open suite (benchmarks/open_suite) on tiny fake folder trees: no real data, no network."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "open_suite"
sys.path.insert(0, str(SUITE))

import build_tasks as bt  # noqa: E402
import captions as cap  # noqa: E402
import corpus as cp  # noqa: E402
import midi  # noqa: E402
import splits  # noqa: E402
from clips import write_wav  # noqa: E402


def _tone(seconds: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- check_no_leakage
def test_check_no_leakage_accepts_clean_rows_and_names_leaking_group():
    rows = [{"file_name": "a.wav", "split": "train", "kit": "k1"}, {"file_name": "b.wav", "split": "test", "kit": "k2"}]
    splits.check_no_leakage(rows, "kit")
    rows.append({"file_name": "c.wav", "split": "test", "kit": "k1"})
    with pytest.raises(splits.LeakageError, match="kit 'k1' appears in splits \\['test', 'train'\\]"):
        splits.check_no_leakage(rows, "kit", name="drums")


def test_check_no_leakage_rejects_a_file_listed_twice_and_missing_columns():
    rows = [{"file_name": "a.wav", "split": "train"}, {"file_name": "a.wav", "split": "test"}]
    with pytest.raises(splits.LeakageError, match="file 'a.wav' is listed 2 times"):
        splits.check_no_leakage(rows)
    with pytest.raises(splits.LeakageError, match="no 'prompt' column"):
        splits.check_no_leakage([{"file_name": "a.wav", "split": "train"}], "prompt")


def test_check_disjoint_files():
    splits.check_disjoint_files(["a", "b"], ["c"])
    with pytest.raises(splits.LeakageError, match="1 evaluation file.*'b'"):
        splits.check_disjoint_files(["a", "b"], ["b", "c"])


def test_covering_group_split_puts_every_class_in_every_split_and_is_seeded():
    groups = {f"kit{i}": ["kick", "snare"] if i % 3 else ["kick", "snare", "tom"] for i in range(12)}
    m1 = splits.covering_group_split(groups, seed=3)
    assert m1 == splits.covering_group_split(groups, seed=3)
    assert set(m1) == set(groups)
    for s in splits.SPLITS:
        assert {c for g, sp in m1.items() if sp == s for c in groups[g]} == {"kick", "snare", "tom"}
    with pytest.raises(ValueError, match="cannot split"):  # 'tom' lives in a single group
        splits.covering_group_split({"a": ["kick", "tom"], "b": ["kick"], "c": ["kick"]}, max_tries=50)


# ----------------------------------------------------------------------------------------------- language task
def _asterisk_tree(root: Path, prompts: list[str]) -> dict[str, Path]:
    voices = {}
    for i, voice in enumerate(bt.VOICES):
        folder = root / voice
        for j, p in enumerate(prompts):
            write_wav(folder / f"{p}.wav", _tone(0.3, 200 + 50 * i + 10 * j))
        voices[voice] = folder
    write_wav(voices["en_US_f_Allison"] / "only-english.wav", _tone(0.3))  # not in every voice
    return voices


def test_language_task_splits_by_prompt_and_holds_out_corpus_prompts(tmp_path):
    names = [f"vm-p{i}" for i in range(10)] + ["digits/1", "digits/2", "beep"]
    prompts = bt.asterisk_prompts(_asterisk_tree(tmp_path / "src", names))
    assert set(prompts["digits/1"]) == set(bt.VOICES) and len(prompts["only-english"]) == 1
    chosen = bt.choose_language_prompts(prompts, 8, seed=0)
    assert "beep" not in chosen and "only-english" not in chosen and len(chosen) == 8
    rows = bt.build_language(prompts, chosen, tmp_path / "data", seed=0)
    assert len(rows) == 8 * 5
    splits.check_no_leakage(rows, "prompt")
    per_prompt = {}
    for r in rows:
        per_prompt.setdefault(r["prompt"], set()).add(r["split"])
        assert (tmp_path / "data" / r["file_name"]).is_file()
    assert all(len(s) == 1 for s in per_prompt.values())
    assert {r["split"] for r in rows} == set(splits.SPLITS)
    assert {r["label"] for r in rows if r["split"] == "test"} == {"english", "spanish", "french", "italian", "russian"}
    held_out = set(prompts) - set(chosen)
    assert held_out and not held_out & {r["prompt"] for r in rows}


# ----------------------------------------------------------------------------------------------- drum task
KIT_XML = """<?xml version="1.0" encoding="UTF-8"?>
<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit">
 <name>{name}</name><license>CC0</license>
 <instrumentList>{instruments}</instrumentList>
</drumkit_info>"""
INST = "<instrument><id>{i}</id><name>{name}</name><layer><filename>{file}</filename></layer></instrument>"


def _kit(root: Path, name: str, names: list[str]) -> None:
    folder = root / name
    insts = []
    for i, inst in enumerate(names):
        f = f"s{i}.wav"
        if inst != "23":  # an instrument slot without a sample file
            write_wav(folder / f, _tone(0.2, 100 + 40 * i))
        insts.append(INST.format(i=i, name=inst, file=f))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "drumkit.xml").write_text(KIT_XML.format(name=name, instruments="".join(insts)))


def test_drum_class_names():
    assert bt.drum_class("Pearl Kick") == "kick" and bt.drum_class("BassDrum") == "kick"
    assert bt.drum_class("Hi-Hat Closed (Paiste 14\")") == "hihat" and bt.drum_class("Closed HH") == "hihat"
    assert bt.drum_class("Snare Rimshot") == "snare" and bt.drum_class("Floor Tom") == "tom"
    assert bt.drum_class("Crash/Ride Bell") == "cymbal" and bt.drum_class("Cowbell") == "other"
    assert bt.drum_class("23") is None and bt.drum_class("FX") is None


def test_drum_task_splits_by_kit(tmp_path):
    for k in range(8):
        _kit(tmp_path / "kits", f"Kit {k}", ["Kick", "Snare", "Closed HH", "Tom Hi", "Crash", "Clap", "23", "Zap"])
    kit, licence, samples = bt.parse_drumkit(tmp_path / "kits" / "Kit 0" / "drumkit.xml")
    assert kit == "Kit 0" and licence == "CC0" and len(samples) == 8
    rows = bt.build_drums(tmp_path / "kits", tmp_path / "data", seed=1, cap_per_class=None)
    assert len(rows) == 8 * 6  # "23" has no file, "Zap" has no class
    splits.check_no_leakage(rows, "kit")
    for s in ("train", "test"):
        assert {r["label"] for r in rows if r["split"] == s} == set(bt.DRUM_CLASSES)
    (tmp_path / "kits" / "Kit 0" / "drumkit.xml").write_text("<drumkit_info><name>")
    with pytest.raises(ValueError, match="Kit 0.*not a readable drumkit.xml"):
        bt.parse_drumkit(tmp_path / "kits" / "Kit 0" / "drumkit.xml")


# ----------------------------------------------------------------------------------------------- instrument task
def test_program_split_holds_out_two_programs_per_family_and_plan_is_seeded():
    programs = bt.split_programs(seed=0)
    assert len(programs) == 8 * len(bt.TASK_FAMILIES)
    for fam in bt.TASK_FAMILIES:
        got = [programs[p] for p in programs if midi.family_of(p) == fam]
        assert sorted(got) == ["test", "test", "train", "train", "train", "train", "train", "valid"]
    assert not any(midi.family_of(p) in midi.EXCLUDED_FAMILIES for p in programs)
    plan = bt.note_plan(programs, 3, seed=0)
    assert plan == bt.note_plan(programs, 3, seed=0) and len(plan) == 3 * len(programs)
    assert [n.start_s for n in plan[:3]] == [0.0, bt.SLOT_S, 2 * bt.SLOT_S]
    for n in plan:
        lo, hi = midi.FAMILY_RANGE[midi.family_of(n.program)]
        assert lo <= n.pitch <= hi
    dense = bt.note_plan(programs, 12, seed=0)  # distinct pitches per program even when notes are dense
    assert len({(n.program, n.pitch) for n in dense}) == len(dense)


def test_midi_bytes_structure():
    data = midi.midi_bytes([midi.Note(0.0, 1.0, 60, 100, 5), midi.Note(1.0, 0.5, 64, 90, 5)],
                           silence_at=[2.9], end_s=3.0)
    assert data[:4] == b"MThd" and struct.unpack(">IHHH", data[4:14]) == (6, 0, 1, 480)
    assert data[14:18] == b"MTrk" and struct.unpack(">I", data[18:22])[0] == len(data) - 22
    track = data[22:]
    assert track.count(bytes([0xC0, 5])) == 1  # one program change for the repeated program
    assert bytes([0x90, 60, 100]) in track and bytes([0xB0, 120, 0]) in track and track.endswith(b"\xff\x2f\x00")
    assert midi.note_name(60) == "C4" and midi.family_of(0) == "piano" and midi.family_of(127) == "sound_effects"
    with pytest.raises(ValueError):
        midi.midi_bytes([midi.Note(0.0, 1.0, 128)])


# ----------------------------------------------------------------------------------------------- corpus and captions
def test_corpus_budget_and_segments(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        write_wav(src / f"f{i}.wav", _tone(12.0, 300 + i))
    rows: list[dict] = []
    used = cp.add_files(rows, "demo", cp.collect(src), tmp_path / "data", src, hours=15 / 3600, seed=0)
    assert used == 2  # 12 s from the first file, the last 3 s from the second
    assert abs(sum(float(r["duration_s"]) for r in rows) - 15.0) < 0.01
    assert all(float(r["duration_s"]) <= cp.SEGMENT_S for r in rows)
    assert all((tmp_path / "data" / r["file_name"]).is_file() for r in rows)


def test_random_music_avoids_forbidden_programs():
    notes, cuts = cp.random_music(30.0, programs=[0, 1, 2, 3], seed=0)
    assert len(cuts) == 3 and {n.program for n in notes if n.channel != 9} <= {0, 1, 2, 3}
    assert all(n.start_s + n.duration_s <= 30.0 for n in notes)


def test_captions_hold_out_templates_and_files():
    rows = {"drum_type": [{"file_name": f"d{i}.wav", "label": "kick", "split": s, "kit": "K"}
                          for i, s in enumerate(["train", "valid", "test"])],
            "instrument_family": [{"file_name": "n.wav", "label": "piano", "split": "test", "note": "C4",
                                   "velocity": "100"}],
            "instrument_family_shifted": [{"file_name": "n.wav", "label": "piano", "split": "train"},
                                          {"file_name": "m.wav", "label": "piano", "split": "test", "note": "C4",
                                           "velocity": "70", "soundfont": "Other.sf2"}]}
    out = cap.caption_rows(rows, seed=0)
    assert {r["file_name"] for r in out if r["split"] == "test"} == {"d2.wav", "n.wav", "m.wav"}
    train_t = {r["template"] for r in out if r["split"] == "train"}
    test_t = {r["template"] for r in out if r["split"] == "test"}
    assert train_t and test_t and not train_t & test_t
    assert any("soft" in r["caption"] for r in out if r["file_name"] == "m.wav")  # both test templates are used
    with pytest.raises(ValueError, match="template"):
        cap.check_caption_split([{"file_name": "a", "template": "t", "split": "train"},
                                 {"file_name": "b", "template": "t", "split": "test"}])
