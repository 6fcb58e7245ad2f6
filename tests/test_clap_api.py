"""`load_clap` on official-layout M2D-CLAP files with random weights: documented shapes ([B, 768]), the 2024
(mean of all tokens → MLP) and 2025 (unpooled tokens → semantic projector) audio paths, and where the text
encoder comes from (bundled BERT, argument, config.json, or a clear error)."""

from __future__ import annotations

import json

import numpy as np
import official_layouts as L
import pytest
import torch
from clap_fakes import TINY, HashTextEncoder, write_tiny_clap2024

from kikimimi.audio.synthetic import make_sound
from kikimimi.checkpoints import save_kikimimi
from kikimimi.features.frontend import log_mel
from kikimimi.inference.clap import CLAPError, cosine_similarity, load_clap

BASE1 = dict(embed_dim=768, depth=1)  # ViT-Base width (the documented 768-d space), one block for speed


def _wave(seconds: float, seed: int = 0, kind: str = "harmonic_note") -> np.ndarray:
    return make_sound(kind, seconds, 16000, np.random.default_rng(seed))


def _manual_tokens(model, wave: np.ndarray) -> torch.Tensor:
    """All patch tokens of all chunks, computed chunk by chunk here (independent of encode_lms)."""
    enc = model.audio.encoder
    unit, p = enc.config.input_size[1], enc.config.patch_size[1]
    lms = torch.from_numpy(log_mel(wave, model.audio.bundle.frontend))
    lms = (lms - model.audio.norm_stats.mean) / model.audio.norm_stats.std
    pad = (p - lms.shape[-1] % unit % p) % p
    lms = torch.nn.functional.pad(lms, (0, pad))
    parts = []
    with torch.no_grad():
        for s in range(0, lms.shape[-1], unit):
            c = lms[:, s:s + unit]
            c = c[:, : c.shape[-1] // p * p]
            parts.append(enc.forward_tokens(c[None, None])[0])
    return torch.cat(parts)


def test_clap2024_official_layout_mean_of_all_tokens_then_mlp(tmp_path):
    state = L.m2d_encoder_state(**BASE1, norm_stats=False)
    state.update(L.clap2024_proj_state(768))
    path = L.write_state(tmp_path / "m2d_clap_vit_base-80x608p16x16-240128" / "checkpoint-300.pth", state)
    model = load_clap(path, text_encoder=HashTextEncoder(dim=768))
    assert model.kind == "mlp" and model.embedding_dim == 768
    assert model.temperature_scale == pytest.approx(1 / 0.07, rel=1e-5)
    waves = [_wave(7.0, 0), _wave(1.0, 1)]  # 7 s = two chunks of 608 frames
    emb = model.encode_audio(waves)
    assert emb.shape == (2, 768) and emb.dtype == np.float32
    tokens = _manual_tokens(model, waves[0])
    assert tokens.shape == (5 * (38 + 6), 768)
    with torch.no_grad():
        expected = model.audio_proj(tokens.mean(0, keepdim=True))[0].numpy()
    np.testing.assert_allclose(emb[0], expected, rtol=1e-4, atol=1e-5)
    # a clip's embedding does not depend on what else is in the batch
    np.testing.assert_allclose(model.encode_audio(waves[1]), emb[1], rtol=1e-4, atol=1e-5)
    text = model.encode_text(["a dog barking", "rain"])
    assert text.shape == (2, 768)
    assert cosine_similarity(emb, text).shape == (2, 2)


def test_clap2024_without_text_encoder_explains_how_to_get_one(tmp_path):
    path = write_tiny_clap2024(tmp_path)
    model = load_clap(path)
    assert model.encode_audio(_wave(0.5)).shape == (64,)  # audio works without any text side
    with pytest.raises(CLAPError, match="gte:/path/to/gte-base"):
        model.encode_text(["a dog"])


def test_text_encoder_spec_from_config_json_beside_the_checkpoint(tmp_path, monkeypatch):
    from kikimimi.models import text_loading as text_models

    path = write_tiny_clap2024(tmp_path)
    (path.parent / "config.json").write_text(json.dumps({"method_config": {"text_encoder": "fake:spec"}}))
    seen = []

    def fake_loader(spec, device="cpu"):
        seen.append(spec)
        return HashTextEncoder(dim=64)

    monkeypatch.setattr(text_models, "load_text_encoder", fake_loader)
    model = load_clap(path)
    assert model.encode_text(["a tone"]).shape == (1, 64)
    assert seen == ["fake:spec"]
    # a kikimimi folder carries it in config.json → config.text_encoder
    bundle = model.audio.bundle
    bundle.config["text_encoder"] = "fake:folder"
    folder = save_kikimimi(bundle, tmp_path / "ours")
    assert load_clap(folder).encode_text(["x"]).shape == (1, 64)
    assert seen[-1] == "fake:folder"
    # a run's kikimimi/ export without the spec: the run's config.json one level up names it
    run = tmp_path / "run"
    bundle.config.pop("text_encoder")
    export = save_kikimimi(bundle, run / "kikimimi")
    (run / "config.json").write_text(json.dumps({"method_config": {"text_encoder": "fake:run"}}))
    assert load_clap(export).encode_text(["x"]).shape == (1, 64)
    assert seen[-1] == "fake:run"


def _tiny_bert_state(hidden: int = 32) -> dict[str, torch.Tensor]:
    import transformers  # the text extra (installed with kikimimi[text])
    config = transformers.BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=1,
                                     intermediate_size=2 * hidden, max_position_embeddings=512)
    torch.manual_seed(0)
    return transformers.BertModel(config).state_dict()


def test_clap2025_official_layout_semantic_projector_and_bundled_bert(tmp_path):
    inner = L.m2d_encoder_state(**BASE1, input_size=(80, 1001), norm_stats=L.CLAP2025_NORM_STATS)
    inner.update(L.clap2025_proj_state(768, sem_depth=1, text_proj="linear", text_dim=32))
    state = {f"backbone.{k}": v for k, v in inner.items()}
    state.update({f"text_encoder.{k}": v for k, v in _tiny_bert_state(32).items()})
    path = L.write_state(tmp_path / "m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025" / "checkpoint-30.pth",
                         state, "model")
    model = load_clap(path)
    assert model.kind == "semantic" and model.embedding_dim == 768
    waves = [_wave(1.0, 2), _wave(0.5, 3, "chirp")]
    emb = model.encode_audio(waves)
    assert emb.shape == (2, 768)
    tokens = _manual_tokens(model, waves[0])
    with torch.no_grad():
        expected = model.audio_proj(tokens[None])[0].numpy()  # the unpooled sequence goes in
    np.testing.assert_allclose(emb[0], expected, rtol=1e-4, atol=1e-5)
    text = model.encode_text(["The sound of Explosion.", "a dog barking"])
    assert text.shape == (2, 768) and np.isfinite(text).all()
    assert not np.allclose(text[0], text[1])
    assert "bundled" in model.text_encoder_description() or "bert" in model.text_encoder_description()


def test_plain_m2d_file_is_not_a_clap_model(tmp_path):
    path = L.write_state(tmp_path / "m2d_vit_base-80x64p16x16-231231" / "enc.pth", L.m2d_encoder_state(**TINY))
    with pytest.raises(CLAPError, match="not an M2D-CLAP checkpoint"):
        load_clap(path)


def test_text_encoder_of_the_wrong_size_is_explained(tmp_path):
    from clap_fakes import write_tiny_clap2025

    model = load_clap(write_tiny_clap2025(tmp_path, text_dim=32), text_encoder=HashTextEncoder(dim=384))
    with pytest.raises(CLAPError, match="text_proj expects 32-d"):
        model.encode_text(["a dog"])
    tiny24 = load_clap(write_tiny_clap2024(tmp_path / "b"), text_encoder=HashTextEncoder(dim=384))
    with pytest.raises(CLAPError, match="audio side is 64-d"):
        tiny24.encode_text(["a dog"])
