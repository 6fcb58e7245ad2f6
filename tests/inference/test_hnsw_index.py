"""HNSW as the automatic approximate index (issue 29): chosen above the exact threshold (scalar-quantised when
the memory budget asks for it), calibrated to recall@10 >= 0.95 and recorded; rows added without a rebuild;
removed rows kept as tombstones that are never returned until a compaction; the search index updates its graph
in place; and versioned embedding spaces: adding or searching with another model is refused, naming both."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP, HashTextEncoder, patch_text_encoder, write_tiny_clap2025
from conftest import sine

from kikimimi.cli import main as cli_main
from kikimimi.inference import search as search_mod
from kikimimi.inference import vector_index as vi
from kikimimi.inference.search import EmbeddingSpaceError, SearchIndex, search_many, update_index
from kikimimi.inference.vector_index import VectorIndex, recall_at_k

pytest.importorskip("faiss", reason='the faiss kinds need pip install "kikimimi[serve]"')
SR = 16000


def clustered(n: int, dim: int, seed: int, centres: int = 48) -> np.ndarray:
    """Unit vectors around fixed random centres; ``seed`` draws the points."""
    c = np.random.default_rng(4321).standard_normal((centres, dim))
    rng = np.random.default_rng(seed)
    return vi.normalise((c[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, dim))).astype(np.float32))


def test_auto_picks_hnsw_above_the_threshold_and_the_quantised_graph_when_memory_asks():
    base = clustered(3000, 32, seed=1)
    graph = VectorIndex.build(base, exact_below=1000)
    info = graph.describe()
    assert info["kind"] == "hnsw" and "3000 rows >= exact_below=1000" in info["reason"]
    cal = info["calibration"]
    assert cal["reached"] and cal["recall_near"] >= 0.95 and cal["recall_text"] >= 0.95
    assert 0 <= cal["recall_uniform"] <= 1  # the worst case is measured and recorded, not a target
    assert info["efSearch"] in vi.EF_STEPS and info["memory_bytes"] == vi.estimate_bytes("hnsw", 3000, 32)
    budget = vi.estimate_bytes("hnsw", 3000, 32) - 1  # the float32 graph does not fit
    small = VectorIndex.build(base, exact_below=1000, memory_budget=budget)
    assert small.kind == "hnsw_sq" and "over the memory budget" in small.describe()["reason"]
    assert small.describe()["memory_bytes"] < info["memory_bytes"]  # 1 byte per dimension instead of 4
    queries = clustered(200, 32, seed=2)
    truth = VectorIndex.build(base, kind="numpy").search(queries, 10)[1]
    assert recall_at_k(small.search(queries, 10)[1], truth) >= 0.95
    assert VectorIndex.choose_kind(999, exact_below=1000, dim=32) == "flat"


def test_a_graph_too_poor_for_the_target_falls_back_to_exact_search(monkeypatch):
    monkeypatch.setattr(vi, "EF_STEPS", (1,))  # a search too narrow to reach the target on this data
    index = VectorIndex.build(clustered(3000, 32, seed=3), exact_below=1000, target_recall=0.999)
    assert index.kind == "flat" and "HNSW reached recall@10" in index.describe()["reason"]


@pytest.mark.parametrize("kind", ["hnsw", "hnsw_sq"])
def test_removed_rows_are_tombstones_never_returned_until_compaction(kind, tmp_path):
    base = clustered(1500, 16, seed=4)
    index = VectorIndex.build(base, kind=kind)
    gone = np.arange(0, 1500, 3)  # a third of the rows
    index.remove(gone)
    assert index.size == 1000 and index.tombstones == 500 and index.describe()["tombstones"] == 500
    live = np.delete(np.arange(1500), gone)
    exact = VectorIndex.build(base[live], kind="numpy")
    # the removed vectors themselves as queries: their own rows must not come back, the live ones must
    _, rows = index.search(base[gone[:50]], 10)
    _, truth = exact.search(base[gone[:50]], 10)
    assert (rows >= 0).all() and rows.max() < 1000 and recall_at_k(rows, truth) >= 0.9
    np.testing.assert_allclose(index.vectors([0]), base[live[:1]], atol=1e-6 if kind == "hnsw" else 0.02)
    index.save(tmp_path / "v.npz")  # tombstones survive a save
    again = VectorIndex.from_saved(index.describe(), path=tmp_path / "v.npz")
    assert again.tombstones == 500 and np.array_equal(again.search(base[:20], 10)[1], index.search(base[:20], 10)[1])
    assert index.compact(reference=base[live]) == 500
    assert index.tombstones == 0 and index.size == 1000 and index.params["compactions"] == 1
    assert index.search(base[live[:30]], 1)[1][:, 0].tolist() == list(range(30))


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "flat"])
def test_rearrange_keeps_reorders_adds_and_removes_without_re_adding(kind):
    base = clustered(2000, 16, seed=5)
    index = VectorIndex.build(base, kind=kind)
    added_before = index._faiss.ntotal
    fresh = clustered(300, 16, seed=6)
    # new order: rows 1000..1999 first, then 300 new ones, then rows 0..499 (500..999 removed)
    sources = np.concatenate([np.arange(1000, 2000), np.full(300, -1), np.arange(0, 500)])
    vectors = np.concatenate([base[1000:], fresh, base[:500]])
    counts = index.rearrange(sources, vectors)
    assert counts == {"kept": 1500, "added": 300, "removed": 500}
    assert index.size == 1800
    if kind == "hnsw":  # the graph grew by the new rows only; removed rows are tombstones
        assert index._faiss.ntotal == added_before + 300 and index.tombstones == 500
    probe = [0, 999, 1000, 1299, 1300, 1799]
    assert index.search(vectors[probe], 1)[1][:, 0].tolist() == probe
    queries = clustered(100, 16, seed=7)
    truth = VectorIndex.build(vectors, kind="numpy").search(queries, 10)[1]
    assert recall_at_k(index.search(queries, 10)[1], truth) >= 0.9
    with pytest.raises(vi.VectorIndexError, match="distinct rows"):
        index.rearrange([0, 0], vectors[:2])


SEARCH_DIM = 13


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    for f in range(200, 2600, 150):  # 16 tones
        sf.write(root / f"tone{f}.wav", sine(f, 0.3, SR), SR)
    return root


def test_the_search_index_updates_its_graph_in_place_and_compacts(library, tmp_path, capsys):
    model, out = FrequencyCLAP(), tmp_path / "index"
    update_index(model, library, out, model_id="fake", exact_below=4)
    first = json.loads((out / "manifest.json").read_text())["vectors"]
    assert first["kind"] == "hnsw" and first["rows"] == 16 and first["calibration"]["reached"]
    (library / "tone200.wav").unlink()
    sf.write(library / "tone3000.wav", sine(3000, 0.3, SR), SR)
    update_index(model, library, out, model_id="fake", exact_below=4)
    info = json.loads((out / "manifest.json").read_text())["vectors"]
    assert info["kind"] == "hnsw" and info["last_update"] == {"kept": 15, "added": 1, "removed": 1, "compacted": 0}
    assert info["tombstones"] == 1 and info["rows"] == 16  # not rebuilt: the removed node is still in the graph
    index = SearchIndex.load(out)
    for f in (350, 3000):  # the new file and an old one are found at the right rows after the reorder
        assert search_mod.search(index, f"{f} Hz", model, top=1)[0].key == f"tone{f}.wav"
    assert cli_main(["index", "--compact", str(out)]) == 0  # the compaction step, asked for
    assert "16 segments, 1 removed segments dropped" in capsys.readouterr().out
    info = json.loads((out / "manifest.json").read_text())["vectors"]
    assert info["tombstones"] == 0 and info["compactions"] == 1 and info["calibration"]["reached"]
    assert len(list(out.glob("vectors-*.npz"))) == 1
    assert cli_main(["index", "--compact", str(tmp_path / "nowhere")]) == 2  # nothing created
    assert "not a search index" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()
    for f in range(350, 1700, 150):  # remove more than a quarter of the graph: compacted by the update
        (library / f"tone{f}.wav").unlink()
    update_index(model, library, out, model_id="fake", exact_below=4)
    info = json.loads((out / "manifest.json").read_text())["vectors"]
    assert info["last_update"]["compacted"] == 9 and info["tombstones"] == 0 and info["rows"] == 7
    assert search_mod.search(out, "3000 Hz", model, top=1)[0].key == "tone3000.wav"


# --- versioned embedding spaces ---------------------------------------------------------------------------

def _identity(weights: str, precision: str = "fp32") -> dict:
    return {"weights_sha256": weights * 64, "weights_bytes": 1, "family": "fake", "config_sha256": "c" * 64,
            "frontend": {"n_mels": 80, "hop": (160,)}, "norm_stats": [-7.1, 4.2], "precision": precision,
            "level": "clip", "sample_rate": SR, "dim": SEARCH_DIM}


def test_adding_or_searching_with_another_embedding_space_is_refused_naming_both(library, tmp_path, monkeypatch):
    spaces = {"model-a": _identity("a"), "model-a-bf16": _identity("a", "bf16"), "model-b": _identity("b")}
    monkeypatch.setattr(search_mod, "model_identity", lambda model, model_id: spaces[model_id])
    model, out = FrequencyCLAP(), tmp_path / "index"
    update_index(model, library, out, model_id="model-a")
    recorded = json.loads((out / "manifest.json").read_text())["model_identity"]
    assert recorded["weights_sha256"] == "a" * 64 and recorded["precision"] == "fp32" and recorded["dim"] == 13
    with pytest.raises(EmbeddingSpaceError) as err:
        update_index(model, library, out, model_id="model-b")
    msg = str(err.value)
    assert "\n" not in msg and "'model-a' (weights aaaaaaaaaaaa, fp32, 13-d)" in msg
    assert "'model-b' (weights bbbbbbbbbbbb, fp32, 13-d)" in msg and "different weights_sha256" in msg
    with pytest.raises(EmbeddingSpaceError, match="different precision.*--rebuild"):
        update_index(model, library, out, model_id="model-a-bf16")
    with pytest.raises(EmbeddingSpaceError, match="searching with model 'model-b'"):
        search_many(out, ["a tone"], model, model_id="model-b")
    assert search_many(out, ["500 Hz"], model, top=1, model_id="model-a")[0][0].key == "tone500.wav"
    # the identity as JSON (tuples read back as lists) is the same space
    search_mod.check_space(SearchIndex.load(out), _identity("a"), "model-a", doing="add")


def test_search_and_serve_commands_refuse_another_model(tmp_path, library, capsys, monkeypatch):
    ckpt = write_tiny_clap2025(tmp_path / "models")
    other = write_tiny_clap2025(tmp_path / "other", seed=1)
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    out = tmp_path / "idx"
    assert cli_main(["index", str(library), "-m", str(ckpt), "-o", str(out)]) == 0
    capsys.readouterr()
    assert cli_main(["search", str(out), "a tone", "-m", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "would mix spaces (different weights_sha256)" in err
    assert f"'{ckpt.name}'" in err and f"'{other.name}'" in err
    assert cli_main(["search", str(out), "a tone", "-m", str(ckpt)]) == 0
    assert cli_main(["serve", str(out), "-m", str(other), "--port", "1"]) == 2
    assert "would mix spaces" in capsys.readouterr().err


def test_an_hnsw_file_of_the_older_layout_is_still_read(tmp_path):
    """Before issue 29 an HNSW graph was saved inside an IndexIDMap2 whose ids were the node numbers."""
    import faiss

    base = clustered(800, 16, seed=8)
    graph = faiss.IndexHNSWFlat(16, 16, faiss.METRIC_INNER_PRODUCT)
    old = faiss.IndexIDMap2(graph)
    old.add_with_ids(base, np.arange(800, dtype=np.int64))
    with open(tmp_path / "v.npz", "wb") as fh:
        np.savez(fh, index=faiss.serialize_index(old), labels=np.arange(800, dtype=np.int64),
                 next_label=np.asarray(800, dtype=np.int64))
    info = {"kind": "hnsw", "exact": False, "rows": 800, "dim": 16, "M": 16, "efSearch": 64}
    index = VectorIndex.from_saved(info, path=tmp_path / "v.npz")
    assert index.search(base[[3, 700]], 1)[1][:, 0].tolist() == [3, 700]
    index.remove([3])  # a tombstone in the unwrapped graph
    assert index.tombstones == 1 and index.search(base[[700]], 1)[1][0, 0] == 699
