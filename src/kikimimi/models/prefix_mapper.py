"""The captioner's mapper network: audio frame features → prefix vectors of a causal language model (ClipCap-style).

The captioner reads the *frame* features of a frozen audio encoder ``[B, T, D]`` (M2D ViT: D = Fg·embed_dim,
one frame per patch column; BYOL-A: d), maps them to ``K`` prefix vectors in the language model's
input-embedding space with :class:`PrefixMapper` (learned queries + a few transformer layers), and lets the
language model continue ``[prefix K] [prompt tokens] [answer tokens] [eos]``. With ``out_scale > 0`` (every
captioner trained since the recipe of issue 33) each prefix vector is layer-normalised (no affine) and scaled to
``out_scale``, the RMS of the language model's own token embeddings (:func:`embedding_rms`): the prefix can
point anywhere but never grow beyond what the language model is used to read
(:mod:`kikimimi.models.caption_prompts`, :mod:`kikimimi.models.caption_loss`,
:mod:`kikimimi.models.caption_decoding`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

__all__ = ["MapperConfig", "PrefixMapper", "embedding_rms"]


@dataclass
class MapperConfig:
    """Sizes of a :class:`PrefixMapper` (JSON in every captioner folder).

    Attributes:
        in_dim: audio frame feature size D. lm_dim: the language model's embedding size H.
        prefix_len: K prefix vectors. width / depth / heads: the transformer over [K queries; T frames].
        max_frames: frames kept per clip (longer inputs are cut into windows before reaching the mapper).
        out_scale: RMS of every prefix vector (LayerNorm without affine, then × ``out_scale``; the language
            model's token-embedding RMS, :func:`embedding_rms`); 0 = the plain linear output (folders written
            before this setting existed).
    """

    in_dim: int
    lm_dim: int
    prefix_len: int = 8
    width: int = 256
    depth: int = 2
    heads: int = 4
    max_frames: int = 512
    out_scale: float = 0.0

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MapperConfig:
        kinds = {f.name: (float if f.name == "out_scale" else int) for f in fields(cls)}
        return cls(**{k: kinds[k](v) for k, v in data.items() if k in kinds})


def embedding_rms(lm: nn.Module) -> float:
    """Root-mean-square of a language model's input-embedding table (``get_input_embeddings().weight``
    ``[V, H]``, all entries): the scale of the token vectors it reads (SmolLM2-135M: 0.136)."""
    weight = lm.get_input_embeddings().weight.detach()
    return float(weight.float().pow(2).mean().sqrt())


def _sincos(n: int, dim: int, device: torch.device) -> torch.Tensor:
    """1-D sine/cosine positions ``[n, dim]`` (frame order; any length)."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    out = torch.zeros(n, dim, device=device)
    out[:, 0:2 * half:2] = torch.sin(pos * freq)
    out[:, 1:2 * half:2] = torch.cos(pos * freq)
    return out


class PrefixMapper(nn.Module):
    """Frame features ``[B, T, D]`` → ``K`` prefix vectors ``[B, K, H]`` in the language model's embedding space.

    ``LayerNorm(D) → Linear(D, width)`` + sine positions over time, ``K`` learned query tokens in front, ``depth``
    pre-norm transformer layers over ``[queries; frames]`` (padding masked), the ``K`` query outputs →
    ``Linear(width, H)``, then (``out_scale > 0``) ``LayerNorm(H, no affine) × out_scale``.
    """

    def __init__(self, config: MapperConfig) -> None:
        super().__init__()
        self.config = config
        self.in_norm = nn.LayerNorm(config.in_dim)
        self.in_proj = nn.Linear(config.in_dim, config.width)
        self.queries = nn.Parameter(torch.randn(config.prefix_len, config.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.width, config.heads, dim_feedforward=4 * config.width, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(config.width)
        self.out_proj = nn.Linear(config.width, config.lm_dim)
        # no parameters: folders written before out_scale existed load unchanged (out_scale = 0: not applied)
        self.prefix_norm = nn.LayerNorm(config.lm_dim, elementwise_affine=False)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``frames`` ``[B, T, D]``, ``frame_mask`` ``[B, T]`` (True = a real frame) → ``[B, K, H]``."""
        b, t, _ = frames.shape
        x = self.in_proj(self.in_norm(frames)) + _sincos(t, self.config.width, frames.device)[None]
        q = self.queries[None].expand(b, -1, -1)
        pad = None
        if frame_mask is not None:
            keep = torch.cat([torch.ones(b, q.shape[1], dtype=torch.bool, device=frames.device),
                              frame_mask.bool()], dim=1)
            pad = ~keep
        y = self.blocks(torch.cat([q, x], dim=1), src_key_padding_mask=pad)
        out = self.out_proj(self.out_norm(y[:, : q.shape[1]]))
        if self.config.out_scale > 0:
            out = self.prefix_norm(out) * self.config.out_scale
        return out
