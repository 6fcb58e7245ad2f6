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


def test_taking_the_output_lock_removes_temporaries_of_a_killed_writer(tmp_path):
    import tempfile

    from kikimimi.fileio import output_lock

    (tmp_path / "sub").mkdir()
    fd, stale = tempfile.mkstemp(prefix=".clip 1.npy.", suffix=".tmp", dir=tmp_path / "sub")  # as atomic_open does
    os.close(fd)
    keep = tmp_path / "notes.tmp"
    keep.write_text("a user's file")
    with output_lock(tmp_path, "prep"):
        assert not os.path.exists(stale)
    assert keep.read_text() == "a user's file"
    fd, in_flight = tempfile.mkstemp(prefix=".x.npy.", suffix=".tmp", dir=tmp_path)
    os.close(fd)
    with output_lock(tmp_path, "embed", rank=1):  # other ranks may be writing: nothing is removed
        assert os.path.exists(in_flight)
