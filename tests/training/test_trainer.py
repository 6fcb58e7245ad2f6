"""Trainer: schedule, loss decrease, atomic checkpoints, exact resume, NaN stop (toy method)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kikimimi.data.corpus import Corpus, CropDataset
from kikimimi.features.normstats import NormStats
from kikimimi.optim import lr_at_step, scaled_lr
from kikimimi.training.trainer import (
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    load_training_checkpoint,
    parameter_hash,
)


# ------------------------------------------------------------------------------------------ toy method
# (also imported by test_distributed.py's torchrun worker script)
class SimulatedKill(Exception):
    """Raised by :class:`ToyMethod` to emulate the process dying after a given step."""


class ToyMethod(nn.Module):
    """Per-frame autoencoder with noise (own generator), dropout (global RNG) and an EMA target."""

    def __init__(self, n_mels: int = 8, hidden: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(n_mels, hidden), nn.Tanh(), nn.Linear(hidden, n_mels))
        self.target = copy.deepcopy(self.encoder)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.generator: torch.Generator | None = None
        self.last_tau: float | None = None
        self.kill_after_step: int | None = None
        self.nan_at_step: int | None = None
        self.calls = 0
        self.steps_seen: list[int] = []

    def set_generator(self, generator: torch.Generator | None) -> None:
        self.generator = generator

    def forward(self, batch: dict) -> dict:
        self.calls += 1
        x = batch["lms"].transpose(1, 2)  # [B, T, F]
        noise = torch.randn(x.shape, generator=self.generator).to(x.device) * 0.1
        h = nn.functional.dropout(x + noise, p=0.1, training=self.training)
        y = self.encoder(h)
        with torch.no_grad():
            t = self.target(x)
        loss = ((y - x) ** 2).mean() + 0.1 * ((y - t) ** 2).mean()
        if self.nan_at_step is not None and len(self.steps_seen) + 1 >= self.nan_at_step:
            loss = loss * float("nan")
        return {"loss": loss}

    @torch.no_grad()
    def on_after_step(self, step: int, total_steps: int) -> None:
        self.steps_seen.append(step)
        for pt, po in zip(self.target.parameters(), self.encoder.parameters(), strict=True):
            pt.mul_(0.9).add_(po, alpha=0.1)
        self.last_tau = 0.9
        if self.kill_after_step is not None and step >= self.kill_after_step:
            raise SimulatedKill(step)

    def param_groups(self, weight_decay: float) -> list[dict]:
        decay = [p for p in self.encoder.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.encoder.parameters() if p.ndim < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def export_official_state_dict(self) -> dict:
        return {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}

    def config_dict(self) -> dict:
        return {"method": "toy"}


def make_cache_corpus(root: Path, n_files: int = 10, n_mels: int = 8, seed: int = 0) -> Corpus:
    """Write ``n_files`` random log-mel ``.npy`` files of varying length and a manifest."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n_files):
        frames = int(rng.integers(10, 40))
        lms = rng.normal(-5.0, 2.0, size=(n_mels, frames)).astype(np.float32)
        np.save(root / f"item{i}.npy", lms)
        names.append(f"item{i}.npy")
    (root / "manifest.csv").write_text("file_name\n" + "".join(f"{n}\n" for n in names))
    (root / "prep.json").write_text(json.dumps({"preset": None}))
    return Corpus("cache", [root / n for n in names], None, [str(root)])


def _dataset(tmp_path: Path, n_files: int = 10) -> CropDataset:
    corpus = make_cache_corpus(tmp_path / "cache", n_files=n_files)
    return CropDataset(corpus, crop_frames=16, norm_stats=NormStats(-5.0, 2.0), seed=7)


def _config(out: Path, **kw) -> TrainConfig:
    base = dict(
        method="toy",
        steps=6,
        batch_size=2,
        accum_iter=2,
        lr=3e-3,
        warmup_steps=2,
        min_lr=1e-4,
        grad_clip=3.0,
        amp="off",
        device="cpu",
        seed=5,
        log_every=1,
        out_dir=str(out),
    )
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------------------ schedule
def test_schedule_warmup_and_cosine_end():
    total, warm, base, low = 100, 10, 1e-3, 1e-5
    assert lr_at_step(0, total, base, warmup_steps=warm, min_lr=low) == 0.0
    assert lr_at_step(5, total, base, warmup_steps=warm, min_lr=low) == pytest.approx(base / 2)
    assert lr_at_step(warm, total, base, warmup_steps=warm, min_lr=low) == pytest.approx(base)
    mid = warm + (total - warm) // 2
    assert lr_at_step(mid, total, base, warmup_steps=warm, min_lr=low) == pytest.approx((base + low) / 2)
    end = lr_at_step(total - 1, total, base, warmup_steps=warm, min_lr=low)
    assert low < end < low + 1e-3 * base
    values = [lr_at_step(s, total, base, warmup_steps=warm, min_lr=low) for s in range(warm, total)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone decay after warm-up
    assert lr_at_step(50, total, base, schedule="constant") == base
    assert scaled_lr(3e-4, 2048) == pytest.approx(2.4e-3)
    with pytest.raises(ValueError, match="schedule"):
        lr_at_step(0, 10, base, schedule="linear")


# ------------------------------------------------------------------------------------------ training
def test_toy_training_lowers_loss_and_writes_logs(tmp_path):
    ds = _dataset(tmp_path)
    cfg = _config(tmp_path / "run", steps=40, accum_iter=1, lr=1e-2, warmup_steps=3, log_every=5)
    result = Trainer(ToyMethod(), ds, cfg).fit()
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30, 35, 40]
    for key in ("epoch", "loss", "lr", "ema_tau", "samples_per_s", "elapsed_s"):
        assert key in records[0]
    assert records[-1]["loss"] == pytest.approx(result.losses[40])


def test_checkpoints_are_atomic_and_weights_only_loadable(tmp_path):
    ds = _dataset(tmp_path)
    run = tmp_path / "run"
    result = Trainer(ToyMethod(), ds, _config(run, steps=6, save_every=2)).fit()
    names = sorted(p.name for p in run.iterdir())
    assert [n for n in names if n.startswith("checkpoint-")] == [
        "checkpoint-2.pth",
        "checkpoint-4.pth",
        "checkpoint-6.pth",
    ]
    assert not [n for n in names if "tmp" in n or n.startswith(".")], names
    assert result.checkpoint == run / "checkpoint-6.pth"
    assert (run / "last.pth").resolve() == (run / "checkpoint-6.pth").resolve()
    for name in ("checkpoint-2.pth", "last.pth"):
        ckpt = torch.load(run / name, map_location="cpu", weights_only=True)
        assert set(ckpt) >= {"model", "args", "epoch", "step", "optimizer", "scaler", "trainer_state"}
        assert isinstance(ckpt["args"], dict) and ckpt["args"]["batch_size"] == 2
        assert set(ckpt["model"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
        ts = ckpt["trainer_state"]
        assert {"target.0.weight", "target.2.bias"} <= set(ts["method_state"])
        assert "torch" in ts["ranks"][0]["rng"] and "generator" in ts["ranks"][0]["rng"]
    assert torch.load(run / "checkpoint-2.pth", weights_only=True)["step"] == 2


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    ds = _dataset(tmp_path)  # 10 items, batch 2 → 5 micro-batches/epoch; accum 2 crosses epochs
    full = Trainer(ToyMethod(seed=1), ds, _config(tmp_path / "full", steps=7, save_every=3)).fit()

    killed = ToyMethod(seed=1)
    killed.kill_after_step = 5  # dies after step 5, last checkpoint at step 3
    with pytest.raises(SimulatedKill):
        Trainer(killed, ds, _config(tmp_path / "part", steps=7, save_every=3)).fit()
    part = tmp_path / "part"
    assert (part / "checkpoint-3.pth").exists() and not (part / "checkpoint-6.pth").exists()

    fresh = ToyMethod(seed=99)  # different init: everything must come from the checkpoint
    ds2 = _dataset(tmp_path / "again")  # a fresh dataset object over identical files
    resumed = Trainer(fresh, ds2, _config(part, steps=7, save_every=3, resume=str(part))).fit()

    assert sorted(resumed.losses) == [4, 5, 6, 7]
    for s in (4, 5, 6, 7):
        assert resumed.losses[s] == pytest.approx(full.losses[s], abs=1e-6, rel=0)
    a = load_training_checkpoint(tmp_path / "full" / "checkpoint-7.pth")
    b = load_training_checkpoint(part / "checkpoint-7.pth")
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=1e-6, rtol=0), key
    for key, value in a["trainer_state"]["method_state"].items():
        assert torch.allclose(value, b["trainer_state"]["method_state"][key], atol=1e-6, rtol=0), key
    # the killed run's log lines after step 3 were replaced, every step appears once
    steps = [json.loads(line)["step"] for line in (part / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 8))


def test_resume_restores_method_state_exactly(tmp_path):
    ds = _dataset(tmp_path)
    method = ToyMethod(seed=3)
    Trainer(method, ds, _config(tmp_path / "run", steps=4, save_every=4)).fit()
    other = ToyMethod(seed=4)
    assert parameter_hash(other) != parameter_hash(method)
    # resuming at the final step runs no step and leaves the restored state untouched
    Trainer(other, ds, _config(tmp_path / "run", steps=4, resume=str(tmp_path / "run" / "last.pth"))).fit()
    assert parameter_hash(other) == parameter_hash(method)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    ds = _dataset(tmp_path)
    method = ToyMethod()
    method.nan_at_step = 3
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"at step 3 .*checkpoint-2\.pth"):
        Trainer(method, ds, _config(run, steps=6, save_every=2)).fit()
    assert sorted(p.name for p in run.glob("checkpoint-*.pth")) == ["checkpoint-2.pth"]
    ckpt = load_training_checkpoint(run / "last.pth")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert method.steps_seen == [1, 2]  # the broken step was never applied


def test_config_validation_and_epochs_length(tmp_path):
    with pytest.raises(ValueError, match="exactly one of steps or epochs"):
        TrainConfig(steps=None, epochs=None)
    ds = _dataset(tmp_path)  # 5 micro-batches per epoch with batch 2
    cfg = _config(tmp_path / "run", steps=None, epochs=2, accum_iter=1, warmup_epochs=1, warmup_steps=None)
    result = Trainer(ToyMethod(), ds, cfg).fit()
    assert result.total_steps == 10 and result.step == 10
    ckpt = load_training_checkpoint(result.checkpoint)
    assert ckpt["epoch"] == 2 and ckpt["args"]["warmup"] == 5
    assert math.isclose(ckpt["args"]["abs_lr"], 3e-3)


# ------------------------------------------------------------------------------------------ CLI settings
def test_pretrain_settings_precedence_and_run_names(tmp_path):
    from kikimimi.training.run_folder import run_folder_name
    from kikimimi.training.settings import resolve_settings

    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"batch-size": 8, "mask_ratio": 0.6, "steps": 50}))
    s = resolve_settings({"method": "m2d", "data": ["x"], "config": str(cfg_file), "batch_size": 4,
                          "recipe": "official"})
    assert s.batch_size == 4  # flag beats file
    assert s.mask_ratio == 0.6 and s.steps == 50 and s.epochs is None  # file beats defaults
    assert s.warmup_steps == round(50 * 20 / 300) and s.warmup_epochs is None
    assert s.blr == 3e-4 and s.weight_decay == 0.05 and s.grad_clip == 3.0 and s.seed == 3
    s2 = resolve_settings({"method": "m2d", "data": ["x"], "config": str(cfg_file), "epochs": 2, "recipe": "official"})
    assert s2.epochs == 2 and s2.steps is None and s2.warmup_epochs == 20
    b = resolve_settings({"method": "byola2", "data": ["x"], "recipe": "official"})
    assert (b.optimizer, b.weight_decay, b.schedule, b.mlp_lr_scale) == ("adam", 0.0, "constant", "auto")
    assert b.lr is None  # the official per-version rate is filled in when the run starts (auto_byola)
    assert b.grad_clip is None and b.input_frames == 96 and b.blr is None
    with pytest.raises(ValueError, match="--method is required"):
        resolve_settings({"data": ["x"]})
    with pytest.raises(ValueError, match="--data is required"):
        resolve_settings({"method": "m2d"})

    m = resolve_settings({"method": "m2d", "data": ["x"], "size": "tiny", "input_frames": 208})
    name = run_folder_name(m)
    assert name.startswith("m2d_vit_tiny-80x208p16x16-") and len(name.split("-")[-1]) == 6
    m32 = resolve_settings({"method": "m2d", "data": ["x"], "recipe": "official", "sample_rate": 32000,
                            "patch_size": "16x4"})
    assert "-80x608p16x4p32k-" in run_folder_name(m32)
    assert run_folder_name(b).startswith("AudioNTT2022-BYOLA-64x96d3072-")


def test_amp_resolution_and_bf16_on_cpu(tmp_path):
    from kikimimi.device import resolve_amp

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == (None, False)
    assert resolve_amp("off", cpu) == (None, False)
    assert resolve_amp("bf16", cpu) == (torch.bfloat16, False)
    assert resolve_amp("fp16", cpu) == (torch.float16, True)
    result = Trainer(ToyMethod(), _dataset(tmp_path), _config(tmp_path / "run", steps=3, amp="bf16")).fit()
    assert len(result.losses) == 3 and all(math.isfinite(v) for v in result.losses.values())


def _real_methods() -> bool:
    try:
        import kikimimi.models.byola  # noqa: F401
        import kikimimi.models.vit  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _real_methods(), reason="kikimimi.models (vit/byola) not written yet")
def test_cli_pretrain_real_methods_end_to_end(tmp_path):
    from kikimimi.audio.synthetic import make_dataset
    from kikimimi.checkpoints import parse_official_name
    from kikimimi.cli import main

    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone", "chirp", "noise_burst"))
    common = ["--data", str(tmp_path / "audio"), "--out", str(tmp_path / "runs"), "--steps", "2",
              "--batch-size", "2", "--device", "cpu", "--norm-samples", "8", "--min-epoch-size", "4",
              "--no-progress", "--save-every", "1"]  # fmt: skip
    assert main(["pretrain", "--method", "m2d", "--size", "tiny", "--input-frames", "64", *common]) == 0
    assert main(["pretrain", "--method", "byola", "--byola-dim", "64", *common]) == 0
    runs = {p.name.split("-")[0]: p for p in (tmp_path / "runs").iterdir()}
    m2d = runs["m2d_vit_tiny"]
    name = parse_official_name(m2d / "checkpoint-2.pth")
    assert tuple(name.input_size) == (80, 64) and tuple(name.patch_size) == (16, 16)
    ckpt = torch.load(m2d / "checkpoint-2.pth", map_location="cpu", weights_only=True)
    assert "blocks.0.attn.qkv.weight" in ckpt["model"] and "target_blocks.0.norm1.weight" in ckpt["model"]
    assert ckpt["step"] == 2 and json.loads((m2d / "config.json").read_text())["method"] == "m2d"
    byola = runs["AudioNTT2020"]
    enc = torch.load(byola / "AudioNTT2020-BYOLA-64x96d64.pth", map_location="cpu", weights_only=True)
    assert "features.0.weight" in enc and enc["fc.3.weight"].shape[0] == 64
    # resume the M2D run from step 1 → same step-2 weights as the uninterrupted run
    (m2d / "last.pth").unlink()
    first = torch.load(m2d / "checkpoint-2.pth", map_location="cpu", weights_only=True)["model"]
    (m2d / "checkpoint-2.pth").unlink()
    assert main(["pretrain", "--resume", str(m2d / "checkpoint-1.pth"), "--no-progress"]) == 0
    again = torch.load(m2d / "checkpoint-2.pth", map_location="cpu", weights_only=True)["model"]
    for key, value in first.items():
        assert torch.allclose(value, again[key], atol=1e-6), key
