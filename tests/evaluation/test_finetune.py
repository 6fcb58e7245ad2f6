"""Fine-tuning (evaluation.finetune, augment_ft), `kikimimi finetune`, and the UMAP option of the plots."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import sys

import numpy as np
import pytest
import torch

import kikimimi
from kikimimi.audio.synthetic import make_dataset
from kikimimi.cli import main
from kikimimi.evaluation.finetune import (
    FinetuneConfig,
    build_finetune_model,
    build_optimizer,
    finetune_lr,
    finetune_task,
    layer_decay_param_groups,
    set_dur_frames,
)
from kikimimi.evaluation.tasks import Task
from kikimimi.features.augment_finetune import mask_along_axis, mixup_log_mel, random_resize_crop_batch, spec_augment
from kikimimi.methods import build_method
from kikimimi.optim import LARS

CLASSES = ("tone", "noise_burst", "clicks")
FAST = dict(optimizer="adamw", lr=1e-3, warmup_epochs=1, batch_size=8, mixup=0.0, freq_mask=8, time_mask=16,
            rrc=False)


@pytest.fixture(scope="module")
def tiny_m2d(tmp_path_factory):
    """A random-init tiny M2D (80x64 input) written as an official checkpoint and loaded back."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the random init itself (fine-tuning is seeded by FinetuneConfig.seed)
        method = build_method("m2d", size="tiny", input_size=(80, 64))
    folder = tmp_path_factory.mktemp("ckpt") / "m2d_vit_base-80x64p16x16-test"
    folder.mkdir()
    torch.save(method.export_official_state_dict(), folder / "checkpoint-1.pth")
    return kikimimi.load(folder / "checkpoint-1.pth", size="tiny")


@pytest.fixture(scope="module")
def split_task(tmp_path_factory):
    csv_path = make_dataset(tmp_path_factory.mktemp("data"), n_per_class=8, duration_s=1.0, classes=CLASSES)
    return Task.from_csv(csv_path)


@pytest.fixture(scope="module")
def fold_csv(tmp_path_factory):
    """The same kind of sounds as a 2-fold task (no validation split)."""
    root = tmp_path_factory.mktemp("cv")
    labels = make_dataset(root / "audio", n_per_class=6, duration_s=1.0, classes=CLASSES, seed=1)
    rows = list(csv.DictReader(open(labels)))
    out = root / "cv.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "label", "fold"])
        for i, r in enumerate(rows):
            w.writerow([str(labels.parent / r["file_name"]), r["label"], 1 + i % 2])
    return out


def test_tiny_m2d_learns_separable_classes(tiny_m2d, split_task, tmp_path):
    result = finetune_task(tiny_m2d, split_task, FinetuneConfig(epochs=8, **FAST), tmp_path / "ft")
    assert result.metric == "accuracy" and result.selection == "valid"
    assert result.score >= 0.8, result.history
    assert len(result.history) == 8 and result.history[0]["loss"] > result.history[-1]["loss"]
    best = result.best_epochs[0]
    valid = [h["select_score"] for h in result.history]
    assert valid[best - 1] == max(valid)  # selected on validation, ties -> later epoch
    assert all(v < valid[best - 1] for v in valid[best:])
    assert set(result.per_class_accuracy) == set(CLASSES)
    # the selected weights were exported in kikimimi format and load with their head
    enc = kikimimi.load(result.model_dirs[0])
    cfg = enc.bundle.config
    assert cfg["head"]["n_classes"] == 3 and cfg["head"]["classes"] == sorted(CLASSES)
    assert cfg["head"]["activation"] == "softmax"  # how `kikimimi tag` reads a single-label head
    assert cfg["finetune"]["selection"] == "valid"
    assert enc.bundle.head is not None and enc.embed(np.zeros(16000, np.float32)).shape == (5 * 192,)


def test_multi_label_uses_bce_and_map(tiny_m2d, split_task, tmp_path):
    rows = list(csv.DictReader(open(split_task.source)))
    extra = {"tone": "tonal", "noise_burst": "noisy", "clicks": "noisy"}
    out = tmp_path / "multi.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "label", "split"])
        for r in rows:
            labels = f"{r['label']},{extra[r['label']]}"
            w.writerow([str(split_task.source.parent / r["file_name"]), labels, r["split"]])
    task = Task.from_csv(out)
    assert task.multi_label and task.n_classes == 5
    result = finetune_task(tiny_m2d, task, FinetuneConfig(epochs=2, **{**FAST, "mixup": 0.5}), tmp_path / "ft")
    assert result.metric == "mAP" and 0.0 < result.score <= 1.0 and result.per_class_accuracy == {}
    assert kikimimi.load(result.model_dirs[0]).bundle.config["head"]["activation"] == "sigmoid"
    assert len(result.predictions[0]["scores"]) == 5 and "," in result.predictions[0]["label"]


def test_byola_finetune_runs(split_task, tmp_path):
    from kikimimi.checkpoints.bundle import EncoderBundle
    from kikimimi.features.frontend import PRESETS
    from kikimimi.features.normstats import NormStats
    from kikimimi.models.byola import AudioNTT2020

    torch.manual_seed(0)
    bundle = EncoderBundle("byola", AudioNTT2020(n_mels=64, d=64), PRESETS["byola"], NormStats(-8.0, 4.0),
                           {"family": "byola", "byola": {"version": 1, "n_mels": 64, "d": 64}})
    cfg = FinetuneConfig(epochs=2, **{**FAST, "rrc": True, "mixup": 0.3}, norm_stats=(-8.0, 4.0))
    result = finetune_task(bundle, split_task, cfg, tmp_path / "b")
    assert len(result.history) == 2 and all(math.isfinite(h["loss"]) for h in result.history)
    assert 0.0 <= result.score <= 1.0
    assert kikimimi.load(result.model_dirs[0]).bundle.head.linear.in_features == 64


def test_lars_step_matches_hand_computation():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([w, b], lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.001)
    w.grad = torch.tensor([[0.0, 1.0]])
    b.grad = torch.tensor([2.0])
    opt.step()
    d = np.array([0.0, 1.0]) + 0.1 * np.array([3.0, 4.0])  # g + wd·w = [0.3, 1.4]
    d = d * 0.001 * 5.0 / np.linalg.norm(d)  # trust ratio
    np.testing.assert_allclose(w.detach().numpy()[0], np.array([3.0, 4.0]) - 0.5 * d, rtol=1e-6)
    np.testing.assert_allclose(b.item(), 1.0 - 0.5 * 2.0)  # 1-D: plain momentum SGD, no decay/adaptation
    # second step: momentum buffer m = 0.9·m + d
    w.grad = torch.tensor([[0.0, 1.0]])
    b.grad = torch.tensor([2.0])
    w_before = w.detach().numpy()[0].copy()
    opt.step()
    d2 = np.array([0.0, 1.0]) + 0.1 * w_before
    d2 = d2 * 0.001 * np.linalg.norm(w_before) / np.linalg.norm(d2)
    np.testing.assert_allclose(w.detach().numpy()[0], w_before - 0.5 * (0.9 * d + d2), rtol=1e-6)
    np.testing.assert_allclose(b.item(), 0.0 - 0.5 * (0.9 * 2.0 + 2.0), rtol=1e-6)


def test_warmup_cosine_lr_values():
    cfg = FinetuneConfig(lr=0.5, epochs=10, warmup_epochs=2, min_lr=1e-7)
    iters = 4  # 40 steps, 8 of warm-up
    assert finetune_lr(0, iters, cfg) == 0.0
    assert finetune_lr(4, iters, cfg) == pytest.approx(0.25)  # half-way through the warm-up (epoch 1.0)
    assert finetune_lr(8, iters, cfg) == pytest.approx(0.5)  # end of warm-up = peak
    assert finetune_lr(24, iters, cfg) == pytest.approx(1e-7 + (0.5 - 1e-7) * 0.5)  # cosine mid-point
    assert finetune_lr(40, iters, cfg) == pytest.approx(1e-7)
    values = [finetune_lr(s, iters, cfg) for s in range(8, 41)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_mixup_shapes_ranges_and_labels():
    rng = np.random.default_rng(0)
    lms = torch.from_numpy(rng.uniform(-15, 5, (6, 80, 32)).astype(np.float32))
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).float()
    mixed, y_mix, lam, partner = mixup_log_mel(lms, y, 0.5, np.random.default_rng(1))
    assert mixed.shape == lms.shape and y_mix.shape == y.shape
    assert np.all((lam >= 0) & (lam <= 1)) and sorted(partner) == list(range(6))
    np.testing.assert_allclose(y_mix.sum(1).numpy(), 1.0, rtol=1e-6)
    i = 0
    a, z = lms[i].double().numpy(), lms[partner[i]].double().numpy()
    expected = np.log(lam[i] * np.exp(a) + (1 - lam[i]) * np.exp(z))
    np.testing.assert_allclose(mixed[i].numpy(), expected, atol=1e-4)
    # the mixture of two power spectra lies between them (in the log domain too)
    lo = torch.minimum(lms, lms[partner]) - 1e-4
    hi = torch.maximum(lms, lms[partner]) + 1e-4
    assert bool(((mixed >= lo) & (mixed <= hi)).all())
    np.testing.assert_allclose(y_mix[i].numpy(), lam[i] * y[i].numpy() + (1 - lam[i]) * y[partner[i]].numpy(),
                               rtol=1e-6)
    same, y_same, _, _ = mixup_log_mel(lms, y, 0.0, np.random.default_rng(1))
    assert same is lms and y_same is y


def test_spec_augment_masks_and_rrc_shapes():
    x = torch.ones(4, 80, 64)
    gen = torch.Generator().manual_seed(3)
    masked, (lo, hi) = mask_along_axis(x, 30, 1, gen)
    assert 0 <= lo <= hi <= 80 and hi - lo < 30
    assert bool((masked[:, lo:hi] == 0).all()) and float(masked.sum()) == 4 * 64 * (80 - (hi - lo))
    out = spec_augment(x, 30, 20, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and set(out.unique().tolist()) <= {0.0, 1.0}
    zero_rows = (out == 0).all(dim=2)[0]  # frequency band (same for every item)
    zero_cols = (out == 0).all(dim=1)[0]
    assert int(zero_rows.sum()) < 30 and int(zero_cols.sum()) < 20
    assert bool((out == out[0]).all())  # one mask per batch (EVAR / torchaudio iid_masks=False)
    assert spec_augment(x, 0, 0, gen) is x
    crops = random_resize_crop_batch(torch.randn(3, 80, 64), torch.Generator().manual_seed(0))
    assert crops.shape == (3, 80, 64) and torch.isfinite(crops).all()


def test_dur_frames_resamples_or_truncates_pos_embed(tiny_m2d):
    from kikimimi.models.vit import resize_pos_embed

    enc = tiny_m2d.bundle.encoder
    table = enc.pos_embed.detach().clone()  # [1, 1 + 5*4, 192]
    longer = set_dur_frames(copy.deepcopy(enc), 101)  # 6 time patches > 4
    assert longer.config.input_size == (80, 101) and longer.pos_embed.shape == (1, 1 + 5 * 6, 192)
    assert not longer.pos_embed.requires_grad
    grid = table[:, 1:].reshape(1, 5, 4, 192).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(5, 6), mode="bicubic", align_corners=False)
    np.testing.assert_allclose(longer.pos_embed[0, 1:].reshape(5, 6, 192).numpy(),
                               expected[0].permute(1, 2, 0).numpy(), atol=1e-6)
    torch.testing.assert_close(longer.pos_embed[:, :1], table[:, :1])  # CLS row kept
    shorter = set_dur_frames(copy.deepcopy(enc), 40)  # 2 time patches < 4
    assert shorter.pos_embed.shape == (1, 1 + 5 * 2, 192)
    torch.testing.assert_close(shorter.pos_embed[0, 1:].reshape(5, 2, 192), table[0, 1:].reshape(5, 4, 192)[:, :2])
    torch.testing.assert_close(shorter.pos_embed, resize_pos_embed(table, (5, 4), (5, 2)))
    # a 101-frame input is encoded in one pass (6 time steps) instead of chunks of 64 + 32 frames
    lms = torch.randn(2, 80, 101)
    with torch.no_grad():
        assert longer.encode_lms(lms).shape == (2, 6, 5 * 192)
        one_pass = longer.forward_tokens(lms[:, None, :, :96])
    assert one_pass.shape == (2, 30, 192)


def test_layer_decay_lr_per_block(tiny_m2d):
    cfg = FinetuneConfig(lr_decay=0.5, optimizer="adamw")
    model = build_finetune_model(tiny_m2d.bundle, 3, cfg)
    groups = layer_decay_param_groups(model, lr_decay=0.5, weight_decay=0.05, depth=6)
    scale = {}
    for g in groups:
        for name in g["names"]:
            scale[name] = g["lr_scale"]
            assert g["weight_decay"] == (0.05 if model.get_parameter(name).ndim > 1 else 0.0)
    for i in range(6):
        assert scale[f"encoder.blocks.{i}.attn.qkv.weight"] == pytest.approx(0.5 ** (6 - i))
    assert scale["encoder.patch_embed.proj.weight"] == pytest.approx(0.5 ** 7)
    assert scale["head.linear.weight"] == 1.0 and scale["encoder.norm.weight"] == 1.0
    assert "encoder.pos_embed" not in scale  # fixed table, never trained
    opt = build_optimizer(groups, FinetuneConfig(lr=0.1, optimizer="adamw"))
    from kikimimi.optim import set_lr

    set_lr(opt, 0.1)
    lrs = {g["layer"]: g["lr"] for g in opt.param_groups}
    assert lrs[1] == pytest.approx(0.1 * 0.5**6) and lrs[7] == pytest.approx(0.1)
    frozen = build_finetune_model(tiny_m2d.bundle, 3, FinetuneConfig(freeze_embed=True))
    names = {n for g in layer_decay_param_groups(frozen, depth=6) for n in g["names"]}
    assert "encoder.patch_embed.proj.weight" not in names and "encoder.blocks.0.attn.qkv.weight" in names


def test_no_valid_task_never_selects_on_test(tiny_m2d, fold_csv, tmp_path):
    task = Task.from_csv(fold_csv)
    assert not task.has_valid
    cfg = FinetuneConfig(epochs=2, folds=(1,), **FAST)
    held = finetune_task(tiny_m2d, task, cfg)
    assert held.selection == "holdout" and list(held.fold_scores) == [1]
    assert all(h["select_score"] is not None for h in held.history)
    last = finetune_task(tiny_m2d, task, FinetuneConfig(epochs=2, folds=(1,), no_valid="last_epoch", **FAST))
    assert last.selection == "last_epoch" and last.best_epochs == {1: 2}
    assert all(h["select_score"] is None for h in last.history)
    from kikimimi.evaluation.finetune_report import write_finetune_report

    md = write_finetune_report(held, tmp_path / "rep", model_name="tiny", task=task).read_text()
    assert "selection `holdout`" in md and "no validation split" in md and "never on test" in md


def test_resume_after_kill_continues_with_same_result(tiny_m2d, split_task, tmp_path):
    cfg = FinetuneConfig(epochs=3, **{**FAST, "mixup": 0.5, "rrc": True})
    full = finetune_task(tiny_m2d, split_task, cfg, tmp_path / "full")

    class Killed(Exception):
        pass

    seen = []

    def kill_after_two(info):
        seen.append(info["epoch"])
        if info["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        finetune_task(tiny_m2d, split_task, cfg, tmp_path / "resumed", callback=kill_after_two)
    resumed_epochs = []
    resumed = finetune_task(tiny_m2d, split_task, cfg, tmp_path / "resumed",
                            callback=lambda info: resumed_epochs.append(info["epoch"]))
    assert seen == [1, 2] and resumed_epochs == [3]
    assert resumed.history == full.history and resumed.score == full.score
    assert resumed.predictions == full.predictions and resumed.best_epochs == full.best_epochs
    a = kikimimi.load(full.model_dirs[0]).bundle.encoder.state_dict()
    b = kikimimi.load(resumed.model_dirs[0]).bundle.encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a changed setting refuses the old checkpoint instead of mixing runs
    with pytest.raises(ValueError, match="different run"):
        finetune_task(tiny_m2d, split_task, FinetuneConfig(epochs=3, **{**FAST, "lr": 5e-4}), tmp_path / "resumed")


def test_finetune_command_writes_report(tiny_m2d, split_task, tmp_path, capsys):
    from kikimimi.checkpoints import save_kikimimi

    ckpt = save_kikimimi(tiny_m2d.bundle, tmp_path / "tiny-kikimimi")
    out = tmp_path / "cli"
    argv = ["finetune", str(ckpt), str(split_task.source), "--epochs", "2", "--optimizer", "lars", "--lr", "0.5",
            "--batch-size", "8", "--warmup-epochs", "1", "--mixup", "0", "--no-rrc", "--dur-frames", "101",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    md = (out / "report.md").read_text()
    assert "| tiny-kikimimi | labels | accuracy |" in md and "selection `valid`" in md and "dur_frames 101" in md
    report = json.loads((out / "report.json").read_text())
    assert report["result"]["settings"]["optimizer"] == "lars" and len(report["task_fingerprint"]) == 64
    assert len(report["result"]["history"]) == 2
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == len(split_task.split_items("test")) and {r["label"] for r in rows} <= set(CLASSES)
    model = kikimimi.load(out / "fold0" / "model")
    assert model.bundle.config["vit"]["input_size"] == [80, 101]
    assert model.bundle.encoder.pos_embed.shape == (1, 1 + 5 * 6, 192)
    assert main(["finetune", str(ckpt), str(tmp_path / "missing.csv"), "--out", str(out)]) == 2


def test_umap_missing_gives_install_hint(monkeypatch, tmp_path, capsys):
    from kikimimi.evaluation import cluster_plot

    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` now raises ImportError
    panels = {"m": (np.random.default_rng(0).normal(size=(12, 4)), ["a", "b"] * 6)}
    with pytest.raises(ImportError, match="pip install umap-learn"):
        cluster_plot.plot_clusters(panels, tmp_path / "u.png", method="umap")
    assert not (tmp_path / "u.png").exists()
    with pytest.raises(ValueError, match="unknown map method"):
        cluster_plot.plot_clusters(panels, tmp_path / "u.png", method="pca")
    np.save(tmp_path / "e.npy", panels["m"][0])
    (tmp_path / "l.csv").write_text("file_name,label\n" + "".join(f"f{i}.wav,{'ab'[i % 2]}\n" for i in range(12)))
    code = main(["plot", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.csv"), "-o", str(tmp_path / "p.png"),
                 "--method", "umap"])
    assert code == 2 and "pip install umap-learn" in capsys.readouterr().err
    assert main(["eval", "logmel", "--task", str(tmp_path / "l.csv"), "-o", str(tmp_path / "r"),
                 "--map", "umap"]) == 2
    assert "umap-learn" in capsys.readouterr().err


def test_auto_epochs_follow_the_data_size():
    from kikimimi.evaluation.finetune import AUTO_EPOCHS, auto_epochs

    assert FinetuneConfig().epochs is None  # the default is chosen from the data, no longer a fixed 200
    assert auto_epochs(59) == 34 and auto_epochs(8) == AUTO_EPOCHS[1] == 200 and auto_epochs(5000) == AUTO_EPOCHS[0]
    assert [auto_epochs(n) for n in (10, 100, 1000)] == sorted([auto_epochs(n) for n in (10, 100, 1000)], reverse=True)
    with pytest.raises(ValueError, match="resolve epochs=None"):
        finetune_lr(0, 1, FinetuneConfig())
    with pytest.raises(ValueError, match="max_minutes"):
        FinetuneConfig(max_minutes=0)


def test_max_minutes_stops_keeps_best_and_resumes(tiny_m2d, split_task, tmp_path):
    from kikimimi.evaluation.finetune import auto_epochs

    lines: list[str] = []
    cfg = FinetuneConfig(epochs=None, max_minutes=1e-4, **{**FAST, "batch_size": 4})
    result = finetune_task(tiny_m2d, split_task, cfg, tmp_path / "ft", log=lines.append)
    n_train = len(split_task.split_items("train"))
    planned = auto_epochs(n_train)
    assert result.settings["epochs"] == planned > 1 and result.settings["max_minutes"] == 1e-4
    assert result.stopped_early == {0: 1} and len(result.history) == 1 and result.best_epochs[0] == 1
    assert (tmp_path / "ft" / "fold0" / "best.pt").is_file() and kikimimi.load(result.model_dirs[0]).bundle.head
    text = "\n".join(lines)
    assert f"{n_train} training clips: {planned} epochs" in text
    assert "estimate: " in text and " s per step" in text  # measured from the first steps, before the run ends
    assert "--max-minutes stops it at" in text
    assert f"stopped after epoch 1 of {planned}" in text and "kept the best epoch, 1" in text
    # a rerun with the same folder continues where the limit stopped it (the limit is not part of the run's identity)
    again = finetune_task(tiny_m2d, split_task, dataclasses.replace(cfg, max_minutes=2e-4), tmp_path / "ft")
    assert again.stopped_early == {0: 2} and [h["epoch"] for h in again.history] == [1, 2]


def test_finetune_command_max_minutes(tiny_m2d, split_task, tmp_path, capsys):
    from kikimimi.checkpoints import save_kikimimi

    ckpt = save_kikimimi(tiny_m2d.bundle, tmp_path / "tiny-kikimimi")
    out = tmp_path / "cli"
    argv = ["finetune", str(ckpt), str(split_task.source), "--max-minutes", "0.0001", "--batch-size", "8",
            "--optimizer", "adamw", "--mixup", "0", "--no-rrc", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "epochs (about 2000 clips seen" in err and "stopped after epoch 1 of" in err
    assert len(json.loads((out / "report.json").read_text())["result"]["history"]) == 1
