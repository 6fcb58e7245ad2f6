"""Precision choice at load: fp32 / bf16 (autocast) / int8 (dynamic quantisation of the Linear layers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import kikimimi
from kikimimi.cli import build_parser
from kikimimi.inference.hear import load_model
from kikimimi.inference.precision import Bf16Autocast, apply_precision, check_precision
from kikimimi.models.vit import AudioViT


@pytest.fixture(scope="module")
def m2d_path(tiny_m2d_file):
    return tiny_m2d_file


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (16000 * 7, 16000 * 2, 5000)]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_int8_quantises_every_linear_once_and_keeps_embeddings_close(m2d_path):
    fp32 = kikimimi.load(m2d_path, device="cpu")
    int8 = kikimimi.load(m2d_path, device="cpu", precision="int8")
    assert int8.precision == "int8" and "precision='int8'" in repr(int8)
    quantised = [m for m in int8.encoder.modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")]
    assert len(quantised) == 2 * 4  # qkv, proj, fc1, fc2 of both blocks, replaced once at load
    assert not any(type(m) is nn.Linear for m in int8.encoder.modules())
    assert any(isinstance(m, nn.Linear) for m in fp32.encoder.modules())  # the fp32 model is untouched
    assert int8.bundle.encoder is int8.encoder  # only the quantised copy is kept
    e32, e8 = fp32.embed(_clips()), int8.embed(_clips())
    assert e8.shape == e32.shape and e8.dtype == np.float32
    cos = _cosines(e32, e8)
    assert cos.min() > 0.99 and not np.allclose(e32, e8, atol=1e-7)  # close, but really a different path
    frames, stamps = int8.embed_frames(_clips(), stack=False)
    ref_frames, ref_stamps = fp32.embed_frames(_clips(), stack=False)
    assert [f.shape for f in frames] == [f.shape for f in ref_frames]
    np.testing.assert_array_equal(stamps[0], ref_stamps[0])


def test_bf16_runs_under_autocast_and_returns_float32(m2d_path):
    fp32 = kikimimi.load(m2d_path, device="cpu")
    with pytest.warns(UserWarning, match="bf16") if not _native_bf16() else _no_warning():
        bf16 = kikimimi.load(m2d_path, device="cpu", precision="bf16")
    assert isinstance(bf16.encoder, Bf16Autocast) and isinstance(bf16.encoder, AudioViT)  # keeps its type
    assert bf16.embedding_dim == fp32.embedding_dim and bf16.encoder.chunk_frames == 608
    e32, e16 = fp32.embed(_clips()), bf16.embed(_clips())
    assert e16.dtype == np.float32
    cos = _cosines(e32, e16)
    assert cos.min() > 0.99 and not np.allclose(e32, e16, atol=1e-6)


def _native_bf16() -> bool:
    from kikimimi.inference.precision import cpu_has_native_bf16

    return cpu_has_native_bf16()


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_bad_precisions_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="fp32, bf16, int8"):
        check_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="CPU only"):
        check_precision("int8", torch.device("cuda"))
    layer = nn.Linear(4, 4)
    assert apply_precision(layer, "fp32") is layer


def test_precision_flag_on_every_embedding_command():
    parser = build_parser()
    for argv in (["embed", "a.wav", "-m", "m", "-o", "o"], ["tag", "a.wav", "-m", "m", "--labels", "l.csv"],
                 ["index", "d", "-m", "m", "-o", "o"], ["search", "i", "q"],
                 ["zeroshot", "m", "a.wav", "--labels", "a,b"], ["retrieval", "m", "c.csv"]):
        assert parser.parse_args(argv).precision is None  # the default: $KIKIMIMI_PRECISION, else auto
        assert parser.parse_args([*argv, "--precision", "int8"]).precision == "int8"
        assert parser.parse_args([*argv, "--precision", "auto"]).precision == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["embed", "a.wav", "-m", "m", "-o", "o", "--precision", "fp16"])


def test_embed_command_and_hear_api_pass_the_precision(m2d_path, tmp_path, wav_factory):
    from kikimimi.cli import main

    wav = wav_factory("a.wav", duration_s=1.0)
    assert main(["embed", str(wav), "-m", str(m2d_path), "-o", str(tmp_path / "o"), "--precision", "int8",
                 "--no-progress", "--device", "cpu"]) == 0
    ref = kikimimi.load(m2d_path, device="cpu", precision="int8").embed(str(wav))
    np.testing.assert_allclose(np.load(tmp_path / "o" / "a.npy"), ref, rtol=1e-5, atol=1e-6)
    hear = load_model(str(m2d_path), device="cpu", precision="int8")
    assert hear.encoder.precision == "int8"


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_clap_audio_side_takes_the_precision(tmp_path, precision):
    import warnings

    from clap_fakes import write_tiny_clap2025

    from kikimimi.inference.clap import load_clap

    path = write_tiny_clap2025(tmp_path)
    waves = [w for w in _clips()[:2]]
    ref = load_clap(path).encode_audio(waves)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_clap(path, precision=precision)
    assert model.audio.precision == precision
    emb = model.encode_audio(waves)
    assert emb.shape == ref.shape and _cosines(emb, ref).min() > 0.99 and not np.allclose(emb, ref, atol=1e-7)


class _NaNInBf16(nn.Module):
    """An encoder whose bfloat16 path returns NaN (as oneDNN's AMX kernels did for one clip length)."""

    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        out = chunks.transpose(1, 2) * 2.0
        return out * float("nan") if torch.is_autocast_enabled("cpu") else out

    def encode_lms(self, lms: torch.Tensor) -> torch.Tensor:
        return self.encode_chunks(lms)


def test_bf16_non_finite_output_is_recomputed_in_float32(caplog):
    model = apply_precision(_NaNInBf16(), "bf16", torch.device("cpu"))
    x = torch.randn(2, 4, 6)
    with caplog.at_level("WARNING"):
        out = model.encode_lms(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, x.transpose(1, 2) * 2.0)
    assert "recomputed that batch in float32" in caplog.text and model.bf16_fallbacks == 1  # auto reads the count
    caplog.clear()
    with caplog.at_level("WARNING"):
        torch.testing.assert_close(model.encode_lms(x), x.transpose(1, 2) * 2.0)
    assert caplog.text == "" and model.bf16_fallbacks == 2  # warned once per model, then recomputed quietly
    nan_input = x.clone()
    nan_input[0, 0, 0] = float("nan")  # a non-finite input is not hidden by a recomputation
    assert not torch.isfinite(model.encode_lms(nan_input)).all()


def test_native_bf16_is_read_from_the_cpu_flags_too(monkeypatch):
    from kikimimi.inference import precision

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(precision, "cpu_flags", lambda: ["avx2", "avx512f", "amx_bf16"])
    assert precision.cpu_has_native_bf16() is torch.backends.mkldnn.is_available()
    monkeypatch.setattr(precision, "cpu_flags", lambda: ["avx2", "avx512f"])
    assert precision.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512_BF16")
    assert precision.cpu_has_native_bf16() is True


def test_a_onednn_cap_below_bfloat16_means_no_native_bf16_and_changes_the_auto_key(monkeypatch):
    from kikimimi.inference import cpu_paths, precision

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512_BF16")
    monkeypatch.setattr(precision, "cpu_flags", lambda: ["avx2", "avx512f", "amx_bf16"])
    for name in precision.ISA_CAP_ENV:
        monkeypatch.delenv(name, raising=False)
    uncapped = cpu_paths.cpu_signature()
    assert "isa_caps" not in uncapped and precision.cpu_has_native_bf16() is True
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # the benchmark's "capped to AVX2" run
    assert precision.onednn_isa_cap() == "AVX2" and precision.cpu_has_native_bf16() is False
    assert cpu_paths.cpu_signature()["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "avx2"}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # a cap that keeps bfloat16
    assert precision.cpu_has_native_bf16() is True
