"""M2D2 (kikimimi.methods.m2d2): stage-2 freezing, 2025 checkpoint layout, stage-1 hand-over, resume, and
the `kikimimi pretrain` CLI for m2d_clap / m2d2_stage2 (tiny models, generated audio, a tiny local BERT)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_m2d_clap import TINY_INPUT, WordBagEncoder, random_corpus  # noqa: E402

from kikimimi.checkpoints.names import text_encoder_code  # noqa: E402
from kikimimi.data.caption_pairs import CaptionCropDataset  # noqa: E402
from kikimimi.data.corpus import CropDataset  # noqa: E402
from kikimimi.features.normstats import NormStats  # noqa: E402
from kikimimi.methods import build_method  # noqa: E402
from kikimimi.methods.m2d2 import M2D2Stage2  # noqa: E402
from kikimimi.methods.m2d_clap import M2DCLAP  # noqa: E402
from kikimimi.models.vit import ViTConfig  # noqa: E402
from kikimimi.training.run_folder import stage2_folder_name  # noqa: E402
from kikimimi.training.trainer import TrainConfig, Trainer, load_training_checkpoint  # noqa: E402

VIT = ViTConfig.from_size("tiny", input_size=TINY_INPUT)
CAPTIONS = {f"clip{i}": [f"sound number {i}", f"a recording of thing {i % 3}"] for i in range(8)}


def _stage2(unfreeze: bool = False, seed: int = 0, **kw) -> M2D2Stage2:
    torch.manual_seed(seed)
    model = M2D2Stage2(VIT, WordBagEncoder(dim=24, seed=seed), unfreeze_audio=unfreeze, **kw)
    model.set_captions([c for caps in CAPTIONS.values() for c in caps])
    return model


def _text_dataset(root: Path) -> CaptionCropDataset:
    base = CropDataset(random_corpus(root / "cache"), TINY_INPUT[1], norm_stats=NormStats(-5.0, 2.0), seed=7)
    return CaptionCropDataset(base, captions=CAPTIONS)


def _steps(model: M2D2Stage2, n: int = 3) -> None:
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for step in range(1, n + 1):
        batch = {"lms": torch.randn(4, *TINY_INPUT, generator=g), "caption_index": torch.tensor([0, 3, 6, 9])}
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        model.on_after_step(step, n)


def _clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------------ method
def test_stage2_freezes_the_audio_encoder_by_default() -> None:
    model = _stage2()
    enc0, proj0, text0 = _clone(model.backbone), _clone(model.backbone.audio_proj), _clone(model.text_encoder)
    _steps(model)
    enc1 = model.backbone.encoder_state_dict()
    for key, value in enc1.items():
        assert torch.equal(value, enc0[key]), f"frozen encoder tensor {key} changed"
    assert any(not torch.equal(v, proj0[k]) for k, v in model.backbone.audio_proj.state_dict().items())
    assert any(not torch.equal(v, text0[k]) for k, v in model.text_encoder.state_dict().items())
    assert model.backbone.text_proj is not None and model.backbone.text_proj.in_features == 24
    trainable = {id(p) for g in model.param_groups(0.05) for p in g["params"]}
    assert id(model.backbone.blocks[0].attn.qkv.weight) not in trainable

    free = _stage2(unfreeze=True)
    before = _clone(free.backbone)
    _steps(free)
    changed = [k for k, v in free.backbone.encoder_state_dict().items() if not torch.equal(v, before[k])]
    assert "blocks.0.attn.qkv.weight" in changed and "patch_embed.proj.weight" in changed
    assert "pos_embed" not in changed  # the sin-cos table stays fixed


def test_stage2_forward_checks_and_semantic_modes() -> None:
    model = _stage2(sem_mode=3)
    assert model.sem_depth == 3 and model.sem_mlp_ratio == 2.0 and len(model.backbone.audio_proj.sem_blocks) == 3
    out = model({"lms": torch.randn(2, *TINY_INPUT), "caption_index": torch.tensor([1, 2])})
    assert out["loss"].shape == () and float(out["loss_clap"]) == pytest.approx(float(out["loss"].detach()))
    with pytest.raises(KeyError, match="caption_index"):
        model({"lms": torch.randn(2, *TINY_INPUT)})
    with pytest.raises(IndexError, match="outside"):
        model({"lms": torch.randn(2, *TINY_INPUT), "caption_index": torch.tensor([0, 99])})
    with pytest.raises(ValueError, match="mel bins"):
        model({"lms": torch.randn(2, 64, 64), "caption_index": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match="T ≥ 16"):
        model({"lms": torch.randn(2, 80, 8), "caption_index": torch.tensor([0, 1])})
    # any crop length: a 1001-frame crop padded to 1008 frames = 15 chunks of 64 + one of 48 (63 time patches)
    assert model.audio_tokens(torch.randn(2, 80, 1001)).shape == (2, 5 * 63, 192)


def test_stage2_checkpoint_layout_loads_back_and_resumes(tmp_path) -> None:
    from kikimimi.checkpoints import load_encoder, save_kikimimi

    name = stage2_folder_name(VIT, "bert:/x", "261201")
    assert name == "m2d_clap_vit_tiny-80x64p16x16p16kpBpTI-261201" and text_encoder_code("llm:/m#eos") == "N"

    def cfg(out: Path, **kw) -> TrainConfig:
        base = dict(method="m2d2_stage2", steps=4, batch_size=2, lr=1e-3, amp="off", device="cpu", seed=5,
                    log_every=1, save_every=2, out_dir=str(out))  # fmt: skip
        return TrainConfig(**{**base, **kw})

    full = Trainer(_stage2(), _text_dataset(tmp_path / "a"), cfg(tmp_path / name)).fit()
    ckpt = load_training_checkpoint(tmp_path / name / "checkpoint-4.pth")
    sd = ckpt["model"]
    assert all(k.startswith(("backbone.", "text_encoder.")) or k == "logit_scale" for k in sd)
    for key in ("backbone.cls_token", "backbone.norm_stats", "backbone.audio_proj.sem_token",
                "backbone.audio_proj.sem_blocks.0.attn.qkv.weight", "backbone.audio_proj.norm.weight",
                "backbone.text_proj.weight", "text_encoder.embed.weight", "logit_scale"):  # fmt: skip
        assert key in sd, key
    assert ckpt["trainer_state"]["method_state"] == {}  # nothing stored twice

    bundle = load_encoder(tmp_path / name / "checkpoint-4.pth")
    assert bundle.config["audio_proj"] == {"kind": "semantic", "dim": 192, "depth": 1, "mlp_ratio": 1.0}
    assert bundle.config["name_extras"] == ["B", "TI"]
    assert torch.equal(bundle.audio_proj.sem_token, sd["backbone.audio_proj.sem_token"])
    assert torch.equal(bundle.text_proj.weight, sd["backbone.text_proj.weight"])
    assert set(bundle.text_encoder_state) == {k.removeprefix("text_encoder.") for k in sd if "text_encoder." in k}
    assert bundle.logit_scale == pytest.approx(float(sd["logit_scale"]))
    assert bundle.norm_stats.to_list() == pytest.approx([-7.1, 4.2])
    again = load_encoder(save_kikimimi(bundle, tmp_path / "ours"))
    assert torch.equal(again.audio_proj.norm.weight, bundle.audio_proj.norm.weight) and again.text_encoder_state

    # exact resume: kill after step 3 (checkpoint at 2), continue with a differently initialised model
    (tmp_path / name / "checkpoint-4.pth").unlink()
    (tmp_path / name / "last.pth").unlink()
    resumed = Trainer(
        _stage2(seed=9),
        _text_dataset(tmp_path / "b"),
        cfg(tmp_path / name, resume=str(tmp_path / name / "checkpoint-2.pth")),
    ).fit()
    assert sorted(resumed.losses) == [3, 4]
    for s in (3, 4):
        assert resumed.losses[s] == pytest.approx(full.losses[s], abs=1e-6, rel=0)


def test_from_stage1_run_uses_its_encoder_and_stats(tmp_path) -> None:
    torch.manual_seed(0)
    stage1 = M2DCLAP("tiny", input_size=TINY_INPUT, text_dim=24, norm_stats=(-6.0, 3.5))
    run = tmp_path / "m2d_clap_vit_tiny-80x64p16x16-261201"
    run.mkdir()
    torch.save({"model": stage1.export_official_state_dict()}, run / "checkpoint-1.pth")
    model = M2D2Stage2.from_stage1(run, WordBagEncoder(dim=192), sem_mode=2)
    assert model.backbone.text_proj is None  # same width: no projection
    assert model.backbone.norm_stats.tolist() == pytest.approx([-6.0, 3.5])
    for key, value in stage1.encoder.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    cfg = model.config_dict()
    assert cfg["method"] == "m2d2_stage2" and cfg["vit_config"]["input_size"] == [80, 64]
    rebuilt = build_method("m2d2_stage2", **{**cfg, "text_encoder": WordBagEncoder(dim=192)})
    assert set(rebuilt.state_dict()) == set(model.state_dict()) and rebuilt.sem_depth == 2


# ------------------------------------------------------------------------------------------ CLI
def tiny_bert_folder(path: Path) -> str:
    """A 1-layer, 32-wide BERT with the packaged vocabulary saved in ``path``; returns its ``bert:`` spec."""
    transformers = pytest.importorskip("transformers")
    from kikimimi.models.text_loading import bert_tokenizer_from_vocab

    tok = bert_tokenizer_from_vocab()
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=len(tok), max_position_embeddings=64)  # fmt: skip
    transformers.BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return f"bert:{path}"


def test_cli_m2d_clap_then_stage2(tmp_path, monkeypatch) -> None:
    from kikimimi.audio.synthetic import make_dataset
    from kikimimi.checkpoints import load_encoder
    from kikimimi.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    labels = make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.8, classes=("tone", "chirp", "noise_burst"))
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    caps = tmp_path / "audio" / "captions.csv"
    caps.write_text("file_name,caption\n" + "".join(f"{r['file_name']},The sound of {r['label']}.\n" for r in rows))
    spec = tiny_bert_folder(tmp_path / "bert")
    common = ["--data", str(tmp_path / "audio"), "--out", str(tmp_path / "runs"), "--steps", "2", "--batch-size", "2",
              "--device", "cpu", "--norm-samples", "8", "--min-epoch-size", "4", "--no-progress", "--save-every", "1",
              "--captions", str(caps), "--text-encoder", spec]  # fmt: skip
    assert main(["pretrain", "--method", "m2d_clap", "--size", "tiny", "--input-frames", "64", *common]) == 0
    (run1,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("m2d_clap_vit_tiny-80x64p16x16-")]
    config = json.loads((run1 / "config.json").read_text())
    # on a CPU the cpu-small recipe weights the CLAP loss 1 (the official 0.01 is for long GPU runs)
    assert config["method"] == "m2d_clap" and config["recipe"] == "cpu-small" and config["clap_weight"] == 1.0
    assert config["decisions"]["text_dim"] == 32
    assert config["text_encoder"] == spec and list(run1.glob("caption-embeddings-*.safetensors"))
    info = json.loads(next(run1.glob("caption-embeddings-*.info.json")).read_text())
    assert info["text_encoder"] == spec and info["dim"] == 32
    bundle = load_encoder(run1 / "checkpoint-2.pth")
    assert bundle.audio_proj is not None and bundle.text_proj.in_features == 32 and bundle.logit_scale is not None
    assert load_encoder(run1 / "kikimimi").audio_proj is not None

    # exact resume from step 1 (the caption cache in the run folder is reused)
    first = torch.load(run1 / "checkpoint-2.pth", map_location="cpu", weights_only=True)["model"]
    (run1 / "checkpoint-2.pth").unlink()
    (run1 / "last.pth").unlink()
    assert main(["pretrain", "--resume", str(run1 / "checkpoint-1.pth"), "--no-progress"]) == 0
    again = torch.load(run1 / "checkpoint-2.pth", map_location="cpu", weights_only=True)["model"]
    for key, value in first.items():
        assert torch.allclose(value, again[key], atol=1e-6), key

    # stage 2 on the stage-1 run: frozen encoder, backbone./text_encoder. layout, 2025-style folder name
    stage2 = ["--method", "m2d2_stage2", "--init-from", str(run1), *common]
    assert main(["pretrain", *stage2]) == 0
    (run2,) = [p for p in (tmp_path / "runs").iterdir() if "p16kpBpTI-" in p.name]
    assert run2.name.startswith("m2d_clap_vit_tiny-80x64p16x16p16kpBpTI-")
    sd = torch.load(run2 / "checkpoint-2.pth", map_location="cpu", weights_only=True)["model"]
    assert any(k.startswith("text_encoder.text_encoder.") for k in sd) and "backbone.audio_proj.sem_token" in sd
    assert torch.equal(sd["backbone.blocks.0.attn.qkv.weight"], again["blocks.0.attn.qkv.weight"])
    assert torch.allclose(sd["backbone.norm_stats"], again["norm_stats"])
    cfg2 = json.loads((run2 / "config.json").read_text())
    assert cfg2["unfreeze_audio"] is False and cfg2["input_frames"] == 64 and cfg2["text_encoder"] == spec
    assert load_encoder(run2 / "checkpoint-2.pth").text_encoder_state

    # a stage-2 text encoder of another kind (GTE-style mean pooling) comes back from the file through the
    # spec recorded in config.json, with its fine-tuned weights (not the folder's original ones)
    from kikimimi.inference.clap import load_clap
    from kikimimi.models.text_loading import load_text_encoder

    gte = "gte:" + spec.split(":", 1)[1]
    assert main(["pretrain", *stage2, "--text-encoder", gte, "--run-name", "stage2-gte"]) == 0
    run3 = tmp_path / "runs" / "stage2-gte"
    sd3 = torch.load(run3 / "checkpoint-2.pth", map_location="cpu", weights_only=True)["model"]
    model = load_clap(run3 / "checkpoint-2.pth")
    assert model.text_encoder.name.startswith("gte:")  # mean pooling as trained, not BERT's [CLS]
    loaded = model.text_encoder.state_dict()
    # official layout: text_encoder.text_encoder.<HF keys> (kikimimi's wrapper keeps the network as .model)
    assert not any(k.startswith("text_encoder.model.") for k in sd3)
    stored = {"model." + k.removeprefix("text_encoder.text_encoder."): v for k, v in sd3.items()
              if k.startswith("text_encoder.text_encoder.")}  # fmt: skip
    assert stored and all(torch.equal(loaded[k], v) for k, v in stored.items())
    original = load_text_encoder(gte).state_dict()
    assert any(not torch.equal(original[k], v) for k, v in stored.items())
    assert model.encode_text(["The sound of tone."]).shape == (1, model.embedding_dim)


def test_cli_caption_errors(tmp_path) -> None:
    from kikimimi.audio.synthetic import make_dataset
    from kikimimi.cli import main

    make_dataset(tmp_path / "audio", n_per_class=1, duration_s=0.5, classes=("tone", "chirp"))
    files = sorted(p.relative_to(tmp_path / "audio").as_posix() for p in (tmp_path / "audio").rglob("*.wav"))
    caps = tmp_path / "audio" / "captions.csv"
    caps.write_text(f"file_name,caption\n{files[0]},a tone\n")  # the second file has no caption
    from kikimimi.data.caption_cache import CaptionEmbeddingCache

    cache = tmp_path / "caps.safetensors"
    CaptionEmbeddingCache({files[0]: np.ones((1, 8), np.float16)}, encoder_name="wordbag", dim=8).save(cache)
    base = ["pretrain", "--data", str(tmp_path / "audio"), "--out", str(tmp_path / "runs"), "--steps", "1",
            "--size", "tiny", "--input-frames", "32", "--device", "cpu", "--no-progress",
            "--norm-stats", "-5", "2"]  # fmt: skip
    with pytest.raises(ValueError, match=r"1 of 2 training files have no caption"):
        main([*base, "--method", "m2d_clap", "--captions", str(cache)])
    with pytest.raises(ValueError, match="needs --captions"):
        main([*base, "--method", "m2d_clap"])
    with pytest.raises(ValueError, match="--text-encoder"):
        main([*base, "--method", "m2d_clap", "--captions", str(caps)])
    with pytest.raises(ValueError, match="needs --init-from"):
        main([*base, "--method", "m2d2_stage2", "--captions", str(caps), "--text-encoder", "minilm"])
    with pytest.raises(ValueError, match="not --text-encoder"):
        main([*base, "--method", "m2d_clap", "--captions", str(cache), "--text-encoder", "minilm"])

