"""Encoders against forward passes written here with plain tensor operations, and the documented shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kikimimi.models.byola import AudioNTT2020, AudioNTT2022
from kikimimi.models.projectors import MLPAudioProjector, SemanticProjector
from kikimimi.models.vit import AudioViT, ViTConfig, resize_pos_embed, sincos_pos_embed_2d


def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _block(x, sd, prefix, heads, eps):
    b, n, d = x.shape
    h = _layer_norm(x, sd[prefix + "norm1.weight"], sd[prefix + "norm1.bias"], eps)
    qkv = h @ sd[prefix + "attn.qkv.weight"].T + sd[prefix + "attn.qkv.bias"]
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
    split = lambda t: t.reshape(b, n, heads, d // heads).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    a = (att @ v).transpose(1, 2).reshape(b, n, d)
    x = x + a @ sd[prefix + "attn.proj.weight"].T + sd[prefix + "attn.proj.bias"]
    h = _layer_norm(x, sd[prefix + "norm2.weight"], sd[prefix + "norm2.bias"], eps)
    h = _gelu(h @ sd[prefix + "mlp.fc1.weight"].T + sd[prefix + "mlp.fc1.bias"])
    return x + h @ sd[prefix + "mlp.fc2.weight"].T + sd[prefix + "mlp.fc2.bias"]


def reference_vit_chunk(sd, x, patch, heads, depth, grid_f, grid_t_full):
    """One chunk [B, F, T] -> [B, Fg*Tc, D] from the state dict with plain ops."""
    b, f, t = x.shape
    ph, pw = patch
    w = sd["patch_embed.proj.weight"]
    d = w.shape[0]
    # patches in frequency-major order: (f, t) -> index f*Tc + t
    tc = t // pw
    p = x[:, : grid_f * ph, : tc * pw].reshape(b, grid_f, ph, tc, pw).permute(0, 1, 3, 2, 4)
    p = p.reshape(b, grid_f * tc, ph * pw)
    tokens = p @ w.reshape(d, -1).T + sd["patch_embed.proj.bias"]
    pos = sd["pos_embed"][0, 1:].reshape(grid_f, grid_t_full, d)[:, :tc].reshape(grid_f * tc, d)
    tokens = tokens + pos
    cls = sd["cls_token"] + sd["pos_embed"][:, :1]
    h = torch.cat([cls.expand(b, -1, -1), tokens], dim=1)
    for i in range(depth):
        h = _block(h, sd, f"blocks.{i}.", heads, 1e-6)
    return _layer_norm(h, sd["norm.weight"], sd["norm.bias"], 1e-6)[:, 1:]


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    cfg = ViTConfig(input_size=(80, 64), patch_size=(16, 16), embed_dim=32, depth=2, num_heads=4)
    model = AudioViT(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def test_vit_chunk_matches_plain_ops(tiny_vit):
    sd = {k: v.detach() for k, v in tiny_vit.state_dict().items()}
    x = torch.randn(2, 80, 48)
    with torch.no_grad():
        ours = tiny_vit.forward_tokens(x.unsqueeze(1))
    ref = reference_vit_chunk(sd, x, (16, 16), 4, 2, 5, 4)
    assert ours.shape == (2, 5 * 3, 32)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_chunking_rule_matches_manual_chunks(tiny_vit):
    sd = {k: v.detach() for k, v in tiny_vit.state_dict().items()}
    x = torch.randn(1, 80, 150)  # 64 + 64 + 22 -> pad 10 (to 32) -> chunks of 4, 4, 2 time patches
    with torch.no_grad():
        frames = tiny_vit.encode_lms(x)
        flat = tiny_vit.encode_lms(x, flat=True)
    padded = F.pad(x, (0, 10))
    parts = [reference_vit_chunk(sd, padded[:, :, s:s + 64], (16, 16), 4, 2, 5, 4) for s in (0, 64, 128)]
    torch.testing.assert_close(flat, torch.cat(parts, dim=1), atol=1e-5, rtol=1e-5)
    # frame features: per time step, the 5 frequency patches concatenated (index f*D + d)
    assert frames.shape == (1, 10, 5 * 32)
    last = parts[2]  # [1, 5*2, 32], freq-major
    torch.testing.assert_close(frames[0, 8, 32 * 3:32 * 4], last[0, 3 * 2 + 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("frames_in,expected", [(101, 7), (609, 39), (1001, 63), (3001, 188)])
def test_documented_frame_counts_80x608(frames_in, expected):
    model = AudioViT(ViTConfig(embed_dim=32, depth=1, num_heads=2)).eval()
    with torch.no_grad():
        out = model.encode_lms(torch.randn(1, 80, frames_in))
    assert out.shape == (1, expected, 5 * 32)
    assert model.num_output_frames(frames_in) == expected


def test_1001_model_and_flat_tokens():
    m1001 = AudioViT(ViTConfig(input_size=(80, 1001), embed_dim=32, depth=1, num_heads=2)).eval()
    m608 = AudioViT(ViTConfig(embed_dim=32, depth=1, num_heads=2)).eval()
    with torch.no_grad():
        assert m1001.encode_lms(torch.randn(1, 80, 1001)).shape[1] == 62
        assert m608.encode_lms(torch.randn(1, 80, 1001), flat=True).shape[1] == 315
        layers = m608.encode_lms(torch.randn(1, 80, 300), return_layers=True)
    assert len(layers) == 1 and layers[0].shape == (1, 19, 160)


def test_return_layers_last_is_normed(tiny_vit):
    with torch.no_grad():
        layers = tiny_vit.forward_tokens(torch.randn(1, 1, 80, 64), return_layers=True)
        final = tiny_vit.forward_tokens(torch.randn(1, 1, 80, 64))
    assert len(layers) == 2
    assert layers[-1].shape == final.shape
    # the intermediate output is un-normed: its per-token mean is not ~0 in general
    normed = F.layer_norm(layers[0], (32,), eps=1e-6)
    assert not torch.allclose(layers[0], normed, atol=1e-3)


def test_sincos_layout():
    pe = sincos_pos_embed_2d(16, grid_f=3, grid_t=5)
    assert pe.shape == (1, 16, 16)
    assert torch.all(pe[0, 0] == 0)
    f, t = 2, 3
    row = pe[0, 1 + f * 5 + t]
    omega = [1.0 / 10000 ** (k / 4) for k in range(4)]
    torch.testing.assert_close(row[:4], torch.tensor([math.sin(t * w) for w in omega]), atol=1e-6, rtol=0)
    torch.testing.assert_close(row[4:8], torch.tensor([math.cos(t * w) for w in omega]), atol=1e-6, rtol=0)
    torch.testing.assert_close(row[8:12], torch.tensor([math.sin(f * w) for w in omega]), atol=1e-6, rtol=0)


def test_base_state_dict_keys():
    sd = AudioViT(ViTConfig()).state_dict()
    assert len(sd) == 150
    assert sd["pos_embed"].shape == (1, 191, 768)
    assert sd["blocks.11.attn.qkv.weight"].shape == (2304, 768)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (3072, 768)
    assert sd["patch_embed.proj.weight"].shape == (768, 1, 16, 16)
    assert not AudioViT(ViTConfig()).pos_embed.requires_grad


def test_resize_pos_embed():
    pe = sincos_pos_embed_2d(16, 5, 38)
    same = resize_pos_embed(pe, (5, 38), (5, 38))
    torch.testing.assert_close(same, pe, atol=1e-5, rtol=0)
    longer = resize_pos_embed(pe, (5, 38), (5, 62))
    assert longer.shape == (1, 1 + 5 * 62, 16)
    shorter = resize_pos_embed(pe, (5, 38), (5, 10))
    torch.testing.assert_close(shorter[0, 1:].reshape(5, 10, 16), pe[0, 1:].reshape(5, 38, 16)[:, :10])


def _bn_eval(x, sd, p):
    shape = (1, -1, 1, 1)
    return ((x - sd[p + "running_mean"].view(shape)) / torch.sqrt(sd[p + "running_var"].view(shape) + 1e-5)
            * sd[p + "weight"].view(shape) + sd[p + "bias"].view(shape))


def _byola_reference(sd, x, conv_ids, v2):
    h = x.unsqueeze(1)
    for c in conv_ids:
        h = F.conv2d(h, sd[f"features.{c}.weight"], sd[f"features.{c}.bias"], padding=1)
        h = torch.relu(_bn_eval(h, sd, f"features.{c + 1}."))
        b, ch, fr, t = h.shape
        h = h[:, :, : fr // 2 * 2, : t // 2 * 2].reshape(b, ch, fr // 2, 2, t // 2, 2).amax(dim=(3, 5))
    b, ch, fr, t = h.shape
    flat = torch.stack([h[:, :, :, j].transpose(1, 2).reshape(b, fr * ch) for j in range(t)], dim=1)
    mlp = torch.relu(torch.relu(flat @ sd["fc.0.weight"].T + sd["fc.0.bias"]) @ sd["fc.3.weight"].T + sd["fc.3.bias"])
    frames = torch.cat([flat, mlp], dim=-1) if v2 else mlp
    return frames.max(dim=1).values + frames.mean(dim=1)


@pytest.mark.parametrize("cls,d,conv_ids,v2", [(AudioNTT2020, 512, (0, 4, 8), False),
                                                (AudioNTT2022, 3072, (0, 4), True)])
def test_byola_matches_plain_ops(cls, d, conv_ids, v2):
    torch.manual_seed(1)
    model = cls(d=d).eval()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if "running_mean" in name:
                buf.normal_(0, 0.1)
            elif "running_var" in name:
                buf.uniform_(0.5, 2.0)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    x = torch.randn(2, 64, 101)
    with torch.no_grad():
        ours = model(x)
    torch.testing.assert_close(ours, _byola_reference(sd, x, conv_ids, v2), atol=1e-4, rtol=1e-4)
    assert ours.shape == (2, d)


def test_byola_counts_and_errors():
    counts = {512: 600_192, 1024: 1_649_792, 2048: 5_321_856}
    for d, n in counts.items():
        m = AudioNTT2020(d=d)
        assert sum(p.numel() for p in m.parameters()) == n
        assert len(m.state_dict()) == 25
    assert sum(p.numel() for p in AudioNTT2022().parameters()) == 6_333_376
    with pytest.raises(ValueError, match="too short"):
        AudioNTT2020().eval()(torch.randn(1, 64, 5))
    torch.testing.assert_close(AudioNTT2020().frame_centres_ms(2), torch.tensor([35.0, 115.0], dtype=torch.float64))
    torch.testing.assert_close(AudioNTT2022().frame_centres_ms(2), torch.tensor([15.0, 55.0], dtype=torch.float64))


def test_projectors():
    sem = SemanticProjector(dim=32, depth=1, mlp_ratio=1.0).eval()
    keys = [f"audio_proj.{k}" for k in sem.state_dict()]
    assert len(keys) == 1 + 12 + 2 and "audio_proj.sem_blocks.0.norm1.weight" in keys
    assert sem.norm.eps == 1e-5 and sem.sem_blocks[0].norm1.eps == 1e-5
    tokens = torch.randn(2, 7, 32)
    sd = {k: v.detach() for k, v in sem.state_dict().items()}
    x = torch.cat([sd["sem_token"].expand(2, -1, -1), tokens], dim=1)
    ref = _layer_norm(_block(x, sd, "sem_blocks.0.", 1, 1e-5)[:, 0], sd["norm.weight"], sd["norm.bias"], 1e-5)
    with torch.no_grad():
        torch.testing.assert_close(sem(tokens), ref, atol=1e-5, rtol=1e-5)
    mlp = MLPAudioProjector(32)
    assert sorted(mlp.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert mlp(torch.randn(3, 32)).shape == (3, 32)
