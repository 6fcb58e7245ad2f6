"""`kikimimi pretrain --data AUDIO`: the log-mel cache it prepares (or reuses) when that is faster (issue 33.5)."""

from __future__ import annotations

import json
from pathlib import Path

from kikimimi.audio.synthetic import make_dataset
from kikimimi.cli import main
from kikimimi.data.corpus import Corpus
from kikimimi.training.pretrain import CACHE_MIN_READS, data_cache_rule, expected_reads
from kikimimi.training.settings import resolve_settings


def _settings(**given):
    return resolve_settings({"method": "byola", "data": ["x"], **given})


def test_cache_rule_follows_the_reads_of_the_run():
    files = [Path(f"f{i}.wav") for i in range(59)]
    audio = Corpus("audio", files, None, ["x"])
    byola = _settings(steps=100, batch_size=256)
    assert expected_reads(byola, 59) == byola.norm_samples + 100 * 256
    rule = data_cache_rule(byola, audio)
    assert rule is not None and "59 audio files" in rule and "each" in rule
    # few decodes in all (given statistics, a short run): decoding on the fly is cheaper than preparing
    short = _settings(steps=2, batch_size=4, norm_stats=[-5.0, 4.0])
    assert expected_reads(short, 59) == 8 < CACHE_MIN_READS[0] and data_cache_rule(short, audio) is None
    # each file read about once: no cache even when the total is large
    many = Corpus("audio", [Path(f"f{i}.wav") for i in range(20000)], None, ["x"])
    assert data_cache_rule(_settings(steps=10, batch_size=256, norm_stats=[-5.0, 4.0]), many) is None
    # what a cache cannot reproduce, or data that are a cache already
    assert data_cache_rule(_settings(steps=100, pad_mode="wave_zero"), audio) is None
    assert data_cache_rule(_settings(steps=100, frontend_on_device=True), audio) is None
    assert data_cache_rule(byola, Corpus("cache", files, "byola", ["c"])) is None
    assert data_cache_rule(byola, audio, world_size=2) is None
    # epochs: BYOL-A's running pre-norm epoch is 2 × files
    running = _settings(epochs=10, pre_norm="running", norm_stats=[-5.0, 4.0])
    assert expected_reads(running, 59) == 10 * 2 * 59


def test_pretrain_prepares_then_reuses_the_cache(tmp_path, capsys):
    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone", "chirp", "noise_burst"))
    common = ["pretrain", "--method", "byola", "--byola-dim", "64", "--data", str(tmp_path / "audio"), "--out",
              str(tmp_path / "runs"), "--batch-size", "2", "--device", "cpu", "--norm-samples", "1000",
              "--no-progress", "--save-every", "1"]
    assert main([*common, "--steps", "1"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "log-mel cache" in line]
    assert len(lines) == 1 and "3 files converted now, 0 reused" in lines[0] and "3 audio files" in lines[0]
    caches = list((tmp_path / "runs").glob("logmel-cache-byola-*"))
    assert len(caches) == 1 and len(list(caches[0].rglob("*.npy"))) == 3
    run = next(p for p in (tmp_path / "runs").iterdir() if p.name.startswith("AudioNTT2020"))
    decisions = json.loads((run / "config.json").read_text())["decisions"]
    assert decisions["data_cache"] == str(caches[0]) and "a log-mel cache computes each once" in decisions[
        "data_cache_rule"]
    # a second run on the same data reuses it; a resumed run trains from it again
    assert main([*common, "--steps", "1", "--run-name", "again"]) == 0
    assert "0 files converted now, 3 reused" in capsys.readouterr().out
    assert main(["pretrain", "--resume", str(run), "--steps", "2", "--no-progress"]) == 0
    assert f"training from the log-mel cache {caches[0]}" in capsys.readouterr().out
