"""The X-ARES adapter against the real ``xares`` package's own checker (and its run-time calls)."""

from __future__ import annotations

import importlib.util

import official_layouts as ol
import pytest
import torch

from kikimimi.evaluation.harness_xares import (
    MODEL_ENV,
    KikimimiEncoder,
    XaresAdapterError,
    frame_hop_ms,
    write_encoder_file,
)

checker = pytest.importorskip("xares.audio_encoder_checker")


@pytest.fixture
def byola_file(tmp_path):
    path = tmp_path / "AudioNTT2020-BYOLA-64x96d512.pth"
    torch.save(ol.byola_v1(d=512), path)
    return path


def test_m2d_passes_the_xares_checker(tiny_m2d_file):
    encoder = KikimimiEncoder(tiny_m2d_file)
    assert checker.check_audio_encoder(encoder) is True
    assert encoder.sampling_rate == 16000 and encoder.hop_size_in_ms == pytest.approx(160.0)
    # X-ARES' own hop rule: 50000 samples (3125 ms) → about 3125 / hop frames
    out = encoder(torch.randn(2, 50000))
    assert out.shape[0] == 2 and out.shape[2] == encoder.output_dim == 320
    assert abs(out.shape[1] - 3125 / encoder.hop_size_in_ms) <= 1


def test_byola_passes_the_xares_checker(byola_file):
    encoder = KikimimiEncoder(byola_file, norm_stats=(-9.7, 4.7))
    assert checker.check_audio_encoder(encoder) is True
    assert encoder.output_dim == 512 and encoder.hop_size_in_ms == pytest.approx(80.0)  # v1: 8 × 10 ms
    out = encoder(torch.randn(1, 16000))
    assert out.shape[0] == 1 and out.shape[2] == 512 and abs(out.shape[1] - 1000 / 80) <= 1


def test_frames_equal_the_models_own_frames(tiny_m2d_file):
    encoder = KikimimiEncoder(tiny_m2d_file)
    wave = torch.randn(1, 24000) * 0.1
    expected, _ = encoder.model.embed_frames([wave[0].numpy()], 16000)
    torch.testing.assert_close(encoder(wave), torch.as_tensor(expected))


def test_follows_to_and_keeps_the_model_out_of_the_module_tree(tiny_m2d_file):
    encoder = KikimimiEncoder(tiny_m2d_file).to("cpu")
    names = {n for n, _ in encoder.named_modules()}
    assert "network" in names and "model" not in names
    assert sum(p.numel() for p in encoder.parameters()) == sum(p.numel() for p in encoder.model.encoder.parameters())


def test_encoder_file_runs_as_xares_loads_it(tiny_m2d_file, tmp_path, monkeypatch):
    path = write_encoder_file(tiny_m2d_file, tmp_path / "kiki_encoder.py")
    spec = importlib.util.spec_from_file_location("kiki_encoder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    encoder = module.KikimimiModelEncoder()  # X-ARES builds the class without arguments
    assert checker.check_audio_encoder(encoder) is True
    with pytest.raises(XaresAdapterError, match="ending in 'Encoder'"):
        write_encoder_file(tiny_m2d_file, tmp_path / "x.py", class_name="Model")


def test_no_model_is_a_clear_error(monkeypatch, tiny_m2d_file):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    with pytest.raises(XaresAdapterError, match=MODEL_ENV):
        KikimimiEncoder()
    monkeypatch.setenv(MODEL_ENV, str(tiny_m2d_file))
    assert frame_hop_ms(KikimimiEncoder().model) == pytest.approx(160.0)
