"""ONNX export of an audio encoder and its use on ONNX Runtime (the ``onnx`` extra).

What is exported is the encoder's chunk step, :meth:`~kikimimi.models.encoder.FrameEncoder.encode_chunks`:
normalised log-mel chunks ``lms [batch, n_mels, time]`` → frame features ``frames [batch, frames, D]``, with
dynamic batch and time axes (M2D: any whole number of patches up to the training length; BYOL-A: any clip
length). The front end (waveform → log-mel → normalisation), the official chunking, pooling and timestamps
stay in torch/numpy: the front end is a few percent of the encoder's time, and keeping it in one place keeps
ONNX results identical to torch ones up to the network's arithmetic.

The file carries what the runtime needs besides the graph in its metadata (key ``kikimimi``, JSON): the
encoder config (the same dict as :attr:`~kikimimi.checkpoints.EncoderBundle.config`), the front-end config,
the normalisation statistics and the precision (``fp32`` or ``int8``).

int8 = ONNX Runtime's dynamic quantisation of the weight MatMuls (per-channel int8 weights with the reduced
7-bit range, which keeps u8×s8 products from saturating on CPUs without VNNI; activations quantised per
batch at run time; activation×activation MatMuls of attention stay float32). :func:`quantize_onnx_int8_static`
writes the static variant (QDQ nodes with activation ranges fixed by calibration inputs), which
:mod:`kikimimi.inference.cpu_paths` measures against the others.

``kikimimi.load("model.onnx")`` builds an :class:`~kikimimi.inference.encoder.AudioEncoder` around an
:class:`OnnxFrameEncoder`, so ``embed`` / ``embed_frames`` are the same code as for a torch model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kikimimi.checkpoints import CheckpointError, EncoderBundle
from kikimimi.checkpoints.bundle import build_encoder
from kikimimi.features.frontend import FrontendConfig
from kikimimi.features.normstats import NormStats

__all__ = [
    "OnnxFrameEncoder",
    "export_onnx",
    "is_onnx_path",
    "load_onnx_bundle",
    "onnx_session",
    "quantize_onnx_int8",
    "quantize_onnx_int8_static",
]

METADATA_KEY = "kikimimi"
INPUT_NAME = "lms"
OUTPUT_NAME = "frames"
INSTALL_HINT = 'pip install "kikimimi[onnx]"'


def is_onnx_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an ONNX file (by its ``.onnx`` suffix)."""
    return str(path).lower().endswith(".onnx")


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise ImportError(f"ONNX export and runtime need the '{module}' package: {INSTALL_HINT}") from exc


class _ChunkStep(nn.Module):
    """``lms [B, n_mels, Tc]`` → ``frames [B, Tc', D]`` (the graph that is exported)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, lms: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode_chunks(lms)


def _example_chunk(bundle: EncoderBundle) -> torch.Tensor:
    """A ``[2, n_mels, Tc]`` example input; Tc below the maximum so no shape is frozen at the training length."""
    n_mels = bundle.frontend.n_mels
    chunk = bundle.encoder.chunk_frames
    if chunk is None:  # BYOL-A: whole clips, e.g. 1 s
        width = 96
    else:
        patch = int(bundle.config.get("vit", {}).get("patch_size", (16, 16))[1])
        width = max(patch, chunk // 2 // patch * patch)
    return torch.randn(2, n_mels, width, generator=torch.Generator().manual_seed(0))


def _metadata(bundle: EncoderBundle, precision: str) -> str:
    return json.dumps({
        "format": 1,
        "family": bundle.family,
        "config": bundle.config,
        "frontend": dataclasses.asdict(bundle.frontend),
        "norm_stats": bundle.norm_stats.to_list(),
        "precision": precision,
    })


def _set_metadata(path: Path, text: str) -> None:
    onnx = _require("onnx")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, text
    onnx.save(model, str(path))


@contextlib.contextmanager
def _quiet_quantiser():
    """The quantiser logs a pre-processing suggestion on the root logger; silenced for its duration."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_onnx_int8(src: str | os.PathLike, dst: str | os.PathLike, *, reduce_range: bool = True) -> Path:
    """Dynamic int8 quantisation of an fp32 kikimimi ONNX file (weights quantised once, here); keeps metadata.

    ``reduce_range``: 7-bit weights, so that u8×s8 products cannot saturate the 16-bit intermediate sums of CPUs
    without VNNI (AVX2 ``vpmaddubsw``); a file meant for any CPU keeps it, one made for a VNNI CPU can drop it for
    a finer weight grid."""
    _require("onnx")
    ort_quant = _require("onnxruntime.quantization")
    src, dst = Path(src), Path(dst)
    meta = _read_metadata(src)
    with _quiet_quantiser():
        ort_quant.quantize_dynamic(str(src), str(dst), weight_type=ort_quant.QuantType.QInt8, per_channel=True,
                                   reduce_range=reduce_range, extra_options={"MatMulConstBOnly": True})
    meta["precision"] = "int8"
    _set_metadata(dst, json.dumps(meta))
    return dst


def quantize_onnx_int8_static(src: str | os.PathLike, dst: str | os.PathLike, calibration: Sequence[np.ndarray], *,
                              attention_int8: bool = False, reduce_range: bool = True) -> Path:
    """Static int8 quantisation (QDQ) of an fp32 kikimimi ONNX file; keeps metadata (precision ``int8``).

    Weights: int8 per output channel (7-bit with ``reduce_range``, as :func:`quantize_onnx_int8`). Activations:
    uint8 with one scale and zero point per tensor, fixed from the min/max seen while running ``calibration`` —
    normalised log-mel chunks ``[B, n_mels, T]`` float32 (the graph's input), taken from audio like the audio to
    embed. (u8×s8 is ONNX Runtime's fast x86 int8 kernel: on a ViT-B with VNNI it ran 1.8× faster than s8×s8.)
    ``attention_int8``: also quantise the activation×activation MatMuls of attention (``q·kᵀ`` and ``softmax·v``);
    by default only the MatMuls with a weight operand.
    """
    _require("onnx")
    ort_quant = _require("onnxruntime.quantization")
    src, dst = Path(src), Path(dst)
    if not calibration:
        raise ValueError(f"static int8 quantisation of {src} needs at least one calibration chunk")
    meta = _read_metadata(src)

    class _Reader(ort_quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter([{INPUT_NAME: np.ascontiguousarray(c, dtype=np.float32)} for c in calibration])

        def get_next(self):
            return next(self._items, None)

    with _quiet_quantiser():
        ort_quant.quantize_static(str(src), str(dst), _Reader(), quant_format=ort_quant.QuantFormat.QDQ,
                                  op_types_to_quantize=["MatMul", "Gemm"], per_channel=True, reduce_range=reduce_range,
                                  activation_type=ort_quant.QuantType.QUInt8, weight_type=ort_quant.QuantType.QInt8,
                                  extra_options={"MatMulConstBOnly": not attention_int8})
    meta["precision"] = "int8"
    _set_metadata(dst, json.dumps(meta))
    return dst


def export_onnx(bundle: EncoderBundle, out_path: str | os.PathLike, *, int8: bool = False,
                opset: int = 17) -> Path:
    """Write ``bundle``'s encoder chunk step as ONNX (fp32, or int8 with ``int8``) to ``out_path``.

    Returns the written path. Raises ImportError naming ``pip install "kikimimi[onnx]"`` without the extra.
    """
    _require("onnx")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    encoder = bundle.encoder.cpu().eval()
    example = _example_chunk(bundle)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes about shape arithmetic, which stays dynamic
            torch.onnx.export(_ChunkStep(encoder).eval(), (example,), str(fp32), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch", 2: "time"},
                                            OUTPUT_NAME: {0: "batch", 1: "frames"}})
        _set_metadata(fp32, _metadata(bundle, "fp32"))
        if int8:
            quantize_onnx_int8(fp32, Path(tmp) / "int8.onnx")
            os.replace(Path(tmp) / "int8.onnx", out)
        else:
            os.replace(fp32, out)
    return out


def _read_metadata(path: Path) -> dict[str, Any]:
    onnx = _require("onnx")
    if not path.is_file():
        raise CheckpointError(path, "no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for damaged files
        raise CheckpointError(path, f"not a readable ONNX file ({exc})") from exc
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise CheckpointError(path, "an ONNX file without kikimimi metadata; write one with `kikimimi export onnx`")
    return json.loads(props[METADATA_KEY])


class OnnxFrameEncoder(nn.Module):
    """A :class:`~kikimimi.models.encoder.FrameEncoder` whose ``encode_chunks`` runs on ONNX Runtime (CPU).

    Chunking, pooling and timestamps come from a weightless copy of the torch encoder built on the ``meta``
    device (no memory for weights), so they follow exactly the same rules as the torch model.
    """

    def __init__(self, session: Any, config: dict[str, Any]) -> None:
        super().__init__()
        with torch.device("meta"):
            skeleton = build_encoder(config)
        object.__setattr__(self, "_skeleton", skeleton)  # not a sub-module: .to() must not touch meta tensors
        self.session = session
        self.config = config

    @property
    def embedding_dim(self) -> int:
        return int(self._skeleton.embedding_dim)

    @property
    def chunk_frames(self) -> int | None:
        return self._skeleton.chunk_frames

    def split_chunks(self, lms: torch.Tensor) -> list[torch.Tensor]:
        return self._skeleton.split_chunks(lms)

    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """``[B, n_mels, Tc]`` → ``[B, Tc', D]`` float32 (CPU)."""
        x = np.ascontiguousarray(chunks.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])

    def encode_lms(self, lms: torch.Tensor) -> torch.Tensor:
        if lms.dim() == 4:
            lms = lms[:, 0]
        return torch.cat([self.encode_chunks(c) for c in self.split_chunks(lms)], dim=1)

    def forward(self, lms: torch.Tensor) -> torch.Tensor:
        return self.encode_lms(lms)

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return self._skeleton.pool(frames)

    def timestamps_ms(self, n_frames: int, n_samples: int, sample_rate: int, hop_length: int) -> torch.Tensor:
        return self._skeleton.timestamps_ms(n_frames, n_samples, sample_rate, hop_length)

    def num_output_frames(self, n_lms_frames: int) -> int:
        return self._skeleton.num_output_frames(n_lms_frames)

    def fresh_like(self) -> nn.Module:
        raise NotImplementedError("an ONNX model has no random-init twin; load the torch checkpoint for that")


def onnx_session(model: str | bytes | os.PathLike, threads: int | None = None, *, spin: bool | None = None):
    """An ONNX Runtime CPU session of ``model`` (a path or the file's bytes): all graph optimisations,
    ``threads`` intra-op threads (default: ``torch.get_num_threads()``), one inter-op thread.

    ``spin``: whether idle intra-op threads busy-wait for work (ONNX Runtime's default); ``None``: only while the
    machine has the idle cores for them (:func:`spin_by_load`)."""
    ort = _require("onnxruntime")
    model = os.fspath(model) if isinstance(model, os.PathLike) else model
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if spin is None:
        spin = spin_by_load(options.intra_op_num_threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def spin_by_load(threads: int, load: float | None = None, cores: int | None = None) -> bool:
    """Whether ``threads`` ONNX Runtime threads should spin: unless the machine is oversubscribed, its 1-minute load
    average (``load``, default :func:`os.getloadavg`'s) above 1.5× its cores (``cores``, default
    :func:`os.cpu_count`). Measured on a 2-core Xeon, dynamic int8 at 2 threads: spinning ran ViT-B 1.13-1.2×
    faster at load 1.3 (and 1.6× at load 3 to 1.3), and 1.3-3.2× slower at load 6-8 (ViT-B) and 6× slower at load
    4-5 (open-m2d-tiny): spinning threads take the cores the other threads of the same matmul wait for
    (``benchmarks/bench_cpu_paths.py --ort-spin`` measures both). Where the load cannot be read: spin (ONNX Runtime's
    default)."""
    if threads <= 1:
        return False  # no pool to spin
    try:
        load = os.getloadavg()[0] if load is None else load
    except OSError:
        return True
    return load <= 1.5 * (cores or os.cpu_count() or 1)


def load_onnx_bundle(path: str | os.PathLike, *, precision: str = "fp32",
                     norm_stats: tuple[float, float] | NormStats | None = None,
                     threads: int | None = None) -> EncoderBundle:
    """An :class:`~kikimimi.checkpoints.EncoderBundle` whose encoder is an :class:`OnnxFrameEncoder`.

    ``precision``: ``"fp32"`` uses the file as it is; ``"int8"`` quantises an fp32 file once, at load (an int8
    file is used as it is). ``threads``: ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``).
    ``bundle.config["precision"]`` records what runs.

    Raises:
        CheckpointError: a missing or damaged file, or one without kikimimi metadata.
        ValueError: ``precision="bf16"`` (no bfloat16 ONNX path) or an unknown precision.
        ImportError: the ``onnx`` extra is missing.
    """
    path = Path(path)
    precision = str(precision).lower()
    if precision not in ("fp32", "int8"):
        raise ValueError(f"an ONNX model runs in 'fp32' or 'int8', not {precision!r}")
    meta = _read_metadata(path)
    model: str | bytes = str(path)
    if precision == "int8" and meta.get("precision") != "int8":
        with tempfile.TemporaryDirectory() as tmp:
            model = quantize_onnx_int8(path, Path(tmp) / "int8.onnx").read_bytes()
        meta["precision"] = "int8"
    config = dict(meta["config"])
    config["precision"] = meta.get("precision", "fp32")
    stats = norm_stats if norm_stats is not None else meta["norm_stats"]
    if not isinstance(stats, NormStats):
        stats = NormStats(float(stats[0]), float(stats[1]))
    return EncoderBundle(family=meta["family"], encoder=OnnxFrameEncoder(onnx_session(model, threads), config),
                         frontend=FrontendConfig(**meta["frontend"]), norm_stats=stats, config=config)
