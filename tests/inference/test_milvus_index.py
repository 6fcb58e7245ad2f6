"""The Milvus backend (Milvus Lite, a file URI) answers like the folder index on the same vectors and files:
exact search row for row, HNSW at recall@10 >= 0.95, the same per-file and per-segment hits and incremental
updates; metadata filters; another model's vectors or queries are refused; a missing extra names it."""

from __future__ import annotations

import builtins
import json
import os
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP
from conftest import sine

from kikimimi.inference import milvus_index as mi
from kikimimi.inference.search import EmbeddingSpaceError, SearchIndexError, search, update_index
from kikimimi.inference.vector_index import VectorIndex, normalise, recall_at_k

SR = 16000


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    c = np.random.default_rng(1234).standard_normal((32, dim))
    rng = np.random.default_rng(seed)
    return normalise((c[rng.integers(0, 32, n)] + 0.6 * rng.standard_normal((n, dim))).astype(np.float32))


def _vectors_db(path, x: np.ndarray, index_type: str, per_file: int = 1, durations=None, tags=None):
    """A Milvus index of rows ``x`` as files of ``per_file`` segments; row ``i`` is file ``f{i // per_file}``."""
    db = mi.MilvusIndex.create(path, dim=x.shape[1], model="m", identity=None, root="/r",
                               settings=mi.MilvusSettings(index_type=index_type))
    files = []
    for f in range(0, len(x), per_file):
        key = f"{'a' if (f // per_file) % 2 else 'b'}/f{f // per_file}.wav"
        entry = {"key": key, "path": f"/r/{key}", "size": 1, "mtime_ns": 1,
                 "duration_s": durations[f // per_file] if durations is not None else 1.0}
        files.append((entry, x[f:f + per_file], [[i, i + 1.0] for i in range(per_file)],
                      tags[f // per_file] if tags is not None else ()))
    ids = db.add_files(files)
    assert len(ids) == len(x)
    db.flush()
    db.wait_for_index()  # searched through the vector index, not the unsealed rows' brute force
    return db, {i: row for row, i in enumerate(ids)}


def _rows(db, q, k, row_of_id):
    return np.array([[row_of_id[h.row] for h in hits] + [-1] * (k - len(hits))
                     for hits in db.search_vectors(q, k)])


def test_exact_milvus_agrees_with_faiss_row_for_row_and_hnsw_reaches_the_recall_target(milvus_ok, tmp_path):
    x = clustered(3000, 24, seed=2)
    q = np.concatenate([clustered(40, 24, seed=3),
                        normalise(np.random.default_rng(9).standard_normal((40, 24)).astype(np.float32))])
    faiss_flat = VectorIndex.build(x, kind="flat")
    s_ref, r_ref = faiss_flat.search(q, 10)
    db, row_of_id = _vectors_db(str(tmp_path / "flat.db"), x, "FLAT", per_file=3)
    with db:
        assert db.n_rows == 3000
        hits = db.search_vectors(q, 10)
        rows = np.array([[row_of_id[h.row] for h in qh] for qh in hits])
        scores = np.array([[h.score for h in qh] for qh in hits])
        np.testing.assert_allclose(scores, s_ref, atol=1e-4)  # exact: the same cosines, best first
        assert recall_at_k(rows, r_ref, 10) >= 0.999  # the same rows (up to ties in the last place)
        assert all(h.end_s - h.start_s == 1.0 for h in hits[0])
    hnsw, hnsw_rows = _vectors_db(str(tmp_path / "hnsw.db"), x, "HNSW")
    with hnsw:
        assert recall_at_k(_rows(hnsw, q, 10, hnsw_rows), r_ref, 10) >= 0.95
        faiss_hnsw = VectorIndex.build(x, kind="hnsw")
        assert recall_at_k(faiss_hnsw.search(q, 10)[1], _rows(hnsw, q, 10, hnsw_rows), 10) >= 0.9  # they agree
        hnsw.settings = mi.MilvusSettings(index_type="HNSW", ef_search=10)  # a narrow search: the graph is used
        assert recall_at_k(_rows(hnsw, q, 10, hnsw_rows), r_ref, 10) < 0.999


def test_filters_by_path_prefix_duration_and_tags(milvus_ok, tmp_path):
    x = clustered(60, 8, seed=4)
    durations = [float(i) for i in range(60)]
    tags = [["dog"] if i % 3 == 0 else (["dog", "rain"] if i % 3 == 1 else []) for i in range(60)]
    db, _ = _vectors_db(str(tmp_path / "f.db"), x, "FLAT", durations=durations, tags=tags)
    with db:
        def keys(where, k=60):
            return {h.key for h in db.search(x[0], k, where)}

        assert keys(mi.SearchFilter(path_prefix="a/")) == {f"a/f{i}.wav" for i in range(1, 60, 2)}
        assert keys(mi.SearchFilter(path_prefix="/r/b/f1")) == {"b/f10.wav", "b/f12.wav", "b/f14.wav",
                                                                "b/f16.wav", "b/f18.wav"}
        assert keys(mi.SearchFilter(min_duration_s=10, max_duration_s=12)) == {"b/f10.wav", "a/f11.wav",
                                                                               "b/f12.wav"}
        assert keys(mi.SearchFilter(tags=("dog", "rain"))) == {f"{'a' if i % 2 else 'b'}/f{i}.wav"
                                                               for i in range(1, 60, 3)}
        assert keys(mi.SearchFilter(path_prefix='a/"; drop')) == set()  # quoted, never an expression
        assert keys(mi.SearchFilter(path_prefix="_/")) == keys(mi.SearchFilter(path_prefix="%")) == set()  # literal
        assert mi.SearchFilter(path_prefix="dog_1%/").expression() == r'key like "dog\\_1\\%/%"'
        filt = mi.SearchFilter(path_prefix="b/", tags=("rain",))
        hits = db.search(x[0], 5, filt)
        assert len(hits) == 5 and all(h.key.startswith("b/") for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def _write(path, freq, seconds=0.5):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, sine(freq, seconds, SR), SR)
    return path


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "library"
    for f in (220, 440, 880, 1760, 3520):
        _write(root / ("sub" if f > 1000 else "") / f"tone{f}.wav", f)
    _write(root / "long.wav", 600, seconds=9)
    (root / "broken.wav").write_bytes(b"not a wav file")
    return root


def _agree(folder, db_uri, model, queries, top):
    with mi.MilvusIndex.open(db_uri, mi.MilvusSettings(index_type="FLAT")) as db:
        for text in queries:
            for segments in (False, True):
                ours = search(folder, text, model, top=top, segments=segments)
                theirs = mi.search(db, text, model, top=top, segments=segments)
                np.testing.assert_allclose([h.score for h in theirs], [h.score for h in ours], atol=1e-5)
                if segments:  # equal scores (windows of one tone) may come in another order: compare as multisets
                    assert Counter((h.key, round(h.score, 4)) for h in theirs) == \
                        Counter((h.key, round(h.score, 4)) for h in ours)
                else:
                    assert [(h.key, h.matched, h.segments, h.end_s - h.start_s) for h in theirs] == \
                        [(h.key, h.matched, h.segments, h.end_s - h.start_s) for h in ours]


def test_the_same_files_give_the_same_hits_and_updates_in_both_backends(milvus_ok, library, tmp_path):
    model, folder, db = FrequencyCLAP(), tmp_path / "index", str(tmp_path / "db" / "kiki.db")
    settings = mi.MilvusSettings(index_type="FLAT")
    kw = {"model_id": "fake", "window_s": 2.0, "hop_s": 1.0}
    first = update_index(model, library, folder, **kw)
    ours = mi.update_milvus_index(model, library, db, settings=settings, **kw)
    assert sorted(ours.added) == sorted(first.added) and len(ours.added) == 6
    assert ours.errors == first.errors and [k for k, _ in ours.errors] == ["broken.wav"]
    queries = ["440 Hz", "600 Hz", "3000 Hz"]
    _agree(folder, db, model, queries, top=4)
    again = mi.update_milvus_index(model, library, db, settings=settings, **kw)
    assert again.embedded == 0 and len(again.unchanged) == 6

    _write(library / "tone300.wav", 300)                       # added
    _write(library / "tone880.wav", 6000, seconds=0.7)         # changed
    os.remove(library / "sub" / "tone1760.wav")                # removed
    upd_folder = update_index(model, library, folder, **kw)
    upd = mi.update_milvus_index(model, library, db, settings=settings, **kw)
    assert (upd.added, upd.changed, upd.removed) == (upd_folder.added, upd_folder.changed, upd_folder.removed) == (
        ["tone300.wav"], ["tone880.wav"], ["sub/tone1760.wav"])
    _agree(folder, db, model, queries + ["6000 Hz", "1760 Hz"], top=6)
    with mi.MilvusIndex.open(db, settings) as index:
        files = index.files()
        assert sorted(files) == sorted(["tone220.wav", "tone300.wav", "tone440.wav", "tone880.wav",
                                        "sub/tone3520.wav", "long.wav"])
        assert files["long.wav"]["segments"] == 8 and files["long.wav"]["duration_s"] == pytest.approx(9.0)
        assert index.n_rows == 13
        long_only = mi.search(index, "600 Hz", model, top=3, where=mi.SearchFilter(min_duration_s=5))
        assert [h.key for h in long_only] == ["long.wav"] and long_only[0].matched >= 1


def test_another_model_is_refused_for_adding_and_searching(milvus_ok, library, tmp_path, monkeypatch):
    db = str(tmp_path / "kiki.db")
    identity = {"weights_sha256": "a" * 64, "precision": "fp32", "dim": 13, "family": "fake"}
    monkeypatch.setattr(mi, "model_identity", lambda model, model_id: dict(identity))
    mi.update_milvus_index(FrequencyCLAP(), library, db, model_id="/models/one.safetensors")
    with mi.MilvusIndex.open(db) as index:
        assert index.model_identity["weights_sha256"] == "a" * 64 and index.model == "/models/one.safetensors"
    identity["weights_sha256"] = "b" * 64
    with pytest.raises(EmbeddingSpaceError, match=r"'one.safetensors'.*'two.safetensors'.*weights_sha256"):
        mi.update_milvus_index(FrequencyCLAP(), library, db, model_id="/models/two.safetensors")
    with mi.MilvusIndex.open(db) as index, pytest.raises(EmbeddingSpaceError, match="searching with model"):
        mi.search(index, "440 Hz", FrequencyCLAP(), model_id="/models/two.safetensors")
    with pytest.raises(SearchIndexError, match="indexes"):  # another root into the same collection
        identity["weights_sha256"] = "a" * 64
        mi.update_milvus_index(FrequencyCLAP(), tmp_path, db, model_id="/models/one.safetensors")
    identity["weights_sha256"] = "b" * 64
    rebuilt = mi.update_milvus_index(FrequencyCLAP(), library, db, model_id="/models/two.safetensors", rebuild=True)
    assert len(rebuilt.added) == 6
    with pytest.raises(SearchIndexError, match="no collection 'other'"):
        mi.MilvusIndex.open(db, mi.MilvusSettings(collection="other"))
    with pytest.raises(SearchIndexError, match="no Milvus Lite database"):
        mi.MilvusIndex.open(str(tmp_path / "missing.db"))


def test_a_missing_extra_names_it(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_pymilvus(name, *args, **kwargs):
        if name.split(".")[0] in ("pymilvus", "milvus_lite"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pymilvus)
    (tmp_path / "lib").mkdir()
    _write(tmp_path / "lib" / "a.wav", 440)
    with pytest.raises(SearchIndexError, match=r'pip install "kikimimi\[milvus\]"'):
        mi.update_milvus_index(FrequencyCLAP(), tmp_path / "lib", str(tmp_path / "k.db"), model_id="fake")
    with pytest.raises(SearchIndexError, match="ends in .db"):
        mi._client(str(tmp_path / "k.sqlite"), None)
    assert mi.is_database_uri("http://localhost:19530") and mi.is_database_uri("x/y.db")
    assert not mi.is_database_uri(tmp_path / "index")


def test_index_command_with_db_builds_updates_and_matches_the_folder_index(milvus_ok, library, tmp_path, capsys,
                                                                           monkeypatch):
    from clap_fakes import HashTextEncoder, patch_text_encoder, write_tiny_clap2025

    from kikimimi.cli import main as cli_main
    from kikimimi.inference.clap import load_clap

    ckpt = write_tiny_clap2025(tmp_path / "models")
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    db, folder = str(tmp_path / "lib.db"), tmp_path / "idx"
    args = ["index", str(library), "-m", str(ckpt), "--window-s", "4", "--hop-s", "2"]
    assert cli_main([*args, "--db", db, "--db-index", "FLAT"]) == 0
    captured = capsys.readouterr()
    assert "added 6, changed 0, removed 0, unchanged 0, unreadable 1" in captured.out and "broken.wav" in captured.err
    assert "Traceback" not in captured.err and "WARNING" not in captured.err  # Milvus Lite's logs stay quiet
    assert cli_main([*args, "--db", db]) == 0
    captured = capsys.readouterr()
    assert "added 0, changed 0, removed 0, unchanged 6" in captured.out and "WARNING" not in captured.err
    assert cli_main([*args, "-o", str(folder)]) == 0
    assert cli_main([*args, "-o", str(folder), "--db", db]) == 2
    assert "not both" in capsys.readouterr().err
    model = load_clap(ckpt)
    with mi.MilvusIndex.open(db) as index:
        assert index.record["index_type"] == "FLAT" and len(index.model_identity["weights_sha256"]) == 64
        theirs = mi.search(index, "a high tone", model, top=4, model_id=str(ckpt.resolve()))
    ours = search(folder, "a high tone", model, top=4)
    assert [h.key for h in theirs] == [h.key for h in ours]
    np.testing.assert_allclose([h.score for h in theirs], [h.score for h in ours], atol=1e-4)
    # `kikimimi search` reads the database too, with filters; the same answers as the folder
    capsys.readouterr()
    assert cli_main(["search", db, "a high tone", "--top", "4", "--json"]) == 0
    via_db = json.loads(capsys.readouterr().out)["results"]
    assert [(r["key"], r["matched"], r["segments"]) for r in via_db] == [(h.key, h.matched, h.segments) for h in ours]
    assert cli_main(["search", db, "a high tone", "--path-prefix", "sub/", "--json"]) == 0
    assert {r["key"] for r in json.loads(capsys.readouterr().out)["results"]} == {"sub/tone1760.wav",
                                                                                  "sub/tone3520.wav"}
    assert cli_main(["search", db, "a tone", "--min-duration-s", "5", "--segments", "--json"]) == 0
    assert {r["key"] for r in json.loads(capsys.readouterr().out)["results"]} == {"long.wav"}
    assert cli_main(["search", str(folder), "a tone", "--tag", "dog"]) == 2
    assert "filter a Milvus database" in capsys.readouterr().err
