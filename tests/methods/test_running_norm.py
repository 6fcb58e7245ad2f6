"""BYOL-A v1 running pre-normalisation (kikimimi.methods.running_norm) and its wiring into BYOLA / pretrain."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from kikimimi.features.frontend import FLOAT32_EPS
from kikimimi.methods import build_method
from kikimimi.methods.byola import BYOLA
from kikimimi.methods.running_norm import RunningNorm

F_BINS, T_FRAMES = 4, 6


def _reference(items: list[torch.Tensor]) -> list[tuple[float, float]]:
    """Plain-Python (mean, std) after each item, straight from the description in docs/reference.md §7.2."""
    out, item_means, sq_devs = [], [], []
    for x in items:
        vals = [float(v) for v in x.double().flatten()]
        item_means.append(sum(vals) / len(vals))
        mean = sum(item_means) / len(item_means)
        sq_devs.append(sum((v - mean) ** 2 for v in vals) / len(vals))
        var = sum(sq_devs) / len(sq_devs)
        out.append((mean, max(math.sqrt(var), FLOAT32_EPS)))
    return out


def test_hand_computed_running_mean_and_std() -> None:
    ones = torch.ones(F_BINS, T_FRAMES)
    alt = torch.tensor([0.0, 2.0]).repeat(F_BINS * T_FRAMES // 2).reshape(F_BINS, T_FRAMES)
    batch = torch.stack([ones, 3 * ones, alt])  # item means 1, 3, 1
    rn = RunningNorm(epoch_samples=100)
    rn.train()
    out = rn(batch)
    # item 1: mean 1, sq. dev 0 → std clamps to eps, output 0
    assert torch.equal(out[0], torch.zeros(F_BINS, T_FRAMES))
    # item 2: mean (1+3)/2 = 2, var (0 + 1)/2 = 0.5 → (3 − 2)/sqrt(0.5) = sqrt(2)
    torch.testing.assert_close(out[1], torch.full((F_BINS, T_FRAMES), math.sqrt(2.0)))
    # item 3: mean 5/3, sq. dev ((5/3)² + (1/3)²)/2 = 13/9, var (0 + 1 + 13/9)/3 = 22/27
    std3 = math.sqrt(22 / 27)
    expected3 = (alt - 5 / 3) / std3
    torch.testing.assert_close(out[2], expected3)
    assert rn.count == 3
    assert rn.mean == pytest.approx(5 / 3, abs=1e-12) and rn.std == pytest.approx(std3, abs=1e-12)


def test_batches_equal_item_by_item_and_reference() -> None:
    g = torch.Generator().manual_seed(0)
    items = [torch.randn(F_BINS, T_FRAMES, generator=g) * (1 + i) - 5 for i in range(7)]
    ref = _reference(items)
    batched = RunningNorm(None).train()
    out = torch.cat([batched(torch.stack(items[:3])), batched(torch.stack(items[3:]))])
    single = RunningNorm(None).train()
    for i, x in enumerate(items):
        y = single(x)  # one item [F, T] → [F, T]
        assert y.shape == x.shape
        mean, std = ref[i]
        torch.testing.assert_close(y, ((x.double() - mean) / std).float())
        torch.testing.assert_close(out[i], y)
    assert batched.count == single.count == 7
    assert batched.mean == pytest.approx(ref[-1][0], abs=1e-10)
    assert batched.std == pytest.approx(ref[-1][1], abs=1e-10)


def test_updates_stop_after_budget_and_eval_does_not_update() -> None:
    g = torch.Generator().manual_seed(1)
    items = torch.randn(8, F_BINS, T_FRAMES, generator=g) * 2 + 1
    rn = RunningNorm(epoch_samples=2, max_update_epochs=2).train()  # budget 4 items
    assert rn.max_updates == 4 and not rn.frozen
    out = torch.cat([rn(items[:3]), rn(items[3:6])])
    assert rn.count == 4 and rn.frozen
    mean4, std4 = _reference(list(items[:4]))[-1]
    assert rn.mean == pytest.approx(mean4, abs=1e-10) and rn.std == pytest.approx(std4, abs=1e-10)
    # items 5 and 6 arrive after the budget: normalised with the frozen statistics
    torch.testing.assert_close(out[4:], ((items[4:6].double() - mean4) / std4).float())
    rn(items[6:])
    assert rn.count == 4 and rn.mean == pytest.approx(mean4, abs=1e-10)

    fresh = RunningNorm(epoch_samples=2).eval()
    x = items[:2]
    assert torch.equal(fresh(x), x)  # no statistics yet: identity (mean 0, var 1)
    assert fresh.count == 0
    fresh.train()
    fresh(x, update=False)
    assert fresh.count == 0
    fresh(x)
    assert fresh.count == 2


def test_state_dict_round_trip_continues_identically() -> None:
    g = torch.Generator().manual_seed(2)
    a = RunningNorm(epoch_samples=3).train()
    a(torch.randn(4, F_BINS, T_FRAMES, generator=g) - 4)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert set(saved) == {"_extra_state"} and saved["_extra_state"]["count"] == 4
    b = RunningNorm(epoch_samples=3).train()
    b.load_state_dict(saved)
    assert (b.count, b.mean, b.std) == (a.count, a.mean, a.std)
    nxt = torch.randn(5, F_BINS, T_FRAMES, generator=g) * 3
    assert torch.equal(a(nxt), b(nxt))
    assert (b.count, b.mean, b.std) == (a.count, a.mean, a.std)
    with pytest.raises(ValueError, match="count"):
        b.load_state_dict({"_extra_state": {"mean": torch.tensor(0.0)}})
    with pytest.raises(ValueError, match="epoch_samples"):
        RunningNorm(epoch_samples=0)
    with pytest.raises(ValueError, match=r"\[B, F, T\]"):
        a(torch.zeros(2, 1, F_BINS, T_FRAMES))


def _raw_logmel_batch(b: int = 4, frames: int = 48) -> torch.Tensor:
    """Raw BYOL-A log-mel crops ``[b, 64, frames]`` of synthetic tones + noise (~0.5 s each)."""
    from kikimimi.features.frontend import LogMelSpectrogram, get_preset

    cfg = get_preset("byola")
    g = torch.Generator().manual_seed(3)
    t = torch.arange((frames - 1) * cfg.hop_length) / cfg.sample_rate
    tones = [0.3 * torch.sin(2 * math.pi * (220 * (i + 1)) * t) for i in range(b)]
    waves = torch.stack([w + 0.01 * torch.randn(t.shape, generator=g) for w in tones])
    return LogMelSpectrogram(cfg)(waves)[..., :frames]


def test_byola_v1_step_on_raw_logmel() -> None:
    lms = _raw_logmel_batch()
    assert lms.shape == (4, 64, 48) and float(lms.mean()) < -1.0  # genuinely un-normalised input
    torch.manual_seed(0)
    model = BYOLA(1, d=32, proj_hidden=64, proj_dim=16, n_memory=8, epoch_samples=3, max_update_epochs=2)
    assert model.pre_norm == "running" and model.running_norm.max_updates == 6
    out = model({"lms": lms})
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.encoder.parameters() if p.grad is not None)
    assert model.running_norm.count == 4
    assert model.running_norm.mean == pytest.approx(float(lms.double().mean()), abs=1e-3)
    # the mixup bank holds pre-normalised items (pre-norm runs before the augmentations)
    assert abs(float(torch.stack(list(model.augment.mixup.bank)).mean())) < 1.0
    model({"lms": lms})
    assert model.running_norm.count == 6 and model.running_norm.frozen
    model.eval()
    frozen = (model.running_norm.count, model.running_norm.mean)
    model({"lms": lms})
    assert (model.running_norm.count, model.running_norm.mean) == frozen


def test_byola_pre_norm_config_defaults_and_rebuild() -> None:
    torch.manual_seed(0)
    v1 = BYOLA(1, d=32, n_mels=F_BINS * 8, proj_hidden=32, proj_dim=8, n_memory=4, epoch_samples=10)
    cfg = json.loads(json.dumps(v1.config_dict()))
    assert (cfg["pre_norm"], cfg["epoch_samples"], cfg["max_update_epochs"]) == ("running", 10, 10)
    rebuilt = build_method(cfg["method"], **cfg)
    assert rebuilt.running_norm is not None and rebuilt.running_norm.max_updates == 100
    v1({"lms": torch.randn(2, F_BINS * 8, T_FRAMES * 8) - 3})
    sd = v1.state_dict()
    assert "running_norm._extra_state" in sd and sd["running_norm._extra_state"]["count"] == 2
    rebuilt.load_state_dict(sd)
    assert rebuilt.running_norm.count == 2 and rebuilt.running_norm.mean == v1.running_norm.mean

    pre = build_method("byola", d=32, n_mels=F_BINS * 8, proj_hidden=32, proj_dim=8, pre_norm="precomputed")
    assert pre.running_norm is None and not any(k.startswith("running_norm") for k in pre.state_dict())
    v2 = build_method("byola2", d=640, n_mels=F_BINS * 8, proj_hidden=32, proj_dim=8)
    assert v2.pre_norm == "precomputed" and v2.running_norm is None and v2.config_dict()["epoch_samples"] is None
    with pytest.raises(ValueError, match="pre_norm"):
        BYOLA(1, d=32, pre_norm="batch")


def test_pretrain_settings_pre_norm() -> None:
    from kikimimi.training.settings import resolve_settings

    assert resolve_settings({"method": "byola", "data": ["x"]}).pre_norm == "running"
    assert resolve_settings({"method": "byola2", "data": ["x"]}).pre_norm == "precomputed"
    assert resolve_settings({"method": "byola", "data": ["x"], "pre_norm": "precomputed"}).pre_norm == "precomputed"
    assert resolve_settings({"method": "m2d", "data": ["x"]}).pre_norm is None
    with pytest.raises(ValueError, match="--pre-norm is a BYOL-A setting"):
        resolve_settings({"method": "m2d", "data": ["x"], "pre_norm": "running"})


def test_cli_pretrain_running_norm_raw_crops_and_exact_resume(tmp_path) -> None:
    from kikimimi.audio.synthetic import make_dataset
    from kikimimi.cli import main
    from kikimimi.training.trainer import load_training_checkpoint

    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone", "chirp", "noise_burst"))
    out = tmp_path / "runs"
    args = ["pretrain", "--method", "byola", "--byola-dim", "32", "--data", str(tmp_path / "audio"),
            "--out", str(out), "--steps", "2", "--batch-size", "2", "--device", "cpu", "--norm-samples", "8",
            "--min-epoch-size", "4", "--no-progress", "--save-every", "1"]  # fmt: skip
    assert main(args) == 0
    (run,) = out.iterdir()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["pre_norm"] == "running" and cfg["decisions"]["epoch_samples"] == 2 * 3  # 2 × files
    assert cfg["method_config"]["epoch_samples"] == 6 and len(cfg["norm_stats"]) == 2  # corpus stats still kept

    def rn_state(path):
        ts = load_training_checkpoint(path)["trainer_state"]
        return ts["ranks"][0]["method_extra"]["running_norm._extra_state"]

    first = rn_state(run / "checkpoint-2.pth")
    assert first["count"] == 4  # 2 steps × batch 2
    # the method saw raw crops: its running mean is near the corpus log-mel mean, far from 0
    corpus_mean = cfg["norm_stats"][0]
    assert abs(corpus_mean) > 1.0 and abs(float(first["mean"]) - corpus_mean) < 0.5 * abs(corpus_mean)

    weights = load_training_checkpoint(run / "checkpoint-2.pth")["model"]
    (run / "last.pth").unlink()
    (run / "checkpoint-2.pth").unlink()
    assert main(["pretrain", "--resume", str(run / "checkpoint-1.pth"), "--no-progress"]) == 0
    again = rn_state(run / "checkpoint-2.pth")
    assert again["count"] == 4 and torch.equal(again["mean"], first["mean"]) and torch.equal(again["var"], first["var"])
    resumed = load_training_checkpoint(run / "checkpoint-2.pth")["model"]
    for key, value in weights.items():
        assert torch.allclose(value, resumed[key], atol=1e-6), key
