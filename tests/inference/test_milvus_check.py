"""`kikimimi index --check / --compact` on a Milvus (Lite) database: rows whose files are missing, changed,
unreadable or outside the indexed folder are reported, then repaired (rows deleted, changed files embedded again);
compaction runs the database's own and reports it in one line."""

from __future__ import annotations

import os

import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP, HashTextEncoder, patch_text_encoder, write_tiny_clap2025
from conftest import sine

from kikimimi.inference import milvus_index as mi

SR = 16000
FLAT = mi.MilvusSettings(index_type="FLAT")



@pytest.fixture
def library(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    for f in (220, 440, 880, 1760, 3520):
        sf.write(root / f"tone{f}.wav", sine(f, 0.5, SR), SR)
    return root


def _damage(root):
    """tone220 removed, tone880 replaced by a 5000 Hz tone (changed), tone1760's bytes garbled with its size and
    mtime kept (unreadable, not "changed")."""
    os.remove(root / "tone220.wav")
    sf.write(root / "tone880.wav", sine(5000, 0.7, SR), SR)
    bad = root / "tone1760.wav"
    st = bad.stat()
    bad.write_bytes(b"\0" * st.st_size)
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))


def _hostile_row(db, tmp_path):
    outside = tmp_path / "outside.wav"
    sf.write(outside, sine(600, 0.5, SR), SR)
    with mi.MilvusIndex.open(db, FLAT) as index:
        st = outside.stat()
        index.add_file({"key": "../outside.wav", "path": str(outside), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                        "duration_s": 0.5}, FrequencyCLAP().encode_text(["600 Hz"]), [[0.0, 0.5]])


def test_check_reports_every_kind_of_problem_and_repair_fixes_them(milvus_ok, library, tmp_path):
    db, model = str(tmp_path / "lib.db"), FrequencyCLAP()
    mi.update_milvus_index(model, library, db, model_id="fake", settings=FLAT)
    assert mi.check_milvus_index(db, FLAT).sound
    _damage(library)
    _hostile_row(db, tmp_path)
    found = mi.check_milvus_index(db, FLAT)
    assert (found.files, found.rows) == (6, 6) and not found.sound
    assert found.missing == ["tone220.wav"] and found.changed == ["tone880.wav"]
    assert [k for k, _ in found.unreadable] == ["tone1760.wav"]
    assert found.outside == [("../outside.wav", "its key leaves the indexed folder")]
    assert len(found.problems()) == 4
    with mi.MilvusIndex.open(db, FLAT) as index:  # checking changed nothing
        assert index.n_files == 6
    without = mi.repair_milvus_index(db, mi.check_milvus_index(db, FLAT), FLAT)  # no model: changed stays
    assert without.not_repaired and without.not_repaired[0][0] == "tone880.wav"
    assert without.removed == ["../outside.wav", "tone1760.wav", "tone220.wav"]
    done = mi.repair_milvus_index(db, mi.check_milvus_index(db, FLAT), FLAT, model=model, model_id="fake")
    assert done.re_embedded == ["tone880.wav"] and not done.not_repaired
    with mi.MilvusIndex.open(db, FLAT) as index:
        assert sorted(index.files()) == ["tone3520.wav", "tone440.wav", "tone880.wav"]
        assert mi.search(index, "5000 Hz", model, top=1)[0].key == "tone880.wav"  # its new content
        assert index.n_rows == 3
    assert mi.check_milvus_index(db, FLAT).sound


def test_index_check_and_compact_commands_on_a_database(milvus_ok, library, tmp_path, capsys, monkeypatch):
    from kikimimi.cli import main as cli_main

    ckpt = write_tiny_clap2025(tmp_path / "models")
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    db = str(tmp_path / "k.db")
    assert cli_main(["index", str(library), "-m", str(ckpt), "--db", db, "--db-index", "FLAT"]) == 0
    capsys.readouterr()
    assert cli_main(["index", "--check", db]) == 0
    assert "the index is sound (5 files, 5 segments)" in capsys.readouterr().out
    _damage(library)
    assert cli_main(["index", "--check", db, "--no-repair"]) == 1
    out, err = capsys.readouterr()
    assert "'tone220.wav': missing" in err and "'tone880.wav': changed" in err and "'tone1760.wav': unreadable" in err
    assert "3 of 5 files need repair" in out and "Traceback" not in err
    assert cli_main(["index", "--check", db]) == 0  # the model that built it embeds the changed file again
    out = capsys.readouterr().out
    assert "rows of 2 files removed, 1 files embedded again, 0 left" in out
    assert cli_main(["index", "--check", db]) == 0 and "sound (3 files, 3 segments)" in capsys.readouterr().out
    assert cli_main(["index", "--compact", db]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "compaction job" in out and "Completed" in out and "3 segments" in out
    assert cli_main(["index", "--check", str(tmp_path / "none.db")]) == 2
    assert "no Milvus Lite database" in capsys.readouterr().err
