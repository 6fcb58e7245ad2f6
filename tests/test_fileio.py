"""kikimimi.fileio: atomic writers, input collection from files/folders/CSV lists, relative keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kikimimi.fileio import (
    InputListError,
    atomic_open,
    atomic_save_npy,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    collect_audio_files,
    relative_key,
)


def _names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------------------------------------
# Atomic writers
# ---------------------------------------------------------------------------------------------


def test_atomic_writers_roundtrip(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01abc")
    atomic_write_text(tmp_path / "b.txt", "héllo\nworld\r\n")
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2.5], "y": "ü"})
    atomic_save_npy(tmp_path / "d.cache", np.arange(12, dtype=np.float32).reshape(3, 4))
    atomic_torch_save({"w": torch.ones(2, 3)}, tmp_path / "e.pt")
    atomic_write_bytes(tmp_path / "new" / "deep" / "f.bin", b"z")  # parent folders created

    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01abc"
    assert (tmp_path / "b.txt").read_bytes() == "héllo\nworld\r\n".encode()
    assert json.loads((tmp_path / "c.json").read_text("utf-8")) == {"x": [1, 2.5], "y": "ü"}
    np.testing.assert_array_equal(np.load(tmp_path / "d.cache"), np.arange(12).reshape(3, 4))
    assert torch.equal(torch.load(tmp_path / "e.pt", weights_only=True)["w"], torch.ones(2, 3))
    assert (tmp_path / "new" / "deep" / "f.bin").read_bytes() == b"z"
    # no temporary files left, no suffix added to the .npy target
    assert _names(tmp_path) == ["a.bin", "b.txt", "c.json", "d.cache", "e.pt", "new"]


def test_atomic_overwrite_replaces(tmp_path):
    p = tmp_path / "x.txt"
    atomic_write_text(p, "old")
    atomic_write_text(p, "new")
    assert p.read_text() == "new" and _names(tmp_path) == ["x.txt"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "state.bin"
    p.write_bytes(b"old contents")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(p, "wb") as fh:
        fh.write(b"partial new contents")
        raise RuntimeError("boom")
    assert p.read_bytes() == b"old contents"
    assert _names(tmp_path) == ["state.bin"]

    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails inside torch.save
        atomic_torch_save({"f": lambda: 0}, p)
    assert p.read_bytes() == b"old contents"
    assert _names(tmp_path) == ["state.bin"]

    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "new.json", {"bad": object()})
    assert _names(tmp_path) == ["state.bin"]


def test_atomic_permissions(tmp_path):
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "a")
    mask = os.umask(0)
    os.umask(mask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~mask
    kept = tmp_path / "private.txt"
    kept.write_text("a")
    kept.chmod(0o600)
    atomic_write_text(kept, "b")
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.read_text() == "b"


def test_atomic_open_rejects_read_mode(tmp_path):
    with pytest.raises(ValueError, match="write mode"), atomic_open(tmp_path / "x", "rb"):
        pass


# ---------------------------------------------------------------------------------------------
# collect_audio_files
# ---------------------------------------------------------------------------------------------


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_folder_recursive_sorted(tmp_path):
    root = tmp_path / "data"
    _touch(root, "b.wav", "a/z.FLAC", "a/c.mp3", "notes.txt", "a/b/deep.ogg", ".hidden/x.wav",
           "a/._a.wav", "x.opus", "y.aif")
    got = collect_audio_files([root])
    rels = [p.relative_to(root).as_posix() for p in got]
    assert rels == ["a/b/deep.ogg", "a/c.mp3", "a/z.FLAC", "b.wav", "x.opus", "y.aif"]
    flat = collect_audio_files([root], recursive=False)
    assert [p.name for p in flat] == ["b.wav", "x.opus", "y.aif"]


def test_files_kept_in_order_and_deduplicated(tmp_path):
    _touch(tmp_path, "one.wav", "two.wav")
    missing = tmp_path / "missing.wav"
    got = collect_audio_files([tmp_path / "two.wav", missing, tmp_path / "one.wav", tmp_path / "two.wav"])
    assert got == [tmp_path / "two.wav", missing, tmp_path / "one.wav"]
    assert collect_audio_files(str(tmp_path / "one.wav")) == [tmp_path / "one.wav"]  # single str input


@pytest.mark.parametrize("header", ["file_name,label", "label,path", "Label , FILE_NAME "])
def test_csv_named_column(tmp_path, header):
    lists = tmp_path / "lists"
    _touch(tmp_path, "audio/a.wav", "audio/b.wav")
    cols = [c.strip().lower() for c in header.split(",")]
    col = cols.index("file_name") if "file_name" in cols else cols.index("path")

    def row(name: str, label: str) -> str:
        cells = [label, label]
        cells[col] = name
        return ",".join(cells)

    lists.mkdir()
    csv = lists / "list.csv"
    lines = [header, row("../audio/b.wav", "x"), "", row("../audio/a.wav", "y"),
             row(str(tmp_path / "audio/a.wav"), "dup"), row("../audio/gone.wav", "z")]
    csv.write_text("\n".join(lines) + "\n")
    got = collect_audio_files([csv])
    assert got == [lists / "../audio/b.wav", lists / "../audio/a.wav", lists / "../audio/gone.wav"]
    assert [p.exists() for p in got] == [True, True, False]  # missing listed file kept for the consumer


def test_csv_without_header_and_with_unknown_header(tmp_path):
    _touch(tmp_path, "a.wav", "b.wav")
    (tmp_path / "plain.csv").write_text("a.wav,1\nb.wav,2\n")
    assert collect_audio_files([tmp_path / "plain.csv"]) == [tmp_path / "a.wav", tmp_path / "b.wav"]
    (tmp_path / "other.csv").write_text("\ufeffaudio,label\nb.wav,2\n", encoding="utf-8")
    assert collect_audio_files([tmp_path / "other.csv"]) == [tmp_path / "b.wav"]


@pytest.mark.parametrize("content,words", [
    ('file_name,label\na.wav,1\n"b.wav,2\n', ["row 3"]),  # unterminated quote
    ('file_name,label\na.wav,1\n"b".wav,2\n', ["row 3"]),  # junk after a closing quote
    ("file_name,label\na.wav,1\nb.wav\n", ["row 3", "1 fields"]),  # missing field
    ("file_name,label\na.wav,1\nc.wav,1,extra\n", ["row 3", "3 fields"]),  # extra field
    ("file_name,label\n,1\n", ["row 2", "empty file name"]),
    ("file_name,label\n", ["no rows"]),
    ("\n\n", ["empty"]),
])
def test_broken_csv(tmp_path, content, words):
    csv = tmp_path / "broken.csv"
    csv.write_text(content)
    with pytest.raises(InputListError) as ei:
        collect_audio_files([csv])
    msg = str(ei.value)
    assert str(csv) in msg
    for w in words:
        assert w in msg, (w, msg)


def test_unreadable_csv(tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("file_name\ncaf\xe9.wav\n".encode("latin-1"))
    with pytest.raises(InputListError, match="UTF-8") as ei:
        collect_audio_files([bad])
    assert str(bad) in str(ei.value)
    with pytest.raises(InputListError, match="not found"):
        collect_audio_files([tmp_path / "absent.csv"])


# ---------------------------------------------------------------------------------------------
# relative_key
# ---------------------------------------------------------------------------------------------


def test_relative_key(tmp_path):
    root = tmp_path / "root"
    assert relative_key(root / "sub" / "a.wav", root) == "sub/a.wav"
    assert relative_key(str(root / "x" / ".." / "b.wav"), str(root)) == "b.wav"
    out1 = relative_key(tmp_path / "elsewhere" / "a.wav", root)
    out2 = relative_key(tmp_path / "other" / "a.wav", root)
    assert out1.startswith("_ext/") and out1.endswith("/a.wav") and out1 != out2
    assert out1 == relative_key(tmp_path / "elsewhere" / "a.wav", root)  # stable
    assert relative_key(tmp_path / "elsewhere" / "a.wav", None) == out1
    assert ".." not in relative_key(root.parent / "c.wav", root)


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_taking_the_output_lock_removes_only_kikimimi_temporaries_of_dead_writers(tmp_path):
    import subprocess
    import sys

    from kikimimi.fileio import output_lock

    (tmp_path / "sub").mkdir()
    dead = tmp_path / "sub" / f".kikimimi-{_dead_pid()}-ab12cd34.clip 1.npy.tmp"
    dead.write_bytes(b"half")
    live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".kikimimi-{live_proc.pid}-ef56gh78.x.npy.tmp"
        live.write_bytes(b"being written")
        foreign = tmp_path / ".checkpoint-109.pth.a1b2c3d4.tmp"  # the name pattern older kikimimi swept
        foreign.write_bytes(b"another program's")
        keep = tmp_path / "notes.tmp"
        keep.write_text("a user's file")
        with output_lock(tmp_path, "embed", rank=1):  # other ranks may be writing: nothing is removed
            assert dead.exists()
        with output_lock(tmp_path, "prep"):
            assert not dead.exists()
            assert live.exists() and foreign.exists() and keep.read_text() == "a user's file"
    finally:
        live_proc.kill()
        live_proc.wait()


def test_atomic_writes_use_names_only_kikimimi_makes(tmp_path, monkeypatch):
    import re

    from kikimimi import fileio

    seen = []
    real = os.replace
    monkeypatch.setattr(fileio.os, "replace", lambda a, b: (seen.append(os.path.basename(a)), real(a, b)))
    fileio.atomic_write_text(tmp_path / "out.csv", "x")
    assert re.fullmatch(rf"\.kikimimi-{os.getpid()}-[a-z0-9_]{{8}}\.out\.csv\.tmp", seen[0])
    long_name = "a" * 250 + ".npy"
    fileio.atomic_write_bytes(tmp_path / long_name, b"x")  # the temporary's name stays below 255 bytes
    assert (tmp_path / long_name).read_bytes() == b"x"


def test_one_lock_per_folder_for_every_job_shared_by_torchrun_ranks(tmp_path):
    from kikimimi.fileio import OutputInUseError, output_lock

    with output_lock(tmp_path, "embed", rank=0), output_lock(tmp_path, "embed", rank=1):  # ranks of one job
        with pytest.raises(OutputInUseError, match=rf"another kikimimi embed \(pid {os.getpid()}\)"), \
                output_lock(tmp_path, "prep"):
            pass
        with pytest.raises(OutputInUseError), output_lock(tmp_path, "embed", rank=1):  # a rank is one process
            pass
    with output_lock(tmp_path, "prep"):
        with pytest.raises(OutputInUseError, match=r"another kikimimi prep"), output_lock(tmp_path, "index"):
            pass
        with pytest.raises(OutputInUseError, match=r"another kikimimi prep"), output_lock(tmp_path, "embed", rank=0):
            pass
    with output_lock(tmp_path, "index"):  # released
        pass


def test_claim_folder_refuses_another_job_or_other_settings_unless_overwrite(tmp_path):
    from kikimimi.fileio import FolderOwnedError, claim_folder, read_stamp

    assert claim_folder(tmp_path, "prep", {"preset": "a"}, describe="preset a") is True
    assert claim_folder(tmp_path, "prep", {"preset": "a"}, describe="preset a") is True  # same: keep outputs
    with pytest.raises(FolderOwnedError) as info:
        claim_folder(tmp_path, "embed", {"model": "m"}, describe="model 'm'")
    assert "`kikimimi prep` (preset a" in str(info.value) and "`kikimimi embed` (model 'm'" in str(info.value)
    with pytest.raises(FolderOwnedError, match=r"other settings \(preset differ"):
        claim_folder(tmp_path, "prep", {"preset": "b"})
    assert claim_folder(tmp_path, "embed", {"model": "m"}, overwrite=True) is False  # recompute everything
    stamp = read_stamp(tmp_path)
    assert stamp["job"] == "embed" and stamp["settings"] == {"model": "m"} and stamp["kikimimi"]
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "embed.json").write_text("{}")  # an embedding folder from before stamps
    with pytest.raises(FolderOwnedError, match=r"`kikimimi embed` written without an ownership stamp"):
        claim_folder(legacy, "prep", {"preset": "a"})
