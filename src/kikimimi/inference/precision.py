"""Numeric precision of an encoder at inference: ``fp32`` (default), ``bf16`` or ``int8``.

- ``fp32``: the network as trained.
- ``int8``: dynamic quantisation of every ``nn.Linear`` (weights quantised once, here, to int8 per tensor;
  activations quantised per batch at run time, accumulation in int32, output float32). CPU only — PyTorch's
  quantised kernels (fbgemm / oneDNN) have no CUDA implementation. The patch embedding (a convolution),
  the layer norms, softmax and GELU stay float32. On a ViT-Base M2D nearly all FLOPs are in Linear layers.
- ``bf16``: the encoder runs inside an autocast region (:class:`Bf16Autocast`): matmuls and convolutions
  in bfloat16, weights kept in float32, outputs cast back to float32. Fast on CUDA and on CPUs with native bfloat16
  (AVX-512 BF16 / AMX); on a CPU without them PyTorch emulates it, several times slower than float32
  (``benchmarks/bench_embed.py`` measures it), so loading with ``bf16`` on such a CPU warns.

``benchmarks/bench_embed.py`` reports the speed and the cosine to float32 of each choice.
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = ["PRECISIONS", "Bf16Autocast", "apply_precision", "check_precision", "cpu_flags", "cpu_has_int8_dot",
           "cpu_has_native_bf16", "isa_caps", "onednn_isa_cap"]

#: Accepted ``precision`` values.
_log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")


def check_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` for ``device``; returns it lower-cased.

    Raises:
        ValueError: an unknown name, or ``int8`` on a non-CPU device.
    """
    name = str(precision).lower()
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if name == "int8" and device.type != "cpu":
        raise ValueError(f"precision 'int8' (dynamic quantisation) runs on the CPU only, not on {device}; "
                         "use precision='bf16' on a GPU, or device='cpu'")
    return name


def cpu_has_native_bf16() -> bool:
    """Whether PyTorch's CPU kernels can use native bfloat16 instructions (AVX-512 BF16 or AMX) here.

    PyTorch's own capability string names AVX-512 without its BF16 subset on many such CPUs, while its oneDNN
    matmuls do use them; so the CPU's flags (``/proc/cpuinfo``: ``avx512_bf16``, ``amx_bf16``) count too. Not where
    ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below them (e.g. ``AVX2``: bfloat16 is emulated then)."""
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    cap = onednn_isa_cap()
    if cap is not None and not any(tag in cap for tag in _BF16_ISAS):  # capped below bfloat16: emulated
        return False
    if "BF16" in capability or "AMX" in capability:
        return True
    return bool(_BF16_FLAGS & set(cpu_flags())) and torch.backends.mkldnn.is_available()


#: environment variables that cap the instruction sets of oneDNN (PyTorch's bf16 matmuls go through it)
ONEDNN_ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
#: every instruction-set cap PyTorch's CPU libraries honour: ATen's own kernels, oneDNN, MKL, FBGEMM (int8).
#: ONNX Runtime has none (its MLAS kernels are picked by CPUID).
ISA_CAP_ENV = ("ATEN_CPU_CAPABILITY", *ONEDNN_ISA_ENV, "MKL_ENABLE_INSTRUCTIONS", "FBGEMM_ENABLE_INSTRUCTIONS")


def isa_caps() -> dict[str, str]:
    """The :data:`ISA_CAP_ENV` variables set in the environment, by name."""
    return {name: os.environ[name] for name in ISA_CAP_ENV if os.environ.get(name, "").strip()}
#: parts of the oneDNN ISA names (``AVX512_CORE_BF16``, ``AVX512_CORE_AMX``, ``AVX10_1_512``…, ``ALL``) that
#: have native bfloat16 dot products
_BF16_ISAS = ("BF16", "AMX", "AVX10", "FP16", "ALL")


def onednn_isa_cap() -> str | None:
    """The oneDNN ISA cap set in the environment (``ONEDNN_MAX_CPU_ISA``, e.g. ``AVX2``; upper-cased), or None."""
    for name in ONEDNN_ISA_ENV:
        value = os.environ.get(name, "").strip().upper()
        if value:
            return value
    return None


_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
#: int8 dot-product instructions: x86 VNNI (AVX-512 / AVX), AMX int8, Arm dot product
_INT8_DOT_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}


def cpu_has_int8_dot() -> bool:
    """Whether the CPU multiplies int8 with 32-bit accumulation in one instruction (VNNI, AMX, Arm dot product):
    then u8×s8 products cannot saturate, and int8 weights can use the full 8-bit range."""
    return bool(_INT8_DOT_FLAGS & set(cpu_flags()))


def cpu_flags() -> list[str]:
    """The CPU's feature flags (``/proc/cpuinfo`` "flags", or "Features" on ARM), sorted; empty where unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return sorted(line.split(":", 1)[1].split())
    except OSError:
        pass
    return []


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` "model name"), else what :mod:`platform` says: the header of every
    benchmark and part of the CPU-path cache key."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _quantize_linear_int8(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with its ``nn.Linear`` layers dynamically quantised to int8 (CPU)."""
    engine = torch.backends.quantized.engine
    if engine not in ("x86", "fbgemm", "onednn", "qnnpack"):  # pragma: no cover - exotic builds
        raise RuntimeError(f"this PyTorch build has no quantised engine for int8 (engine={engine!r})")
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager dynamic path still works here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(copy.deepcopy(module).cpu().eval(), {nn.Linear}, dtype=torch.qint8)


def apply_precision(module: nn.Module, precision: str, device: torch.device | str = "cpu") -> nn.Module:
    """``module`` prepared for ``precision`` on ``device`` (eval mode).

    ``fp32`` returns the module itself; ``bf16`` returns it too, its class switched to a :class:`Bf16Autocast`
    subclass (in place; weights untouched); ``int8`` returns a quantised copy (the original is left
    untouched). A module without ``nn.Linear`` layers (e.g. an ONNX Runtime session wrapper) is returned as
    it is for ``int8``.
    """
    device = torch.device(device)
    precision = check_precision(precision, device)
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("precision 'bf16' on a CPU without native bfloat16 (AVX-512 BF16 / AMX) is emulated and "
                      "slower than fp32 here; use 'int8' for speed on this CPU", stacklevel=3)
    if precision == "int8" and any(isinstance(m, nn.Linear) for m in module.modules()):
        return _quantize_linear_int8(module)
    if precision == "bf16":
        return _autocast_bf16(module, device.type)
    return module


class Bf16Autocast:
    """Mixin that runs a :class:`~kikimimi.models.encoder.FrameEncoder`'s ``encode_chunks`` / ``encode_lms``
    under ``torch.autocast(bfloat16)`` and returns float32 (same shapes).

    :func:`apply_precision` puts it in front of the encoder's own class (``Bf16AudioViT`` …), so the encoder
    keeps its type for ``isinstance`` checks and every other attribute; the weights stay float32.
    """

    autocast_device_type: str = "cpu"
    #: batches recomputed in float32 because bfloat16 gave non-finite values (``precision="auto"`` refuses a bf16
    #: path whose probe needed it: its cosine would be float32's)
    bf16_fallbacks: int = 0
    #: called once, at the first such batch (``precision="auto"`` sets it: the cached choice then excludes bf16)
    on_nonfinite: Callable[[], object] | None = None

    @staticmethod
    def _float(out):
        return [o.float() for o in out] if isinstance(out, list) else out.float()

    @staticmethod
    def _finite(out) -> bool:
        return all(bool(torch.isfinite(o).all()) for o in (out if isinstance(out, list) else [out]))

    def _in_bf16(self, compute, x: torch.Tensor):
        """``compute()`` under bfloat16 autocast, as float32; recomputed in float32 when bfloat16 gave non-finite
        values from a finite input. Seen on a CPU with AMX: oneDNN's bfloat16 kernels returned NaN for one clip
        length after another length had run (PyTorch 2.13; not with ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``)."""
        with torch.autocast(device_type=self.autocast_device_type, dtype=torch.bfloat16):
            out = self._float(compute())
        if self._finite(out) or not bool(torch.isfinite(x).all()):
            return out
        say = _log.warning if self.bf16_fallbacks == 0 else _log.debug  # once per model, not once per batch
        say("bf16 kernels gave non-finite values for a finite input on this %s; recomputed that batch in float32 "
            "(such batches are recomputed quietly from now on; --precision fp32 avoids bf16)",
            self.autocast_device_type.upper())
        self.bf16_fallbacks += 1
        if self.bf16_fallbacks == 1 and self.on_nonfinite is not None:
            try:
                self.on_nonfinite()
            except Exception as exc:  # noqa: BLE001 - recording it must never stop the embedding
                _log.warning("could not record the bf16 non-finite batch (%s)", exc)
        with torch.autocast(device_type=self.autocast_device_type, enabled=False):
            return self._float(compute())

    def encode_chunks(self, chunks: torch.Tensor, **kwargs):
        """``[B, n_mels, Tc]`` → ``[B, Tc', D]`` float32, computed in bfloat16."""
        return self._in_bf16(lambda: super(Bf16Autocast, self).encode_chunks(chunks, **kwargs), chunks)

    def encode_lms(self, lms: torch.Tensor, **kwargs):
        """``[B, n_mels, T]`` → ``[B, T', D]`` float32, computed in bfloat16."""
        return self._in_bf16(lambda: super(Bf16Autocast, self).encode_lms(lms, **kwargs), lms)


_BF16_CLASSES: dict[type, type] = {}


def _autocast_bf16(module: nn.Module, device_type: str) -> nn.Module:
    """``module`` itself, its class switched to a :class:`Bf16Autocast` subclass of its own class."""
    cls = type(module)
    if not issubclass(cls, Bf16Autocast):
        if cls not in _BF16_CLASSES:
            _BF16_CLASSES[cls] = type(f"Bf16{cls.__name__}", (Bf16Autocast, cls), {"__module__": __name__})
        module.__class__ = _BF16_CLASSES[cls]
    module.autocast_device_type = device_type
    return module
