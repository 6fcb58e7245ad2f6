"""kikimimi: general-purpose audio and audio-language representations (BYOL-A, M2D, M2D-CLAP, M2D2).

Typical use::

    import kikimimi
    model = kikimimi.load("m2d_vit_base-80x608p16x16-221006-mr7/checkpoint-300.pth")
    clip_embeddings = model.embed(["dog.wav", "rain.flac"])       # [B, D]; model.embed("dog.wav") → [D]
    model = kikimimi.load("m2d-vit-base-mr7", accept_licence=True)   # a registered name: `kikimimi models list`

    clap = kikimimi.load_clap("m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025/checkpoint-30.pth")
    scores = clap.similarity(clap.encode_audio(["dog.wav"]), clap.encode_text(["a dog barks"]))

    captioner = kikimimi.load_captioner("open-captioner-tiny")    # shipped with kikimimi: no download
    print(captioner.caption("dog.wav"))

    classifier = kikimimi.pipeline("zero-shot-audio-classification")   # transformers' call and output shape
    classifier("dog.wav", candidate_labels=["dog barking", "rain"])      # [{"score", "label"}, …] best first
    model = kikimimi.from_pretrained("hf://owner/name")                 # an encoder, CLAP or captioner folder
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "from_pretrained", "load", "load_captioner", "load_clap", "load_listener", "pipeline"]

if TYPE_CHECKING:  # names for the annotations only: importing kikimimi stays light (no torch)
    import torch

    from kikimimi.features.normstats import NormStats
    from kikimimi.inference.captioner import Captioner
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


def load_captioner(path: str | os.PathLike, *, audio_model: str | os.PathLike | None = None,
                   device: str | torch.device | None = "cpu") -> Captioner:
    """Load a captioner: a folder written by ``kikimimi train-captioner`` or a registered name such as
    ``"open-captioner-tiny"`` (shipped with kikimimi; its files are checked against its ``SHA256SUMS``; no network),
    or ``hf://owner/name[@revision]`` (a folder saved by :func:`kikimimi.inference.pretrained.save_pretrained`,
    cached in the standard Hub cache; offline when cached).

    The arguments of :func:`kikimimi.inference.captioner.load_captioner`, through
    :func:`kikimimi.inference.pretrained.from_pretrained` imported on the first call (``audio_model``: another
    encoder with the same frame size, by default the one the folder carries or names; ``device``). Returns a
    :class:`~kikimimi.inference.captioner.Captioner`: ``caption(path)`` → ``str``, ``caption([paths])`` → ``list``,
    ``ask(path, question)``.
    """
    from kikimimi.checkpoints.hf_hub import is_hf_uri

    if not is_hf_uri(path) and not os.path.exists(path):  # a registered name (or a missing folder: its error)
        from kikimimi.inference.captioner import load_captioner as _load_captioner

        return _load_captioner(path, audio_model=audio_model, device=device)
    from kikimimi.inference.pretrained import from_pretrained as _from_pretrained

    kwargs = {} if audio_model is None else {"audio_model": audio_model}
    return _from_pretrained(path, kind="captioner", device=device, **kwargs)


def load_listener(clap: Any, *, lm: str | None = None, captioner: str | os.PathLike | None = None,
                  **kwargs: Any) -> Listener:
    """A listener that answers questions about recordings of any length from the evidence of ``clap`` (an M2D-CLAP
    checkpoint, kikimimi folder or registered name): ``.evidence(audio)``, ``.ask(audio, question)`` (by the local
    language model ``lm``, e.g. ``"smollm2"``, or by rules when ``None``; citing segment times) and
    ``.describe(audio)``. The arguments of :func:`kikimimi.inference.listener.load_listener`, imported on the first
    call (``labels``, ``settings``, ``text_encoder``, ``device`` …)."""
    from kikimimi.inference.listener import load_listener as _load_listener

    return _load_listener(clap, lm=lm, captioner=captioner, **kwargs)


def from_pretrained(source: str | os.PathLike, *, kind: str = "auto", device: str | torch.device | None = None,
                    **kwargs: Any) -> AudioEncoder | CLAPModel | Captioner:
    """Load a kikimimi model folder, ``hf://owner/name[@revision]`` or a Hub ``owner/name`` as what its
    configuration says it is: an :class:`~kikimimi.inference.encoder.AudioEncoder`, a
    :class:`~kikimimi.inference.clap.CLAPModel` or a :class:`~kikimimi.inference.captioner.Captioner`
    (:func:`kikimimi.inference.pretrained.from_pretrained`, imported on the first call; ``kind`` forces one of
    ``"encoder"``, ``"clap"``, ``"captioner"``)."""
    from kikimimi.inference.pretrained import from_pretrained as _from_pretrained

    return _from_pretrained(source, kind=kind, device=device, **kwargs)


def pipeline(task: str, model: Any = None, **kwargs: Any) -> Any:
    """A Hugging Face-style pipeline: ``"zero-shot-audio-classification"`` (``pipe(audio, candidate_labels=[…])``
    → ``[{"score", "label"}, …]`` best first, as transformers returns) or ``"feature-extraction"`` (frame
    features ``[1, T, D]``). ``model``: a name, path, ``hf://`` id or loaded model; ``None`` takes the packaged
    open model. See :func:`kikimimi.inference.pipelines.pipeline`, imported on the first call."""
    from kikimimi.inference.pipelines import pipeline as _pipeline

    return _pipeline(task, model, **kwargs)
