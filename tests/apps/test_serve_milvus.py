"""`kikimimi serve` on a Milvus (Lite) database index: the same answers as on a folder index of the same library,
the same safety rules (only files the database lists, inside its root and unchanged; no absolute path in the
status), re-scans into the database, and the command's `--db` refusals (another model, a missing database)."""

from __future__ import annotations

import io
import json
import os
import shutil
import time

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP, HashTextEncoder, patch_text_encoder, write_tiny_clap2025
from conftest import sine

pytest.importorskip("fastapi", reason='kikimimi serve needs pip install "kikimimi[serve]"')
from fastapi.testclient import TestClient  # noqa: E402

from kikimimi.apps.serve.app import ServeSettings, create_app  # noqa: E402
from kikimimi.inference import milvus_index as mi  # noqa: E402
from kikimimi.inference.search import update_index  # noqa: E402

SR = 16000
BASE = "http://127.0.0.1"
FLAT = mi.MilvusSettings(index_type="FLAT")  # exact: the rankings can be compared with the folder index's


def wav_bytes(freq: float, seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, sine(freq, seconds, SR), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class BrokenModel(FrequencyCLAP):
    def encode_text(self, texts):
        raise RuntimeError("secret detail at /home/user/model.py line 42")



def _library(root):
    (root / "sub").mkdir(parents=True)
    for f in (220, 440, 880):
        sf.write(root / f"tone{f}.wav", sine(f, 0.5, SR), SR)
    for f in (1760, 3520):
        sf.write(root / "sub" / f"tone{f}.wav", sine(f, 0.5, SR), SR)
    sf.write(root / "long.wav", np.concatenate([sine(300, 2.4, SR), sine(2000, 2.2, SR)]), SR)
    (root / "secret.txt").write_text("not for the web")
    return root


@pytest.fixture(scope="module")
def both(milvus_ok, tmp_path_factory):
    """One library indexed twice with 2-s windows by the fake model: into a folder and into a Milvus Lite db."""
    tmp = tmp_path_factory.mktemp("serve_db")
    root = _library(tmp / "library")
    update_index(FrequencyCLAP(), root, tmp / "index", model_id="fake", window_s=2, hop_s=1)
    db = str(tmp / "lib.db")
    mi.update_milvus_index(FrequencyCLAP(), root, db, model_id="fake", settings=FLAT, window_s=2, hop_s=1)
    return root, tmp / "index", db


def _client(where, model=None, **settings) -> TestClient:
    app = create_app(model or FrequencyCLAP(), where, settings=ServeSettings(window_s=2, hop_s=1, **settings),
                     milvus=FLAT)
    return TestClient(app, base_url=BASE)


@pytest.fixture(scope="module")
def pair(both):
    with _client(both[1]) as folder, _client(both[2]) as db:
        yield folder, db


def test_status_says_database_and_shows_no_path(pair, both):
    s = pair[1].get("/api/status").json()
    assert (s["files"], s["segments"]) == (6, 5 + 4) and s["database"] is True
    assert s["vectors"]["kind"] == "milvus" and s["vectors"]["exact"] is True and s["vectors"]["rows"] == 9
    assert s["index"] == "lib.db" and s["root"] == "library" and s["format"] == mi.FORMAT
    assert str(both[0].parent) not in json.dumps(s)
    assert pair[0].get("/api/status").json()["database"] is False


@pytest.mark.parametrize("params", [{"q": "a 440 Hz tone", "top": 4}, {"q": "300 Hz", "top": 3},
                                   {"q": "2000 Hz", "top": 2}, {"q": "300 Hz", "top": 5, "segments": "true"}])
def test_text_search_agrees_with_the_folder_index(pair, params):
    folder, db = (c.get("/api/search", params=params) for c in pair)
    assert folder.status_code == db.status_code == 200
    a, b = folder.json()["results"], db.json()["results"]

    def ranked(hits):  # segments of equal score (identical windows) may come in either order
        return sorted((-round(h["score"], 4), h["key"], h["start_s"], h["end_s"]) for h in hits)

    assert ranked(a) == ranked(b) and len(b) == params["top"]
    assert [h["score"] for h in a] == pytest.approx([h["score"] for h in b], abs=1e-5)
    if params.get("segments") is None:
        assert [(h["matched"], h["segments"]) for h in a] == [(h["matched"], h["segments"]) for h in b]
    assert db.json()["grouped"] is (params.get("segments") is None)


def test_search_by_example_and_tags_agree_with_the_folder_index(pair):
    for c in pair:
        r = c.post("/api/similar", files={"file": ("q.wav", wav_bytes(880), "audio/wav")}, data={"top": "3"})
        assert r.status_code == 200 and r.json()["results"][0]["key"] == "tone880.wav"
    by_key = [c.get("/api/similar", params={"key": "tone440.wav", "top": 8}).json()["results"] for c in pair]
    assert [h["key"] for h in by_key[1]] == [h["key"] for h in by_key[0]] and len(by_key[1]) == 8
    assert "tone440.wav" not in [h["key"] for h in by_key[1]]  # its own rows left out
    tags = [c.get("/api/tags", params={"key": "sub/tone3520.wav", "labels": "440 Hz,3520 Hz"}).json()["tags"]
            for c in pair]
    assert tags[1][0]["label"] == "3520 Hz" and tags[1] == tags[0]
    for c in pair:
        assert c.get("/api/similar", params={"key": "nope.wav"}).status_code == 404
        assert c.get("/api/tags", params={"key": "nope.wav"}).status_code == 404


def test_only_listed_unchanged_files_inside_the_root_are_served(milvus_ok, both, tmp_path):
    root = tmp_path / "lib"
    shutil.copytree(both[0], root)
    db = str(tmp_path / "own.db")
    mi.update_milvus_index(FrequencyCLAP(), root, db, model_id="fake", settings=FLAT, window_s=2, hop_s=1)
    outside = tmp_path / "outside.wav"
    sf.write(outside, sine(5000, 0.5, SR), SR)
    with mi.MilvusIndex.open(db, FLAT) as index:  # rows a hostile writer added: a key leaving the root, a path
        st = outside.stat()                       # outside it
        for key, path in (("../outside.wav", str(outside)), ("evil.wav", str(outside))):
            index.add_file({"key": key, "path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                            "duration_s": 0.5}, FrequencyCLAP().encode_text(["5000 Hz"]), [[0.0, 0.5]])
        index.flush()
    with _client(db) as c:
        assert c.get("/api/similar", params={"key": "evil.wav"}).status_code == 404  # before any search listed it
        data = (root / "tone440.wav").read_bytes()
        r = c.get("/api/audio", params={"key": "tone440.wav"}, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == data[10:20]
        keys = [h["key"] for h in c.get("/api/search", params={"q": "5000 Hz", "top": 8}).json()["results"]]
        assert "../outside.wav" not in keys and "evil.wav" not in keys and keys  # never listed …
        for key in ("../outside.wav", "evil.wav", "secret.txt", str(root / "tone440.wav"), "sub/../tone440.wav"):
            assert c.get("/api/audio", params={"key": key}).status_code == 404, key  # … nor served
        assert c.get("/api/similar", params={"key": "evil.wav"}).status_code == 404
        assert c.get("/api/status").json()["not_served"] >= 2
        sf.write(root / "tone880.wav", sine(880, 0.7, SR), SR)  # changed since it was indexed
        r = c.get("/api/audio", params={"key": "tone880.wav"})
        assert r.status_code == 409 and "re-index" in r.json()["error"]
        os.remove(root / "tone220.wav")
        assert c.get("/api/audio", params={"key": "tone220.wav"}).status_code == 404
        # a re-scan writes into the database the server searches: the changed file is served again
        assert c.post("/api/rescan").status_code == 202
        deadline = time.monotonic() + 60
        while c.get("/api/status").json()["scan"]["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        s = c.get("/api/status").json()
        assert s["scan"]["error"] is None and s["scan"]["result"]["changed"] == 1
        # the removed file and the two rows naming no file of the folder are dropped
        assert s["scan"]["result"]["removed"] == 3 and s["files"] == 5
        assert c.get("/api/audio", params={"key": "tone880.wav"}).status_code == 200
        top = c.get("/api/search", params={"q": "220 Hz", "top": 6}).json()["results"]
        assert "tone220.wav" not in [h["key"] for h in top]


def test_failures_answer_without_stack_traces(both):
    app = create_app(BrokenModel(), both[2], milvus=FLAT)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as c:
        r = c.get("/api/search", params={"q": "440"})
        assert r.status_code == 500 and r.json() == {"error": "internal error"} and "Traceback" not in r.text
        assert c.get("/api/status", headers={"host": "evil.example:8000"}).status_code == 421


def test_serve_db_command_refuses_another_model_and_a_missing_database(milvus_ok, both, tmp_path, capsys,
                                                                        monkeypatch):
    from kikimimi.cli import main as cli_main

    ckpt = write_tiny_clap2025(tmp_path / "models")
    other = write_tiny_clap2025(tmp_path / "other", seed=1)
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    db = str(tmp_path / "k.db")
    assert cli_main(["index", str(both[0]), "-m", str(ckpt), "--db", db, "--window-s", "2", "--hop-s", "1"]) == 0
    capsys.readouterr()
    assert cli_main(["serve", "--db", db, "-m", str(other), "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "would mix spaces (different weights_sha256)" in err
    assert f"'{ckpt.name}'" in err and f"'{other.name}'" in err and "Traceback" not in err
    assert cli_main(["serve", "--db", str(tmp_path / "none.db"), "--port", "1"]) == 2
    assert "no Milvus Lite database" in capsys.readouterr().err
    assert cli_main(["serve", "--port", "1"]) == 2
    assert "--db URI" in capsys.readouterr().err


def test_a_missing_extra_names_it(both, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pymilvus(name, *args, **kwargs):
        if name.split(".")[0] in ("pymilvus", "milvus_lite"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pymilvus)
    with pytest.raises(mi.SearchIndexError, match=r'pip install "kikimimi\[milvus\]"'):
        create_app(FrequencyCLAP(), both[2])
