"""X-ARES (``pip install xares``): any kikimimi model as an X-ARES audio encoder.

X-ARES instantiates the class of an encoder file without arguments (``python -m xares.run ENCODER.py
TASKS/*.py``), checks it with ``xares.audio_encoder_checker.check_audio_encoder`` and calls it on 16-kHz waveform
batches. :class:`KikimimiEncoder` is that class for any model :func:`kikimimi.load` reads (a file, a kikimimi
folder, a registered name, ``hf://owner/name``):

- ``encoder(audio [B, samples] float at 16 kHz) -> [B, T', D]`` frame features (``D = output_dim``; other model
  rates are resampled inside); no gradient (X-ARES trains its heads on frozen features);
- ``sampling_rate = 16000``, ``output_dim`` = the model's frame size, ``hop_size_in_ms`` = the time between frames
  (ViT: patch width × log-mel hop, 160 ms for 16x16 patches, 40 ms for 16x4; BYOL-A: 8 (v1) / 4 (v2) × 10 ms);
- the class name ends in ``Encoder`` (X-ARES looks the class up by that suffix).

:func:`write_encoder_file` writes the encoder file for ``xares.run``; ``KIKIMIMI_XARES_MODEL`` names the model
when the class is built without arguments. The X-ARES package itself is needed only to run the suite (the
``xares`` extra: ``pip install "kikimimi[xares]"``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kikimimi.fileio import atomic_write_text
from kikimimi.inference.encoder import AudioEncoder, load

__all__ = ["MODEL_ENV", "XARES_RATE", "KikimimiEncoder", "XaresAdapterError", "frame_hop_ms", "write_encoder_file"]

#: X-ARES feeds every encoder 16-kHz audio.
XARES_RATE = 16000
#: The model a :class:`KikimimiEncoder` built without arguments loads.
MODEL_ENV = "KIKIMIMI_XARES_MODEL"
XARES_EXTRA_HINT = 'pip install "kikimimi[xares]"'


class XaresAdapterError(ValueError):
    """A model the adapter cannot describe to X-ARES (one line)."""


def frame_hop_ms(model: AudioEncoder) -> float:
    """Milliseconds between two frame features of ``model``: time stride in log-mel frames × the log-mel hop.

    The stride is the BYOL-A network's ``frame_hop_frames`` or the ViT's patch width.

    Raises:
        XaresAdapterError: an encoder with neither.
    """
    network = model.encoder
    stride = getattr(network, "frame_hop_frames", None)
    if stride is None:
        patch = getattr(getattr(network, "config", None), "patch_size", None)
        stride = patch[1] if patch else None
    if stride is None:
        raise XaresAdapterError(f"cannot tell the frame hop of a {type(network).__name__} encoder")
    return 1000.0 * int(stride) * model.frontend.config.hop_length / model.sample_rate


class KikimimiEncoder(nn.Module):
    """A kikimimi model as an X-ARES encoder (module docstring).

    Args:
        model: an :class:`AudioEncoder`, or anything :func:`kikimimi.load` takes; default ``$KIKIMIMI_XARES_MODEL``.
        device: as :func:`kikimimi.load` (X-ARES moves the module with ``.to(device)`` afterwards; the model
            follows).
        precision: as :func:`kikimimi.load` (default ``"fp32"``: X-ARES compares encoders, so exact features).
        **load_kwargs: passed to :func:`kikimimi.load` (``norm_stats`` for BYOL-A files, ``accept_licence``…).

    Raises:
        XaresAdapterError: no model given and ``$KIKIMIMI_XARES_MODEL`` unset.
    """

    def __init__(self, model: AudioEncoder | str | os.PathLike | None = None, *, device: str | None = None,
                 precision: str = "fp32", **load_kwargs: Any) -> None:
        super().__init__()
        if model is None:
            model = os.environ.get(MODEL_ENV)
            if not model:
                raise XaresAdapterError(f"no model: pass KikimimiEncoder(model) or set {MODEL_ENV}")
        if not isinstance(model, AudioEncoder):
            model = load(model, device, precision=precision, **load_kwargs)
        self.model = model
        # the same modules the AudioEncoder runs, registered so that X-ARES's .to(device) moves them
        self.network = model.encoder
        self.frontend = model.frontend
        self.sampling_rate = XARES_RATE
        self.output_dim = int(model.embedding_dim)
        self.hop_size_in_ms = frame_hop_ms(model)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "model":  # the AudioEncoder is no nn.Module: keep it out of the module tree
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @torch.inference_mode()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio`` ``[B, samples]`` (or ``[samples]``) at 16 kHz → frame features ``[B, T', D]`` float32, on the
        device of ``audio``."""
        if audio.ndim == 1:
            audio = audio.unsqueeze(0)
        if audio.ndim != 2:
            raise ValueError(f"expected audio [B, samples], got shape {tuple(audio.shape)}")
        params = next(self.network.parameters(), None)
        if params is not None:
            self.model.device = params.device  # follow X-ARES's .to(device)
        waves = [np.ascontiguousarray(w) for w in audio.detach().float().cpu().numpy()]
        frames, _ = self.model.embed_frames(waves, XARES_RATE, batch_size=max(1, len(waves)))
        return torch.as_tensor(np.asarray(frames), dtype=torch.float32).to(audio.device)


def write_encoder_file(model: str | os.PathLike, out_py: str | os.PathLike, *,
                       class_name: str = "KikimimiModelEncoder") -> Path:
    """Write the encoder file ``python -m xares.run`` takes: a class ``class_name`` (must end in ``Encoder``) that
    loads ``model`` (a name, ``hf://`` repository or path; a relative path is made absolute)."""
    if not class_name.endswith("Encoder") or not class_name.isidentifier():
        raise XaresAdapterError(f"class name {class_name!r} must be an identifier ending in 'Encoder' (X-ARES rule)")
    ref = os.fspath(model)
    if Path(ref).exists():
        ref = str(Path(ref).resolve())
    text = (f'"""X-ARES encoder file written by kikimimi: {ref}"""\n\n'
            "from kikimimi.evaluation.harness_xares import KikimimiEncoder\n\n\n"
            f"class {class_name}(KikimimiEncoder):\n"
            "    def __init__(self) -> None:\n"
            f"        super().__init__({ref!r})\n")
    out = Path(out_py)
    atomic_write_text(out, text)
    return out
