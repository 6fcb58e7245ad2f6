"""Stage-2 (M2D2 / M2D-CLAP 2025) files load both ways: kikimimi writes the official key layout
(``text_encoder.text_encoder.<HF BertModel keys>``, fact-sheet-m2d2-2026.md §4 "Output") that the official runtime
loads strictly after stripping one ``text_encoder.`` (§6), reads official files raw or wrapped, and still reads its
own earlier files (``text_encoder.model.*``). Files are generated here with random weights from the fact sheet's key
table (tiny ViT and BERT)."""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import official_layouts as L  # noqa: E402

from kikimimi.checkpoints import load_encoder, save_kikimimi  # noqa: E402
from kikimimi.checkpoints.ours import to_official_state_dict  # noqa: E402
from kikimimi.methods.m2d2 import M2D2Stage2  # noqa: E402
from kikimimi.models.vit import ViTConfig  # noqa: E402

transformers = pytest.importorskip("transformers")

DIM, DEPTH = 64, 2
VIT = ViTConfig(input_size=(80, 64), embed_dim=DIM, depth=DEPTH, num_heads=2)
NAME = "m2d_clap_vit_base-80x64p16x16p16kpBpTI-250101-stage2test"


@pytest.fixture(scope="module")
def tokenizer():
    from kikimimi.models.text_loading import bert_tokenizer_from_vocab

    return bert_tokenizer_from_vocab()


def _bert(tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(hidden_size=DIM, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=len(tokenizer), max_position_embeddings=64)  # fmt: skip
    return transformers.BertModel(cfg).eval()


def _text_encoder(tokenizer, seed: int = 0):
    from kikimimi.models.text import HFTextEncoder

    return HFTextEncoder(_bert(tokenizer, seed), tokenizer, pooling="cls", max_length=64, name="bert:test")


class OfficialBertWrapper(nn.Module):
    """The official runtime's text-encoder wrapper as the fact sheet describes it: attribute ``text_encoder``."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.text_encoder = bert


def official_stage2_model(bert: nn.Module, *, seed: int = 0, wrapper: str = "") -> OrderedDict[str, torch.Tensor]:
    """An official ``clap_only`` output's ``model`` dict: ``backbone.`` encoder + ``norm_stats`` + semantic projector,
    ``text_encoder.text_encoder.<HF keys>``, ``logit_scale`` (0-d) and the ``to_spec.*`` front-end buffers."""
    inner = L.m2d_encoder_state(DIM, DEPTH, (80, 64), (16, 16), L.CLAP2025_NORM_STATS, seed=seed)
    inner.update(L.clap2025_proj_state(DIM, 1, 1.0, text_proj=None, seed=seed))
    model: OrderedDict[str, torch.Tensor] = OrderedDict((f"{wrapper}backbone.{k}", v) for k, v in inner.items())
    model.update((f"{wrapper}text_encoder.text_encoder.{k}", v.clone()) for k, v in bert.state_dict().items())
    model[f"{wrapper}logit_scale"] = torch.tensor(4.0)
    model["to_spec.mel_basis"] = torch.rand(80, 201)
    model["to_spec.stft.wsin"] = torch.randn(201, 1, 400)
    model["to_spec.stft.wcos"] = torch.randn(201, 1, 400)
    model["to_spec.stft.window_mask"] = torch.ones(400)
    return model


def write_official(path: Path, model: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(model="m2d_clap_vit_base", text_encoder="B", sem_mode=1, mask_ratio=0.3, epochs=30)
    torch.save({"model": model, "optimizer": {}, "epoch": 30, "scaler": {}, "args": args}, path)
    return path


# ------------------------------------------------------------------------------ kikimimi → official
def test_stage2_state_dict_has_the_official_keys_and_loads_strictly_in_the_official_wrapper(tokenizer) -> None:
    model = M2D2Stage2(VIT, _text_encoder(tokenizer), sem_mode=1)
    sd = model.export_official_state_dict()
    bert_keys = set(_bert(tokenizer).state_dict())
    assert not any(k.startswith("text_encoder.model.") for k in sd)
    assert {k for k in sd if k.startswith("text_encoder.")} == {f"text_encoder.text_encoder.{k}" for k in bert_keys}
    backbone = [k for k in sd if k.startswith("backbone.")]
    # 4 + 12·depth + 2 encoder tensors, norm_stats, sem_token + 12 block tensors + norm (166 at ViT-Base)
    assert len(backbone) == 4 + 12 * DEPTH + 2 + 1 + 1 + 12 + 2
    assert set(sd) - set(backbone) - {f"text_encoder.text_encoder.{k}" for k in bert_keys} == {"logit_scale"}
    assert sd["logit_scale"].shape == () and float(sd["logit_scale"]) == pytest.approx(4.6052, abs=1e-4)

    # the official runtime: strip one "text_encoder." and load strictly into a wrapper with .text_encoder
    official = OfficialBertWrapper(_bert(tokenizer, seed=1))
    text = {k.removeprefix("text_encoder."): v for k, v in sd.items() if k.startswith("text_encoder.")}
    official.load_state_dict(text, strict=True)
    assert torch.equal(official.text_encoder.embeddings.word_embeddings.weight,
                       model.text_encoder.model.embeddings.word_embeddings.weight)  # fmt: skip


def test_bundle_written_back_in_the_official_layout(tmp_path, tokenizer) -> None:
    path = write_official(tmp_path / NAME / "checkpoint-30.pth", official_stage2_model(_bert(tokenizer)))
    bundle = load_encoder(path)
    again = load_encoder(save_kikimimi(bundle, tmp_path / "ours"))
    for b in (bundle, again):
        assert b.text_encoder_state and all(k.startswith("model.") for k in b.text_encoder_state)
    out = to_official_state_dict(again)
    raw = torch.load(path, map_location="cpu", weights_only=False)["model"]
    te = {k: v for k, v in raw.items() if k.startswith("text_encoder.")}
    assert {k for k in out if k.startswith("text_encoder.")} == set(te)
    assert all(torch.equal(out[k], v) for k, v in te.items())


# ------------------------------------------------------------------------------ official → kikimimi
@pytest.mark.parametrize("wrapper", ["", "module.ar.runtime."])
def test_official_stage2_file_loads_raw_and_wrapped(tmp_path, tokenizer, wrapper) -> None:
    from kikimimi.inference.clap import load_clap
    from kikimimi.models.text_loading import bert_from_state_dict

    bert = _bert(tokenizer, seed=3)
    model = official_stage2_model(bert, wrapper=wrapper)
    path = write_official(tmp_path / NAME / "checkpoint-30.pth", model)
    bundle = load_encoder(path)
    assert bundle.config["audio_proj"]["kind"] == "semantic" and bundle.logit_scale == pytest.approx(4.0)
    assert set(bundle.text_encoder_state) == {f"model.{k}" for k in bert.state_dict()}
    assert torch.equal(bundle.encoder.state_dict()["blocks.1.mlp.fc2.weight"],
                       model[f"{wrapper}backbone.blocks.1.mlp.fc2.weight"])  # fmt: skip

    # bert_from_state_dict on the raw file (as loaded), on its model dict and on the bundle's tensors
    raw = torch.load(path, map_location="cpu", weights_only=False)
    for state in (raw, raw["model"], bundle.text_encoder_state):
        enc = bert_from_state_dict(state, num_heads=2)
        got = enc.model.state_dict()
        assert all(torch.equal(got[k], v) for k, v in bert.state_dict().items())

    if not wrapper:
        clap = load_clap(path)
        loaded = clap.text_encoder.model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in bert.state_dict().items())


def test_official_model_dict_loads_strictly_into_the_stage2_method(tokenizer) -> None:
    bert = _bert(tokenizer, seed=4)
    model = {k: v for k, v in official_stage2_model(bert).items() if not k.startswith("to_spec.")}
    method = M2D2Stage2(VIT, _text_encoder(tokenizer, seed=5), sem_mode=1)
    method.load_state_dict(model, strict=True)
    assert torch.equal(method.text_encoder.model.pooler.dense.weight, bert.pooler.dense.weight)
    assert float(method.logit_scale.detach()) == pytest.approx(4.0)
    assert set(method.state_dict()) == set(model)


# ------------------------------------------------------------------------------ kikimimi's earlier files
def test_old_kikimimi_stage2_files_still_load(tmp_path, tokenizer) -> None:
    from kikimimi.models.text_loading import bert_from_state_dict

    bert = _bert(tokenizer, seed=6)
    official = {k: v for k, v in official_stage2_model(bert).items() if not k.startswith("to_spec.")}
    old = {k.replace("text_encoder.text_encoder.", "text_encoder.model.", 1): v for k, v in official.items()}
    assert any(k.startswith("text_encoder.model.") for k in old)

    method = M2D2Stage2(VIT, _text_encoder(tokenizer, seed=7), sem_mode=1)
    method.load_state_dict(old, strict=True)  # migrated on load
    assert torch.equal(method.text_encoder.model.embeddings.word_embeddings.weight,
                       bert.embeddings.word_embeddings.weight)  # fmt: skip

    path = tmp_path / NAME / "checkpoint-30.pth"
    path.parent.mkdir(parents=True)
    torch.save({"model": old}, path)
    bundle = load_encoder(path)
    assert set(bundle.text_encoder_state) == {f"model.{k}" for k in bert.state_dict()}
    enc = bert_from_state_dict(torch.load(path, map_location="cpu", weights_only=True), num_heads=2)
    assert torch.equal(enc.model.pooler.dense.weight, bert.pooler.dense.weight)
    # and written back, it is official
    assert any(k.startswith("text_encoder.text_encoder.") for k in to_official_state_dict(bundle))
