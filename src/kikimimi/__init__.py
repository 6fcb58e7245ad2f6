"""kikimimi: general-purpose audio and audio-language representations (BYOL-A, M2D, M2D-CLAP, M2D2).

Typical use::

    import kikimimi
    model = kikimimi.load("m2d_vit_base-80x608p16x16-221006-mr7/checkpoint-300.pth")
    clip_embeddings = model.embed(["dog.wav", "rain.flac"])       # [B, D]
    model = kikimimi.load("m2d-vit-base-mr7", accept_licence=True)   # a registered name: `kikimimi models list`

    clap = kikimimi.load_clap("m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025/checkpoint-30.pth")
    scores = clap.similarity(clap.encode_audio(["dog.wav"]), clap.encode_text(["a dog barks"]))
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load", "load_clap"]


def load(*args, **kwargs):
    """Load an encoder from an official or kikimimi checkpoint; see :func:`kikimimi.inference.encoder.load`."""
    from kikimimi.inference.encoder import load as _load

    return _load(*args, **kwargs)


def load_clap(*args, **kwargs):
    """Load an M2D-CLAP checkpoint as an audio–text model; see :func:`kikimimi.inference.clap.load_clap`."""
    from kikimimi.inference.clap import load_clap as _load_clap

    return _load_clap(*args, **kwargs)
