"""kikimimi's own BYOL-A training checkpoints load with their run's normalisation statistics (recorded in
``args``), the same as the run's ``kikimimi/`` export, instead of the generic BYOL-A fallback."""

from __future__ import annotations

import warnings

import numpy as np

import kikimimi
from kikimimi.checkpoints import BYOLA_FALLBACK_STATS

RUN_STATS = (-12.75, 4.87)


def test_byola_checkpoint_uses_its_run_statistics(tmp_path):
    from kikimimi.audio.synthetic import make_dataset
    from kikimimi.cli import main

    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone", "chirp"))
    assert main(["pretrain", "--method", "byola", "--data", str(tmp_path / "audio"), "--out", str(tmp_path / "runs"),
                 "--steps", "2", "--batch-size", "2", "--byola-dim", "64", "--min-epoch-size", "4",
                 "--norm-stats", *map(str, RUN_STATS), "--no-progress", "--device", "cpu"]) == 0
    run = next((tmp_path / "runs").iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "carry no normalisation statistics" fallback warning
        from_checkpoint = kikimimi.load(run / "checkpoint-2.pth", device="cpu")
    exported = kikimimi.load(run / "kikimimi", device="cpu")
    assert from_checkpoint.norm_stats.to_list() == list(RUN_STATS) != BYOLA_FALLBACK_STATS.to_list()
    assert exported.norm_stats.to_list() == list(RUN_STATS)
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    np.testing.assert_allclose(from_checkpoint.embed(wave, 16000), exported.embed(wave, 16000), atol=1e-6)
