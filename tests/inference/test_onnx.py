"""ONNX export (`kikimimi export onnx`) and kikimimi.load("model.onnx") on ONNX Runtime (the onnx extra)."""

from __future__ import annotations

import sys

import numpy as np
import official_layouts as ol
import pytest
import torch

import kikimimi
from kikimimi.checkpoints import CheckpointError
from kikimimi.cli import main
from kikimimi.inference.onnx_runtime import OnnxFrameEncoder, export_onnx


@pytest.fixture(scope="module")
def m2d(tiny_m2d_file):
    return tiny_m2d_file


@pytest.fixture(scope="module")
def m2d_onnx(m2d, tmp_path_factory):
    return export_onnx(kikimimi.load(m2d, device="cpu").bundle, tmp_path_factory.mktemp("x") / "m2d.onnx")


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(1)  # 7 s = two chunks (608 + 96 frames), 2 s, 0.3 s: three chunk widths
    return [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (16000 * 7, 16000 * 2, 4800, 16000 * 2)]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_onnx_fp32_matches_torch_within_1e4_of_scale(m2d, m2d_onnx):
    ref = kikimimi.load(m2d, device="cpu")
    onnx_model = kikimimi.load(m2d_onnx)
    assert isinstance(onnx_model.encoder, OnnxFrameEncoder) and onnx_model.precision == "fp32"
    assert (onnx_model.sample_rate, onnx_model.embedding_dim) == (16000, 320)
    assert (onnx_model.norm_stats.mean, onnx_model.norm_stats.std) == (-7.5, 4.0)  # from the file's metadata
    assert _rel(onnx_model.embed(_clips()), ref.embed(_clips())) < 1e-4
    frames, stamps = onnx_model.embed_frames(_clips(), stack=False)
    ref_frames, ref_stamps = ref.embed_frames(_clips(), stack=False)
    assert [f.shape for f in frames] == [(44, 320), (13, 320), (2, 320), (13, 320)]
    for f, r, s, rs in zip(frames, ref_frames, stamps, ref_stamps, strict=True):
        assert _rel(f, r) < 1e-4
        np.testing.assert_array_equal(s, rs)


def test_int8_export_by_cli_and_int8_at_load(m2d, m2d_onnx, tmp_path):
    out = tmp_path / "m2d_int8.onnx"
    assert main(["export", "onnx", str(m2d), str(out), "--int8"]) == 0
    assert out.stat().st_size < 0.6 * m2d_onnx.stat().st_size  # int8 weights
    ref = kikimimi.load(m2d, device="cpu").embed(_clips())
    for model in (kikimimi.load(out), kikimimi.load(m2d_onnx, precision="int8")):
        assert model.precision == "int8"
        emb = model.embed(_clips())
        cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.99 and _rel(emb, ref) > 1e-6  # close, but quantised


def test_byola_onnx_matches_torch(tmp_path):
    path = tmp_path / "AudioNTT2020-BYOLA-64x96d512.pth"
    torch.save(ol.byola_v1(512), path)
    ref = kikimimi.load(path, device="cpu", norm_stats=(-9.0, 4.5))
    onnx_path = export_onnx(ref.bundle, tmp_path / "byola.onnx")
    model = kikimimi.load(onnx_path)
    clips = _clips()[:3]
    assert _rel(model.embed(clips), ref.embed(clips)) < 1e-4
    frames, _ = model.embed_frames(clips, stack=False)
    assert [f.shape[0] for f in frames] == [f.shape[0] for f in ref.embed_frames(clips, stack=False)[0]]


def test_embed_command_reads_an_onnx_model(m2d, m2d_onnx, tmp_path, wav_factory):
    wav = wav_factory("a.wav", duration_s=1.5)
    assert main(["embed", str(wav), "-m", str(m2d_onnx), "-o", str(tmp_path / "o"), "--no-progress"]) == 0
    ref = kikimimi.load(m2d, device="cpu").embed(str(wav))
    assert _rel(np.load(tmp_path / "o" / "a.npy"), ref) < 1e-4


def test_bad_onnx_inputs_name_the_file(m2d_onnx, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    plain = tmp_path / "plain.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), plain)
    with pytest.raises(CheckpointError, match="plain.onnx.*kikimimi export onnx"):
        kikimimi.load(plain)
    with pytest.raises(CheckpointError, match="missing.onnx.*no such"):
        kikimimi.load(tmp_path / "missing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="broken.onnx"):
        kikimimi.load(broken)
    with pytest.raises(ValueError, match="'fp32' or 'int8'"):
        kikimimi.load(m2d_onnx, precision="bf16")
    assert main(["export", "onnx", "m", str(tmp_path / "out.bin")]) == 2


def test_missing_extra_names_the_pip_command(m2d_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r'pip install "kikimimi\[onnx\]"'):
        kikimimi.load(m2d_onnx)


def test_static_int8_and_every_onnx_path_of_auto_stay_close_to_torch(m2d, tmp_path):
    from kikimimi.inference.cpu_paths import ORT_PATHS, calibration_chunks, prepare_path, probe_clips
    from kikimimi.inference.encoder import AudioEncoder

    fp32 = kikimimi.load(m2d, device="cpu", precision="fp32")
    chunks = calibration_chunks(fp32.bundle, probe_clips(2.0, 16000, n=2, seed=1))
    assert chunks and all(c.shape[:2] == (1, 80) and c.dtype == np.float32 for c in chunks)
    ref = fp32.embed(_clips(), 16000)
    for path in ORT_PATHS:
        bundle, precision = prepare_path(fp32.bundle, path, tmp_path, calibration=lambda: chunks)
        assert isinstance(bundle.encoder, OnnxFrameEncoder) and bundle.config["precision"] == precision
        assert fp32.bundle.encoder is not bundle.encoder and not isinstance(fp32.encoder, OnnxFrameEncoder)
        out = AudioEncoder(bundle, device="cpu", precision=precision).embed(_clips(), 16000)
        cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.99, (path, cos)
    assert {p.name for p in tmp_path.iterdir()} == {"fp32.onnx", "int8.onnx", "int8-static.onnx"}
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8-static.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: static activation scales in the graph
    with pytest.raises(ValueError, match="calibration"):
        from kikimimi.inference.onnx_runtime import quantize_onnx_int8_static

        quantize_onnx_int8_static(tmp_path / "fp32.onnx", tmp_path / "x.onnx", [])


def test_sessions_spin_idle_threads_only_where_the_machine_has_idle_cores(m2d_onnx, monkeypatch):
    from kikimimi.inference import onnx_runtime
    from kikimimi.inference.onnx_runtime import onnx_session, spin_by_load

    key = "session.intra_op.allow_spinning"  # spinning: 1.13-1.2× faster on an idle 2-core machine, 1.3-6× slower
    assert spin_by_load(2, load=1.3, cores=2) and not spin_by_load(2, load=4.5, cores=2)  # on a loaded one
    assert not spin_by_load(1, load=0.0, cores=4)  # one thread: no pool to spin
    monkeypatch.setattr(onnx_runtime.os, "getloadavg", lambda: (7.5, 7.0, 6.0))
    monkeypatch.setattr(onnx_runtime.os, "cpu_count", lambda: 2)
    assert onnx_session(m2d_onnx, 2).get_session_options().get_session_config_entry(key) == "0"
    monkeypatch.setattr(onnx_runtime.os, "getloadavg", lambda: (1.0, 0.0, 0.0))
    monkeypatch.setattr(onnx_runtime.os, "cpu_count", lambda: 2)
    assert onnx_session(m2d_onnx, 2).get_session_options().get_session_config_entry(key) == "1"
    assert onnx_session(m2d_onnx, 2, spin=False).get_session_options().get_session_config_entry(key) == "0"
