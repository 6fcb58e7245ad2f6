"""Vector index (exact numpy / faiss flat / IVF / HNSW) and the segment-level search index built on it.

Exact kinds must agree row for row; the approximate kinds must reach recall@10 >= 0.95 against exact search
on held-out queries; add/remove keep positions list-like; the choice is recorded in the manifest; long files
are indexed per window with the right times; a format-/1 index is still read and is re-embedded on update.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP
from conftest import sine

from kikimimi.inference import vector_index as vi
from kikimimi.inference.search import SearchIndex, search, update_index
from kikimimi.inference.vector_index import VectorIndex, recall_at_k
from kikimimi.inference.windows import window_bounds

pytest.importorskip("faiss", reason='the faiss kinds need pip install "kikimimi[serve]"')
SR = 16000


def clustered(n: int, dim: int, seed: int, centres: int = 64) -> np.ndarray:
    """Unit vectors around 64 fixed random centres (a stand-in for embeddings, which are not uniform on the
    sphere); ``seed`` draws the points, so two seeds give two samples of one distribution."""
    c = np.random.default_rng(1234).standard_normal((centres, dim))
    rng = np.random.default_rng(seed)
    x = c[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, dim))
    return vi.normalise(x.astype(np.float32))


def test_exact_kinds_agree_row_for_row_and_auto_choice_is_recorded(monkeypatch):
    x = np.random.default_rng(0).standard_normal((3000, 24)).astype(np.float32) * 3  # not normalised
    q = np.random.default_rng(1).standard_normal((40, 24)).astype(np.float32)
    numpy_index = VectorIndex.build(x, kind="numpy")
    flat = VectorIndex.build(x)  # auto, below the threshold → exact faiss
    assert flat.kind == "flat" and flat.exact and "3000 rows < exact_below" in flat.describe()["reason"]
    s1, r1 = numpy_index.search(q, 10)
    s2, r2 = flat.search(q, 10)
    assert np.array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    direct = vi.normalise(q) @ vi.normalise(x).T  # the definition: cosine, best first
    assert np.array_equal(r1[:, 0], direct.argmax(axis=1))
    np.testing.assert_allclose(s1[:, 0], direct.max(axis=1), atol=1e-5)
    # more rows asked than stored: padded with (-inf, -1)
    s, r = VectorIndex.build(x[:3], kind="numpy").search(q[:1], 5)
    assert r[0, 3:].tolist() == [-1, -1] and np.isneginf(s[0, 3:]).all()
    assert VectorIndex.choose_kind(10, exact_below=5, dim=24) == "hnsw"
    monkeypatch.setattr(vi, "faiss_available", lambda: False)
    assert VectorIndex.build(x).kind == "numpy"  # no faiss: the numpy path, same answers
    assert np.array_equal(VectorIndex.build(x).search(q, 10)[1], r1)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "hnsw_sq"])
def test_approximate_kinds_reach_the_recall_target_on_held_out_queries(kind):
    base = clustered(6000, 32, seed=2)
    queries = clustered(300, 32, seed=3)  # other draws from the same distribution: not stored rows
    exact = VectorIndex.build(base, kind="numpy")
    ann = VectorIndex.build(base, kind=kind, target_recall=0.95)
    info = ann.describe()
    assert info["kind"] == kind and not info["exact"] and info["calibration"]["recall_at_10"] >= 0.95
    recall = recall_at_k(ann.search(queries, 10)[1], exact.search(queries, 10)[1], 10)
    rng = np.random.default_rng(9)  # text-like: as far from the data as CLAP text queries (vi.TEXT_QUERY_NOISE)
    far = vi.normalise(queries + vi.TEXT_QUERY_NOISE * vi.normalise(rng.standard_normal((300, 32)).astype(np.float32)))
    recall_far = recall_at_k(ann.search(far, 10)[1], exact.search(far, 10)[1], 10)
    print(f"{kind}: recall@10 on held-out queries {recall:.3f} (text-like {recall_far:.3f}), {info}")
    assert info["calibration"]["recall_near"] >= 0.95 and info["calibration"]["recall_text"] >= 0.95
    assert "recall_uniform" in info["calibration"]
    # other draws than the calibration's: within the sampling error of 300 queries of its target
    assert recall >= 0.93 and recall_far >= 0.93


def test_ivf_pays_off_only_on_structured_data():
    structured = VectorIndex.build(clustered(8000, 32, seed=7), kind="ivf")
    assert structured.kind == "ivf" and structured.pays_off()
    assert structured.params["nprobe"] * 4 <= structured.params["nlist"]
    uniform = np.random.default_rng(8).standard_normal((8000, 64)).astype(np.float32)
    spread = VectorIndex.build(uniform, kind="ivf")  # no structure: the top 10 sit in most lists
    assert not spread.pays_off()


@pytest.mark.parametrize("kind", ["numpy", "flat", "ivf", "hnsw", "hnsw_sq"])
def test_add_and_remove_keep_list_positions(kind, tmp_path):
    base = clustered(2000, 16, seed=4)
    index = VectorIndex.build(base, kind=kind)
    index.remove([0, 3, 3, 10])
    assert index.size == 1997
    expect = np.delete(np.arange(2000), [0, 3, 10])  # position p now holds original row expect[p]
    probe = [5, 500, 1996]
    _, rows = index.search(base[expect[probe]], 1)
    assert rows[:, 0].tolist() == probe
    extra = clustered(5, 16, seed=5)
    index.add(extra)
    _, rows = index.search(extra, 1)
    assert rows[:, 0].tolist() == list(range(1997, 2002))
    np.testing.assert_allclose(index.vectors([1997]), extra[:1], atol=1e-6 if kind != "hnsw_sq" else 0.02)
    if not index.exact:  # persisted and read back: same answers
        index.save(tmp_path / "v.npz")
        again = VectorIndex.from_saved(index.describe(), path=tmp_path / "v.npz")
        q = clustered(20, 16, seed=6)
        assert np.array_equal(again.search(q, 10)[1], index.search(q, 10)[1])
    with pytest.raises(vi.VectorIndexError, match="cannot remove"):
        index.remove([5000])


def test_search_windows():
    assert window_bounds(5 * SR, SR, 10, 5) == [(0, 5 * SR)]           # short: the whole clip
    assert window_bounds(10 * SR, SR, 10, 5) == [(0, 10 * SR)]          # exactly one window
    assert window_bounds(23 * SR, SR, 10, 5) == [(0, 160000), (80000, 240000), (160000, 320000),
                                                   (208000, 368000)]     # the last one ends at the end
    assert window_bounds(23 * SR, SR, 0, 5) == [(0, 23 * SR)]           # window 0: whole files


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    for f in (220, 440, 880):
        sf.write(root / f"tone{f}.wav", sine(f, 0.5, SR), SR)
    # 4.6 s: 300 Hz for 2.4 s, then 2000 Hz (long for a 2-s window)
    sf.write(root / "long.wav", np.concatenate([sine(300, 2.4, SR), sine(2000, 2.2, SR)]), SR)
    return root


def test_long_files_are_indexed_per_window_and_hits_say_where(library, tmp_path):
    model, out = FrequencyCLAP(), tmp_path / "index"
    update_index(model, library, out, model_id="fake", window_s=2, hop_s=1)
    index = SearchIndex.load(out)
    long = index.entry("long.wav")
    assert long["segments"] == [[0.0, 2.0], [1.0, 3.0], [2.0, 4.0], [2.6, 4.6]]
    assert long["duration_s"] == pytest.approx(4.6)
    assert index.entry("tone440.wav")["segments"] == [[0.0, 0.5]]
    assert index.n_rows == 3 + 4 and index.embeddings.shape == (7, 13)
    best = search(index, "2000 Hz", model, top=2)
    # windows 2-4 s and 2.6-4.6 s are both 2000 Hz (equal scores): the earlier one represents the file
    assert best[0].key == "long.wav" and best[0].start_s >= 2.0 and best[0].end_s > best[0].start_s
    low = search(index, "300 Hz", model, top=1)[0]
    assert (low.key, low.start_s, low.end_s) == ("long.wav", 0.0, 2.0)
    # each row is the embedding of its window, computed from the decoded samples directly
    wave, _ = sf.read(library / "long.wav", dtype="float32")
    direct = model.encode_audio([wave[int(2.6 * SR):]], sample_rate=SR)[0]
    np.testing.assert_allclose(index.embeddings[index.rows_of("long.wav")[-1]], direct, rtol=1e-5, atol=1e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "kikimimi-search-index/2" and manifest["segments"] == {"window_s": 2.0,
                                                                                        "hop_s": 1.0}
    assert manifest["vectors"]["kind"] == "flat" and manifest["rows"] == 7


def test_above_the_threshold_the_index_is_approximate_recorded_and_persisted(library, tmp_path):
    model, out = FrequencyCLAP(), tmp_path / "index"
    update_index(model, library, out, model_id="fake", exact_below=3)
    manifest = json.loads((out / "manifest.json").read_text())
    # above the threshold: an HNSW graph, calibrated, recorded and saved
    assert manifest["vectors"]["kind"] == "hnsw" and "4 rows >= exact_below=3" in manifest["vectors"]["reason"]
    assert manifest["vectors"]["calibration"]["recall_at_10"] >= 0.95
    update_index(model, library, out, model_id="fake", vector_kind="ivf")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["vectors"]["kind"] == "ivf" and "calibration" in manifest["vectors"]
    assert (out / manifest["vectors"]["file"]).is_file()
    approx = SearchIndex.load(out)
    update_index(model, library, tmp_path / "exact", model_id="fake")
    exact = SearchIndex.load(tmp_path / "exact")
    for q in ("220", "2000 Hz", "880 Hz tone"):
        assert [h.key for h in search(approx, q, model, top=3)] == [h.key for h in search(exact, q, model, top=3)]
    # an incremental update rewrites both files; the old vector file is removed
    (library / "tone220.wav").unlink()
    update_index(model, library, out, model_id="fake", vector_kind="ivf")
    assert len(list(out.glob("vectors-*.npz"))) == 1 and len(list(out.glob("embeddings-*.npy"))) == 1
    assert SearchIndex.load(out).entry("tone220.wav") is None


def test_a_format_1_index_is_read_and_then_re_embedded(library, tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    emb = FrequencyCLAP().encode_audio([str(library / "tone440.wav")])
    np.save(out / "embeddings-aaaa.npy", emb.astype(np.float32))
    st = (library / "tone440.wav").stat()
    (out / "manifest.json").write_text(json.dumps({
        "format": "kikimimi-search-index/1", "root": str(library.resolve()), "model": "fake", "dim": 13,
        "embeddings": "embeddings-aaaa.npy", "errors": {},
        "entries": [{"key": "tone440.wav", "path": str((library / "tone440.wav").resolve()), "size": st.st_size,
                     "mtime_ns": st.st_mtime_ns}]}))
    model = FrequencyCLAP()
    hit = search(out, "440", model, top=1)[0]
    assert (hit.key, hit.start_s, hit.end_s) == ("tone440.wav", 0.0, None)
    upd = update_index(model, library, out, model_id="fake")
    assert upd.changed == ["tone440.wav"] and sorted(upd.added) == ["long.wav", "tone220.wav", "tone880.wav"]
    assert SearchIndex.load(out).format == "kikimimi-search-index/2"
