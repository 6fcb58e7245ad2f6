"""Further pre-training from an encoder-only release (kikimimi.training.further): the full M2D state that
``init_from`` loads has the released encoder as online network *and* target, and a fresh predictor."""

from __future__ import annotations

import pytest
import torch

from kikimimi.checkpoints import load_encoder
from kikimimi.checkpoints.names import vit_size_name
from kikimimi.methods import build_method
from kikimimi.training.further import encoder_init_file, encoder_init_state


def test_init_state_is_the_encoder_twice_and_a_fresh_predictor(tiny_m2d_file, tmp_path):
    bundle = load_encoder(tiny_m2d_file)
    before = torch.random.get_rng_state()
    state = encoder_init_state(tiny_m2d_file, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left as it was
    encoder = bundle.encoder.state_dict()
    assert encoder and all(torch.equal(state[k], v) for k, v in encoder.items())
    target = {k: v for k, v in state.items() if k.startswith(("target_blocks.", "target_norm."))}
    assert target and all(torch.equal(v, state[k.removeprefix("target_")]) for k, v in target.items())
    assert torch.equal(state["norm_stats"], torch.tensor(bundle.norm_stats.to_list(), dtype=torch.float32))
    # the predictor is seeded: the same seed gives the same tensors, another seed others
    assert torch.equal(encoder_init_state(tiny_m2d_file, seed=3)["decoder_pred.weight"], state["decoder_pred.weight"])
    assert not torch.equal(encoder_init_state(tiny_m2d_file, seed=4)["decoder_pred.weight"],
                           state["decoder_pred.weight"])
    # exactly what an M2D of that size loads, with nothing left over
    vit = bundle.encoder.config
    method = build_method("m2d", size=vit_size_name(vit), vit_config=vit)
    assert method.load_official_state_dict(torch.load(encoder_init_file(tiny_m2d_file, tmp_path / "init.pth"),
                                                      weights_only=True)) == []
    assert torch.equal(method.encoder.blocks[0].attn.qkv.weight, encoder["blocks.0.attn.qkv.weight"])


def test_a_byola_encoder_is_refused_in_one_line(tmp_path, monkeypatch):
    class Bundle:
        family = "byola"

    monkeypatch.setattr("kikimimi.training.further.load_encoder", lambda _path: Bundle())
    with pytest.raises(ValueError, match=r"^'x.pth': further pre-training with M2D needs an M2D encoder, got byola$"):
        encoder_init_state("x.pth")
