"""`kikimimi plot`: the figure from an `embed` folder (read through inference.embed_outputs) and the t-SNE settings."""

from __future__ import annotations

import csv

import matplotlib.image as mpimg
import numpy as np
import official_layouts as ol
import pytest
import soundfile as sf
import torch

from kikimimi.cli import main
from kikimimi.evaluation import cluster_plot
from kikimimi.inference.embed_outputs import load_clip_embeddings, read_embed_manifest


def test_plot_reads_an_embed_folder_and_writes_its_figure(tmp_path, capsys):
    model_dir = tmp_path / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    model_dir.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=2), model_dir / "w.pth")
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        label = "tone" if i % 2 else "noise"
        t = np.arange(16000) / 16000
        wave = np.sin(2 * np.pi * 440 * t) * 0.3 if label == "tone" else rng.standard_normal(16000) * 0.1
        sf.write(audio / f"c{i}.wav", wave.astype(np.float32), 16000)
        rows.append((f"c{i}.wav", label))
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([("file_name", "label"), *rows[:-1]])  # c7 unlabelled: left out of the map
    out = tmp_path / "emb"
    assert main(["embed", str(audio), "-m", str(model_dir / "w.pth"), "-o", str(out), "--no-progress"]) == 0
    outputs = read_embed_manifest(out)  # the reader matches what the embed job wrote
    assert len(outputs) == 8 and {o.dim for o in outputs} == {320} and all(o.path.is_file() for o in outputs)
    assert load_clip_embeddings(outputs).shape == (8, 320)
    capsys.readouterr()
    assert main(["plot", str(out), "--labels", str(labels), "-o", str(tmp_path / "map.png")]) == 0
    assert "wrote" in capsys.readouterr().out and mpimg.imread(tmp_path / "map.png").shape[0] > 100
    # a folder that is not an embed output: one line, usage error
    assert main(["plot", str(audio), "--labels", str(labels), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "not a `kikimimi embed` output folder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_frame_level_folder_is_refused_with_the_fix(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"")
    (tmp_path / "manifest.csv").write_text("file_name,source,frames,dim\na.npz,/x/a.wav,3,4\n")
    with pytest.raises(ValueError, match="--level clip"):
        load_clip_embeddings(read_embed_manifest(tmp_path))
    (tmp_path / "manifest.csv").write_text("file_name,source\na.npz,/x/a.wav\n")
    with pytest.raises(ValueError, match="missing column frames, dim"):
        read_embed_manifest(tmp_path)


def test_tsne_runs_single_threaded_with_fewer_iterations(monkeypatch):
    """The settings that took `plot` from 39 s to 3.5 s on 1,000 points (benchmarks/bench_plot.py)."""
    import sklearn.manifold
    from threadpoolctl import threadpool_info

    seen = {}
    real = sklearn.manifold.TSNE

    class Spy(real):
        def fit_transform(self, x, y=None):
            seen["threads"] = {i["internal_api"]: i["num_threads"] for i in threadpool_info()}
            seen["params"] = self.get_params()
            return super().fit_transform(x)

    monkeypatch.setattr(sklearn.manifold, "TSNE", Spy)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 16)), rng.normal(6, 1, (20, 16))])
    xy = cluster_plot.tsne_2d(x)
    assert xy.shape == (40, 2)
    iterations = seen["params"].get("max_iter") or seen["params"].get("n_iter")
    assert iterations == cluster_plot.TSNE_ITERATIONS == 500
    assert set(seen["threads"].values()) == {1}
    assert seen["params"]["perplexity"] == pytest.approx(13.0)  # (N − 1) / 3 for small N
    # the two clusters stay apart in the map
    a, b = xy[:20].mean(0), xy[20:].mean(0)
    radius = max(np.linalg.norm(xy[:20] - a, axis=1).max(), np.linalg.norm(xy[20:] - b, axis=1).max())
    assert np.linalg.norm(a - b) > 2 * radius
