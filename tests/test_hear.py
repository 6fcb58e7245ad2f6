"""HEAR API wrappers return the same numbers and timestamps as the kikimimi API."""

from __future__ import annotations

import numpy as np
import official_layouts as ol
import pytest
import torch

from kikimimi import hear


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("h") / "m2d_vit_base-80x608p16x16-221006-mr7_enconly"
    d.mkdir()
    torch.save(ol.m2d_encoder_state(embed_dim=64, depth=2), d / "w.pth")
    return hear.load_model(str(d / "w.pth"))


def test_attributes(model):
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == model.timestamp_embedding_size == 320
    assert isinstance(model, torch.nn.Module) and sum(p.numel() for p in model.parameters()) > 0


def test_shapes_and_equivalence(model):
    audio = torch.randn(3, 16000 * 10) * 0.1
    scene = hear.get_scene_embeddings(audio, model)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert scene.shape == (3, 320) and scene.dtype == torch.float32
    assert emb.shape == (3, 63, 320) and ts.shape == (3, 63)
    ref_emb, ref_ts = model.encoder.embed_frames(list(audio.numpy()))
    np.testing.assert_allclose(emb.numpy(), ref_emb, atol=1e-6)
    np.testing.assert_allclose(ts.numpy(), ref_ts, rtol=1e-6)
    np.testing.assert_allclose(scene.numpy(), emb.numpy().mean(axis=1), atol=1e-5)
    assert np.all(np.diff(ts.numpy(), axis=1) > 0)


def test_bad_input(model):
    with pytest.raises(ValueError, match="n_sounds"):
        hear.get_scene_embeddings(torch.zeros(16000), model)
    with pytest.raises(ValueError, match="checkpoint"):
        hear.load_model("")
