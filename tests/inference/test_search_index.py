"""Search index: incremental updates re-embed only added/changed files, removals and unreadable files are
handled, ranking is right on a fake CLAP model, and `kikimimi index` / `kikimimi search` run end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
from clap_fakes import FrequencyCLAP, HashTextEncoder, patch_text_encoder, write_tiny_clap2025
from conftest import sine

from kikimimi.cli import main as cli_main
from kikimimi.inference.search import SearchIndex, SearchIndexError, search, update_index

SR = 16000


def _write(path, freq, seconds=0.5):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, sine(freq, seconds, SR), SR)
    return path


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "library"
    for f in (220, 440, 880, 1760, 3520):
        _write(root / ("sub" if f > 1000 else "") / f"tone{f}.wav", f)
    (root / "broken.wav").write_bytes(b"not a wav file")
    return root


def test_build_search_and_incremental_update(library, tmp_path):
    model, index_dir = FrequencyCLAP(), tmp_path / "index"
    first = update_index(model, library, index_dir, model_id="fake", batch_size=2)
    assert sorted(first.added) == ["sub/tone1760.wav", "sub/tone3520.wav", "tone220.wav", "tone440.wav",
                                   "tone880.wav"]
    assert [k for k, _ in first.errors] == ["broken.wav"]
    assert sum(model.embedded) == 5
    hits = search(index_dir, "what sounds like 440 Hz", model, top=5)
    keys = [h.key for h in hits]
    assert keys[0] == "tone440.wav" and set(keys[1:3]) == {"tone220.wav", "tone880.wav"}
    assert keys[3:] == ["sub/tone1760.wav", "sub/tone3520.wav"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5) and hits[0].score >= hits[1].score >= hits[4].score
    assert len(search(index_dir, "440", model, top=2)) == 2

    again = update_index(model, library, index_dir, model_id="fake")
    assert again.embedded == 0 and len(again.unchanged) == 5 and sum(model.embedded) == 5
    assert [k for k, _ in again.errors] == ["broken.wav"]  # unchanged unreadable files are not retried

    _write(library / "tone300.wav", 300)                       # added
    _write(library / "tone880.wav", 6000, seconds=0.7)         # changed (new size and mtime)
    os.remove(library / "sub" / "tone1760.wav")                # removed
    before = sum(model.embedded)
    upd = update_index(model, library, index_dir, model_id="fake")
    assert upd.added == ["tone300.wav"] and upd.changed == ["tone880.wav"] and upd.removed == ["sub/tone1760.wav"]
    assert sum(model.embedded) - before == 2
    index = SearchIndex.load(index_dir)
    assert len(index.entries) == 5 and index.embeddings.shape == (5, 13)
    assert search(index, "6000", model, top=1)[0].key == "tone880.wav"
    assert "sub/tone1760.wav" not in {e["key"] for e in index.entries}
    assert len(list(index_dir.glob("embeddings-*.npy"))) == 1  # the previous embeddings file is gone


def test_other_model_needs_rebuild_and_bad_queries_are_explained(library, tmp_path):
    model, index_dir = FrequencyCLAP(), tmp_path / "index"
    update_index(model, library, index_dir, model_id="fake")
    with pytest.raises(SearchIndexError, match="--rebuild"):
        update_index(model, library, index_dir, model_id="other")
    rebuilt = update_index(model, library, index_dir, model_id="other", rebuild=True)
    assert len(rebuilt.added) == 5
    with pytest.raises(SearchIndexError, match="dims"):
        search(index_dir, np.zeros(4, dtype=np.float32))
    with pytest.raises(SearchIndexError, match="no manifest.json"):
        SearchIndex.load(tmp_path / "nowhere")


def test_index_and_search_commands_end_to_end(library, tmp_path, capsys, monkeypatch):
    ckpt = write_tiny_clap2025(tmp_path / "models")
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    out = tmp_path / "idx"
    assert cli_main(["index", str(library), "-m", str(ckpt), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "added 5, changed 0, removed 0, unchanged 0, unreadable 1" in captured.out
    assert "broken.wav" in captured.err
    assert cli_main(["index", str(library), "-m", str(ckpt), "-o", str(out)]) == 0
    assert "added 0, changed 0, removed 0, unchanged 5" in capsys.readouterr().out
    assert cli_main(["search", str(out), "a high tone", "--top", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    scores = [r["score"] for r in data["results"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    # the ranking equals cosine(text, audio) computed directly with the same model
    from kikimimi.inference.clap import cosine_similarity, load_clap

    model = load_clap(ckpt)
    index = SearchIndex.load(out)
    direct = cosine_similarity(model.encode_text(["a high tone"]), model.encode_audio(
        [e["path"] for e in index.entries]))[0]
    best = [index.entries[i]["key"] for i in np.argsort(-direct)[:3]]
    assert [r["key"] for r in data["results"]] == best
    assert cli_main(["search", str(tmp_path / "missing"), "x"]) == 2


# --- search per file (issue 33.2) -----------------------------------------------------------------------------

@pytest.fixture
def clips_and_one_long_file(tmp_path):
    """Six short clips near 440 Hz and one 30-s recording of 440 Hz (29 two-second windows that all match)."""
    root = tmp_path / "clips"
    for f in (400, 420, 460, 480, 500, 530):
        _write(root / f"clip{f}.wav", f)
    _write(root / "long.wav", 440, seconds=30)
    index_dir = tmp_path / "index"
    update_index(FrequencyCLAP(), root, index_dir, model_id="fake", window_s=2, hop_s=1)
    return index_dir


@pytest.fixture(params=["folder", "milvus"])
def search_clips(request, clips_and_one_long_file, tmp_path):
    """``search(text, model, top, segments=)`` over the clips of :func:`clips_and_one_long_file`, in an index
    folder (faiss / numpy) or in a Milvus Lite database built from the same files (the same answers expected)."""
    if request.param == "folder":
        return lambda *a, **k: search(clips_and_one_long_file, *a, **k)
    pytest.importorskip("milvus_lite", reason='the Milvus backend needs pip install "kikimimi[milvus]"')
    from kikimimi.inference import milvus_index as mi

    db, settings = str(tmp_path / "clips.db"), mi.MilvusSettings(index_type="FLAT")
    mi.update_milvus_index(FrequencyCLAP(), tmp_path / "clips", db, model_id="fake", window_s=2, hop_s=1,
                           settings=settings)
    index = mi.MilvusIndex.open(db, settings)
    request.addfinalizer(index.close)
    return lambda *a, **k: mi.search(index, *a, **k)


def test_one_long_file_appears_once_and_says_how_many_segments_matched(search_clips):
    from kikimimi.inference.search import FileHit, SearchHit

    model = FrequencyCLAP()
    flat = search_clips("440 Hz", model, top=5, segments=True)
    assert [h.key for h in flat] == ["long.wav"] * 5 and all(isinstance(h, SearchHit) for h in flat)  # the flood
    files = search_clips("440 Hz", model, top=5)
    keys = [h.key for h in files]
    assert all(isinstance(h, FileHit) for h in files) and len(keys) == len(set(keys)) == 5
    assert keys[0] == "long.wav" and {"clip420.wav", "clip460.wav"} <= set(keys[1:])
    long = next(h for h in files if h.key == "long.wav")
    assert long.segments == 29 and long.matched == 29 and long.end_s - long.start_s == pytest.approx(2.0)
    clip = next(h for h in files if h.key == "clip420.wav")
    assert (clip.matched, clip.segments) == (1, 1)
    assert [h.score for h in files] == sorted((h.score for h in files), reverse=True)


def test_group_hits_by_file_counts_only_down_to_the_last_file_shown():
    from kikimimi.inference.search import SearchHit, group_hits_by_file

    hits = [SearchHit("a", "/a", 0.9, 0, 1), SearchHit("a", "/a", 0.8, 1, 2), SearchHit("b", "/b", 0.7),
            SearchHit("a", "/a", 0.7, 2, 3), SearchHit("c", "/c", 0.6), SearchHit("a", "/a", 0.5, 3, 4)]
    grouped = group_hits_by_file(list(reversed(hits)), top=2)
    assert [(g.key, g.score, g.start_s, g.matched) for g in grouped] == [("a", 0.9, 0, 3), ("b", 0.7, 0.0, 1)]
    assert [g.matched for g in group_hits_by_file(hits, top=3)] == [3, 1, 1]
    assert group_hits_by_file(hits, top=0) == []


@pytest.mark.parametrize("query", ["", "   "])
def test_an_empty_query_is_refused(clips_and_one_long_file, query, capsys):
    from kikimimi.inference.search import SearchQueryError

    with pytest.raises(SearchQueryError, match="empty search query"):
        search(clips_and_one_long_file, query, FrequencyCLAP())
    assert cli_main(["search", str(clips_and_one_long_file), query]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kikimimi search: error: empty search query" in err


def test_search_command_per_file_segments_and_several_queries_with_one_model_load(
        clips_and_one_long_file, tmp_path, capsys, monkeypatch):
    import io

    import kikimimi.inference.clap as clap

    loads = []
    monkeypatch.setattr(clap, "load_clap", lambda *a, **k: loads.append(a) or FrequencyCLAP())
    index = str(clips_and_one_long_file)
    assert cli_main(["search", index, "440 Hz", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and sum("long.wav" in line for line in lines) == 1
    assert any("long.wav" in line and "of 29 segments matched" in line for line in lines)
    assert cli_main(["search", index, "440 Hz", "--top", "3", "--segments", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["per"] == "segment" and [r["key"] for r in data["results"]] == ["long.wav"] * 3

    queries = tmp_path / "queries.txt"
    queries.write_text("400 Hz\n\n500 Hz\n")
    loads.clear()
    assert cli_main(["search", index, "--queries", str(queries), "--top", "1", "--json"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(loads) == 1
    assert [(d["query"], d["results"][0]["key"]) for d in docs] == [("400 Hz", "clip400.wav"),
                                                                      ("500 Hz", "clip500.wav")]
    monkeypatch.setattr("sys.stdin", io.StringIO("420 Hz\n480 Hz\n"))
    loads.clear()
    assert cli_main(["search", index, "-", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert len(loads) == 1 and "# 420 Hz" in out and "clip480.wav" in out
    queries.write_text("\n  \n")
    assert cli_main(["search", index, "--queries", str(queries)]) == 2
    assert "no queries in" in capsys.readouterr().err


class _NoWalk(list):
    """Entries that refuse to be walked (only indexed and counted): a per-query pass over every file shows."""

    def __iter__(self):
        raise AssertionError("a per-file search walked every entry of the index")


def test_per_file_search_reads_segment_counts_of_the_files_hit_only(clips_and_one_long_file):
    """At 1M files, building {key: segments} for every entry on each query cost ~0.7 s per text query in serve."""
    from kikimimi.inference.search import search_files

    index = SearchIndex.load(clips_and_one_long_file)
    query = FrequencyCLAP().encode_text(["440 Hz"])[0]
    first = search_files(index, query, top=4)  # the key table is built once here
    index.entries = _NoWalk(index.entries)
    again = search_files(index, query, top=4)
    assert again == first and again[0].key == "long.wav" and again[0].segments == 29
    assert index.search_files(query, top=4) == first
