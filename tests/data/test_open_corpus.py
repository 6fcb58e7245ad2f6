"""The open corpus builder (kikimimi.data.open_corpus) on a tiny fake package tree: no apt, no network.

The fake package mimics an extracted .deb: ``usr/share/doc/fakepkg/copyright`` (DEP-5), a gzip changelog that
gives the version, and a few generated WAVs (one a byte-for-byte copy of another under a new name, one 25 s
long, one under a GPL stanza).
"""

from __future__ import annotations

import ast
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kikimimi.data import open_corpus as oc
from kikimimi.data.clips import clip_file, write_wav
from kikimimi.data.licences import licence_family, licence_from_text, normalise_licence, parse_copyright
from kikimimi.data.midi import FAMILY_RANGE, family_of, split_programs
from kikimimi.data.open_captions import TEMPLATES, caption_file, check_templates_disjoint, heldout_templates, words_of
from kikimimi.data.splits import LeakageError

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "open_suite"
SRC = Path(__file__).resolve().parents[2] / "src" / "kikimimi"

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fake

Files: *
Copyright: 2020 Someone
License: GPL-2+

Files: sounds/free/*
Copyright: 2020 Someone Else
License: CC0-1.0

Files: share/sounds/fake/free/special.wav
License: CC-BY-SA-3.0

Files: debian/*
License: MIT

License: GPL-2+
 This program is free software.
"""


def _tone(seconds: float, freq: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.2 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture
def fake_tree(tmp_path: Path) -> Path:
    root = tmp_path / "x"
    doc = root / "usr/share/doc/fakepkg"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    with gzip.open(doc / "changelog.Debian.gz", "wt") as fh:
        fh.write("fakepkg (1.2-3) unstable; urgency=low\n\n  * Initial release.\n")
    snd = root / "usr/share/sounds/fake"
    write_wav(snd / "free/dialog-warning.wav", _tone(1.5, 440))
    sf.write(str(snd / "free/bell.wav"), _tone(0.8, 880, 22050), 22050)  # another rate: resampled
    (snd / "free/bell-copy.wav").write_bytes((snd / "free/bell.wav").read_bytes())  # same audio, new name
    write_wav(snd / "free/special.wav", _tone(0.7, 660))
    write_wav(snd / "gpl/door-knock.wav", _tone(1.0, 330))
    noise = 0.05 * np.random.default_rng(0).standard_normal(16000 * 25).astype(np.float32)
    write_wav(snd / "gpl/long-ambience.wav", _tone(25.0, 220) + noise)  # not periodic: no two segments alike
    return root


def _spec(items=oc.file_items) -> oc.SourceSpec:
    return oc.SourceSpec("fake", "fakepkg", items, ("usr/share/sounds/fake",), oc._theme("Fake"))


def _build(tree: Path, out: Path, **kw) -> oc.OpenCorpus:
    kw.setdefault("held_out", oc.HeldOut())
    return oc.build_open_corpus(out, cache=out.parent / "cache", sources=kw.pop("sources", [_spec()]),
                                allow_network=False, extracted=tree, log=lambda m: None, **kw)


# ------------------------------------------------------------------------------------------------ licences


def test_dep5_licence_lookup_matches_installed_paths(fake_tree):
    cr = parse_copyright(fake_tree / "usr/share/doc/fakepkg/copyright")
    assert cr.dep5 and cr.default == "GPL-2+"
    assert cr.licence_for("usr/share/sounds/fake/free/bell.wav") == "CC0-1.0"  # "free/*" as a suffix
    assert cr.licence_for("usr/share/sounds/fake/free/special.wav") == "CC-BY-SA-3.0"  # the most specific wins
    assert cr.licence_for("usr/share/sounds/fake/gpl/knock.wav") == "GPL-2+"
    assert all(lic != "MIT" for _, lic in cr.stanzas)  # debian/* (the packaging) is ignored


def test_free_text_copyright_and_licence_families(tmp_path):
    f = tmp_path / "copyright"
    f.write_text("These files are distributed under the Creative Commons Attribution-ShareAlike\n3.0 license.\n"
                 "The packaging is under the GNU General Public License.\n")
    cr = parse_copyright(f)
    assert not cr.dep5 and cr.licence_for("anything.wav") == "CC-BY-SA-3.0"
    assert licence_from_text("This work is licensed under the Creative Commons 0 License.") == "CC0-1.0"
    assert normalise_licence("cc-by ==> http://creativecommons.org/licenses/by/3.0/") == "CC-BY-3.0"
    assert normalise_licence("CC-BY-4.0") == "CC-BY-4.0"
    for lic, fam in [("CC0-1.0", "permissive"), ("CC-BY-3.0", "permissive"), ("MIT", "permissive"),
                     ("CC-BY-SA-3.0", "copyleft"), ("CC-SA-BY-3.0", "copyleft"), ("GPL-3 or LGPL-3", "copyleft"),
                     ("GFDL-1.3", "copyleft"), ("LGPL-3.0-or-later", "copyleft"), ("unknown", "unknown"),
                     ("Artistic-2", "unknown")]:
        assert licence_family(lic) == fam, lic


# ------------------------------------------------------------------------------------------------ build


def test_build_writes_manifest_dedups_and_cuts_segments(fake_tree, tmp_path):
    out = tmp_path / "corpus"
    res = _build(fake_tree, out)
    rows = oc.read_manifest(res.manifest)
    by_origin: dict[str, list[dict]] = {}
    for r in rows:
        by_origin.setdefault(r["origin"].rsplit("/", 2)[-2] + "/" + r["origin"].rsplit("/", 1)[-1], []).append(r)
    # bell-copy.wav is the same audio as bell.wav: kept once (the first in path order), the other a duplicate
    assert "free/bell-copy.wav" in by_origin and "free/bell.wav" not in by_origin
    assert res.skipped == {"duplicate": 1}
    # 25 s → 10 + 10 + 5 s segments; every row has package, version, licence, hashes, duration, caption metadata
    long = sorted(by_origin["gpl/long-ambience.wav"], key=lambda r: r["start_s"])
    assert [r["duration_s"] for r in long] == [10.0, 10.0, 5.0] and [r["start_s"] for r in long] == [0, 10, 20]
    assert len({r["sha256"] for r in long}) == 3 and len({r["file_sha256"] for r in long}) == 1
    r = by_origin["free/bell-copy.wav"][0]
    assert (r["package"], r["version"], r["licence"], r["licence_family"]) == ("fakepkg", "1.2-3", "CC0-1.0",
                                                                                "permissive")
    assert by_origin["free/special.wav"][0]["licence"] == "CC-BY-SA-3.0"
    assert by_origin["gpl/door-knock.wav"][0]["licence"] == "GPL-2+"
    assert r["meta"]["kind"] == "event" and r["meta"]["event"] == "bell copy" and r["meta"]["theme"] == "Fake"
    # the stored hash is the hash of the segment file's 16-bit samples at 16 kHz
    q, sr = sf.read(str(out / r["file_name"]), dtype="int16")
    assert sr == 16000 and oc.fingerprints(q)[0] == r["sha256"]
    assert abs(r["duration_s"] - 0.8) < 0.01
    # corpus.csv, captions (≥ 2 train phrasings per file, each with its template id), build record, licences
    corpus = (out / "corpus.csv").read_text().splitlines()
    assert corpus[0] == "file_name,source,package,licence,duration_s" and len(corpus) == len(rows) + 1
    caps = (out / "captions.csv").read_text().splitlines()
    assert caps[0] == "file_name,caption,template,kind"
    per_file = {}
    for line in caps[1:]:
        per_file.setdefault(line.split(",")[0], []).append(line)
    assert set(per_file) == {r["file_name"] for r in rows} and min(map(len, per_file.values())) >= 2
    assert all("/train/" in line for line in caps[1:])
    build = json.loads((out / "build.json").read_text())
    assert build["segments"] == len(rows) and abs(build["audio_seconds"] - sum(r["duration_s"] for r in rows)) < 0.1
    assert {t["licence"] for t in build["table"]} == {"CC0-1.0", "CC-BY-SA-3.0", "GPL-2+"}
    assert (out / "licences/fakepkg.copyright").is_file()
    assert json.loads((out / "heldout_templates.json").read_text()) == heldout_templates()


def test_permissive_leaves_out_copyleft_and_settings_are_fixed_per_folder(fake_tree, tmp_path):
    res = _build(fake_tree, tmp_path / "perm", licences="permissive")
    rows = oc.read_manifest(res.manifest)
    assert rows and {r["licence"] for r in rows} == {"CC0-1.0"}
    assert res.skipped["not permissive"] == 3  # special (CC BY-SA), door-knock and long-ambience (GPL)
    with pytest.raises(ValueError, match="other settings"):
        _build(fake_tree, tmp_path / "perm", licences="all")
    with pytest.raises(ValueError, match="licences must be"):
        _build(fake_tree, tmp_path / "x", licences="open")


def test_a_package_that_cannot_be_fetched_is_skipped_and_recorded(fake_tree, tmp_path):
    missing = oc.SourceSpec("missing", "no-such-package", oc.file_items, ("usr/share/none",), oc._theme("X"))
    res = _build(fake_tree, tmp_path / "c", sources=[missing, _spec()])
    assert list(res.unavailable) == ["missing"] and "downloads are disabled" in res.unavailable["missing"]
    assert res.segments > 0 and json.loads((tmp_path / "c/build.json").read_text())["unavailable"] == res.unavailable


def test_a_source_added_later_is_deduplicated_against_finished_ones(fake_tree, tmp_path):
    out = tmp_path / "c"
    first = oc.read_manifest(_build(fake_tree, out).manifest)
    subset = oc.SourceSpec("fake-free", "fakepkg", oc.file_items, ("usr/share/sounds/fake/free",), oc._theme("Y"))
    res = _build(fake_tree, out, sources=[subset, _spec()])  # listed first, built after "fake" was finished
    assert sorted(r["sha256"] for r in oc.read_manifest(res.manifest)) == sorted(r["sha256"] for r in first)
    recs = [json.loads(line) for line in (out / "parts/fake-free.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(r["skipped"] == "duplicate" for r in recs)


def test_a_killed_build_resumes_without_redoing_files(fake_tree, tmp_path):
    fresh = oc.read_manifest(_build(fake_tree, tmp_path / "fresh").manifest)

    class Killed(BaseException):
        pass

    def dies_after_two(spec, ctx):
        for i, item in enumerate(oc.file_items(spec, ctx)):
            if i == 2:
                raise Killed
            yield item

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        _build(fake_tree, out, sources=[_spec(dies_after_two)])
    partial = out / "parts/fake.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 2 and not (out / "manifest.jsonl").exists()
    with open(partial, "a") as fh:
        fh.write('{"origin": "usr/share/sou')  # a line cut by the kill
    loaded: list[str] = []

    def counting(spec, ctx):
        for item in oc.file_items(spec, ctx):
            load = item.load
            item.load = lambda load=load, o=item.origin: (loaded.append(o), load())[1]
            yield item

    res = _build(fake_tree, out, sources=[_spec(counting)])
    assert len(loaded) == 6 - 2  # the two recorded files are not decoded again
    rows = oc.read_manifest(res.manifest)
    assert sorted(r["sha256"] for r in rows) == sorted(r["sha256"] for r in fresh)
    assert (out / "parts/fake.jsonl").is_file() and not partial.exists()
    _build(fake_tree, out, sources=[_spec(counting)])  # a finished build is reused as is
    assert len(loaded) == 4


def test_leak_check_catches_a_test_clip_cut_from_a_corpus_file(fake_tree, tmp_path):
    # a task's test clip is the first second of a source file, written by the task builder (clip_file)
    src = fake_tree / "usr/share/sounds/fake/gpl/long-ambience.wav"
    clip = tmp_path / "ref/test-clip.wav"
    assert clip_file(src, clip, max_s=1.0) == 1.0
    with pytest.raises(LeakageError, match="test-clip.wav"):
        _build(fake_tree, tmp_path / "leaky", held_out=oc.HeldOut(test_clips=[clip]))
    rows = oc.read_manifest(tmp_path / "leaky/manifest.jsonl")
    with pytest.raises(LeakageError):
        oc.check_no_test_leak(rows, [clip])
    # a clip of audio that is not in the corpus passes; so does the corpus without the leaking file
    other = tmp_path / "ref/other.wav"
    write_wav(other, _tone(1.0, 1234))
    assert oc.check_no_test_leak(rows, [other]) == 1
    clean = [r for r in rows if not r["origin"].endswith("long-ambience.wav")]
    assert oc.check_no_test_leak(clean, [clip, other]) == 2


def test_held_out_asterisk_prompts_and_licence_paths():
    held = oc.HeldOut(prompts={"vm-intro", "digits/7"})
    rel = "usr/share/asterisk/sounds/fr_CA_f_June/digits/7.wav"
    assert oc.asterisk_held_out(rel, held) == "language-task valid/test prompt"
    assert oc.asterisk_held_out("usr/share/asterisk/sounds/it_IT_f_Menardi/vm-intro.wav", held)  # any voice
    assert oc.asterisk_held_out("usr/share/asterisk/sounds/fr/vm-goodbye.gsm", held) == ""
    meta = oc.describe_asterisk(rel)
    assert (meta["kind"], meta["language"], meta["sex"], meta["text"]) == ("speech", "French", "woman", "7")
    assert oc.describe_asterisk("usr/share/asterisk/sounds/it_IT_m_Carlo/beep.wav")["kind"] == "tone"
    assert oc.describe_asterisk("usr/share/asterisk/sounds/en_US_f_Allison/silence/1.wav") is None
    assert oc.asterisk_licence_path("usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU/vm-intro.wav") == "ru-vm-intro"


KIT_XML = """<?xml version="1.0"?>
<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit">
 <name>{name}</name><license>CC0</license>
 <instrumentList>{instruments}</instrumentList>
</drumkit_info>"""
INST = "<instrument><id>{i}</id><name>{name}</name><layer><filename>{file}</filename></layer></instrument>"


def _fake_tasks_tree(root: Path) -> None:
    """Five Asterisk voices speaking the same 12 prompts (distinct audio each) and 6 two-piece drum kits."""
    rng = np.random.default_rng(1)
    for v, voice in enumerate(oc._CORE_VOICES.values()):
        for k in range(12):
            noise = 0.02 * rng.standard_normal(8000).astype(np.float32)
            write_wav(root / oc.SOUNDS / voice / f"vm-prompt{k:02d}.wav", _tone(0.5, 200 + 30 * k + 7 * v) + noise)
    for n in range(6):
        folder = root / "usr/share/hydrogen/data/drumkits" / f"Kit{n}"
        insts = []
        for i, name in enumerate(("Kick", "Snare")):
            write_wav(folder / f"s{i}.wav", _tone(0.3, 90 + 50 * n + 300 * i))
            insts.append(INST.format(i=i, name=name, file=f"s{i}.wav"))
        (folder / "drumkit.xml").write_text(KIT_XML.format(name=f"Kit{n}", instruments="".join(insts)))
    for package in ("asterisk-core-sounds-fr-wav", "hydrogen-drumkits"):  # a file with no licence is left out
        doc = root / "usr/share/doc" / package
        doc.mkdir(parents=True, exist_ok=True)
        (doc / "copyright").write_text("These files are under the GNU General Public License.\n")


def test_compute_held_out_remakes_the_task_splits_and_the_corpus_keeps_them_out(tmp_path, monkeypatch):
    from kikimimi.data.debian_sources import Sources

    tree = tmp_path / "x"
    _fake_tasks_tree(tree)
    monkeypatch.setattr(oc, "LANGUAGE_TASKS", {"tiny-a": (8, 0.3), "tiny-b": (10, 0.4)})
    src = Sources(tmp_path / "deb", extracted=tree, allow_network=False)
    held = oc.compute_held_out(src, tmp_path / "ref", seed=0, log=lambda m: None)
    assert held.prompts and held.kits and len(held.programs) == 42
    assert all(p.is_file() for p in held.test_clips) and len(held.test_clips) > 10
    assert oc.compute_held_out(src, tmp_path / "ref", seed=0).to_json() == held.to_json()  # cached
    specs = [oc._asterisk("asterisk-core-sounds-fr-wav", "fr_CA_f_June"),
             oc.SourceSpec("hydrogen-drumkits", "hydrogen-drumkits", oc.hydrogen_items,
                           ("usr/share/hydrogen/data/drumkits",))]
    res = oc.build_open_corpus(tmp_path / "c", cache=tmp_path / "cache", sources=specs, allow_network=False,
                               extracted=tree, held_out=held, log=lambda m: None)
    rows = oc.read_manifest(res.manifest)
    prompts = {r["meta"]["prompt"] for r in rows if r["source"] == "asterisk-core-sounds-fr-wav"}
    kits = {r["meta"]["kit"] for r in rows if r["source"] == "hydrogen-drumkits"}
    assert prompts and not prompts & held.prompts and kits and not kits & held.kits
    assert res.test_clips_checked == len(held.test_clips)
    # without the held-out groups the same test clips are found in the corpus
    with pytest.raises(LeakageError):
        oc.build_open_corpus(tmp_path / "c2", cache=tmp_path / "cache", sources=specs, allow_network=False,
                             extracted=tree, held_out=oc.HeldOut(test_clips=held.test_clips), log=lambda m: None)


def test_held_out_programs_are_never_rendered():
    held = {p for p, s in split_programs(0).items() if s != "train"}
    assert len(held) == 3 * 14
    plan = oc.note_plan([p for p in range(128) if p not in held], seed=0)
    assert not {n.program for n in plan} & held
    assert all(FAMILY_RANGE[family_of(n.program)][0] <= n.pitch <= FAMILY_RANGE[family_of(n.program)][1]
               for n in plan)
    assert not any("timgm6mb" in s.name for s in oc.SOURCES)  # the suite's shifted-test soundfont


def test_rendered_notes_carry_their_gm_metadata(tmp_path):
    ctx = oc.Context(None, tmp_path, oc.HeldOut(programs={40}), 0, lambda m: None)
    plan = oc.note_plan([0, 40, 125], seed=0, per_program=2)
    items = list(oc._note_items(ctx, "x", plan, lambda midi, out: np.zeros(1), "sf.sf2", "MIT"))
    piano, helicopter = items[0].meta, items[-1].meta
    assert (piano["kind"], piano["instrument"], piano["family"], piano["soundfont"]) == \
        ("note", "acoustic grand piano", "piano", "sf.sf2")
    assert piano["note"] and piano["dynamics"] in ("soft", "medium", "loud") and items[0].licence == "MIT"
    assert helicopter["kind"] == "sfx" and helicopter["name"] == "synthesized helicopter"
    assert caption_file(helicopter) == [("sfx/train/name", "a synthesized helicopter sound effect"),
                                        ("sfx/train/name_short", "synthesized helicopter, a sound effect")]
    assert [bool(i.held_out) for i in items] == [False, False, True, True, False, False]  # program 40 held out


def test_drum_kit_soundfonts_take_the_licence_of_their_sf2_files(tmp_path, monkeypatch):
    from kikimimi.data.debian_sources import Sources

    root = tmp_path / "x"
    doc = root / "usr/share/doc/avldrums.lv2-soundfont"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
                                   "Files: *\nLicense: GPL-2+\n\nFiles: sf2/*\nLicense: CC-BY-SA-3.0\n")
    (root / "usr/share/sounds/sf2").mkdir(parents=True)
    (root / "usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2").write_bytes(b"RIFF")
    src = Sources(tmp_path / "deb", extracted=root, allow_network=False)
    monkeypatch.setattr(src, "tool", lambda binary: "/bin/false")  # nothing is rendered here
    spec = next(s for s in oc.SOURCES if s.name == "avldrums.lv2-soundfont")
    items = list(spec.items(spec, oc.Context(src, tmp_path / "r", oc.HeldOut(), 0, lambda m: None)))
    assert len(items) == len(oc.GM_DRUMS) * len(oc.DRUM_VELOCITIES)
    assert {i.licence for i in items} == {"CC-BY-SA-3.0"} and {i.meta["kit"] for i in items} == {"Black Pearl"}
    assert {i.meta["piece"] for i in items} >= {"snare drum", "closed hi-hat", "ride cymbal"}


def test_held_out_task_settings_match_the_first_run_and_the_open_suite():
    # the first run's default, read from its source (importing it would load torch)
    tree = ast.parse((SRC / "apps/first_run/real_data.py").read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "build_real_set")
    defaults = {a.arg: d.value for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True)
                if isinstance(d, ast.Constant)}
    assert oc.LANGUAGE_TASKS["first-run"][0] == defaults["n_prompts"]
    assert oc.LANGUAGE_TASKS["first-run"][1] == 3.0 and "build_language(prompts, chosen, root, seed, max_s=3.0)" in \
        (SRC / "apps/first_run/real_data.py").read_text()
    sys.path.insert(0, str(SUITE))
    try:
        import build_data
    finally:
        sys.path.remove(str(SUITE))
    for scale, cfg in build_data.SCALES.items():
        assert oc.LANGUAGE_TASKS[f"open-suite-{scale}"][0] == cfg["lang_prompts"]


# ------------------------------------------------------------------------------------------------ captions


EXAMPLES = {
    "speech": {"language": "French", "sex": "woman", "text": "7", "channel": "telephone"},
    "letter": {"language": "Czech", "letter": "a"},
    "syllable": {"language": "Mandarin Chinese", "text": "ㄅㄚ", "tone": "fourth"},
    "drum": {"piece": "snare drum", "kit": "Black Pearl", "dynamics": "loud"},
    "note": {"instrument": "cello", "family": "strings", "note": "C3", "dynamics": "soft"},
    "event": {"event": "dialog warning", "theme": "Yaru", "category": "notification"},
    "voice": {"text": "hello", "game": "Hedgewars"},
    "sfx": {"name": "sword", "game": "Battle for Wesnoth"},
    "music": {"title": "the deep path", "style": "orchestral", "source": "Battle for Wesnoth"},
    "sample": {"category": "electronic", "name": "flip", "source": "Sonic Pi"},
    "synthetic": {"what": "a steady pure sine tone"},
    "tone": {"name": "beep"},
}


def test_every_kind_gets_several_captions_with_template_ids():
    assert set(EXAMPLES) == set(TEMPLATES)
    for kind, fields in EXAMPLES.items():
        caps = caption_file({"kind": kind, **fields}, per_file=3)
        assert len(caps) >= 2, kind
        for tid, text in caps:
            assert tid.startswith(f"{kind}/train/") and "{" not in text
    got = dict(caption_file({"kind": "speech", **EXAMPLES["speech"]}, per_file=5))
    assert got["speech/train/text"] == 'a woman saying "7" in French'
    # a template whose field is missing is not used; "a" becomes "an" before a vowel
    assert "speech/train/text" not in dict(caption_file({"kind": "speech", "language": "French", "sex": "woman",
                                                         "channel": "telephone"}, per_file=5))
    assert dict(caption_file({"kind": "sample", **EXAMPLES["sample"]}))["sample/train/category_name"] == \
        "an electronic sample called flip"
    assert words_of("HubConnected2") == "hub connected" and words_of("Oxygen-Sys-Log-In", drop=["oxygen", "sys"]) \
        == "log in"


def test_test_templates_stay_out_of_training():
    train = [fmt for roles in TEMPLATES.values() for fmt in roles["train"].values()]
    check_templates_disjoint(train, heldout_templates().values())
    sys.path.insert(0, str(SUITE))
    try:
        import captions as suite_captions
    finally:
        sys.path.remove(str(SUITE))
    suite_test = [t for task in suite_captions.TEMPLATES.values() for t in task["test"]]
    check_templates_disjoint(train, suite_test)
    with pytest.raises(ValueError, match="used for training and for testing"):
        check_templates_disjoint(train, ["A {x} speaks {y} over a {z} line"])


def test_cli_lists_the_sources(capsys):
    import argparse

    from kikimimi.commands import data

    parser = argparse.ArgumentParser()
    data.add_arguments(parser)
    assert data.run(parser.parse_args(["open-corpus", "--list"])) == 0
    out = capsys.readouterr().out
    assert "klettres-data" in out and "kikimimi-synthetic" in out and "asterisk-moh-opsound-wav" in out
    assert data.run(parser.parse_args(["open-corpus"])) == 2
    assert "kikimimi data: error: open-corpus needs OUT" in capsys.readouterr().err


def test_a_file_whose_copyright_names_no_licence_is_left_out(fake_tree, tmp_path):
    """sound-theme-freedesktop's dialog-error.oga is in no stanza of a copyright file without ``Files: *``."""
    doc = fake_tree / "usr/share/doc/fakepkg/copyright"
    doc.write_text(COPYRIGHT.replace("Files: *\nCopyright: 2020 Someone\nLicense: GPL-2+\n\n", ""))
    res = _build(fake_tree, tmp_path / "corpus")
    rows = oc.read_manifest(res.manifest)
    assert {r["licence"] for r in rows} == {"CC0-1.0", "CC-BY-SA-3.0"}  # the gpl/ files have no stanza now
    assert res.skipped[oc.NO_LICENCE] == 2
    # a build made before this rule kept such files: the manifest leaves them out all the same
    part = tmp_path / "corpus/parts/fake.jsonl"
    recs = [json.loads(line) for line in part.read_text().splitlines()]
    for r in recs:
        if r.get("skipped") == oc.NO_LICENCE:
            r.pop("skipped")
            r["segments"] = [{"file_name": "audio/fake/old.wav", "start_s": 0, "duration_s": 1.0, "sha256": "x",
                              "onset_sha256": "y"}]
            r["file_sha256"] = "z"
    assert oc._manifest_rows([_spec()], {"fake": recs}, {}) == [r for r in oc._manifest_rows(
        [_spec()], {"fake": [x for x in recs if x["licence"] != "unknown"]}, {})]
