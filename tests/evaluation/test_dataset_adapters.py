"""Dataset adapters on tiny fake folder trees (empty placeholder audio files)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from kikimimi.evaluation.adapters import ADAPTERS, AdapterError, write_task_csv
from kikimimi.evaluation.tasks import Task


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(tmp_path: Path, name: str, root: Path, **kw) -> Task:
    out = write_task_csv(name, root, tmp_path / "tasks" / f"{name}.csv", **kw)
    return Task.from_csv(out, unit_s=1.0)


def test_registry_complete():
    assert set(ADAPTERS) == {
        "esc50",
        "us8k",
        "spcv2",
        "gtzan",
        "nsynth",
        "cremad",
        "vc1",
        "voxforge",
        "surge",
        "fsd50k",
        "as20k",
        "circor",
    }
    with pytest.raises(ValueError, match="unknown dataset adapter"):
        write_task_csv("nope", ".", "x.csv")


def test_esc50(tmp_path):
    root = tmp_path / "ESC-50-master"
    write(
        root / "meta/esc50.csv",
        "filename,fold,target,category,esc10,src_file,take\n"
        "1-100-A-0.wav,1,0,dog,True,100,A\n2-200-A-1.wav,2,1,rooster,False,200,A\n",
    )
    task = load(tmp_path, "esc50", root)
    assert task.is_cv and task.fold_ids() == [1, 2]
    assert task.items[0].path.resolve() == (root / "audio/1-100-A-0.wav").resolve()
    assert [it.label for it in task.items] == ["dog", "rooster"]
    with pytest.raises(AdapterError, match="esc50.csv"):
        write_task_csv("esc50", tmp_path / "tasks", tmp_path / "x.csv")


def test_us8k(tmp_path):
    root = tmp_path / "UrbanSound8K"
    write(
        root / "metadata/UrbanSound8K.csv",
        "slice_file_name,fsID,start,end,salience,fold,classID,class\n"
        "100032-3-0-0.wav,100032,0,0.3,1,5,3,dog_bark\n",
    )
    task = load(tmp_path, "us8k", root)
    assert task.items[0].path.resolve() == (root / "audio/fold5/100032-3-0-0.wav").resolve()
    assert task.items[0].fold == 5 and task.items[0].label == "dog_bark"


def test_spcv2(tmp_path):
    root = tmp_path / "spc"
    for w in ("yes", "no"):
        for i in range(3):
            touch(root / w / f"a{i}_nohash_0.wav")
    touch(root / "_background_noise_" / "white_noise.wav")
    write(root / "validation_list.txt", "yes/a0_nohash_0.wav\n")
    write(root / "testing_list.txt", "no/a1_nohash_0.wav\nno/a2_nohash_0.wav\n")
    task = load(tmp_path, "spcv2", root)
    splits = {it.key.split("spc/")[-1]: it.split for it in task.items}
    assert len(splits) == 6 and not any("background" in k for k in splits)
    assert splits["yes/a0_nohash_0.wav"] == "valid"
    assert splits["no/a2_nohash_0.wav"] == "test"
    assert Counter(splits.values()) == {"train": 3, "valid": 1, "test": 2}
    assert task.classes == ["no", "yes"]


def test_gtzan_split_files_and_seeded_split(tmp_path):
    root = tmp_path / "gtzan"
    for g in ("blues", "jazz"):
        for i in range(10):
            touch(root / "genres" / g / f"{g}.{i:05d}.wav")
    t1 = load(tmp_path, "gtzan", root, seed=1)
    t2 = load(tmp_path, "gtzan", root, seed=1)
    assert [it.split for it in t1.items] == [it.split for it in t2.items]
    for g in ("blues", "jazz"):
        assert Counter(it.split for it in t1.items if it.label == g) == {"train": 5, "valid": 2, "test": 3}
    write(root / "train_filtered.txt", "blues/blues.00000.wav\njazz/jazz.00000.wav\n")
    write(root / "valid_filtered.txt", "blues/blues.00001.wav\n")
    write(root / "test_filtered.txt", "jazz/jazz.00002.wav\n")
    t3 = load(tmp_path, "gtzan", root)
    assert [(Path(it.key).name, it.split) for it in t3.items] == [
        ("blues.00000.wav", "train"),
        ("jazz.00000.wav", "train"),
        ("blues.00001.wav", "valid"),
        ("jazz.00002.wav", "test"),
    ]


def test_nsynth(tmp_path):
    root = tmp_path / "nsynth"
    for split, fam in (("train", "bass"), ("valid", "flute"), ("test", "bass")):
        ex = {f"{fam}_acoustic_000-060-100": {"instrument_family_str": fam, "pitch": 60}}
        write(root / f"nsynth-{split}" / "examples.json", json.dumps(ex))
    task = load(tmp_path, "nsynth", root)
    assert [it.split for it in task.items] == ["train", "valid", "test"]
    assert task.items[1].label == "flute"
    assert task.items[0].path.name == "bass_acoustic_000-060-100.wav"
    assert task.items[0].path.parent.name == "audio"
    pitch = load(tmp_path, "nsynth", root, label_field="pitch")
    assert pitch.items[0].label == "60"


def test_cremad_speaker_disjoint(tmp_path):
    root = tmp_path / "CREMA-D"
    actors = [str(1001 + a) for a in range(10)]
    for a in actors:
        for emo in ("ANG", "HAP", "SAD"):
            touch(root / "AudioWAV" / f"{a}_DFA_{emo}_XX.wav")
    touch(root / "AudioWAV" / "README.wav")  # not matching the pattern → ignored
    task = load(tmp_path, "cremad", root, seed=0)
    assert len(task.items) == 30 and task.classes == ["ANG", "HAP", "SAD"]
    split_of_actor: dict[str, set] = {}
    for it in task.items:
        split_of_actor.setdefault(it.meta["speaker"], set()).add(it.split)
    assert all(len(s) == 1 for s in split_of_actor.values())
    assert {s for v in split_of_actor.values() for s in v} == {"train", "valid", "test"}
    write(
        root / "VideoDemographics.csv",
        "ActorID,Age,Sex,Race,Ethnicity\n"
        + "".join(f"{a},30,{'Male' if int(a) % 2 else 'Female'},x,y\n" for a in actors),
    )
    g = load(tmp_path, "cremad", root, label="gender")
    assert g.classes == ["Female", "Male"]


def test_vc1(tmp_path):
    root = tmp_path / "vox1"
    touch(root / "vox1_test_wav/wav/id10270/abc/00001.wav")
    write(
        root / "iden_split.txt",
        "1 id10001/1zcIwhmdeo4/00001.wav\n2 id10001/x/00002.wav\n3 id10270/abc/00001.wav\n",
    )
    task = load(tmp_path, "vc1", root)
    assert [(it.label, it.split) for it in task.items] == [
        ("id10001", "train"),
        ("id10001", "valid"),
        ("id10270", "test"),
    ]
    assert "vox1_test_wav" in str(task.items[2].path)
    write(root / "iden_split.txt", "4 id1/x.wav\n")
    with pytest.raises(AdapterError, match="line 1"):
        write_task_csv("vc1", root, tmp_path / "v.csv")


def test_voxforge_folders_and_csv(tmp_path):
    root = tmp_path / "voxforge"
    for lang in ("de", "en"):
        for s in range(6):
            for i in range(2):
                touch(root / lang / f"spk{s}-2010" / "wav" / f"{i}.wav")
    task = load(tmp_path, "voxforge", root, seed=0)
    by_spk: dict[str, set] = {}
    for it in task.items:
        by_spk.setdefault(it.meta["speaker"], set()).add(it.split)
    assert len(by_spk) == 12 and all(len(v) == 1 for v in by_spk.values())
    user = write(
        tmp_path / "vf.csv",
        "file_name,label,split\nde/spk0-2010/wav/0.wav,de,train\nen/spk0-2010/wav/0.wav,en,val\n",
    )
    t2 = load(tmp_path, "voxforge", root, csv_path=user)
    assert [it.split for it in t2.items] == ["train", "valid"]


def test_surge_split_by_tone(tmp_path):
    root = tmp_path / "surge"
    tones = [f"Preset {k}" for k in range(10)]
    for t in tones:
        for p in (48, 60, 72):
            touch(root / f"{t}_{p:03d}_100.ogg")
    task = load(tmp_path, "surge", root, seed=0)
    assert task.classes == ["48", "60", "72"]
    split_of: dict[str, set] = {}
    for it in task.items:
        split_of.setdefault(it.meta["tone"], set()).add(it.split)
    assert set(split_of) == set(tones) and all(len(v) == 1 for v in split_of.values())
    split_csv = write(
        tmp_path / "tones.csv",
        "tone,split\n" + "".join(f"{t},{'test' if i < 2 else 'train'}\n" for i, t in enumerate(tones)),
    )
    t2 = load(tmp_path, "surge", root, split_csv=split_csv)
    assert Counter(it.split for it in t2.items) == {"train": 24, "test": 6}


def test_fsd50k_multilabel(tmp_path):
    root = tmp_path / "fsd"
    write(
        root / "FSD50K.ground_truth/dev.csv",
        "fname,labels,mids,split\n"
        '64760,"Electric_guitar,Guitar","/m/02sgy,/m/0342h",train\n'
        '16399,"Guitar","/m/0342h",val\n',
    )
    write(
        root / "FSD50K.ground_truth/eval.csv", 'fname,labels,mids\n37199,"Guitar,Bark","/m/0342h,/m/05tny_"\n'
    )
    task = load(tmp_path, "fsd50k", root)
    assert task.multi_label
    assert [it.split for it in task.items] == ["train", "valid", "test"]
    assert task.items[0].labels == ("Electric_guitar", "Guitar")
    assert task.items[2].path.parent.name == "FSD50K.eval_audio"
    mids = load(tmp_path, "fsd50k", root, use_mids=True)
    assert mids.classes == ["/m/02sgy", "/m/0342h"]


def test_as20k(tmp_path):
    root = tmp_path / "as"
    header = (
        "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=3\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
    )
    write(
        root / "balanced_train_segments.csv",
        header + '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n'
        '--ZhevVpy1s, 50.000, 60.000, "/m/012xff"\n'
        'gone_______, 0.000, 10.000, "/m/012xff"\n',
    )
    write(root / "eval_segments.csv", header + '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_"\n')
    touch(root / "balanced_train/--PJHxphWEs.wav")
    touch(root / "balanced_train/Y--ZhevVpy1s.wav")
    touch(root / "eval/--4gqARaEJE.wav")
    task = load(tmp_path, "as20k", root)
    assert task.multi_label and not task.has_valid
    assert [(it.labels, it.split) for it in task.items] == [
        (("/m/09x0r", "/t/dd00088"), "train"),
        (("/m/012xff",), "train"),
        (("/m/068hy", "/m/07q6cd_"), "test"),
    ]
    keep = load(tmp_path, "as20k", root, keep_missing=True)
    assert len(keep.items) == 4


def test_circor(tmp_path):
    root = tmp_path / "circor"
    lines = ["Patient ID,Recording locations:,Age,Murmur,Murmur locations"]
    murmurs = ["Present", "Absent", "Unknown"] * 4
    for k, m in enumerate(murmurs):
        lines.append(f"{50000 + k},AV+PV+AV,Child,{m},")
    write(root / "training_data.csv", "\n".join(lines) + "\n")
    touch(root / "training_data/50000_AV.wav")
    touch(root / "training_data/50000_MV.wav")
    task = load(tmp_path, "circor", root, seed=0)
    assert task.classes == ["Absent", "Present", "Unknown"]
    recs = [it for it in task.items if it.meta["patient_id"] == "50000"]
    assert sorted(it.meta["recording_id"] for it in recs) == ["50000_AV", "50000_MV"]  # files on disk win
    recs1 = sorted(it.meta["recording_id"] for it in task.items if it.meta["patient_id"] == "50001")
    assert recs1 == ["50001_AV_1", "50001_AV_2", "50001_PV"]
    by_patient: dict[str, set] = {}
    for it in task.items:
        by_patient.setdefault(it.meta["patient_id"], set()).add(it.split)
    assert all(len(v) == 1 for v in by_patient.values())
    split_csv = write(
        tmp_path / "sp.csv",
        "patient_id,split\n" + "".join(f"{50000 + k},{'test' if k < 3 else 'train'}\n" for k in range(12)),
    )
    t2 = load(tmp_path, "circor", root, split_csv=split_csv)
    assert {it.meta["patient_id"] for it in t2.items if it.split == "test"} == {"50000", "50001", "50002"}
