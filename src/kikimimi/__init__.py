"""kikimimi: general-purpose audio and audio-language representations (BYOL-A, M2D, M2D-CLAP, M2D2).

Typical use::

    import kikimimi
    model = kikimimi.load("m2d_vit_base-80x608p16x16-221006-mr7/checkpoint-300.pth")
    clip_embeddings = model.embed(["dog.wav", "rain.flac"])       # [B, D]; model.embed("dog.wav") → [D]
    model = kikimimi.load("m2d-vit-base-mr7", accept_licence=True)   # a registered name: `kikimimi models list`

    clap = kikimimi.load_clap("m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025/checkpoint-30.pth")
    scores = clap.similarity(clap.encode_audio(["dog.wav"]), clap.encode_text(["a dog barks"]))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "load", "load_clap", "load_listener"]

if TYPE_CHECKING:  # names for the annotations only: importing kikimimi stays light (no torch)
    import torch

    from kikimimi.features.normstats import NormStats
    from kikimimi.inference.clap import CLAPModel
    from kikimimi.inference.encoder import AudioEncoder
    from kikimimi.inference.listener import Listener


def load(path: str | os.PathLike, device: str | torch.device | None = None, *,
         norm_stats: Sequence[float] | NormStats | None = None, trust_pickle: bool = False,
         accept_licence: bool = False, precision: str | None = None, **overrides: Any) -> AudioEncoder:
    """Load an official or kikimimi checkpoint, or a registered model by name, as an audio encoder.

    The same arguments as :func:`kikimimi.inference.encoder.load`, which is imported on the first call (so that
    ``import kikimimi`` does not import torch): ``path`` (weight file, kikimimi folder or registered name such as
    ``"m2d-vit-base-mr7"``), ``device`` (``"cpu"``, ``"cuda"``, ``None``/``"auto"``), ``norm_stats`` (log-mel
    ``(mean, std)``, needed for BYOL-A files), ``trust_pickle``, ``accept_licence``, ``precision`` (default ``"auto"``:
    the fastest path measured to keep cosine >= 0.999 on this CPU; ``"fp32"``, ``"bf16"``, ``"int8"``) and
    architecture ``overrides``. Returns an
    :class:`~kikimimi.inference.encoder.AudioEncoder`: ``embed(path)`` → ``[D]``, ``embed([paths])`` → ``[B, D]``.
    """
    from kikimimi.inference.encoder import load as _load

    return _load(path, device, norm_stats=norm_stats, trust_pickle=trust_pickle, accept_licence=accept_licence,
                 precision=precision, **overrides)


def load_clap(path: str | os.PathLike, *, text_encoder: Any = None, device: str | torch.device | None = None,
              trust_pickle: bool = False, accept_licence: bool = False, **overrides: Any) -> CLAPModel:
    """Load an M2D-CLAP checkpoint (or a registered name such as ``"m2d-clap-2025"``) as an audio–text model.

    The same arguments as :func:`kikimimi.inference.clap.load_clap`, imported on the first call: ``text_encoder``
    (``None`` = bundled or recorded, a spec string such as ``"gte:/models/gte-base"``, or an encoder), ``device``,
    ``trust_pickle``, ``accept_licence`` and ``overrides``. Returns a :class:`~kikimimi.inference.clap.CLAPModel`
    (a :class:`~kikimimi.models.encoder.TextAudioModel`).
    """
    from kikimimi.inference.clap import load_clap as _load_clap

    return _load_clap(path, text_encoder=text_encoder, device=device, trust_pickle=trust_pickle,
                      accept_licence=accept_licence, **overrides)


def load_listener(clap: Any, *, lm: str | None = None, captioner: str | os.PathLike | None = None,
                  **kwargs: Any) -> Listener:
    """A listener that answers questions about recordings of any length from the evidence of ``clap`` (an M2D-CLAP
    checkpoint, kikimimi folder or registered name): ``.evidence(audio)``, ``.ask(audio, question)`` (by the local
    language model ``lm``, e.g. ``"smollm2"``, or by rules when ``None``; citing segment times) and
    ``.describe(audio)``. The arguments of :func:`kikimimi.inference.listener.load_listener`, imported on the first
    call (``labels``, ``settings``, ``text_encoder``, ``device`` …)."""
    from kikimimi.inference.listener import load_listener as _load_listener

    return _load_listener(clap, lm=lm, captioner=captioner, **kwargs)
