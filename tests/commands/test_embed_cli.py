"""`kikimimi embed`: outputs, manifest, failures listed, resume without recomputation, sharding."""

from __future__ import annotations

import csv

import numpy as np
import official_layouts as ol
import soundfile as sf
import torch

import kikimimi
from kikimimi.cli import main


def _setup(tmp_path):
    model_dir = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    model_dir.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=2), model_dir / "w.pth")
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, sec in enumerate([1.0, 2.5, 1.0, 3.2]):
        folder = audio / "sub" if i % 2 else audio
        sf.write(folder / f"clip{i}.wav", (rng.standard_normal(int(sec * 16000)) * 0.1).astype(np.float32), 16000)
    (audio / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (audio / "empty.wav").write_bytes(b"")
    return model_dir / "w.pth", audio


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_clip_embeddings_match_api_and_failures_listed(tmp_path, capsys):
    model_path, audio = _setup(tmp_path)
    out = tmp_path / "out"
    assert main(["embed", str(audio), "-m", str(model_path), "-o", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "broken.wav" in err and "empty.wav" in err
    manifest = _rows(out / "manifest.csv")
    assert sorted(r["file_name"] for r in manifest) == ["clip0.npy", "clip2.npy", "sub/clip1.npy", "sub/clip3.npy"]
    assert {r["dim"] for r in manifest} == {"320"}
    errors = _rows(out / "errors.csv")
    assert sorted(r["source"].split("/")[-1] for r in errors) == ["broken.wav", "empty.wav"]
    model = kikimimi.load(model_path)
    np.testing.assert_allclose(np.load(out / "sub/clip1.npy"), model.embed(audio / "sub/clip1.wav"), atol=1e-5)


def test_frame_level_and_resume(tmp_path):
    model_path, audio = _setup(tmp_path)
    out = tmp_path / "frames"
    args = ["embed", str(audio), "-m", str(model_path), "-o", str(out), "--level", "frame", "--no-progress"]
    assert main(args) == 0
    data = np.load(out / "sub/clip3.npz")
    assert data["embeddings"].shape[1] == 320 and data["embeddings"].shape[0] == data["timestamps_ms"].shape[0]
    # simulate a kill: one output lost, the others must not be recomputed
    (out / "clip2.npz").unlink()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    assert main(args) == 0
    assert (out / "clip2.npz").exists()
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert len(_rows(out / "manifest.csv")) == 4


def test_sharding_by_rank(tmp_path, monkeypatch):
    model_path, audio = _setup(tmp_path)
    out = tmp_path / "shards"
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        main(["embed", str(audio), "-m", str(model_path), "-o", str(out), "--no-progress"])
    keys0 = {r["file_name"] for r in _rows(out / "manifest.rank0.csv")}
    keys1 = {r["file_name"] for r in _rows(out / "manifest.rank1.csv")}
    assert keys0 and keys1 and not keys0 & keys1 and len(keys0 | keys1) == 4


def test_nothing_embeddable_exits_nonzero(tmp_path):
    model_path, audio = _setup(tmp_path)
    assert main(["embed", str(audio / "broken.wav"), "-m", str(model_path), "-o", str(tmp_path / "o"),
                 "--no-progress"]) == 1
