"""M2D2 stage 1.1 (`kikimimi finetune --recipe m2d2-stage1.1`): the recipe's resolved settings against the fact
sheet's table (../shared/docs/fact-sheet-m2d2-2026.md §1, util/ft-as2m.sh), and the patch training mask of
fine-tuning (each chunk's patches masked before the blocks; each frequency row pooled over its visible patches)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from kikimimi.audio.synthetic import make_dataset
from kikimimi.cli import main
from kikimimi.commands import finetune as finetune_command
from kikimimi.evaluation import finetune as ft
from kikimimi.evaluation.finetune import FINETUNE_RECIPES, FinetuneConfig, FinetuneModel
from kikimimi.models.masking import MaskIds, structured_counts
from kikimimi.models.vit import AudioViT, ViTConfig

#: fact sheet §1, stage 1.1: dur_frames 1001, LARS lr 2.0, 70 ep, warm-up 15, batch 64, mixup 0.5, freq/time mask
#: 30/192, training mask 0.5, no RRC (the structured mask is the official default)
FACT_SHEET_STAGE_1_1 = dict(
    dur_frames=1001,
    optimizer="lars",
    lr=2.0,
    epochs=70,
    warmup_epochs=15,
    batch_size=64,
    mixup=0.5,
    freq_mask=30,
    time_mask=192,
    training_mask=0.5,
    training_mask_mode="structured",
    rrc=False,
)


def test_the_recipe_is_the_fact_sheets_stage_1_1() -> None:
    config = FinetuneConfig.from_recipe("m2d2-stage1.1")
    assert {k: getattr(config, k) for k in FACT_SHEET_STAGE_1_1} == FACT_SHEET_STAGE_1_1
    assert FinetuneConfig.from_recipe("m2d2-stage1.1", lr=1.0).lr == 1.0  # a given flag wins
    assert FinetuneConfig.from_recipe(None).training_mask == 0.0  # no recipe: no training mask
    with pytest.raises(ValueError, match="unknown fine-tuning recipe"):
        FinetuneConfig.from_recipe("stage9")
    with pytest.raises(ValueError, match="training_mask must be in"):
        FinetuneConfig(training_mask=1.0)
    parser = argparse.ArgumentParser()
    finetune_command.add_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "recipe")
    assert set(action.choices) == set(FINETUNE_RECIPES)


def _model(mode: str = "structured") -> FinetuneModel:
    torch.manual_seed(0)
    vit = AudioViT(ViTConfig(input_size=(80, 1001), patch_size=(16, 16), embed_dim=32, depth=1, num_heads=2))
    return FinetuneModel(vit, 3, vit.embedding_dim, training_mask=0.5, training_mask_mode=mode)


def test_training_mask_drops_the_structured_count_of_patches(monkeypatch) -> None:
    model = _model()
    seen = []
    model.encoder.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    lms = torch.randn(2, 80, 1001)
    model.eval()
    eval_features = model.features(lms)
    assert seen.pop() == 1 + 5 * 62  # eval: every patch of the 5 × 62 grid
    model.train()
    draws = []
    real = ft.training_mask
    monkeypatch.setattr(ft, "training_mask", lambda *a, **k: draws.append(real(*a, **k)) or draws[-1])
    torch.manual_seed(1)
    u = float(torch.rand(()))  # the batch's uniform draw of the structured mask
    torch.manual_seed(1)
    features = model.features(lms)
    nf, nt = structured_counts((5, 62), 0.5, u)
    marked = nf * 62 + nt * 5 - nf * nt
    assert seen.pop() == 1 + 5 * 62 - marked == 1 + draws[0].visible.shape[1]  # the visible patches only
    assert features.shape == eval_features.shape == (2, 5 * 32) and not torch.allclose(features, eval_features)


def test_masked_pooling_is_the_frame_mean_when_every_patch_is_visible(monkeypatch) -> None:
    model = _model("random")
    lms = torch.randn(2, 80, 1001)
    model.eval()
    want = model.features(lms)

    def keep_all(b, grid, _ratio, **_kw):  # every patch visible, in a shuffled order
        order = torch.stack([torch.randperm(grid[0] * grid[1]) for _ in range(b)])
        return MaskIds(visible=order, masked=order[:, :0], restore=torch.argsort(order, dim=1))

    monkeypatch.setattr(ft, "training_mask", keep_all)
    model.train()
    torch.testing.assert_close(model.features(lms), want, atol=1e-5, rtol=1e-4)


def test_finetune_command_runs_and_records_the_recipe(tmp_path) -> None:
    from kikimimi.checkpoints import save_kikimimi
    from kikimimi.methods import build_method

    torch.manual_seed(0)
    method = build_method("m2d", size="tiny", input_size=(80, 64))
    folder = tmp_path / "m2d_vit_base-80x64p16x16-test"
    folder.mkdir()
    torch.save(method.export_official_state_dict(), folder / "checkpoint-1.pth")
    import kikimimi

    ckpt = save_kikimimi(kikimimi.load(folder / "checkpoint-1.pth", size="tiny").bundle, tmp_path / "tiny")
    csv_path = make_dataset(tmp_path / "data", n_per_class=3, duration_s=0.7, classes=("tone", "noise_burst"))
    out = tmp_path / "ft"
    argv = [
        "finetune",
        str(ckpt),
        str(csv_path),
        "--recipe",
        "m2d2-stage1.1",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--dur-frames",
        "101",
        "--warmup-epochs",
        "0",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    settings = json.loads((out / "report.json").read_text())["result"]["settings"]
    assert (settings["training_mask"], settings["training_mask_mode"], settings["optimizer"], settings["lr"]) == (
        0.5,
        "structured",
        "lars",
        2.0,
    )
    assert (settings["epochs"], settings["dur_frames"], settings["time_mask"], settings["rrc"]) == (1, 101, 192, False)
    # the fine-tuned encoder is what stage 2 reads with --init-from (its 1001-frame, here 101-frame, input)
    from kikimimi.checkpoints import load_encoder
    from kikimimi.checkpoints.runs import resolve_run_checkpoint

    bundle = load_encoder(resolve_run_checkpoint(out / "fold0" / "model"))
    assert bundle.config["vit"]["input_size"] == [80, 101]
