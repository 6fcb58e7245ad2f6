"""Two-process DDP (gloo, CPU) through torchrun: ranks end with identical parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent  # test_trainer.py lives beside this file

WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_trainer import ToyMethod, make_cache_corpus
    from kikimimi.data.corpus import CropDataset
    from kikimimi.features.normstats import NormStats
    from kikimimi.training.trainer import TrainConfig, Trainer

    corpus = make_cache_corpus(__import__("pathlib").Path({cache!r}), n_files=12)
    ds = CropDataset(corpus, crop_frames=16, norm_stats=NormStats(-5.0, 2.0), seed=7)
    cfg = TrainConfig(method="toy", steps=4, batch_size=2, accum_iter=2, lr=1e-2, amp="off", device="cpu",
                      seed=5, log_every=1, save_every=2, out_dir={out!r}, num_workers={workers})
    Trainer(ToyMethod(seed=int(__import__("os").environ["RANK"]) + 10), ds, cfg).fit()
    """
)


def _torchrun(args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", KIKIMIMI_DEBUG_PARAM_HASH=str(tmp_path / "hashes"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert proc.returncode == 0, (
        f"torchrun failed:\nSTDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-3000:]}"
    )
    return proc


def _hashes(tmp_path: Path) -> list[str]:
    files = sorted((tmp_path / "hashes").glob("param-hash-rank*.txt"))
    return [f.read_text().strip() for f in files]


def test_two_rank_gloo_run_keeps_ranks_identical(tmp_path):
    # the cache is written once before launch (both ranks then re-write identical bytes harmlessly)
    sys.path.insert(0, str(TESTS))
    from test_trainer import make_cache_corpus

    make_cache_corpus(tmp_path / "cache", n_files=12)
    script = tmp_path / "worker.py"
    out = tmp_path / "run"
    script.write_text(WORKER.format(tests=str(TESTS), cache=str(tmp_path / "cache"), out=str(out), workers=1))
    _torchrun([str(script)], tmp_path)

    hashes = _hashes(tmp_path)
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # different inits + different data, same result
    ckpt = torch.load(out / "checkpoint-4.pth", map_location="cpu", weights_only=True)
    ts = ckpt["trainer_state"]
    assert ts["world_size"] == 2 and len(ts["ranks"]) == 2
    # per-rank RNG states differ (seed + rank), both saved
    assert not torch.equal(ts["ranks"][0]["rng"]["torch"], ts["ranks"][1]["rng"]["torch"])
    assert ckpt["args"]["effective_batch"] == 2 * 2 * 2
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # only rank 0 logs


def _methods_available() -> bool:
    try:
        from kikimimi.methods import build_method

        build_method("m2d", size="tiny", input_size=(80, 32), patch_size=(16, 16))
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _methods_available(), reason="kikimimi.methods M2D (models/vit.py) not available")
def test_cli_pretrain_two_ranks_m2d(tmp_path):
    from kikimimi.audio.synthetic import make_dataset

    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.6, classes=("tone", "noise_burst", "chirp"))
    args = [
        "-m", "kikimimi", "pretrain", "--method", "m2d", "--size", "tiny", "--input-frames", "32",
        "--data", str(tmp_path / "audio"), "--out", str(tmp_path / "runs"), "--steps", "3",
        "--batch-size", "2", "--device", "cpu", "--norm-samples", "8", "--min-epoch-size", "8",
        "--no-progress", "--log-every", "1", "--warmup-steps", "1",
    ]  # fmt: skip
    _torchrun(args, tmp_path, timeout=180)
    hashes = _hashes(tmp_path)
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("m2d_vit_tiny-80x32p16x16-")
    assert (run / "checkpoint-3.pth").exists()
