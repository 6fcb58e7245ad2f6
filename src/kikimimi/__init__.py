"""kikimimi: general-purpose audio and audio-language representations (BYOL-A, M2D, M2D-CLAP, M2D2).

Typical use::

    import kikimimi
    model = kikimimi.load("m2d_vit_base-80x608p16x16-221006-mr7/checkpoint-300.pth")
    clip_embeddings = model.embed(["dog.wav", "rain.flac"])       # [B, D]
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(*args, **kwargs):
    """Load an encoder from an official or kikimimi checkpoint; see :func:`kikimimi.inference.encoder.load`."""
    from kikimimi.inference.encoder import load as _load

    return _load(*args, **kwargs)
