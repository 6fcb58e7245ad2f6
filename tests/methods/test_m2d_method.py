"""Tests of the M2D objective, masking, losses and EMA (kikimimi.methods.m2d & helpers)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kikimimi.methods import build_method
from kikimimi.methods.ema import ema_tau
from kikimimi.methods.losses import norm_mse_loss, standardize_tokens
from kikimimi.methods.m2d import M2D
from kikimimi.methods.masking import gather_tokens, num_visible, random_masking
from kikimimi.optim import weight_decay_param_groups

TINY_INPUT = (80, 64)  # 5 x 4 = 20 patches of 16x16


def _tiny(seed: int = 0, **kw) -> M2D:
    torch.manual_seed(seed)
    return M2D("tiny", input_size=TINY_INPUT, **kw)


def _batch(seed: int = 0, b: int = 3) -> dict[str, torch.Tensor]:
    return {"lms": torch.randn(b, *TINY_INPUT, generator=torch.Generator().manual_seed(seed))}


# ----------------------------------------------------------------------------- masking
@pytest.mark.parametrize(("n", "ratio"), [(190, 0.7), (190, 0.6), (20, 0.7), (33, 0.5)])
def test_masking_counts_and_partition(n: int, ratio: float) -> None:
    ids = random_masking(8, n, ratio, generator=torch.Generator().manual_seed(0))
    keep = int(n * (1 - ratio))
    assert num_visible(n, ratio) == keep
    assert ids.visible.shape == (8, keep)
    assert ids.masked.shape == (8, n - keep)
    for b in range(8):
        vis = set(ids.visible[b].tolist())
        msk = set(ids.masked[b].tolist())
        assert len(vis) == keep and not (vis & msk)
        assert vis | msk == set(range(n))
    # restore is the inverse permutation of cat(visible, masked)
    shuffled = torch.cat([ids.visible, ids.masked], dim=1)
    assert torch.equal(shuffled.gather(1, ids.restore), torch.arange(n).expand(8, n))
    # different samples get different masks
    sets = {tuple(sorted(ids.visible[b].tolist())) for b in range(8)}
    assert len(sets) > 1


def test_masking_known_counts_from_the_paper() -> None:
    assert num_visible(190, 0.7) == 57
    assert num_visible(190, 0.6) == 76


def test_masking_uses_generator() -> None:
    a = random_masking(4, 50, 0.7, generator=torch.Generator().manual_seed(3))
    b = random_masking(4, 50, 0.7, generator=torch.Generator().manual_seed(3))
    c = random_masking(4, 50, 0.7, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.visible, b.visible)
    assert not torch.equal(a.visible, c.visible)


def test_gather_tokens() -> None:
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    ids = torch.tensor([[4, 0], [1, 3]])
    out = gather_tokens(tokens, ids)
    assert torch.equal(out[0, 0], tokens[0, 4]) and torch.equal(out[1, 1], tokens[1, 3])


# ----------------------------------------------------------------------------- loss
def test_norm_mse_loss_matches_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 5, generator=g)
    target = torch.randn(2, 3, 5, generator=g) * 4 + 2
    total = 0.0
    for b in range(2):
        for n in range(3):
            t = target[b, n].tolist()
            p = pred[b, n].tolist()
            mu = sum(t) / len(t)
            var = sum((v - mu) ** 2 for v in t) / (len(t) - 1)
            ts = [(v - mu) / math.sqrt(var + 1e-6) for v in t]
            cos = sum(a * c for a, c in zip(p, ts, strict=True)) / (
                math.sqrt(sum(a * a for a in p)) * math.sqrt(sum(c * c for c in ts))
            )
            total += 2 - 2 * cos
    expected = total / 6
    assert math.isclose(float(norm_mse_loss(pred, target)), expected, rel_tol=1e-5, abs_tol=1e-6)
    # identical direction after standardisation → zero loss
    assert float(norm_mse_loss(standardize_tokens(target) * 3.0, target)) < 1e-6


def test_norm_mse_loss_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        norm_mse_loss(torch.zeros(1, 2, 3), torch.zeros(1, 3, 3))


# ----------------------------------------------------------------------------- EMA
def test_ema_tau_schedule() -> None:
    total = 1001
    assert math.isclose(ema_tau(0, total), 0.99995, abs_tol=1e-12)
    assert math.isclose(ema_tau(500, total), (0.99995 + 0.99999) / 2, abs_tol=1e-12)
    assert math.isclose(ema_tau(total - 1, total), 0.99999, abs_tol=1e-12)
    assert ema_tau(10, total) < ema_tau(11, total)
    assert math.isclose(ema_tau(5, 1), 0.99995)  # degenerate run length


def test_target_only_moves_by_ema() -> None:
    model = _tiny()
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-3)
    target_before = [p.detach().clone() for p in model.target_parameters()]
    out = model(_batch())
    out["loss"].backward()
    assert all(p.grad is None for p in model.target_parameters())
    opt.step()
    for p, q in zip(model.target_parameters(), target_before, strict=True):
        assert torch.equal(p, q)  # the optimiser did not touch the target
    online = [p.detach().clone() for p in model._online_counterparts()]
    assert any(not torch.equal(p, q) for p, q in zip(online, target_before, strict=True))
    total = 10
    model.on_after_step(1, total)
    tau = 0.99995
    assert math.isclose(model.last_tau, tau)
    for p, t0, o in zip(model.target_parameters(), target_before, online, strict=True):
        torch.testing.assert_close(p, tau * t0 + (1 - tau) * o, rtol=1e-6, atol=1e-7)
    before_last = [p.detach().clone() for p in model.target_parameters()]
    model.on_after_step(total, total)
    assert math.isclose(model.last_tau, 0.99999)
    for p, t0, o in zip(model.target_parameters(), before_last, online, strict=True):
        torch.testing.assert_close(p, 0.99999 * t0 + (1 - 0.99999) * o, rtol=1e-6, atol=1e-7)


def test_target_random_init_not_copy() -> None:
    model = _tiny()
    w_t = model.target_blocks[0].attn.qkv.weight
    w_o = model.encoder.blocks[0].attn.qkv.weight
    assert not torch.equal(w_t, w_o)
    assert torch.equal(model.target_norm.weight, torch.ones_like(model.target_norm.weight))
    assert all(not p.requires_grad for p in model.target_parameters())


# ----------------------------------------------------------------------------- structure
def test_shared_patch_embed_pos_cls() -> None:
    model = _tiny()
    names = [n for n, _ in model.named_parameters()]
    for key in ("patch_embed", "pos_embed", "cls_token"):
        owners = [n for n in names if n.split(".")[-1] == key or f"{key}." in n]
        owners = [n for n in owners if not n.startswith("decoder_")]
        assert owners and all(n.startswith("encoder.") for n in owners), owners
    # the target path reads the encoder's tensors: perturbing them changes the target output
    tokens = model.encoder.patchify_tokens(_batch()["lms"].unsqueeze(1))
    ids = random_masking(3, tokens.shape[1], 0.7, generator=torch.Generator().manual_seed(0))
    ref = model.encode_target(tokens, ids)
    with torch.no_grad():
        model.encoder.cls_token.add_(1.0)
    assert not torch.allclose(model.encode_target(tokens, ids), ref)
    with torch.no_grad():
        model.encoder.patch_embed.proj.weight.mul_(2.0)
    tokens2 = model.encoder.patchify_tokens(_batch()["lms"].unsqueeze(1))
    assert not torch.allclose(tokens2, tokens)


def test_forward_outputs() -> None:
    model = _tiny()
    model.set_generator(torch.Generator().manual_seed(0))
    out = model(_batch(b=2))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert 0.0 <= float(out["loss"].detach()) <= 4.0
    assert out["visible_tokens"].shape == (2, int(20 * 0.3), 192)
    with pytest.raises(ValueError, match="80, 64"):
        model({"lms": torch.zeros(2, 80, 96)})


def test_same_generator_same_loss() -> None:
    model = _tiny()
    losses = []
    for _ in range(2):
        model.set_generator(torch.Generator().manual_seed(7))
        losses.append(model(_batch())["loss"].item())
    model.set_generator(torch.Generator().manual_seed(8))
    other = model(_batch())["loss"].item()
    assert losses[0] == losses[1]
    assert other != losses[0]


def test_param_groups() -> None:
    model = _tiny()
    groups = model.param_groups(0.05)
    by_id = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(by_id) == trainable
    assert id(model.encoder.pos_embed) not in by_id and id(model.decoder_pos_embed) not in by_id
    assert by_id[id(model.encoder.blocks[0].attn.qkv.bias)] == 0.0
    assert by_id[id(model.encoder.norm.weight)] == 0.0
    assert by_id[id(model.encoder.blocks[0].attn.qkv.weight)] == 0.05
    assert weight_decay_param_groups(torch.nn.Linear(2, 2), 0.1)[0]["weight_decay"] == 0.1


def test_config_and_build_method() -> None:
    model = _tiny(mask_ratio=0.6)
    cfg = json.loads(json.dumps(model.config_dict()))
    assert cfg["method"] == "m2d" and cfg["input_size"] == list(TINY_INPUT)
    assert (cfg["decoder_dim"], cfg["decoder_depth"], cfg["decoder_heads"]) == (128, 2, 4)
    rebuilt = build_method("m2d", **cfg)
    assert isinstance(rebuilt, M2D) and rebuilt.mask_ratio == 0.6
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match="unknown method"):
        build_method("mae")
    with pytest.raises(ValueError, match="mask_mode"):
        M2D("tiny", input_size=TINY_INPUT, mask_mode="structured")


# ----------------------------------------------------------------------------- official keys
def test_export_keys_base() -> None:
    with torch.device("meta"):
        model = M2D("base", input_size=(80, 608))
    sd = model.export_official_state_dict()
    assert len(sd) == 401 and "norm_stats" in sd
    assert len([k for k in sd if k != "norm_stats"]) == 400
    assert tuple(sd["norm_stats"].shape) == (2,)
    prefixes = {k.split(".")[0] for k in sd}
    assert prefixes == {
        "cls_token", "pos_embed", "mask_token", "decoder_pos_embed", "patch_embed", "blocks", "norm",
        "decoder_embed", "decoder_blocks", "decoder_norm", "decoder_pred", "target_blocks", "target_norm",
        "norm_stats",
    }  # fmt: skip
    assert sum(k.startswith("blocks.") for k in sd) == 144
    assert sum(k.startswith("target_blocks.") for k in sd) == 144
    assert sum(k.startswith("decoder_blocks.") for k in sd) == 96
    shapes = {
        "cls_token": (1, 1, 768),
        "pos_embed": (1, 191, 768),
        "mask_token": (1, 1, 512),
        "decoder_pos_embed": (1, 191, 512),
        "patch_embed.proj.weight": (768, 1, 16, 16),
        "decoder_embed.weight": (512, 768),
        "decoder_blocks.7.attn.qkv.weight": (1536, 512),
        "decoder_blocks.7.mlp.fc1.weight": (2048, 512),
        "decoder_pred.weight": (768, 512),
        "target_blocks.11.mlp.fc2.weight": (768, 3072),
        "target_norm.bias": (768,),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert model.decoder_heads == 16


def test_load_official_roundtrip() -> None:
    src = _tiny(seed=1)
    with torch.no_grad():
        src.norm_stats.copy_(torch.tensor([-5.0, 3.0]))
    sd = src.export_official_state_dict()
    dst = _tiny(seed=2)
    assert not torch.equal(dst.target_blocks[0].mlp.fc1.weight, src.target_blocks[0].mlp.fc1.weight)
    ignored = dst.load_official_state_dict({"model": {**sd, "offline_predictor.weight": torch.zeros(3, 3)}})
    assert ignored == ["offline_predictor.weight"]
    for key, value in dst.export_official_state_dict().items():
        assert torch.equal(value, sd[key]), key
    batch = _batch()
    src.set_generator(torch.Generator().manual_seed(0))
    dst.set_generator(torch.Generator().manual_seed(0))
    assert torch.equal(src(batch)["loss"], dst(batch)["loss"])
    rebuilt = M2D.from_official_state_dict(sd, input_size=TINY_INPUT)
    assert rebuilt.size == "tiny" and rebuilt.decoder_depth == 2
    assert torch.equal(rebuilt.norm_stats, sd["norm_stats"])


def test_load_official_errors() -> None:
    model = _tiny()
    sd = model.export_official_state_dict()
    encoder_only = {k: v for k, v in sd.items() if not k.startswith(("target_", "decoder_", "mask_token"))}
    with pytest.raises(KeyError, match="full training"):
        model.load_official_state_dict(encoder_only)
    other = M2D("tiny", input_size=(80, 96))
    with pytest.raises(ValueError, match="input_size"):
        other.load_official_state_dict(sd)


# ----------------------------------------------------------------------------- training
def test_adam_steps_lower_loss() -> None:
    model = _tiny()
    opt = torch.optim.AdamW(model.param_groups(0.0), lr=1e-3)
    batch = _batch(b=2)
    losses = []
    for step in range(1, 9):
        model.set_generator(torch.Generator().manual_seed(0))  # same mask every step
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.on_after_step(step, 8)
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
