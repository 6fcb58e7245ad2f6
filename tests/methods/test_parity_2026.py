"""Parity with NTT's published M2D2 / M2D-CLAP 2025 training code (../shared/docs/fact-sheet-m2d2-2026.md): the
recipes' resolved settings against the fact sheet's stage table, the stage-2 structured training mask, the
stage-2 method (logit-scale reset, masking, crops of any length, stage 2.1 continuation), the stage-1 semantic-token
projector, and a CPU smoke run stage 1 → 2 → 2.1 through ``kikimimi pretrain`` (tiny models, generated audio)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_m2d2 import tiny_bert_folder  # noqa: E402
from test_m2d_clap import TINY_INPUT, WordBagEncoder  # noqa: E402

from kikimimi.checkpoints import load_encoder  # noqa: E402
from kikimimi.methods.m2d2 import M2D2Stage2  # noqa: E402
from kikimimi.methods.m2d_clap import M2DCLAP  # noqa: E402
from kikimimi.methods.masking import random_masking, structured_counts, structured_masking  # noqa: E402
from kikimimi.models.vit import ViTConfig  # noqa: E402
from kikimimi.optim import scaled_lr  # noqa: E402
from kikimimi.training.settings import resolve_settings  # noqa: E402

VIT = ViTConfig.from_size("tiny", input_size=TINY_INPUT)
LN100 = 4.6052

#: the fact sheet's stage table (§1) and stage details (§2, §4), in PretrainSettings names
FACT_SHEET = {
    "m2d2_stage1": {"epochs": 300, "batch_size": 512, "seed": 7, "sem_mode": 1, "clap_weight": 0.01,
                    "mask_ratio": 0.7, "blr": 3e-4, "warmup_epochs": 20, "betas": [0.9, 0.95], "weight_decay": 0.05,
                    "grad_clip": 3.0, "input_frames": 608},
    "m2d2_stage2": {"epochs": 30, "batch_size": 512, "seed": 7, "sem_mode": 1, "mask_ratio": 0.3,
                    "mask_strategy": "structured", "blr": 3e-6, "lr": None, "warmup_epochs": 5, "min_lr": 0.0,
                    "betas": [0.9, 0.95], "weight_decay": 0.05, "grad_clip": 3.0, "input_frames": 1001,
                    "pad_mode": "log_zero", "unfreeze_audio": False},
    "m2d2-stage2.1": {"epochs": 30, "seed": 0, "mask_ratio": 0.0, "mask_strategy": "structured", "blr": 3e-6,
                      "warmup_epochs": 5, "input_frames": 1001, "pad_mode": "log_zero", "sem_mode": 1},
}  # fmt: skip


# ------------------------------------------------------------------------------------------ recipes
@pytest.mark.parametrize("stage", list(FACT_SHEET))
def test_official_recipes_resolve_to_the_fact_sheet_values(stage) -> None:
    given = {"data": ["x"], "device": "cpu", "captions": "c.csv", "text_encoder": "bert:/b", "init_from": "run"}
    if stage == "m2d2-stage2.1":
        s = resolve_settings({**given, "recipe": stage})  # the recipe names its method
        assert s.method == "m2d2_stage2"
    else:
        s = resolve_settings({**given, "method": stage, "recipe": "official"})
    got = {k: getattr(s, k) for k in FACT_SHEET[stage]}
    assert got == FACT_SHEET[stage]
    assert s.steps is None and s.recipe == ("m2d2-stage2.1" if stage == "m2d2-stage2.1" else "official")


def test_base_learning_rates_scale_to_the_published_values() -> None:
    assert scaled_lr(3e-6, 512 * 4) == pytest.approx(2.4e-5)  # stage 2 at 512 × 4 GPUs
    assert scaled_lr(3e-4, 512 * 4) == pytest.approx(2.4e-3)  # stage 1


def test_cpu_small_stage2_keeps_the_stage1_crop_and_an_absolute_lr() -> None:
    s = resolve_settings({"method": "m2d2_stage2", "data": ["x"], "device": "cpu", "captions": "c.csv",
                          "text_encoder": "bert:/b", "init_from": "run"})  # fmt: skip
    assert (s.recipe, s.input_frames, s.lr, s.blr, s.mask_ratio) == ("cpu-small", None, 5e-5, None, 0.3)
    with pytest.raises(ValueError, match=r"'mask_ratio' must be in \(0, 1\)"):
        resolve_settings({"method": "m2d", "data": ["x"], "device": "cpu", "mask_ratio": 0.0})


# ------------------------------------------------------------------------------------------ masking
def test_structured_counts_match_the_fact_sheet() -> None:
    # r = 0.3 on the 5 × 62 grid of one 1001-frame chunk: NF ∈ {0, 1, 2} → NT = 19 / 6 / 0
    assert [structured_counts((5, 62), 0.3, u) for u in (0.0, 0.5, 0.99)] == [(0, 19), (1, 6), (2, 0)]
    assert structured_counts((5, 62), 0.3, 0.39) == (0, 19)  # int(5 · 0.5 · u): NF = 0 for u < 0.4
    marked = {nf * 62 + nt * 5 - nf * nt for nf, nt in ((0, 19), (1, 6), (2, 0))}
    assert marked == {95, 86, 124}
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        ids = structured_masking(3, (5, 62), 0.3, generator=g)
        assert ids.visible.shape[1] + ids.masked.shape[1] == 310
        seen.add(ids.masked.shape[1])
        full = torch.cat([ids.visible, ids.masked], 1).gather(1, ids.restore)
        assert torch.equal(full, torch.arange(310).expand(3, -1))
    assert seen == {95, 86, 124}


def _marked_grid(ids, grid: tuple[int, int], masked: bool) -> torch.Tensor:
    flags = torch.zeros(ids.visible.shape[0], grid[0] * grid[1], dtype=torch.bool)
    flags.scatter_(1, ids.masked if masked else ids.visible, True)
    return flags.reshape(-1, *grid)


def test_structured_mask_official_code_keeps_marked_rows_and_columns_visible() -> None:
    g = torch.Generator().manual_seed(1)
    for marked in ("visible", "masked"):
        for _ in range(20):
            ids = structured_masking(4, (5, 62), 0.3, marked=marked, generator=g)
            if marked == "masked":
                grid = _marked_grid(ids, (5, 62), masked=True)
                # the masked set is a union of whole rows and whole columns
                rows, cols = grid.all(2), grid.all(1)
                rebuilt = rows[:, :, None] | cols[:, None, :]
                assert torch.equal(rebuilt, grid)
            else:
                vis = _marked_grid(ids, (5, 62), masked=False)
                n_mask = ids.masked.shape[1]
                nf = sum(1 for nf, nt in ((0, 19), (1, 6), (2, 0)) if nf * 62 + nt * 5 - nf * nt == n_mask and nf)
                # whole visible rows exist when rows were marked (they stay visible)
                assert (vis.all(2).sum(1) >= nf).all()
    # the dropped patches of the official variant follow sort tie order: most from the low frequency rows
    share = torch.zeros(5)
    for _ in range(100):
        share += torch.bincount((structured_masking(8, (5, 62), 0.3, generator=g).masked // 62).flatten(), minlength=5)
    share /= share.sum()
    assert share[:3].sum() > 0.85 and share[4] < 0.05  # fact sheet (torch CPU): 0.24 / 0.30 / 0.40 / 0.05 / 0.01


def test_random_training_mask_count() -> None:
    assert random_masking(2, 310, 0.3).visible.shape == (2, 217)


def test_structured_mask_of_a_one_column_chunk_keeps_a_patch() -> None:
    g = torch.Generator().manual_seed(4)
    # NT = int(1 · (0.9 + 0.5)) = 1 marks the only column: every patch is marked, one stays visible
    assert {structured_masking(2, (5, 1), 0.9, generator=g).visible.shape[1] for _ in range(20)} >= {1}


# ------------------------------------------------------------------------------------------ stage 2
def _stage2(**kw) -> M2D2Stage2:
    torch.manual_seed(0)
    return M2D2Stage2(VIT, WordBagEncoder(dim=24), **kw)


def test_stage2_resets_logit_scale_and_masks_only_in_training() -> None:
    model = _stage2(mask_ratio=0.3)
    assert float(model.logit_scale.detach()) == pytest.approx(LN100, abs=1e-4)
    lms = torch.randn(2, 80, 64)  # one 5 × 4 chunk: (NF, NT) = (0, 1) / (1, 0) / (2, 0) → 5 / 4 / 8 patches masked
    model.train()
    counts = {model.audio_tokens(lms).shape[1] for _ in range(40)}
    assert counts == {15, 16, 12}
    model.eval()
    assert model.audio_tokens(lms).shape[1] == 20
    random = _stage2(mask_ratio=0.5, mask_strategy="random").train()
    assert random.audio_tokens(lms).shape[1] == 10
    none = _stage2(mask_ratio=0.0).train()
    assert none.audio_tokens(lms).shape[1] == 20
    cfg = random.config_dict()
    assert (cfg["mask_ratio"], cfg["mask_strategy"]) == (0.5, "random")
    assert cfg["logit_scale_init"] == pytest.approx(LN100, abs=1e-4)
    with pytest.raises(ValueError, match="mask_strategy"):
        _stage2(mask_strategy="blocks")


def test_stage2_1_continues_projector_text_encoder_and_logit_scale(tmp_path) -> None:
    first = _stage2(mask_ratio=0.3)
    with torch.no_grad():
        first.logit_scale.fill_(3.3)
        first.backbone.audio_proj.sem_token.add_(1.0)
        first.text_encoder.proj.weight.mul_(2.0)
    run = tmp_path / "m2d_clap_vit_tiny-80x64p16x16p16kpBpTI-261207"
    run.mkdir()
    torch.save({"model": first.export_official_state_dict()}, run / "checkpoint-30.pth")
    bundle = load_encoder(run / "checkpoint-30.pth")

    second = _stage2()
    second.load_stage1(bundle)
    assert second.continued_from_stage2 and float(second.logit_scale.detach()) == pytest.approx(3.3)
    assert torch.equal(second.backbone.audio_proj.sem_token, first.backbone.audio_proj.sem_token)
    assert torch.equal(second.text_encoder.proj.weight, first.text_encoder.proj.weight)
    assert second.config_dict()["continued_from_stage2"] is True

    # from a stage-1 file: only the encoder; fresh projector (sem_token zeros, as the official init) and ln 100
    stage1 = M2DCLAP("tiny", input_size=TINY_INPUT, text_dim=24, sem_mode=1)
    s1 = tmp_path / "m2d_clap_vit_tiny-80x64p16x16-261207"
    s1.mkdir()
    torch.save({"model": stage1.export_official_state_dict()}, s1 / "checkpoint-300.pth")
    fresh = _stage2()
    fresh.load_stage1(load_encoder(s1 / "checkpoint-300.pth"))
    assert not fresh.continued_from_stage2 and float(fresh.logit_scale.detach()) == pytest.approx(LN100, abs=1e-4)
    assert torch.count_nonzero(fresh.backbone.audio_proj.sem_token) == 0
    assert torch.equal(fresh.backbone.blocks[0].attn.qkv.weight, stage1.encoder.blocks[0].attn.qkv.weight)


# ------------------------------------------------------------------------------------------ stage 1
def test_stage1_semantic_projector_sees_the_unpooled_visible_tokens(tmp_path) -> None:
    torch.manual_seed(0)
    model = M2DCLAP("tiny", input_size=TINY_INPUT, text_dim=24, sem_mode=1, method_name="m2d2_stage1")
    seen = []
    model.audio_proj.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    out = model({"lms": torch.randn(3, *TINY_INPUT), "text_emb": torch.randn(3, 24)})
    assert seen == [(3, int(20 * 0.3), 192)]  # 6 of 20 patches visible at mask 0.7, not their mean
    assert out["loss"].requires_grad and model.config_dict()["sem_mode"] == 1

    sd = model.export_official_state_dict()
    proj = {k for k in sd if k.startswith("audio_proj.")}
    assert {
        "audio_proj.norm.bias",
        "audio_proj.norm.weight",
        "audio_proj.sem_token",
        "audio_proj.sem_blocks.0.attn.qkv.weight",
        "audio_proj.sem_blocks.0.mlp.fc1.weight",
    } <= proj
    assert len(proj) == 1 + 12 + 2 and "text_proj.weight" in sd and "audio_proj.0.weight" not in sd
    run = tmp_path / "m2d_clap_vit_tiny-80x64p16x16-261207"
    run.mkdir()
    torch.save({"model": sd}, run / "checkpoint-300.pth")
    bundle = load_encoder(run / "checkpoint-300.pth")
    assert bundle.config["audio_proj"]["kind"] == "semantic" and bundle.config["audio_proj"]["depth"] == 1
    lms = torch.randn(2, *TINY_INPUT)
    assert torch.allclose(bundle.audio_proj(bundle.encoder.encode_lms(lms, flat=True)),
                          model.eval().zero_shot_audio(lms), atol=1e-5)  # fmt: skip
    assert M2DCLAP("tiny", input_size=TINY_INPUT).audio_proj.__class__.__name__ == "MLPAudioProjector"


# ------------------------------------------------------------------------------------------ CLI smoke run
def test_cpu_smoke_stage1_then_stage2_then_stage2_1(tmp_path, monkeypatch) -> None:
    pytest.importorskip("transformers")
    from kikimimi.audio.synthetic import make_dataset
    from kikimimi.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    labels = make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone", "chirp", "noise_burst"))
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    caps = tmp_path / "audio" / "captions.csv"
    caps.write_text("file_name,caption\n" + "".join(f"{r['file_name']},The sound of {r['label']}.\n" for r in rows))
    tiny_bert_folder(tmp_path / "bert")
    spec = f"bert:{tmp_path / 'bert'}"
    runs = tmp_path / "runs"
    common = ["--data", str(tmp_path / "audio"), "--out", str(runs), "--steps", "1", "--batch-size", "2",
              "--device", "cpu", "--norm-samples", "4", "--no-progress", "--captions", str(caps),
              "--text-encoder", spec]  # fmt: skip

    assert main(["pretrain", "--method", "m2d2_stage1", "--size", "tiny", "--input-frames", "64", *common,
                 "--run-name", "s1"]) == 0  # fmt: skip
    s1 = json.loads((runs / "s1" / "config.json").read_text())
    assert s1["sem_mode"] == 1 and s1["method_config"]["sem_mode"] == 1

    assert main(["pretrain", "--method", "m2d2_stage2", "--recipe", "official", "--init-from", str(runs / "s1"),
                 "--input-frames", "100", *common, "--run-name", "s2"]) == 0  # fmt: skip
    s2 = json.loads((runs / "s2" / "config.json").read_text())
    assert (s2["mask_ratio"], s2["mask_strategy"], s2["pad_mode"], s2["input_frames"]) == (
        0.3,
        "structured",
        "log_zero",
        100,
    )
    assert s2["method_config"]["continued_from_stage2"] is False
    assert (runs / "s2" / "kikimimi" / "config.json").is_file()  # read back with the stage-1 sizes, not the crop's
    sd2 = torch.load(runs / "s2" / "checkpoint-1.pth", map_location="cpu", weights_only=True)["model"]
    assert any(k.startswith("text_encoder.text_encoder.") for k in sd2)
    assert not any(k.startswith("text_encoder.model.") for k in sd2)

    assert main(["pretrain", "--recipe", "m2d2-stage2.1", "--init-from", str(runs / "s2" / "checkpoint-1.pth"),
                 "--input-frames", "100", *common, "--run-name", "s21"]) == 0  # fmt: skip
    s21 = json.loads((runs / "s21" / "config.json").read_text())
    assert (s21["method"], s21["mask_ratio"], s21["seed"]) == ("m2d2_stage2", 0.0, 0)
    assert s21["method_config"]["continued_from_stage2"] is True
    sd21 = torch.load(runs / "s21" / "checkpoint-1.pth", map_location="cpu", weights_only=True)["model"]
    assert set(sd21) == set(sd2)
