"""Tests of the BYOL-A objective (kikimimi.methods.byola)."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from kikimimi.methods import build_method
from kikimimi.methods.byola import BYOLA
from kikimimi.methods.losses import byol_pair_loss, byol_symmetric_loss

F_BINS, T_FRAMES = 32, 64  # small crops keep the CPU tests fast


def _tiny(version: int = 1, seed: int = 0, **kw) -> BYOLA:
    torch.manual_seed(seed)
    if version == 1:
        kw.setdefault("d", 64)
    kw.setdefault("n_mels", F_BINS)
    return BYOLA(version, proj_hidden=128, proj_dim=32, n_memory=16, **kw)


def _batch(seed: int = 0, b: int = 4) -> dict[str, torch.Tensor]:
    return {"lms": torch.randn(b, F_BINS, T_FRAMES, generator=torch.Generator().manual_seed(seed))}


def test_byol_loss_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    pa, pb, ta, tb = (torch.randn(3, 4, generator=g) for _ in range(4))

    def cos(u: torch.Tensor, v: torch.Tensor) -> float:
        return float((u * v).sum() / (u.norm() * v.norm()))

    expected = sum((2 - 2 * cos(pa[i], tb[i])) + (2 - 2 * cos(pb[i], ta[i])) for i in range(3)) / 3
    assert math.isclose(float(byol_symmetric_loss(pa, pb, ta, tb)), expected, rel_tol=1e-5)
    assert float(byol_pair_loss(pa, 5 * pa).abs().max()) < 1e-6


def test_target_is_copy_and_frozen() -> None:
    model = _tiny()
    for (n, p), (_, q) in zip(model.encoder.named_parameters(), model.target_encoder.named_parameters(), strict=True):
        assert torch.equal(p, q), n
        assert p is not q and not q.requires_grad
    groups = model.param_groups(0.0)
    ids = {id(p) for g in groups for p in g["params"]}
    assert not ids & {id(p) for p in model.target_encoder.parameters()}
    assert not ids & {id(p) for p in model.target_projector.parameters()}
    assert ids == {id(p) for p in model.parameters() if p.requires_grad}


def test_forward_shapes_and_bank_growth() -> None:
    model = _tiny()
    out = model(_batch(b=3))
    assert out["loss"].ndim == 0 and 0.0 <= float(out["loss"].detach()) <= 8.0
    assert len(model.augment.mixup.bank) == 6  # two views per item
    model.eval()
    model(_batch(b=3))
    assert len(model.augment.mixup.bank) == 6  # eval mode does not feed the bank


def test_ema_params_only() -> None:
    model = _tiny()
    opt = torch.optim.Adam(model.param_groups(0.0), lr=1e-3)
    model(_batch())["loss"].backward()
    tgt_before = {n: p.detach().clone() for n, p in model.target_encoder.named_parameters()}
    proj_before = {n: p.detach().clone() for n, p in model.target_projector.named_parameters()}
    opt.step()
    for n, p in model.target_encoder.named_parameters():
        assert torch.equal(p, tgt_before[n])  # the optimiser never touches the target
    with torch.no_grad():  # make target BN statistics distinct from the online ones
        for n, b in model.target_encoder.named_buffers():
            if n.endswith("running_mean"):
                b.fill_(5.0)
    bufs_before = {n: b.detach().clone() for n, b in model.target_encoder.named_buffers()}
    online_bufs = {n: b.detach().clone() for n, b in model.encoder.named_buffers()}
    model.on_after_step(1, 100)
    online = dict(model.encoder.named_parameters())
    for n, p in model.target_encoder.named_parameters():
        torch.testing.assert_close(p, 0.99 * tgt_before[n] + 0.01 * online[n], rtol=1e-6, atol=1e-7)
    online_proj = dict(model.projector.named_parameters())
    for n, p in model.target_projector.named_parameters():
        torch.testing.assert_close(p, 0.99 * proj_before[n] + 0.01 * online_proj[n], rtol=1e-6, atol=1e-7)
    running = [n for n in bufs_before if n.endswith("running_mean")]
    assert running and all(not torch.equal(bufs_before[n], online_bufs[n]) for n in running)
    for n, b in model.target_encoder.named_buffers():
        assert torch.equal(b, bufs_before[n]), n  # buffers are not averaged towards the online ones


def test_adam_steps_lower_loss() -> None:
    model = _tiny()
    opt = torch.optim.Adam(model.param_groups(0.0), lr=1e-3)
    batch = _batch(b=8)
    losses = []
    for step in range(1, 16):
        model.set_generator(torch.Generator().manual_seed(0))
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.on_after_step(step, 15)
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.85 * first, losses


def _train_steps(model: BYOLA, steps: int, lr: float = 1e-3) -> None:
    from kikimimi.optim import set_lr

    opt = torch.optim.Adam(model.param_groups(0.0), lr=lr)
    for step in range(1, steps + 1):
        set_lr(opt, lr)  # the trainer's way of applying each group's lr_scale
        model.set_generator(torch.Generator().manual_seed(step))
        loss = model(_batch(seed=step, b=8))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.on_after_step(step, steps)


def test_mlp_lr_scale_zero_keeps_the_encoder_mlp_at_init() -> None:
    model = _tiny(mlp_lr_scale=0.0)
    mlp0 = {k: v.clone() for k, v in model.encoder.fc.state_dict().items()}
    conv0 = {k: v.clone() for k, v in model.encoder.features.state_dict().items()}
    proj0 = model.projector[0].weight.clone()
    _train_steps(model, 4)
    for k, v in model.encoder.fc.state_dict().items():
        assert torch.equal(v, mlp0[k]), k
        assert torch.equal(model.target_encoder.fc.state_dict()[k], mlp0[k]), k  # EMA of a constant
    assert not torch.equal(model.encoder.features[0].weight, conv0["0.weight"])
    assert not torch.equal(model.projector[0].weight, proj0)
    assert model.config_dict()["mlp_lr_scale"] == 0.0


def test_mlp_lr_scale_groups() -> None:
    official = _tiny()
    assert all("lr_scale" not in g for g in official.param_groups(0.0))  # unsplit, as saved runs expect
    model = _tiny(mlp_lr_scale=0.1)
    groups = model.param_groups(0.05)
    mlp = {id(p) for p in model.encoder.fc.parameters()}
    for g in groups:
        in_mlp = {id(p) in mlp for p in g["params"]}
        assert len(in_mlp) == 1  # a group is all MLP or none of it
        assert g["lr_scale"] == (0.1 if in_mlp == {True} else 1.0)
    n_trainable = sum(p.requires_grad for p in model.parameters())
    assert sum(len(g["params"]) for g in groups) == n_trainable
    # decay / no-decay split is kept inside the MLP: Linear weights decay, biases do not
    assert {g["weight_decay"] for g in groups if g["lr_scale"] == 0.1} == {0.05, 0.0}
    with pytest.raises(ValueError, match="mlp_lr_scale"):
        _tiny(mlp_lr_scale=-1.0)


def test_state_dict_roundtrips_bank_and_training() -> None:
    model = _tiny()
    opt = torch.optim.Adam(model.param_groups(0.0), lr=1e-3)

    def step(m: BYOLA, o: torch.optim.Optimizer, seed: int, k: int) -> float:
        m.set_generator(torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)  # encoder dropout draws from the global RNG
        loss = m(_batch(seed))["loss"]
        o.zero_grad()
        loss.backward()
        o.step()
        m.on_after_step(k, 10)
        return loss.item()

    step(model, opt, 1, 1)
    step(model, opt, 2, 2)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert any(k.endswith("_extra_state") for k in saved["model"])

    other = _tiny(seed=5)
    other.load_state_dict(saved["model"])
    assert len(other.augment.mixup.bank) == len(model.augment.mixup.bank) == 16
    for a, b in zip(model.augment.mixup.bank, other.augment.mixup.bank, strict=True):
        assert torch.equal(a, b)
    opt2 = torch.optim.Adam(other.param_groups(0.0), lr=1e-3)
    opt2.load_state_dict(saved["opt"])
    assert step(model, opt, 3, 3) == step(other, opt2, 3, 3)


def test_export_and_load_official() -> None:
    model = _tiny()
    sd = model.export_official_state_dict()
    assert sd and all(k.startswith(("features.", "fc.")) for k in sd)
    assert tuple(sd["fc.0.weight"].shape) == (64, 64 * (F_BINS // 8))
    other = _tiny(seed=3)
    ignored = other.load_official_state_dict({"state_dict": {**sd, "extra.weight": torch.zeros(1)}})
    assert ignored == ["extra.weight"]
    for k, v in other.encoder.state_dict().items():
        assert torch.equal(v, sd[k])
    for k, v in other.target_encoder.state_dict().items():
        assert torch.equal(v, sd[k])


def test_config_and_build_v1_v2() -> None:
    v1 = _tiny(1)
    cfg1 = json.loads(json.dumps(v1.config_dict()))
    assert cfg1["default_optimizer"] == "adam" and cfg1["lr"] == 3e-4 and cfg1["mixup_ratio"] == 0.4
    rebuilt = build_method(cfg1["method"], **cfg1)
    assert isinstance(rebuilt, BYOLA) and rebuilt.version == 1
    assert rebuilt.state_dict().keys() == v1.state_dict().keys()

    v2 = build_method("byola2", proj_hidden=64, proj_dim=16, n_memory=8)
    cfg2 = v2.config_dict()
    assert cfg2["method"] == "byola2" and cfg2["lr"] == 1e-4 and cfg2["mixup_ratio"] == 0.2
    assert cfg2["d"] == 3072 and v2.augment.fader is not None
    out = v2({"lms": torch.randn(2, 64, 96)})
    assert torch.isfinite(out["loss"])
    assert tuple(v2.export_official_state_dict()["fc.0.weight"].shape) == (2048, 1024)
