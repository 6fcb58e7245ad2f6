"""The FrameEncoder interface of the M2D ViT and the BYOL-A CNNs, and AudioEncoder's use of it."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from kikimimi.checkpoints.bundle import EncoderBundle
from kikimimi.features.frontend import PRESETS
from kikimimi.features.normstats import NormStats
from kikimimi.inference.encoder import AudioEncoder, random_init_like
from kikimimi.models.byola import AudioNTT2020, AudioNTT2022
from kikimimi.models.encoder import FrameEncoder
from kikimimi.models.vit import AudioViT, ViTConfig, official_chunk_spans

#: training length 100 frames: not a multiple of the 16-frame patch width, as the official 1001-frame models
UNIT = 100


def _vit() -> AudioViT:
    torch.manual_seed(0)
    return AudioViT(ViTConfig(input_size=(80, UNIT), embed_dim=64, depth=2, num_heads=4)).eval()


def _byola(version: int) -> AudioNTT2020 | AudioNTT2022:
    torch.manual_seed(0)
    return (AudioNTT2020(d=64) if version == 1 else AudioNTT2022(d=64 * 16 + 32, mlp_hidden_d=32)).eval()


ENCODERS = {"vit": _vit, "byola1": lambda: _byola(1), "byola2": lambda: _byola(2)}


@pytest.fixture(params=sorted(ENCODERS))
def encoder(request) -> FrameEncoder:
    return ENCODERS[request.param]()


def _lms(encoder, frames: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    n_mels = 80 if isinstance(encoder, AudioViT) else 64
    return torch.randn(batch, n_mels, frames, generator=torch.Generator().manual_seed(seed))


def test_every_encoder_satisfies_the_interface(encoder):
    assert isinstance(encoder, FrameEncoder)
    frames = encoder.encode_lms(_lms(encoder, 230))
    assert frames.shape[0] == 1 and frames.shape[-1] == encoder.embedding_dim
    assert encoder.pool(frames).shape == (1, encoder.embedding_dim)
    stamps = encoder.timestamps_ms(frames.shape[1], 230 * 160, 16000, 160)
    assert stamps.shape == (frames.shape[1],) and stamps.dtype == torch.float64


def test_input_unit():
    assert _vit().chunk_frames == UNIT
    assert _byola(1).chunk_frames is None and _byola(2).chunk_frames is None


def test_official_chunk_rule_examples():
    # 1995 frames of a 1001-frame model: 994 = 1995 mod 1001 leaves 2 frames of a patch, so 14 frames of padding;
    # each full chunk keeps its 62 whole patches and the 7-frame remainder holds no patch.
    assert official_chunk_spans(1995, 1001, 16) == (14, [(0, 992), (1001, 992)])
    assert official_chunk_spans(300, 208, 16) == (4, [(0, 208), (208, 96)])
    assert official_chunk_spans(608, 608, 16) == (0, [(0, 608)])
    assert official_chunk_spans(5, 608, 16) == (11, [(0, 16)])


@pytest.mark.parametrize("frames", [7, 37, UNIT, 150, 233, 3 * UNIT + 5])
def test_public_chunks_reproduce_encode_lms_exactly(frames):
    vit = _vit()
    lms = _lms(vit, frames, batch=2)
    with torch.inference_mode():
        chunks = vit.split_chunks(lms)
        assert all(c.shape[-1] % 16 == 0 and c.shape[-1] <= UNIT for c in chunks)
        by_chunk = torch.cat([vit.encode_chunks(c) for c in chunks], dim=1)
        assert torch.equal(by_chunk, vit.encode_lms(lms))
        flat = torch.cat([vit.encode_chunks(c, flat=True) for c in chunks], dim=1)
        assert torch.equal(flat, vit.encode_lms(lms, flat=True))
        one_clip = torch.cat([vit.encode_chunks(c[None]) for c in vit.split_chunks(lms[1])], dim=1)
        assert torch.equal(one_clip, vit.encode_lms(lms[1:]))
    assert by_chunk.shape[1] == vit.num_output_frames(frames)


def test_byola_whole_clip_is_one_chunk():
    model = _byola(1)
    lms = _lms(model, 101)
    clip = lms[0]
    (chunk,) = model.split_chunks(clip)
    assert chunk is clip
    with torch.inference_mode():
        assert torch.equal(model.encode_chunks(chunk[None]), model.encode_lms(lms))


def test_pooling_follows_the_documented_rule(encoder):
    with torch.inference_mode():
        lms = _lms(encoder, 230, batch=2)
        frames = encoder.encode_lms(lms)
        pooled = encoder.pool(frames)
        if isinstance(encoder, AudioViT):
            assert torch.equal(pooled, frames.mean(dim=1))
        else:
            assert torch.equal(pooled, frames.max(dim=1).values + frames.mean(dim=1))
            assert torch.equal(encoder(lms.unsqueeze(1)), pooled)  # the clip-level forward
        assert torch.equal(encoder.pool(frames[0]), pooled[0])  # one clip [T', D] pools the same


def test_chunks_batched_across_clips_equal_one_clip_at_a_time(encoder):
    lengths = [37, 233, UNIT, 233, 150, 37]
    clips = [_lms(encoder, n, seed=i)[0] for i, n in enumerate(lengths)]
    pieces = defaultdict(list)
    for clip, lms in enumerate(clips):
        for index, chunk in enumerate(encoder.split_chunks(lms)):
            pieces[chunk.shape[-1]].append((clip, index, chunk))
    outputs: dict[int, dict[int, torch.Tensor]] = defaultdict(dict)
    with torch.inference_mode():
        for group in pieces.values():
            frames = encoder.encode_chunks(torch.stack([c for _, _, c in group]))
            for (clip, index, _), f in zip(group, frames, strict=True):
                outputs[clip][index] = f
        for clip, lms in enumerate(clips):
            batched = torch.cat([outputs[clip][i] for i in sorted(outputs[clip])])
            torch.testing.assert_close(batched, encoder.encode_lms(lms[None])[0], rtol=0, atol=1e-5)


def test_timestamps():
    vit, v1, v2 = _vit(), _byola(1), _byola(2)
    torch.testing.assert_close(vit.timestamps_ms(4, 32000, 16000, 160),
                               torch.tensor([0.0, 500.0, 1000.0, 1500.0], dtype=torch.float64))
    torch.testing.assert_close(v1.timestamps_ms(2, 16000, 16000, 160), v1.frame_centres_ms(2, 10.0))
    torch.testing.assert_close(v2.timestamps_ms(2, 16000, 16000, 160),
                               torch.tensor([15.0, 55.0], dtype=torch.float64))


def test_fresh_like_is_the_same_architecture_reseeded(encoder):
    torch.manual_seed(3)
    a = encoder.fresh_like()
    torch.manual_seed(3)
    b = encoder.fresh_like()
    assert type(a) is type(encoder)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in encoder.state_dict().items()}
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    if isinstance(encoder, AudioViT):
        assert torch.equal(a.pos_embed, encoder.pos_embed)


def _audio_encoder(encoder: FrameEncoder) -> AudioEncoder:
    if isinstance(encoder, AudioViT):
        frontend, config = PRESETS["m2d-16k"], {"family": "m2d", "vit": encoder.config.to_dict()}
    else:
        frontend, config = PRESETS["byola"], {"family": "byola"}
    return AudioEncoder(EncoderBundle(config["family"], encoder, frontend, NormStats(-7.0, 4.0), config), device="cpu")


def test_audio_encoder_batches_clips_of_any_lengths(encoder):
    model = _audio_encoder(encoder)
    rng = np.random.default_rng(0)
    waves = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (16000, 37000, 16000, 5200, 37000)]
    frames, stamps = model.embed_frames(waves, batch_size=3, stack=False)
    clips = model.embed(waves, batch_size=3)
    for wave, f, ts, clip in zip(waves, frames, stamps, clips, strict=True):
        alone, alone_ts = model.embed_frames(wave)
        np.testing.assert_allclose(f, alone[0], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(ts, alone_ts[0])
        np.testing.assert_allclose(clip, model.encoder.pool(torch.from_numpy(f)).numpy(), rtol=0, atol=1e-6)
    assert model.embedding_dim == encoder.embedding_dim == clips.shape[1]


def test_random_init_like_rebuilds_through_the_interface(encoder):
    model = _audio_encoder(encoder)
    fresh = random_init_like(model, seed=5)
    again = random_init_like(model, seed=5)
    assert type(fresh.encoder) is type(model.encoder)
    wave = np.random.default_rng(1).standard_normal(20000).astype(np.float32) * 0.1
    np.testing.assert_array_equal(fresh.embed(wave), again.embed(wave))
    assert not np.array_equal(fresh.embed(wave), model.embed(wave))
