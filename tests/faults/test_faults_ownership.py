"""Fault suite: nothing lost, nothing leaked in output folders (issue 25 items 1, 2, 7; issue 33 item 1).

- temporaries: kikimimi deletes only its own temporaries of dead writers, never another program's files;
- one owner per folder: a folder written by one job (``prep``) is refused by another (``embed``), and a job's
  identity is the weights it actually loaded, not the ``source`` its config names;
- numbers at the boundaries: NaN embeddings are a failure of their file, never written or indexed; a corrupted
  index is refused and ``kikimimi index --check`` says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import official_layouts as ol
import pytest
import soundfile as sf
import torch
from clap_fakes import FrequencyCLAP, HashTextEncoder, patch_text_encoder, write_tiny_clap2025

from kikimimi.cli import main
from kikimimi.inference.search import SearchIndex, SearchIndexError, update_index

from .inputs import tone


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    """A tiny official-layout M2D encoder file."""
    folder = tmp_path_factory.mktemp("model") / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    folder.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=2), folder / "w.pth")
    return folder / "w.pth"


def _tones(folder: Path, n: int = 3, step_hz: float = 150.0, seconds: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(folder / f"c{i}.wav", tone(seconds, 300.0 + step_hz * i), 16000, subtype="PCM_16")
    return folder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _finetunes(official: Path, tmp_path: Path, nan: bool = False) -> tuple[Path, Path]:
    """Two kikimimi folders saved from one official file (so their config names the same ``source``) with
    different weights, as two fine-tunes of one base model are (``nan``: the second has one NaN weight)."""
    from kikimimi.checkpoints import load_encoder, save_kikimimi

    folders = []
    for i in range(2):
        bundle = load_encoder(official)
        with torch.no_grad():
            first = next(p for p in bundle.encoder.parameters() if p.ndim > 1)
            first.add_(0.05 * (i + 1))
            if nan and i == 1:
                first.view(-1)[0] = float("nan")
        folders.append(save_kikimimi(bundle, tmp_path / f"finetune{i + 1}"))
    cfg = [json.loads((f / "config.json").read_text()) for f in folders]
    assert cfg[0].get("source") == cfg[1].get("source")  # one source, two sets of weights
    return folders[0], folders[1]


# ------------------------------------------------------------------------------------------ temporaries


def test_foreign_tmp_file_survives_zeroshot_out(tmp_path, monkeypatch, capsys, fault_report):
    """issue 25 #1: `zeroshot --out runs/z.jsonl` deleted a running pretrain's `.checkpoint-109.pth.….tmp`."""
    ckpt = write_tiny_clap2025(tmp_path / "models")
    patch_text_encoder(monkeypatch, HashTextEncoder(dim=32))
    runs = tmp_path / "runs"
    (runs / "pretrain").mkdir(parents=True)
    foreign = [runs / ".checkpoint-109.pth.a1b2c3d4.tmp", runs / "pretrain" / ".log.jsonl.Zq8_xY01.tmp"]
    for f in foreign:
        f.write_bytes(b"another program's file, still being written")
    audio = _tones(tmp_path / "audio", 2)
    argv = ["zeroshot", str(ckpt), str(audio), "--labels", "a,b", "--device", "cpu", "--out", str(runs / "z.jsonl")]
    assert main(argv) == 0
    assert all(f.read_bytes() == b"another program's file, still being written" for f in foreign)
    assert len((runs / "z.jsonl").read_text().splitlines()) == 3
    fault_report("zeroshot", foreign_temporaries_kept=len(foreign))


def test_only_dead_kikimimi_temporaries_are_removed_by_embed(tmp_path, official, fault_report):
    """issue 25 #1: a live writer's temporary and other programs' files survive; a dead writer's goes."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        kept = [out / ".c9.npy.k3j4h5g6.tmp", out / "sub" / ".x.12345678.tmp",
                out / f".kikimimi-{live.pid}-abcd1234.c7.npy.tmp"]
        dead = out / "sub" / f".kikimimi-{_dead_pid()}-abcd1234.c8.npy.tmp"
        for f in [*kept, dead]:
            f.write_bytes(b"x")
        assert main(["embed", str(_tones(tmp_path / "audio", 2)), "-m", str(official), "-o", str(out),
                     "--no-progress", "--device", "cpu"]) == 0
        assert all(f.exists() for f in kept) and not dead.exists()
    finally:
        live.kill()
        live.wait()
    fault_report("embed", foreign_temporaries_kept=len(kept), dead_temporaries_removed=1)


def test_index_deletes_only_files_it_wrote(tmp_path, fault_report):
    """issue 25 #1: `index -o DIR` deleted any `embeddings-*.npy` / `vectors-*.npz` already in DIR."""
    root = _tones(tmp_path / "library", 3)
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    others = [index_dir / "embeddings-mine.npy", index_dir / "vectors-0123456789ab.npz",
              index_dir / ".manifest.json.ab12cd34.tmp"]
    for f in others:
        f.write_bytes(b"not the index's")
    update_index(FrequencyCLAP(), root, index_dir, model_id="fake")
    _tones(root, 4)  # one more file: a second update replaces the index's own files
    update_index(FrequencyCLAP(), root, index_dir, model_id="fake")
    assert all(f.read_bytes() == b"not the index's" for f in others)
    index = SearchIndex.load(index_dir)
    own = sorted(p.name for p in index_dir.glob("embeddings-*.npy") if p not in others)
    assert own == [index.embeddings_file] and len(index.entries) == 4  # its earlier file was removed
    fault_report("index", foreign_files_kept=len(others))


# ------------------------------------------------------------------------------------------ one owner


def test_prep_then_embed_same_folder_refused(tmp_path, official, capsys, fault_report):
    """issue 25 #2: `prep -o X` then `embed -o X` printed "embedded 0, already done N" over log-mels."""
    audio = _tones(tmp_path / "audio")
    folder = tmp_path / "X"
    assert main(["prep", str(audio), "-o", str(folder), "--workers", "1", "--quiet"]) == 0
    mels = {p: p.read_bytes() for p in folder.glob("*.npy")}
    capsys.readouterr()
    embed = ["embed", str(audio), "-m", str(official), "-o", str(folder), "--no-progress", "--device", "cpu"]
    assert main(embed) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "`kikimimi prep`" in err and "`kikimimi embed`" in err, err
    assert "--overwrite" in err
    assert all(p.read_bytes() == b for p, b in mels.items())  # nothing was replaced
    # the other order: prep into an embedding folder
    out = tmp_path / "E"
    assert main([*embed[:5], str(out), *embed[6:]]) == 0
    vectors = {p: p.read_bytes() for p in out.glob("*.npy")}
    capsys.readouterr()
    assert main(["prep", str(audio), "-o", str(out), "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "`kikimimi embed`" in err and "`kikimimi prep`" in err and len(err.splitlines()) == 1, err
    assert all(p.read_bytes() == b for p, b in vectors.items())
    # asked for: --overwrite recomputes every file as embeddings
    assert main([*embed, "--overwrite"]) == 0
    assert all(np.load(p).shape == (np.load(next(iter(vectors))).shape) for p in mels)
    fault_report("prep+embed", refused=2, overwritten=len(mels))


def test_embed_then_index_same_folder_refused(tmp_path, official, capsys, fault_report):
    """issue 25 #2: one lock and one stamp for every job: `index -o` an embedding folder is refused."""
    audio = _tones(tmp_path / "audio", 2)
    out = tmp_path / "E"
    assert main(["embed", str(audio), "-m", str(official), "-o", str(out), "--no-progress", "--device", "cpu"]) == 0
    with pytest.raises(SearchIndexError, match=r"`kikimimi embed`.*`kikimimi index`.*--rebuild"):
        update_index(FrequencyCLAP(), audio, out, model_id="fake")
    assert not (out / "manifest.json").exists()
    fault_report("index", refused=1)


def test_embed_keeps_a_cached_output_only_when_its_shape_matches(tmp_path, official, capsys, fault_report):
    """issue 25 #2: a cached `.npy` with the right name but the wrong shape is recomputed, not trusted."""
    audio = _tones(tmp_path / "audio", 2)
    out = tmp_path / "E"
    argv = ["embed", str(audio), "-m", str(official), "-o", str(out), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    good = np.load(out / "c1.npy")
    np.save(out / "c1.npy", np.zeros((80, 7), np.float32))  # e.g. a log-mel dropped in by hand
    capsys.readouterr()
    assert main(argv) == 0
    assert "embedded 1, already done 1" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(out / "c1.npy"), good, atol=1e-6)
    fault_report("embed", wrong_shape_recomputed=1)


def test_two_finetunes_same_source_refused(tmp_path, official, capsys, fault_report):
    """issue 33 #1: two fine-tunes of one base model into one folder kept the first model's vectors."""
    first, second = _finetunes(official, tmp_path)
    audio = _tones(tmp_path / "audio", 2)
    out = tmp_path / "out"

    def embed(model: Path, folder: Path, *extra: str) -> int:
        return main(["embed", str(audio), "-m", str(model), "-o", str(folder), "--no-progress", "--device", "cpu",
                     *extra])

    assert embed(first, out) == 0
    v1 = np.load(out / "c0.npy")
    capsys.readouterr()
    assert embed(second, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(first) in err and str(second) in err and "--overwrite" in err, err
    np.testing.assert_array_equal(np.load(out / "c0.npy"), v1)
    assert embed(second, out, "--overwrite") == 0
    assert embed(second, tmp_path / "fresh") == 0
    v2 = np.load(out / "c0.npy")
    np.testing.assert_allclose(v2, np.load(tmp_path / "fresh" / "c0.npy"), atol=1e-6)
    assert not np.allclose(v1, v2)
    record = json.loads((out / "embed.json").read_text())
    assert str(second) in record["model"]  # the model the user passed, not the source of its config
    fault_report("embed", same_source_models=2, refused=1, recomputed=2)


def test_two_finetunes_same_source_refused_by_tag_out(tmp_path, official, capsys, fault_report):
    """issue 33 #1: `tag --out` records the identity of the weights used, so the second model is refused."""
    from kikimimi.checkpoints import load_encoder, save_kikimimi
    from kikimimi.checkpoints.bundle import TaggingHead

    models = []
    for i in range(2):
        bundle = load_encoder(official)
        torch.manual_seed(i)
        bundle.head = TaggingHead(bundle.encoder.embedding_dim, 3)
        bundle.config["head"] = {"in_dim": bundle.encoder.embedding_dim, "n_classes": 3}
        models.append(save_kikimimi(bundle, tmp_path / f"tagger{i}"))
    labels = tmp_path / "labels.csv"
    labels.write_text("index,mid,display_name\n0,/m/a,alpha\n1,/m/b,beta\n2,/m/c,gamma\n")
    audio = _tones(tmp_path / "audio", 2)
    out = tmp_path / "tags.jsonl"

    def tag(model: Path, *extra: str) -> int:
        return main(["tag", str(audio), "-m", str(model), "--labels", str(labels), "--device", "cpu",
                     "--out", str(out), *extra])

    assert tag(models[0]) == 0
    header = json.loads(out.read_text().splitlines()[0])
    assert header["about"]["model"] == str(models[0])
    capsys.readouterr()
    assert tag(models[1]) == 2
    err = capsys.readouterr().err.strip()
    assert str(models[0]) in err and str(models[1]) in err and "--overwrite" in err, err
    assert tag(models[1], "--overwrite") == 0
    fault_report("tag", same_source_models=2, refused=1)


def test_weights_fingerprint_is_cached_by_size_and_mtime(tmp_path, official, monkeypatch):
    """issue 33 #1: a rerun on unchanged weights hashes nothing; changed weights are hashed again."""
    from kikimimi import fileio

    cache = tmp_path / "fingerprints.json"
    first = fileio.file_fingerprint(official, cache_file=cache)
    calls = []
    real = fileio._hash_one
    monkeypatch.setattr(fileio, "_hash_one", lambda p: (calls.append(p), real(p))[1])
    assert fileio.file_fingerprint(official, cache_file=cache) == first and calls == []
    copy = tmp_path / "copy.pth"
    data = bytearray(official.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert fileio.file_fingerprint(copy, cache_file=cache)["sha256"] != first["sha256"] and calls == [copy]


# ------------------------------------------------------------------------------------------ numbers


def test_nan_embedding_not_written_by_embed(tmp_path, official, capsys, fault_report):
    """issue 25 #10: one NaN weight gave all-NaN embeddings and `embed` exited 0."""
    _first, poisoned = _finetunes(official, tmp_path, nan=True)
    audio = _tones(tmp_path / "audio", 2)
    out = tmp_path / "out"
    assert main(["embed", str(audio), "-m", str(poisoned), "-o", str(out), "--no-progress", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert all(f"'{audio / f'c{i}.wav'}'" in err for i in range(2)) and "NaN" in err, err
    assert not list(out.glob("*.npy"))
    assert (out / "errors.csv").read_text().count("NaN") == 2
    fault_report("embed", nan_files_failed=2, written=0)


class _NaNForOne(FrequencyCLAP):
    """A fake CLAP model whose embedding of the 450 Hz clip is NaN."""

    def encode_audio(self, audio, sample_rate=None, batch_size=8):
        out = super().encode_audio(audio, sample_rate, batch_size)
        items = [audio] if isinstance(audio, (str, Path)) else list(audio)
        for i, item in enumerate(items):
            wave = np.asarray(item if not isinstance(item, (str, Path)) else sf.read(item)[0])
            peak = np.argmax(np.abs(np.fft.rfft(wave))) * 16000 / len(wave)
            if abs(peak - 450) < 20:
                out[i] = np.nan
        return out


def test_nan_embedding_not_indexed(tmp_path, fault_report):
    """issue 25 #10: `index` reported a NaN file added, and it never appeared in results."""
    root = _tones(tmp_path / "library", 3)  # 300, 450, 600 Hz
    update = update_index(_NaNForOne(), root, tmp_path / "index", model_id="fake")
    assert [k for k, _ in update.errors] == ["c1.wav"] and "NaN" in update.errors[0][1]
    index = SearchIndex.load(tmp_path / "index")
    assert [e["key"] for e in index.entries] == ["c0.wav", "c2.wav"]
    assert np.isfinite(np.asarray(index.embeddings)).all()
    fault_report("index", nan_files_failed=1, indexed=2)


def _built_index(tmp_path: Path) -> Path:
    root = _tones(tmp_path / "library", 4)
    update_index(FrequencyCLAP(), root, tmp_path / "index", model_id="fake")
    assert main(["index", "--check", str(tmp_path / "index")]) == 0
    return tmp_path / "index"


def test_flipped_index_bytes_refused(tmp_path, capsys, fault_report):
    """issue 25 #10: flipped bytes in an index changed rankings with no error."""
    index_dir = _built_index(tmp_path)
    emb = index_dir / SearchIndex.load(index_dir).embeddings_file
    data = bytearray(emb.read_bytes())
    data[-5] ^= 0x40  # one bit of one float
    emb.write_bytes(bytes(data))
    with pytest.raises(SearchIndexError) as info:
        SearchIndex.load(index_dir)
    message = str(info.value)
    assert "\n" not in message and "checksum" in message
    assert f"kikimimi index --check {index_dir}" in message and "--rebuild" in message
    capsys.readouterr()
    assert main(["index", "--check", str(index_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and emb.name in err
    fault_report("index", flipped_bytes_refused=1)


def test_shuffled_manifest_keys_refused(tmp_path, capsys, fault_report):
    """issue 25 #10: shuffled manifest keys attributed hits to the wrong files with no error."""
    index_dir = _built_index(tmp_path)
    manifest = index_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    keys = [e["key"] for e in data["entries"]]
    for e, k in zip(data["entries"], keys[1:] + keys[:1], strict=True):
        e["key"] = k  # the rows stay, the names move: the row counts still agree
    manifest.write_text(json.dumps(data))
    with pytest.raises(SearchIndexError, match=r"entries .* changed or reordered.*index --check"):
        SearchIndex.load(index_dir)
    assert main(["index", "--check", str(index_dir)]) == 1
    # a manifest whose row counts disagree with the vectors
    data["entries"] = data["entries"][:-1]
    manifest.write_text(json.dumps(data))
    assert main(["index", "--check", str(index_dir)]) == 1
    assert "--rebuild" in capsys.readouterr().err
    fault_report("index", shuffled_manifest_refused=1, row_mismatch_refused=1)
